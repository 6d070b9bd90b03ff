"""Shared CLI pieces: data errors become a one-line message and exit status 2 (no traceback); every
`--help` shows defaults; feature caches live in one documented cache directory."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .data import DataError

CACHE_ENV = "SSJF_CACHE_DIR"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` lists every option's default (also options without help text, not when the help
    already names its default or the option is required) and keeps the docstring's line breaks."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and action.option_strings and action.default is not argparse.SUPPRESS:
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or "default" in text.lower() or isinstance(action, argparse._HelpAction):
            return text
        return super()._get_help_string(action)


def default_cache_dir() -> str:
    """Frozen-feature cache: `$SSJF_CACHE_DIR/proxy_features`, else `$XDG_CACHE_HOME/ssjf-serve/...`,
    else `~/.cache/ssjf-serve/proxy_features` (never the current directory)."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ssjf-serve"
    return str(Path(root) / "proxy_features")


def run_cli(main) -> int:
    try:
        return main()
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
