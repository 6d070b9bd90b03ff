"""Choose scheduler settings in the calibrated simulator on a tuning workload, never on evaluation data.

Invariant: the tuning workload takes prompts only from the predictor's `val` split and arrivals only
from a trace window that starts after the live replay's default window, so a setting chosen here is
judged by `bench.replay` (test-split prompts, the first window) on data the choice never saw. The cost
model is fitted from a live run (bench.sim.fit); predictions come from the real predictor, scaled like
the replay's; every ordering decision is router.Scheduler's.

    python -m bench.sim.tune --fit-from runs/replay_quick --loads 1.0,1.3 \
        --arms fcfs,ssjf,sjf-oracle,ssjf@aging_half_life_s=5,ssjf@aging=linear

Prints one table per load (medians over `--seeds` arrival windows) and a JSON last line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.common import HelpFormatter
from bench.replay.cli import DEFAULT_PROMPTS, DEFAULT_TRACE, FIXTURE_PROMPTS, FIXTURE_TRACE, parse_arm
from bench.replay.trace import read_trace, scale_to_rate, window
from bench.replay.workload import build_workload, count_tokens, demo_tokenizer, load_prompt_rows
from bench.sim.cluster import Workload, simulate
from bench.sim.extrapolate import capacity_rps
from bench.sim.fit import fit_cost
from bench.sim.records import Setup, read_rows, read_setup, to_requests


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sim.tune", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--fit-from", required=True, metavar="DIR", help="a bench.replay output directory")
    p.add_argument("--trace", default=str(DEFAULT_TRACE if DEFAULT_TRACE.exists() else FIXTURE_TRACE))
    p.add_argument("--prompts", default=str(DEFAULT_PROMPTS if DEFAULT_PROMPTS.exists() else FIXTURE_PROMPTS))
    p.add_argument("--predictor", default=None, help="checkpoint (default: the shipped default)")
    p.add_argument("--arms", default="fcfs,ssjf,sjf-oracle")
    p.add_argument("--loads", default="1.3")
    p.add_argument("--num-requests", type=int, default=200, help="arrivals per tuning window")
    p.add_argument("--first-window-start", type=int, default=1000,
                   help="trace index of the first tuning window (the replay uses 0..num_requests)")
    p.add_argument("--seeds", type=int, default=5, help="tuning windows (consecutive, each its own prompts)")
    p.add_argument("--output-scale", type=float, default=0.125)
    p.add_argument("--max-output-tokens", type=int, default=128)
    p.add_argument("--max-prompt-tokens", type=int, default=256)
    p.add_argument("--client-max-tokens", type=int, default=1024)
    return p.parse_args(argv)


def tuning_pool(args):
    """Val-split prompt rows with the predictor's (scaled) prediction and prompt size per row."""
    from proxy_model import load_predictor

    tokenizer = demo_tokenizer()
    predictor = load_predictor(args.predictor)
    seed = int(predictor.info()["split"]["seed"])
    rows = load_prompt_rows(args.prompts, tokenizer, seed, "val")
    return rows, tokenizer, predictor


def workload_for(args, rows, tokenizer, predictor, offsets_s: np.ndarray, seed: int) -> Workload:
    items = build_workload(offsets_s, rows, seed, args.output_scale, args.max_output_tokens, tokenizer,
                           args.max_prompt_tokens, args.client_max_tokens)
    prompts = [it.prompt for it in items]
    predicted = np.asarray(predictor.predict(prompts)) * args.output_scale
    return Workload(np.array([it.arrival_s for it in items]), np.array([it.output_tokens for it in items]),
                    predicted, np.asarray(count_tokens(prompts, tokenizer)),
                    [{"max_tokens": it.max_tokens} for it in items])


def run_load(args, setup: Setup, cost, arms, base: list[Workload], load: float) -> dict:
    """Every arm on every tuning window at `load` x the fitted nominal capacity."""
    per_arm: dict[str, list[dict]] = {arm.label: [] for arm in arms}
    for k, w in enumerate(base):
        rate_rps = load * setup.num_replicas * capacity_rps(setup.batching, cost, w)
        scaled = Workload(scale_to_rate(w.arrival_s, rate_rps), w.true_output_tokens, w.predicted_output_tokens,
                          w.prompt_tokens, w.record_fields)
        for arm in arms:
            per_arm[arm.label].append(simulate(scaled, front="cluster", config=setup_with(setup, arm).config(arm.label),
                                               batching=setup.batching, cost=cost,
                                               num_replicas=setup.num_replicas, seed=k))
    return summarize(per_arm)


def setup_with(setup: Setup, arm) -> Setup:
    return Setup(setup.batching, setup.num_replicas, setup.max_batch_size, setup.batch_wait_s, setup.scheduler,
                 {arm.label: arm.overrides}, setup.client_max_tokens)


def summarize(per_arm: dict[str, list[dict]]) -> dict:
    """Medians over windows of mean/p99 JCT and max wait, and of the per-window ratio to FCFS."""
    fcfs = per_arm.get("fcfs")
    out = {}
    for label, runs in per_arm.items():
        row = {key: float(np.median([r[key] for r in runs])) for key in ("mean_jct_s", "p99_jct_s", "max_queue_wait_s")}
        if fcfs:
            for key in ("mean_jct_s", "p99_jct_s"):
                row[f"{key}_over_fcfs"] = float(np.median([r[key] / f[key] for r, f in zip(runs, fcfs)]))
        out[label] = row
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    setup = read_setup(Path(args.fit_from) / "summary.json")
    cost = fit_cost(to_requests(read_rows(Path(args.fit_from) / "requests.jsonl")), setup).cost
    arms = [parse_arm(a.strip()) for a in args.arms.split(",") if a.strip()]
    rows, tokenizer, predictor = tuning_pool(args)
    times = read_trace(args.trace)
    base = [workload_for(args, rows, tokenizer, predictor,
                         window(times, args.num_requests, args.first_window_start + k * args.num_requests), k)
            for k in range(args.seeds)]
    result = {}
    for load in (float(x) for x in args.loads.split(",")):
        result[f"{load:g}"] = table = run_load(args, setup, cost, arms, base, load)
        print(f"load {load:g}: medians over {args.seeds} val-split tuning windows (simulated, fitted cost)")
        print(f"{'arm':<34}{'mean JCT':>9}{'p99':>8}{'max wait':>9}{'mean/FCFS':>10}{'p99/FCFS':>9}")
        for label, r in table.items():
            print(f"{label:<34}{r['mean_jct_s']:>9.2f}{r['p99_jct_s']:>8.2f}{r['max_queue_wait_s']:>9.1f}"
                  f"{r.get('mean_jct_s_over_fcfs', float('nan')):>10.3f}{r.get('p99_jct_s_over_fcfs', float('nan')):>9.3f}")
    print(json.dumps({"fit_from": args.fit_from, "cost": cost.__dict__, "by_load": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
