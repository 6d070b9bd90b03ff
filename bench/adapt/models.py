"""`python -m bench.adapt.models`: how mismatched each model of a multi-model prompt file is with the
shipped predictor, offline, before any live run.

    python -m bench.adapt.models [--prompts FILE] [--quick | --num-requests N] [--json]

Per model: the replayed requests `bench.adapt` would send (same seed, same prompts, same scaled and
capped lengths), the shipped head's Kendall tau on the last third, and the taus of heads trained
offline on the first two thirds (the online refit recipe warm-started, and a fresh head). `headroom` =
best offline tau - shipped tau: the most online learning can gain on that model. The encoder features
are computed once (the prompts are the same for every model; only the answers differ).

Invariant: rows, order, thirds and labels are exactly those of `bench.adapt` with the same options, so
a model's row here predicts what its live run can show.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from bench.adapt.arrivals import thirds
from bench.adapt.cli import DEFAULT_PROMPTS, PRESETS
from bench.common import HelpFormatter
from bench.replay.workload import build_workload, demo_tokenizer


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.adapt.models", formatter_class=HelpFormatter,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", default=str(DEFAULT_PROMPTS), help="JSONL {prompt, response, model}")
    p.add_argument("--quick", action="store_true", help="the --quick preset's request count (600; default: the full preset's 805)")
    p.add_argument("--num-requests", type=int, help="replayed prompts (default: from the preset)")
    p.add_argument("--output-scale", type=float, default=0.125, help="as bench.adapt: replayed length = round(true x scale)")
    p.add_argument("--max-output-tokens", type=int, default=128, help="as bench.adapt: the cap (censored labels)")
    p.add_argument("--max-prompt-tokens", type=int, default=256, help="as bench.adapt: prompts cut to this")
    p.add_argument("--checkpoint", default="default", help="predictor checkpoint (name or path)")
    p.add_argument("--seed", type=int, default=0, help="as bench.adapt: picks the prompts and their order")
    p.add_argument("--json", action="store_true", help="last stdout line: JSON of every model's row")
    args = p.parse_args(argv)
    if args.num_requests is None:
        args.num_requests = PRESETS["quick" if args.quick else "full"]["num_requests"]
    return args


def model_names(path: str) -> list[str]:
    from proxy_model.data import read_jsonl

    return sorted({r.model for r in read_jsonl(path) if r.model})


def requests_for(args, model: str, tokenizer) -> list:
    """bench.adapt's replayed requests for `model`, in arrival order (arrival times do not matter here)."""
    from bench.adapt.run import load_pool

    pool = load_pool(argparse.Namespace(prompts=args.prompts, model_name=model, num_requests=args.num_requests),
                     tokenizer)
    return build_workload(np.zeros(args.num_requests), pool, args.seed, output_scale=args.output_scale,
                          max_output_tokens=args.max_output_tokens, tokenizer=tokenizer,
                          max_prompt_tokens=args.max_prompt_tokens, client_max_tokens=args.max_output_tokens)


def mismatch_table(args) -> list[dict]:
    from proxy_model import load_predictor
    from proxy_model.online_reference import reference_taus

    tokenizer = demo_tokenizer()
    predictor = load_predictor(args.checkpoint)
    features, prompts, rows = None, None, []
    for model in model_names(args.prompts):
        items = requests_for(args, model, tokenizer)
        if prompts is None:
            prompts = [it.prompt for it in items]
            features = predictor.predict_with_features(prompts)[1].numpy()
        elif [it.prompt for it in items] != prompts:
            raise SystemExit(f"{args.prompts}: model {model!r} has other prompts than the first model")
        tokens = np.array([it.output_tokens for it in items], dtype=float)
        censored = np.array([it.output_tokens >= it.max_tokens for it in items])
        last = thirds(len(items))["last_third"]
        taus = reference_taus(predictor, features, tokens, censored, np.arange(last.start),
                              np.arange(last.start, last.stop), args.seed)
        best = max(taus["tau_offline_warm_start"], taus["tau_offline_fresh"])
        rows.append({"model": model, "mean_output_tokens": float(tokens.mean()),
                     "censored_fraction": float(censored.mean()), **taus,
                     "headroom": best - taus["tau_current_head"]})
        print(f"[adapt.models] {model}: shipped {taus['tau_current_head']:.3f}, offline warm "
              f"{taus['tau_offline_warm_start']:.3f} / fresh {taus['tau_offline_fresh']:.3f}", file=sys.stderr)
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = mismatch_table(args)
    print("| model | mean tokens | censored | shipped tau | offline warm | offline fresh | headroom |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["headroom"]):
        print(f"| {r['model']} | {r['mean_output_tokens']:.1f} | {r['censored_fraction']:.1%} | "
              f"{r['tau_current_head']:.3f} | {r['tau_offline_warm_start']:.3f} | {r['tau_offline_fresh']:.3f} | "
              f"{r['headroom']:+.3f} |")
    if args.json:
        print(json.dumps({"num_requests": args.num_requests, "checkpoint": args.checkpoint, "models": rows}))


if __name__ == "__main__":
    main()
