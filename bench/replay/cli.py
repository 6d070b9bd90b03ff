"""Command line of `python -m bench.replay`: options, --quick defaults, default data paths, arms.

Invariant: `parse_args` returns a namespace with every option resolved (no None left where a value
is needed): an explicit option wins, then the --natural or --quick preset, then the full-run default. An arm is
a policy plus scheduler overrides: `ssjf`, or `ssjf@aging=linear@aging_tokens_per_s=10`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from bench.common import FIXTURES, SHARED_DATA, HelpFormatter

FIXTURE_DIR = FIXTURES / "replay"
DEFAULT_TRACE = SHARED_DATA / "traces" / "azure_llm_2023_conv.csv"
DEFAULT_PROMPTS = SHARED_DATA / "prompts" / "sharegpt_v3_first_turn.jsonl"
FIXTURE_TRACE = FIXTURE_DIR / "azure_conv_arrivals.jsonl"
FIXTURE_PROMPTS = FIXTURE_DIR / "sharegpt_heldout_prompts.jsonl"
# --natural: the default model's own greedy lengths (proxy_model/checkpoints/smollm2/README.md)
DEFAULT_LABELS = SHARED_DATA / "lengths" / "smollm2_135m_instruct_sharegpt_greedy256.jsonl"
FIXTURE_LABELS = FIXTURE_DIR / "smollm2_test_split_labels.jsonl"
POLICIES = ("fcfs", "ssjf", "sjf-oracle")

# Full run vs --quick (quick must finish in < 20 min on this 2-core box). Load x span sets the backlog:
# a window at load L lasting S seconds leaves ~(L - 1) x S seconds of queued work, which must stay under
# the 30 s starvation bound, or every policy degenerates to FIFO-of-overdue (a full run at load 1.3 over
# 90 s did: FCFS mean JCT 17.0 s, SSJF 18.7 s, p99 46 s). Bursty arrivals add to it: at 1.2 x 90 s FCFS
# itself waited up to 27.5 s and the oracle 41 times past the bound. Quick: 1.3 x 60 s; full: 1.2 x 60 s.
PRESETS = {
    "full": {"num_requests": 400, "loads": "1.2", "rounds": 3, "num_replicas": 2, "max_batch_size": 2,
             "output_scale": 0.125, "max_output_tokens": 128, "max_prompt_tokens": 256, "max_span_s": 60.0,
             "drain_timeout_s": 60.0, "calibration_s": 30.0},
    "quick": {"num_requests": 200, "loads": "1.3", "rounds": 2, "num_replicas": 2, "max_batch_size": 2,
              "output_scale": 0.125, "max_output_tokens": 128, "max_prompt_tokens": 256, "max_span_s": 60.0,
              "drain_timeout_s": 30.0, "calibration_s": 12.0},
    # --natural (a real model at its own lengths, ~200 tokens each on CPU: small). Lengths unscaled and
    # prompts uncut are fixed: the recorded lengths hold only for the prompt as labelled.
    "natural": {"num_requests": 40, "loads": "1.2", "rounds": 2, "num_replicas": 1, "max_batch_size": 4,
                "output_scale": 1.0, "max_output_tokens": 0, "max_prompt_tokens": 0, "max_span_s": 900.0,
                "drain_timeout_s": 300.0, "calibration_s": 40.0},
}
NATURAL_FIXED = ("output_scale", "max_output_tokens", "max_prompt_tokens")


@dataclass(frozen=True)
class Arm:
    label: str
    policy: str
    overrides: dict  # dotted config keys -> values (scheduler.policy included)


def parse_arm(text: str) -> Arm:
    import yaml

    policy, *settings = text.split("@")
    if policy not in POLICIES:
        raise SystemExit(f"--policies: unknown policy {policy!r} in {text!r}; choose from {', '.join(POLICIES)}")
    overrides = {"scheduler.policy": policy}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--policies: expected POLICY@KEY=VALUE, got {text!r}")
        overrides[f"scheduler.{key}"] = yaml.safe_load(value)
    return Arm(text, policy, overrides)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.replay", formatter_class=HelpFormatter, description=(
        "Live trace replay of FCFS vs SSJF vs SJF-oracle against the Serve app over loopback HTTP. "
        "Each policy runs on a freshly deployed app with the identical workload."))
    p.add_argument("--trace", help=f"arrivals: Azure CSV or JSONL with timestamp in ms (default {DEFAULT_TRACE}, "
                                   f"or the committed fixture when absent)")
    p.add_argument("--prompts", help=f"{{prompt, response}} or {{prompt, output_tokens}} JSONL (default "
                                     f"{DEFAULT_PROMPTS}, or the committed fixture when absent)")
    p.add_argument("--out", default="runs/replay", help="output directory (summary.json, PNG plots)")
    p.add_argument("--quick", action="store_true", help="preset that finishes in < 10 min on 2 CPU cores")
    p.add_argument("--natural", action="store_true",
                   help="natural lengths: the model decides when to stop (no forced length); --prompts are the "
                        "served model's own labels {prompt, output_tokens, finish_reason} (default "
                        f"{DEFAULT_LABELS}, or the committed fixture when absent); needs --model or --config; "
                        "its own preset")
    p.add_argument("--concurrent", action="store_true",
                   help="serve every arm of a round at the same time, each on its own app, so the machine's "
                        "speed drift hits all arms alike (load is then per arm, calibrated side by side)")
    p.add_argument("--config", help="app config YAML (default: configs/default.yaml)")
    p.add_argument("--model", help="engine.model (default: demo with its predictor, deployments.config.DEMO_OVERRIDES, "
                                   "unless --config is given: then the config's model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra dotted config override, e.g. predictor.checkpoint=PATH (repeatable)")
    p.add_argument("--policies", default=",".join(POLICIES),
                   help="comma-separated arms, POLICY[@KEY=VALUE...] with scheduler keys, e.g. ssjf@aging=linear; "
                        "round k starts at the k-th arm")
    p.add_argument("--rounds", type=int, help="repeat every arm this many times, order rotated (quick 2, full 3)")
    p.add_argument("--loads", help="comma-separated loads, each run in every round (quick and full: 1.3)")
    p.add_argument("--batching", choices=("none", "dynamic", "continuous"), default="continuous")
    p.add_argument("--num-replicas", type=int)
    p.add_argument("--max-batch-size", type=int, help="engine slots per replica")
    p.add_argument("--num-requests", type=int, help="arrivals taken from the trace (a window)")
    p.add_argument("--trace-start", type=int, default=0, help="index of the window's first arrival")
    p.add_argument("--load", type=float, help="one load (same as --loads LOAD): mean arrival rate / measured "
                                              "service rate (see README)")
    p.add_argument("--service-rate-rps", type=float,
                   help="skip calibration: the cluster's service rate (requests/s) for this workload")
    p.add_argument("--calibration-s", type=float, help="closed-loop calibration length (s)")
    p.add_argument("--max-span-s", type=float,
                   help="drop arrivals later than this after time-scaling (bounds the run time)")
    p.add_argument("--drain-timeout-s", type=float, help="after the last arrival, wait at most this long")
    p.add_argument("--output-scale", type=float, help="replayed length = round(true length x scale)")
    p.add_argument("--max-output-tokens", type=int, help="cap on the replayed output length (0: none)")
    p.add_argument("--client-max-tokens", type=int, default=1024,
                   help="max_tokens every request sends, as a client default would (the replayed length "
                        "goes only in benchmark-only fields, so it cannot leak into SSJF)")
    p.add_argument("--max-prompt-tokens", type=int, help="cut prompts to this many tokens (0: no cut)")
    p.add_argument("--split", choices=("test", "val", "heldout"), default="test",
                   help="predictor split the prompts come from (never train)")
    p.add_argument("--split-seed", type=int, help="predictor split seed (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (same seed -> same requests)")
    p.add_argument("--slo-jct-base-s", type=float, default=5.0)
    p.add_argument("--slo-jct-per-token-s", type=float, default=0.05)
    p.add_argument("--poll-interval-s", type=float, default=0.25)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.load is not None:
        args.loads = str(args.load)
    if args.natural:
        natural_options(args)
    for key, value in PRESETS["natural" if args.natural else "quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.loads = [float(x) for x in str(args.loads).split(",") if x.strip()]
    args.arms = [parse_arm(p.strip()) for p in args.policies.split(",") if p.strip()]
    args.labels = [arm.label for arm in args.arms]
    args.policies = [arm.policy for arm in args.arms]
    if not args.arms or len(set(args.labels)) != len(args.labels):
        raise SystemExit(f"--policies: give distinct arms (got {args.labels})")
    if args.rounds < 1 or not args.loads or min(args.loads) <= 0:
        raise SystemExit("--rounds must be >= 1 and --loads positive")
    args.trace = args.trace or str(DEFAULT_TRACE if DEFAULT_TRACE.exists() else FIXTURE_TRACE)
    args.prompts = args.prompts or str(DEFAULT_PROMPTS if DEFAULT_PROMPTS.exists() else FIXTURE_PROMPTS)
    return args


def natural_options(args: argparse.Namespace) -> None:
    for key in NATURAL_FIXED:
        if getattr(args, key) not in (None, PRESETS["natural"][key]):
            raise SystemExit(f"--natural replays the recorded lengths unscaled and prompts uncut: drop "
                             f"--{key.replace('_', '-')}")
    if args.model is None and args.config is None:
        raise SystemExit("--natural: name the model that made the labels (--model NAME or --config)")
    args.prompts = args.prompts or str(DEFAULT_LABELS if DEFAULT_LABELS.exists() else FIXTURE_LABELS)


def config_overrides(args: argparse.Namespace) -> dict:
    import yaml

    out = _model_overrides(args)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    # The predictor was trained on unscaled response lengths: bring its predictions to the replayed
    # (scaled) lengths, the unit of max_tokens and of linear aging. The replay's hidden stop length and
    # the oracle's true length are benchmark-only fields: the app must accept them.
    return {"predictor.length_scale": args.output_scale, "router.allow_benchmark_fields": True, **out,
            "engine.batching": args.batching,
            "engine_replicas.num_replicas": args.num_replicas, "engine.max_batch_size": args.max_batch_size}


def _model_overrides(args: argparse.Namespace) -> dict:
    """--model; without it the demo model and its predictor, unless --config names a config (its model)."""
    from deployments.config import DEMO_OVERRIDES

    if args.model is None and args.config:
        return {}
    if args.model in (None, DEMO_OVERRIDES["engine.model"]):
        return dict(DEMO_OVERRIDES)
    return {"engine.model": args.model}
