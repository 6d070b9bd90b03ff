"""`python -m proxy_model.evaluate`: accuracy and latency of a checkpoint on one split of JSONL data.

With --json the last stdout line is one JSON object: n, kendall_tau (tau-b), spearman, mae_tokens,
bucket_accuracy (paper buckets [0,42) [42,141) [141,294) [294,503) [503,inf)),
latency_ms_per_prompt_batch1, latency_ms_per_prompt_batch32, and per_model when rows name models.
"""
from __future__ import annotations

import argparse
import json
import sys

from .cli import HelpFormatter, run_cli
from .data import DataError, demo_tokenizer, load_labelled, row_split
from .metrics import accuracy, latency
from .predictor import load_predictor


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m proxy_model.evaluate", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--data", action="append", required=True, help="JSONL file (repeatable)")
    ap.add_argument("--checkpoint", default=None, help="checkpoint dir (default: shipped predictor)")
    ap.add_argument("--split", choices=("train", "val", "test", "all"), default="test")
    ap.add_argument("--split-seed", type=int, default=None, help="default: the checkpoint's split seed")
    ap.add_argument("--tokenizer", default=None, help="served LLM's tokenizer for labels (default: demo)")
    ap.add_argument("--max-rows", type=int, default=None)
    ap.add_argument("--latency-prompts", type=int, default=128, help="0 = skip latency")
    ap.add_argument("--json", action="store_true", help="print a JSON object as the last line")
    return ap.parse_args(argv)


def select_split(rows, split: str, seed: int, paths: list[str]):
    chosen = rows if split == "all" else [r for r in rows if row_split(r, seed) == split]
    if len(chosen) < 2:
        raise DataError(f"{', '.join(paths)}: only {len(chosen)} row(s) in split '{split}' (seed {seed})")
    return chosen


def evaluate(predictor, rows, latency_prompts: int = 128) -> dict:
    pred = predictor.predict([r.prompt for r in rows], [r.model for r in rows])
    result = accuracy(pred, [r.output_tokens for r in rows])
    models = sorted({r.model for r in rows if r.model is not None})
    if models:
        result["per_model"] = {}
        for m in models:
            idx = [i for i, r in enumerate(rows) if r.model == m]
            if len(idx) >= 2:
                result["per_model"][m] = accuracy([pred[i] for i in idx], [rows[i].output_tokens for i in idx])
    if latency_prompts:
        unique = list(dict.fromkeys(r.prompt for r in rows))[:latency_prompts]
        result.update(latency(predictor.predict, unique))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = load_labelled(args.data, demo_tokenizer(args.tokenizer), args.max_rows)
    predictor = load_predictor(args.checkpoint)
    seed = args.split_seed if args.split_seed is not None else predictor.config["split"]["seed"]
    rows = select_split(rows, args.split, seed, args.data)
    result = {"predictor": predictor.name, "checkpoint": str(predictor.path), "split": args.split,
              "split_seed": seed, **evaluate(predictor, rows, args.latency_prompts)}
    for key, value in result.items():
        if not isinstance(value, dict):
            print(f"{key:>32}: {value:.4f}" if isinstance(value, float) else f"{key:>32}: {value}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
