"""Shared CLI wrapper: data errors become a one-line message and exit status 2 (no traceback)."""
from __future__ import annotations

import sys

from .data import DataError


def run_cli(main) -> int:
    try:
        return main()
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
