"""`python -m proxy_model.calibrate`: fit a checkpoint's score -> tokens quantile mapping on held-out rows.

The head's scores on the --split rows (`split_of(prompt, checkpoint's split seed)`; val by default,
test is not offered) are mapped so that the q-quantile score predicts the q-quantile label, with
labels counted as the checkpoint's were (its label tokenizer). The mapping is strictly monotone:
predicted tokens spread like the labels while the ranking (Kendall tau) is unchanged.
Writes the grid into head.safetensors and a `calibration` note (split, rows, data files) into
config.json; `metrics.test` is then re-measured on the test split (measured only, never fitted on).
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np

from .cli import HelpFormatter, run_cli
from .data import demo_tokenizer, load_labelled
from .evaluate import evaluate, select_split
from .predictor import load_predictor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m proxy_model.calibrate", description=__doc__,
                                 formatter_class=HelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="checkpoint dir, or a shipped name (default, fast)")
    ap.add_argument("--data", action="append", required=True, help="JSONL file (repeatable)")
    ap.add_argument("--split", choices=("train", "val"), default="val", help="rows to fit the mapping on")
    ap.add_argument("--out", default=None, help="checkpoint dir to write; None updates --checkpoint in place")
    ap.add_argument("--tokenizer", default=None,
                    help="served LLM's tokenizer for labels; None = the one the checkpoint was trained with")
    return ap.parse_args(argv)


def label_tokenizer(config: dict) -> str | None:
    """The tokenizer path the checkpoint's labels were counted with; None = the demo tokenizer."""
    name = config["labels"]["tokenizer"]
    return None if name.startswith("demo") else name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    predictor = load_predictor(args.checkpoint)
    tokenizer = args.tokenizer or label_tokenizer(predictor.config)
    rows = load_labelled(args.data, demo_tokenizer(tokenizer))
    seed = predictor.config["split"]["seed"]
    fit_rows = select_split(rows, args.split, seed, args.data)
    scores = predictor.scores([r.prompt for r in fit_rows], [r.model for r in fit_rows])
    predictor.head.calibrate(scores, np.array([r.output_tokens for r in fit_rows], dtype=float))
    predictor.config["calibration"] = {
        "split": args.split, "split_seed": seed, "rows": len(fit_rows), "data": [Path(p).name for p in args.data],
        "command": "python -m proxy_model.calibrate " + shlex.join(sys.argv[1:] if argv is None else argv)}
    test_rows = select_split(rows, "test", seed, args.data)
    predictor.config["metrics"] = {"test": evaluate(predictor, test_rows, latency_prompts=0)}
    out = Path(args.out) if args.out else predictor.path
    if out.resolve() != predictor.path.resolve():
        shutil.copytree(predictor.path, out, dirs_exist_ok=True)
    predictor.save(out)
    print(f"calibrated {out} on {len(fit_rows)} {args.split} rows: test {predictor.config['metrics']['test']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
