"""Command line of `python -m bench.adapt`: options, --quick defaults, the default mismatched lengths.

Invariant: `parse_args` resolves every option (explicit option, then the --quick preset, then the full
default) and adds the fields the reused `bench.replay` pieces read (batching, replicas, slots, spans).
"""
from __future__ import annotations

import argparse

from bench.common import SHARED_DATA, HelpFormatter
from bench.replay.cli import DEFAULT_TRACE, FIXTURE_TRACE

DEFAULT_PROMPTS = SHARED_DATA / "prompts" / "alpacaeval_8_models.jsonl"
# the AlpacaEval model with the most room for online learning over the shipped head
# (`python -m bench.adapt.models --quick`: best offline tau - shipped tau = +0.154; 70B +0.125, others less)
DEFAULT_MODEL = "Meta-Llama-3-8B-Instruct"
# quick: 600 of the 805 AlpacaEval prompts (~5 min per arm here); full: all 805.
PRESETS = {"full": {"num_requests": 805}, "quick": {"num_requests": 600}}
ONLINE = {"predictor.online.enabled": True}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.adapt", formatter_class=HelpFormatter, description=(
        "Replay prompts whose output lengths come from another model than the predictor's training labels "
        "through the live app with online learning on: FCFS, then SSJF, on the same arrivals; reports the "
        "rolling Kendall tau and SSJF/FCFS mean JCT in the first and last third, and offline references."))
    p.add_argument("--prompts", default=str(DEFAULT_PROMPTS),
                   help="JSONL {prompt, response | output_tokens[, model]}; responses counted with the served tokenizer")
    p.add_argument("--model-name", default=DEFAULT_MODEL,
                   help="keep rows whose `model` field is this (rows without one are all kept); '' keeps all")
    p.add_argument("--out", default="runs/adapt", help="output directory (summary.json, requests.jsonl)")
    p.add_argument("--quick", action="store_true", help="600 requests: finishes in < 20 min on 2 CPU cores")
    p.add_argument("--num-requests", type=int, help="distinct prompts replayed, in a seeded random order")
    p.add_argument("--trace", help=f"arrivals (default {DEFAULT_TRACE}, or the committed fixture when absent)")
    p.add_argument("--load", type=float, default=0.7,
                   help="mean arrival rate / measured service rate (the calibration runs before any refit, and "
                        "refits share the 2 cores with the engines: 1.0 over the ~200 s window overloaded this "
                        "box (FCFS mean JCT rose from 8 to 58 s across the thirds), 0.8 under other load too)")
    p.add_argument("--output-scale", type=float, default=0.125, help="replayed length = round(true x scale)")
    p.add_argument("--max-output-tokens", type=int, default=128,
                   help="every request's max_tokens: longer answers end with finish_reason length (censored)")
    p.add_argument("--max-prompt-tokens", type=int, default=256, help="cut prompts to this many tokens")
    p.add_argument("--min-labels", type=int, default=100, help="predictor.online.min_labels")
    p.add_argument("--refit-every", type=int, default=50, help="predictor.online.refit_every")
    p.add_argument("--calibration-s", type=float, default=12.0, help="closed-loop service-rate calibration")
    p.add_argument("--sequential", action="store_true",
                   help="run FCFS, then SSJF, each alone on the machine (before 2026-12-01 the only mode; "
                        "its live JCT ratios carry the machine's drift between the arms: one run's SSJF last "
                        "third decoded 16%% slower than FCFS's); default: both arms side by side, each on "
                        "its own app, at the same time (bench.replay --concurrent)")
    p.add_argument("--drain-timeout-s", type=float, default=60.0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra dotted config override")
    p.add_argument("--seed", type=int, default=0)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for key, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.trace = args.trace or str(DEFAULT_TRACE if DEFAULT_TRACE.exists() else FIXTURE_TRACE)
    if args.num_requests < 30 or not args.load > 0:
        raise SystemExit("--num-requests must be >= 30 (three thirds) and --load > 0")
    # what bench.replay's config_overrides / timed_workload / run_policy read
    args.set = [*(f"{k}={v}" for k, v in {**ONLINE, "predictor.online.min_labels": args.min_labels,
                                          "predictor.online.refit_every": args.refit_every}.items()), *args.set]
    from bench.replay.cli import Arm

    args.arms = [Arm(policy, policy, {"scheduler.policy": policy}) for policy in ("fcfs", "ssjf")]
    for key, value in {"config": None, "model": None, "natural": False, "batching": "continuous", "num_replicas": 2,
                       "max_batch_size": 2, "client_max_tokens": args.max_output_tokens, "max_span_s": float("inf"),
                       "poll_interval_s": 0.25, "slo_jct_base_s": 5.0, "slo_jct_per_token_s": 0.05}.items():
        setattr(args, key, value)
    return args
