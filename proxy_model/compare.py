"""`python -m proxy_model.compare`: markdown results table for checkpoints vs two baselines.

Every row is measured on the test split (`split_of(prompt, --split-seed)`) of each --data file;
baselines are fitted on that file's train split: a constant (median tokens) and a least-squares
fit of log tokens on log prompt length (characters). AlpacaEval-style files (rows with "model")
also get a per-model table of Kendall tau-b.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .cli import HelpFormatter, default_cache_dir, run_cli
from .data import demo_tokenizer, load_labelled, split_of
from .evaluate import evaluate
from .metrics import latency
from .predictor import load_predictor


class ConstantBaseline:
    name = "baseline: constant (train median)"

    def __init__(self, train_rows):
        self.value = float(np.median([r.output_tokens for r in train_rows]))

    def predict(self, prompts, model_names=None):
        return [self.value] * len(prompts)


class PromptLengthBaseline:
    name = "baseline: regression on prompt length"

    def __init__(self, train_rows):
        x = np.log1p([len(r.prompt) for r in train_rows])
        y = np.log(np.maximum([r.output_tokens for r in train_rows], 1.0))
        self.slope, self.intercept = np.polyfit(x, y, 1)

    def predict(self, prompts, model_names=None):
        return [math.exp(self.intercept + self.slope * math.log1p(len(p))) for p in prompts]


class CachedFeatures:
    """A frozen-backbone predictor whose features come from the training feature cache.

    Same numbers as `Predictor.predict` (the cache stores exactly `Encoder.encode` output) without
    re-encoding the test split for every checkpoint; latency is still timed on the live predictor.
    """

    def __init__(self, predictor, cache_dir: str):
        from .encoder import Encoder

        self.live = predictor
        self.name = predictor.name
        enc = predictor.encoder
        self.full = Encoder(enc.backbone, enc.max_prompt_tokens)
        self.cache_dir = cache_dir

    def predict(self, prompts, model_names=None):
        import torch

        from .cache import encode_cached
        from .heads import head_input

        feat, head = self.live.config["features"], self.live.head
        pooled, log_len = encode_cached(self.full, prompts, self.cache_dir)
        pooled = pooled[:, : self.live.encoder.num_hidden_states]
        with torch.inference_mode():
            x = head_input(pooled, log_len, feat, prompts)
            return [float(t) for t in head.tokens(head(x, head.model_index(model_names, len(prompts))))]


def is_frozen(predictor) -> bool:
    enc = predictor.config["encoder"]
    return not enc.get("finetuned_layers") and not enc.get("lora")


def fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proxy_model.compare", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--checkpoint", action="append", default=[], help="checkpoint dir (repeatable; "
                    "'default' = shipped predictor)")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--latency-prompts", type=int, default=128)
    ap.add_argument("--out", default=None, help="write the markdown here too")
    ap.add_argument("--cache-dir", default=default_cache_dir(), help="feature cache for frozen checkpoints "
                    "('' = always encode live; $SSJF_CACHE_DIR/proxy_features when set)")
    args = ap.parse_args(argv)
    datasets = {Path(p).name: load_labelled([p], demo_tokenizer()) for p in args.data}
    predictors = [load_predictor(None if c == "default" else c) for c in (args.checkpoint or ["default"])]
    lines = ["| predictor | data (test split) | n | Kendall tau-b | Spearman | MAE tokens | bucket acc "
             "| ms/prompt b1 | ms/prompt b32 |", "|---|---|---|---|---|---|---|---|---|"]
    per_model_lines: list[str] = []
    for data_name, rows in datasets.items():
        train = [r for r in rows if split_of(r.prompt, args.split_seed) == "train"]
        test = [r for r in rows if split_of(r.prompt, args.split_seed) == "test"]
        models = sorted({r.model for r in test if r.model})
        candidates = [ConstantBaseline(train), PromptLengthBaseline(train), *predictors]
        if models and not per_model_lines:
            per_model_lines = ["| predictor | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
        for cand in tqdm(candidates, desc=f"compare on {data_name}", unit="predictor"):
            is_model = hasattr(cand, "encoder")
            if is_model and args.cache_dir and is_frozen(cand):
                res = evaluate(CachedFeatures(cand, args.cache_dir), test, 0)
                unique = list(dict.fromkeys(r.prompt for r in test))[: args.latency_prompts]
                res.update(latency(cand.predict, unique) if args.latency_prompts else {})
            else:
                res = evaluate(cand, test, args.latency_prompts if is_model else 0)
            lines.append(f"| {cand.name} | {data_name} | {res['n']} | {fmt(res['kendall_tau'])} | "
                         f"{fmt(res['spearman'])} | {fmt(res['mae_tokens'], 1)} | {fmt(res['bucket_accuracy'])} | "
                         f"{fmt(res.get('latency_ms_per_prompt_batch1'), 1)} | "
                         f"{fmt(res.get('latency_ms_per_prompt_batch32'), 1)} |")
            if models:
                cells = [fmt(res["per_model"].get(m, {}).get("kendall_tau")) for m in models]
                per_model_lines.append(f"| {cand.name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if per_model_lines:
        text += "\nKendall tau-b per model (AlpacaEval test prompts):\n\n" + "\n".join(per_model_lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
