"""Discrete-event simulator driving router.Scheduler with simulated time.

Invariant: the simulator never orders requests itself; every queueing decision is a call into the
same router.Scheduler the live router deployment uses. Everything is seeded and deterministic.

    python -m bench.sim                        # 100k requests, 64 replicas, compare fronts/policies
    python -m bench.sim --reproduce-paper /work/shared/data/lengths/lmsys_vicuna13b_lengths_with_ssjf_cls_predictions.csv

The last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from router import (AGING_KINDS, DEFAULT_AGING, DEFAULT_AGING_HALF_LIFE_S, DEFAULT_AGING_TOKENS_PER_S,
                    DEFAULT_MAX_WAIT_S, SchedulerConfig)
from bench.common import HelpFormatter
from bench.sim import workload as wl
from bench.sim.cluster import Workload, simulate
from bench.sim.engine import CostModel, nominal_capacity_rps

DEFAULT_CONFIGS = "cluster:ssjf,p2c:ssjf,cluster:fcfs,p2c:fcfs,cluster:sjf-oracle"
PAPER_MODES = {"no_batching": "none", "dynamic": "dynamic", "continuous": "continuous"}
NO_GUARD = dict(aging="linear", aging_tokens_per_s=0.0, max_wait_s=math.inf)  # pure policy order


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sim", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--num-requests", type=int, default=100_000)
    p.add_argument("--replicas", type=int, default=64)
    p.add_argument("--batching", choices=("none", "dynamic", "continuous"), default="none")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma list of FRONT:POLICY, FRONT in cluster|p2c")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("engine cost model (override the preset)")
    g.add_argument("--preset", choices=("paper", "live"), default="paper",
                   help="paper: 0.1 s + 0.02 s/token, batch 4; live: the --live-* numbers")
    g.add_argument("--request-overhead-s", type=float)
    g.add_argument("--per-token-s", type=float)
    g.add_argument("--step-growth-s", type=float)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--batch-wait-s", type=float)
    g = p.add_argument_group("live engine preset (calibrate from the real engine)")
    g.add_argument("--live-request-overhead-s", type=float, default=0.05)
    g.add_argument("--live-per-token-s", type=float, default=0.004)
    g.add_argument("--live-step-growth-s", type=float, default=0.0002)
    g.add_argument("--live-batch-size", type=int, default=8)
    g.add_argument("--live-batch-wait-s", type=float, default=0.02)
    g = p.add_argument_group("workload")
    g.add_argument("--lengths", metavar="CSV", help="paper-format lengths/predictions CSV (default: synthetic)")
    g.add_argument("--prediction-noise-sigma", type=float, default=0.5, help="synthetic predictor noise")
    g.add_argument("--arrival", choices=("poisson", "burst"), default="poisson")
    g.add_argument("--load", type=float, default=0.95, help="arrival rate as a fraction of nominal capacity")
    g.add_argument("--rate-rps", type=float, help="Poisson rate; overrides --load")
    g.add_argument("--burst-size", type=int, default=50)
    g.add_argument("--burst-interval-s", type=float, help="default: burst_size / (load * capacity)")
    g = p.add_argument_group("scheduler (router.SchedulerConfig)")
    g.add_argument("--aging", choices=AGING_KINDS, default=DEFAULT_AGING)
    g.add_argument("--aging-half-life-s", type=float, default=DEFAULT_AGING_HALF_LIFE_S, help="relative aging")
    g.add_argument("--aging-tokens-per-s", type=float, default=DEFAULT_AGING_TOKENS_PER_S, help="linear aging")
    g.add_argument("--max-wait-s", type=float, default=DEFAULT_MAX_WAIT_S)
    g.add_argument("--max-queue-len", type=int, default=10**9, help="simulator default: effectively unbounded")
    g = p.add_argument_group("paper reproduction")
    g.add_argument("--reproduce-paper", metavar="CSV")
    g.add_argument("--paper-num-requests", type=int, default=5_000)
    g.add_argument("--paper-replicas", type=int, default=1)
    return p.parse_args(argv)


def cost_model(args: argparse.Namespace) -> CostModel:
    if args.preset == "live":
        base = CostModel(args.live_request_overhead_s, args.live_per_token_s, args.live_step_growth_s,
                         args.live_batch_size, args.live_batch_wait_s)
    else:
        base = CostModel()
    overrides = {k: getattr(args, k) for k in ("request_overhead_s", "per_token_s", "step_growth_s",
                                               "batch_size", "batch_wait_s") if getattr(args, k) is not None}
    return CostModel(**{**base.__dict__, **overrides})


def make_workload(args, lengths: wl.Lengths, batching: str, cost: CostModel, num_replicas: int,
                  rng: np.random.Generator) -> tuple[Workload, float]:
    """Arrivals at `load` x nominal capacity (or --rate-rps); returns the workload and its rate."""
    true = lengths.true_output_tokens
    groups = true[: (true.size // cost.batch_size) * cost.batch_size].reshape(-1, cost.batch_size)
    mean_max = float(groups.max(axis=1).mean()) if groups.size else float(true.mean())
    capacity_rps = num_replicas * nominal_capacity_rps(batching, cost, float(true.mean()), mean_max)
    rate_rps = args.rate_rps or args.load * capacity_rps
    if args.arrival == "burst":
        interval_s = args.burst_interval_s or args.burst_size / rate_rps
        arrival_s = wl.burst_arrivals_s(true.size, args.burst_size, interval_s)
    else:
        arrival_s = wl.poisson_arrivals_s(true.size, rate_rps, rng)
    return Workload(arrival_s, true, lengths.predicted_output_tokens), rate_rps


def scheduler_config(args, policy: str, guard: bool = True) -> SchedulerConfig:
    extra = {} if guard else NO_GUARD
    return SchedulerConfig(**{"policy": policy, "aging": args.aging, "aging_half_life_s": args.aging_half_life_s,
                              "aging_tokens_per_s": args.aging_tokens_per_s, "max_wait_s": args.max_wait_s,
                              "max_queue_len": args.max_queue_len, **extra})


def compare(args) -> dict:
    rng = np.random.default_rng(args.seed)
    source = wl.load_lengths_csv(args.lengths) if args.lengths else None
    lengths = (wl.sample(source, args.num_requests, rng) if source is not None
               else wl.synthetic_lengths(args.num_requests, rng, args.prediction_noise_sigma))
    cost = cost_model(args)
    workload, rate_rps = make_workload(args, lengths, args.batching, cost, args.replicas, rng)
    print(f"# {args.num_requests} requests, {args.replicas} replicas, batching={args.batching}, "
          f"{args.arrival} at {rate_rps:.2f} req/s, cost={cost}")
    header = f"{'config':<20}{'mean_jct_s':>11}{'p50_jct_s':>10}{'p99_jct_s':>10}{'mean_wait_s':>12}" \
             f"{'max_wait_s':>11}{'thr_rps':>9}{'wall_s':>8}"
    print(header)
    results = {}
    for item in args.configs.split(","):
        front, policy = item.split(":")
        t0 = time.perf_counter()
        m = simulate(workload, front=front, config=scheduler_config(args, policy), batching=args.batching,
                     cost=cost, num_replicas=args.replicas, seed=args.seed)
        m["wall_s"] = round(time.perf_counter() - t0, 2)
        results[f"{front}/{policy}"] = m
        print(f"{front + '/' + policy:<20}{m['mean_jct_s']:>11.3f}{m['p50_jct_s']:>10.3f}{m['p99_jct_s']:>10.3f}"
              f"{m['mean_queue_wait_s']:>12.3f}{m['max_queue_wait_s']:>11.2f}{m['throughput_rps']:>9.2f}"
              f"{m['wall_s']:>8.2f}", flush=True)
    return {"rate_rps": rate_rps, "batching": args.batching, "replicas": args.replicas, "results": results}


def reproduce_paper(args) -> dict:
    """Paper setting: 0.1 s + 0.02 s/token, batch size --batch-size (default 4), one replica,
    the paper's 5-class predictions; SSJF/oracle without aging or max-wait (the paper has none),
    plus `ssjf_guarded` with the router's default starvation guard."""
    source = wl.load_lengths_csv(args.reproduce_paper)
    cost = cost_model(args)
    out = {}
    for key, batching in PAPER_MODES.items():
        rng = np.random.default_rng(args.seed)
        lengths = wl.sample(source, min(args.paper_num_requests, source.true_output_tokens.size), rng)
        workload, rate_rps = make_workload(args, lengths, batching, cost, args.paper_replicas, rng)
        burst_size = args.burst_size if args.arrival == "burst" else 0
        run = lambda policy, guard: simulate(  # noqa: E731
            workload, front="cluster", config=scheduler_config(args, policy, guard), batching=batching,
            cost=cost, num_replicas=args.paper_replicas, seed=args.seed, burst_size=burst_size)
        fcfs, ssjf, oracle = run("fcfs", False), run("ssjf", False), run("sjf-oracle", False)
        guarded = run("ssjf", True)
        pct = lambda m: round(100.0 * (1.0 - m["mean_jct_s"] / fcfs["mean_jct_s"]), 2)  # noqa: E731
        out[key] = {
            "fcfs_mean_jct_s": round(fcfs["mean_jct_s"], 3),
            "ssjf_mean_jct_s": round(ssjf["mean_jct_s"], 3),
            "sjf_oracle_mean_jct_s": round(oracle["mean_jct_s"], 3),
            "jct_reduction_pct": pct(ssjf),
            "oracle_jct_reduction_pct": pct(oracle),
            "ssjf_guarded_mean_jct_s": round(guarded["mean_jct_s"], 3),
            "guarded_jct_reduction_pct": pct(guarded),
            **({"burst_first25pct_throughput_x": round(ssjf["burst_first25pct_rps"] / fcfs["burst_first25pct_rps"], 2)}
               if burst_size else {}),
            "arrival": args.arrival, "rate_rps": round(rate_rps, 3), "num_requests": lengths.true_output_tokens.size,
        }
        print(f"# {key}: {json.dumps(out[key])}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    if args.reproduce_paper:
        out = reproduce_paper(args)
    else:
        out = compare(args)
        out["wall_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
