"""Live trace replay: FCFS vs SSJF vs SJF-oracle against the real Serve app over loopback HTTP.

    python -m bench.replay --trace PATH --prompts PATH --out DIR [--quick]

Invariant: every policy replays the identical workload (same seed -> same prompts, lengths and
arrival times) on a freshly deployed app within one Ray session; only the sjf-oracle policy reads
`oracle_output_tokens`. Load: arrivals are time-scaled so that the mean arrival rate equals
`load x service rate`, where the service rate (requests/s) is the output tokens/s the cluster
sustained in a short closed-loop calibration (all slots busy, same length distribution) divided by
the workload's mean output length. The last stdout line is `{"policies": {...}}` as JSON.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.replay import client, concurrent
from bench.replay.cli import config_overrides, parse_args
from bench.replay.metrics import Slo, summarize
from bench.replay.plots import write_plots
from bench.common import cpus_needed, deployed_app, load_app_config, serve_session
from bench.replay.compare import compare_rounds, median_summaries, summary_ratios
from bench.replay.natural import agreement_lines, load_label_rows, streamed_tokens
from bench.replay.report import comparison_lines, dumps, table
from bench.replay.trace import TraceError, mean_rate_rps, read_trace, scale_to_rate, window
from bench.replay.workload import build_workload, demo_tokenizer, fingerprint, load_prompt_rows

CALIBRATION_SEED_OFFSET = 1000  # calibration draws its own requests from the same pool
WARMUP_TOKENS = 8


def log(msg: str) -> None:
    print(f"[replay] {msg}", file=sys.stderr, flush=True)


def predictor_split_seed(config) -> int:
    """The split seed stored in the predictor checkpoint the app will load (its config.json)."""
    from proxy_model import DEFAULT_CHECKPOINT
    from proxy_model.predictor import SHIPPED_CHECKPOINTS

    directory = Path(config.predictor.checkpoint or DEFAULT_CHECKPOINT)
    if not directory.is_dir() and (SHIPPED_CHECKPOINTS / directory).is_dir():  # a shipped checkpoint's name
        directory = SHIPPED_CHECKPOINTS / directory
    path = directory / "config.json"
    try:
        return int(json.loads(path.read_text())["split"]["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # refuse rather than risk training prompts
        raise SystemExit(f"cannot read the predictor's split seed from {path} ({exc!r}); pass --split-seed") from None


def workload_options(args, tokenizer) -> dict:
    return {"output_scale": args.output_scale, "max_output_tokens": args.max_output_tokens or None,
            "tokenizer": tokenizer, "max_prompt_tokens": args.max_prompt_tokens or None,
            "client_max_tokens": args.client_max_tokens, "natural": args.natural}


def timed_workload(args, pool, offsets_s, tokenizer, rate: dict, load: float, seed: int):
    """Build the round's requests, then scale the gaps so that the offered work is `load` x capacity:
    `rate` is {"output_tokens_per_s"} from the calibration (service rate = that / this workload's own
    mean length, so a round of longer jobs is not heavier) or {"service_rps"} pinned by
    --service-rate-rps. Only the first target_rps x max_span_s + 1 arrivals are kept, and *they* are
    scaled to the target rate, so the replayed span carries the stated load (scaling the whole window
    and cutting it at max_span_s replayed whatever density its first seconds had: load 0.6 for 1.2)."""
    items = build_workload(offsets_s, pool, seed, **workload_options(args, tokenizer))
    mean_tokens = float(np.mean([it.output_tokens for it in items]))
    service_rps = rate.get("service_rps") or rate["output_tokens_per_s"] / mean_tokens
    target_rps = load * service_rps
    n = len(offsets_s) if not np.isfinite(args.max_span_s) else min(len(offsets_s), int(target_rps * args.max_span_s) + 1)
    n = max(n, 2)
    scaled = scale_to_rate(np.asarray(offsets_s[:n]), target_rps)
    items = [replace(it, arrival_s=float(t)) for it, t in zip(items[:n], scaled)]
    return items, {"target_rps": target_rps, "service_rps": service_rps,
                   "mean_output_tokens": float(np.mean([it.output_tokens for it in items])),
                   "num_requests": len(items), "arrival_span_s": float(scaled[-1]),
                   "offered_rps": mean_rate_rps(scaled), "dropped_beyond_max_span": int(len(offsets_s) - n)}


async def wait_idle(base_url: str, timeout_s: float = 30.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"{base_url}/v1/scheduler") as resp:
                sched = (await resp.json())["scheduler"]
            if sched.get("num_waiting", 0) == 0 and sched.get("num_running", 0) == 0:
                return
            await asyncio.sleep(0.2)
    log(f"warning: the app was not idle after {timeout_s:.0f} s")


def warm_up(base_url: str, pool, slots: int, seed: int) -> None:
    items = build_workload(np.zeros(2 * slots), pool, seed + 1, output_scale=1.0, max_output_tokens=WARMUP_TOKENS)
    items = [replace(it, prompt=it.prompt[:200]) for it in items]
    results = asyncio.run(client.closed_loop(base_url, items, slots, duration_s=120.0))
    bad = [(r.error, r.detail) for r in results if not r.ok]
    if bad:
        raise RuntimeError(f"warm-up requests failed: {bad}")


def calibration_items(args, pool, tokenizer, slots: int) -> list:
    return build_workload(np.zeros(50 * slots), pool, args.seed + CALIBRATION_SEED_OFFSET,
                          **workload_options(args, tokenizer))


def calibrate(base_url: str, args, pool, tokenizer, slots: int) -> dict:
    """Closed loop with 2 x slots in flight for calibration_s; output tokens/s of the requests that
    finished after a ramp of a quarter of the window (natural: of every token streamed after it)."""
    items = calibration_items(args, pool, tokenizer, slots)
    return calibration_rate(asyncio.run(client.closed_loop(base_url, items, 2 * slots, args.calibration_s)),
                            args, slots)


def calibration_rate(results: list, args, slots: int) -> dict:
    duration_s = args.calibration_s
    ramp_s = duration_s / 4
    done = [r for r in results if r.ok and r.finished_s >= ramp_s]
    window_s = duration_s - ramp_s
    tokens = streamed_tokens(results, ramp_s, duration_s) if args.natural else sum(r.output_tokens for r in done)
    if not tokens:
        raise RuntimeError(f"calibration completed no request in {duration_s:.0f} s")
    return {"duration_s": duration_s, "measured_window_s": window_s, "completed": len(done),
            "output_tokens_per_s": tokens / window_s, "requests_per_s": len(done) / window_s,
            "concurrency": 2 * slots, "errors": sum(r.error not in (None, "timeout") for r in results)}


def run_policy(base_url: str, label: str, items, args, max_wait_s: float):
    deadline_s = items[-1].arrival_s + args.drain_timeout_s
    bar = tqdm(total=len(items), desc=f"{label:>10}", unit="req", file=sys.stderr, leave=True)
    try:
        results, samples = asyncio.run(client.replay(base_url, items, deadline_s, on_done=lambda r: bar.update(1),
                                                     poll_interval_s=args.poll_interval_s))
    finally:
        bar.close()
    slo = Slo(args.slo_jct_base_s, args.slo_jct_per_token_s)
    return results, samples, summarize(results, slo, max_wait_s)


def rotated(arms: list, round_index: int) -> list:
    """Round k runs the arms starting at position k, so no arm always runs first or last."""
    k = round_index % len(arms)
    return arms[k:] + arms[:k]


def deploy_and_replay(base_url: str, args, arm, items_for, state: dict):
    """One arm on a freshly deployed app: warm up, (calibrate once per run), wait idle, replay
    `items_for()` (built after the calibration that sets its rate)."""
    config = load_app_config(args.config, {**config_overrides(args), **arm.overrides})
    started = time.monotonic()
    with deployed_app(config):
        log(f"{arm.label}: deployed in {time.monotonic() - started:.1f} s; warming up")
        warm_up(base_url, state["pool"], slots_of(config), args.seed)
        if state["rate"] is None:
            state["rate"] = {"output_tokens_per_s": calibrate_output_rate(base_url, args, state, slots_of(config))}
        items = items_for()
        asyncio.run(wait_idle(base_url))
        return run_policy(base_url, arm.label, items, args, config.scheduler.max_wait_s)


def slots_of(config) -> int:
    per_replica = 1 if config.engine.batching == "none" else config.engine.max_batch_size
    return config.engine_replicas.num_replicas * per_replica


def run_rounds(base_url: str, args, pool, offsets_s, tokenizer) -> dict:
    """For each round, for each load, every arm in rotated order on the round's workload."""
    state = {"pool": pool, "tokenizer": tokenizer, "offsets_s": offsets_s, "calibration": None,
             "rate": {"service_rps": args.service_rate_rps} if args.service_rate_rps else None}
    if args.service_rate_rps:
        state["calibration"] = {"service_rate_rps": args.service_rate_rps, "source": "--service-rate-rps"}
    by_load = {load: {"rounds": [], "raw": [], "workloads": []} for load in args.loads}
    for round_index in range(args.rounds):
        for load in args.loads:
            entry, cache = by_load[load], {}

            def items_for(load=load, entry=entry, cache=cache, seed=args.seed + round_index):
                if "items" not in cache:
                    cache["items"], timing = timed_workload(args, pool, offsets_s, tokenizer, state["rate"], load, seed)
                    entry["workloads"].append({**timing, "fingerprint": fingerprint(cache["items"]), "seed": seed})
                return cache["items"]

            summaries, raw = {}, {}
            outcomes = (concurrent.replay_round(base_url, args, items_for, state) if args.concurrent else
                        ((arm.label, deploy_and_replay(base_url, args, arm, items_for, state))
                         for arm in rotated(args.arms, round_index)))
            for label, (results, samples, summary) in outcomes:
                summaries[label], raw[label] = summary, (results, samples)
                log(f"round {round_index} load {load:g} {label}: mean JCT {summary['mean_jct_s']:.2f} s, "
                    f"p99 {summary['p99_jct_s']:.2f} s, errors {summary['num_errors']}")
            entry["rounds"].append({label: summaries[label] for label in args.labels})
            entry["raw"].append({label: raw[label] for label in args.labels})
    return {"calibration": state["calibration"], "by_load": by_load}


def calibrate_output_rate(base_url, args, state, slots) -> float:
    """Output tokens/s the cluster sustains closed-loop; each round's service rate divides it by that
    round's mean length (timed_workload)."""
    log(f"calibrating for {args.calibration_s:.0f} s (closed loop, {2 * slots} in flight)")
    cal = calibrate(base_url, args, state["pool"], state["tokenizer"], slots)
    state["calibration"] = cal
    log(f"calibration: {cal['output_tokens_per_s']:.0f} output tok/s")
    return cal["output_tokens_per_s"]


def load_report(entry: dict, seed: int) -> dict:
    """Per load: per-round summaries, medians over rounds, comparisons with CIs."""
    results_by_round = [{label: res for label, (res, _) in raw.items()} for raw in entry["raw"]]
    return {"workloads": entry["workloads"], "rounds": entry["rounds"],
            "policies": median_summaries(entry["rounds"]),
            "comparison": {**compare_rounds(results_by_round, seed), **summary_ratios(entry["rounds"])}}


def write_outputs(out_dir: Path, args, run: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    by_load = run["by_load"]
    with open(out_dir / "requests.jsonl", "w") as f:
        for load, entry in by_load.items():
            for round_index, raw in enumerate(entry["raw"]):
                for label, (results, _) in raw.items():
                    for r in results:
                        row = {k: v for k, v in asdict(r).items() if k != "token_times_s"}
                        f.write(dumps({"policy": label, "round": round_index, "load": load, **row}) + "\n")
    loads = {f"{load:g}": load_report(entry, args.seed) for load, entry in by_load.items()}
    primary = f"{args.loads[-1]:g}"
    run_setup = {**setup(args), "wall_s": run["wall_s"]}
    report = {"setup": run_setup, "calibration": run["calibration"], "primary_load": args.loads[-1],
              "policies": loads[primary]["policies"], "comparison": loads[primary]["comparison"],
              "loads": loads, "max_wait_s": run_setup["scheduler"]["max_wait_s"]}
    raw0 = by_load[args.loads[-1]]["raw"]
    jcts = {label: [r.jct_s for raw in raw0 for r in raw[label][0] if r.ok] for label in args.labels}
    w = loads[primary]["workloads"][0]
    title = (f"{args.batching} batching, {args.num_replicas} replicas x {args.max_batch_size} slots, load "
             f"{args.loads[-1]:g}, {w['num_requests']} requests x {args.rounds} rounds")
    (out_dir / "summary.json").write_text(dumps(report, indent=2) + "\n")  # before plots: nothing lost
    report["plots"] = write_plots(out_dir, jcts, report["policies"], {p: s for p, (_, s) in raw0[0].items()},
                                  title, {load: rep["policies"] for load, rep in loads.items()})
    (out_dir / "summary.json").write_text(dumps(report, indent=2) + "\n")
    return report


def setup(args) -> dict:
    config = load_app_config(args.config, config_overrides(args))
    return {
        "command": " ".join(["python -m bench.replay"] + sys.argv[1:]), "trace": args.trace,
        "prompts": args.prompts, "split": args.split, "split_seed": args.split_seed, "batching": args.batching,
        "natural": args.natural, "concurrent": args.concurrent,
        "num_replicas": args.num_replicas, "max_batch_size": args.max_batch_size, "loads": args.loads,
        "rounds": args.rounds, "arms": {arm.label: arm.overrides for arm in args.arms},
        "output_scale": args.output_scale, "max_output_tokens": args.max_output_tokens,
        "client_max_tokens": args.client_max_tokens, "max_prompt_tokens": args.max_prompt_tokens,
        "config": args.config, "scheduler": {k: v for k, v in asdict(config.scheduler).items() if k != "policy"},
        "slo": Slo(args.slo_jct_base_s, args.slo_jct_per_token_s).describe(),
        "load_definition": "mean arrival rate / service rate; service rate = calibration output tok/s "
                           "/ the round's mean replayed length (calibrated once per run)",
    }


def run(args) -> dict:
    config = load_app_config(args.config, config_overrides(args))
    if args.split_seed is None:
        args.split_seed = predictor_split_seed(config)
    tokenizer = demo_tokenizer()
    pool = (load_label_rows(args.prompts, args.split_seed, args.split) if args.natural
            else load_prompt_rows(args.prompts, tokenizer, args.split_seed, args.split))
    offsets_s = window(read_trace(args.trace), args.num_requests, args.trace_start)
    log(f"{len(pool)} {args.split}-split prompts (split seed {args.split_seed}) from {args.prompts}; "
        f"{len(offsets_s)} arrivals from {args.trace}; {args.rounds} rounds x loads {args.loads} x {args.labels}")
    started = time.monotonic()
    with serve_session(cpus_needed(config) * (len(args.arms) if args.concurrent else 1)) as base_url:
        result = run_rounds(base_url, args, pool, offsets_s, tokenizer)
    return write_outputs(Path(args.out), args, {**result, "wall_s": time.monotonic() - started})


def main(argv=None) -> None:
    from proxy_model.data import DataError

    args = parse_args(argv)
    try:
        report = run(args)
    except (TraceError, DataError) as exc:  # bad input files: one clear line naming file and line
        raise SystemExit(f"error: {exc}") from None
    for load, rep in report["loads"].items():
        print(f"load {load}: medians over {args.rounds} rounds (JCT, TTFT, TPOT, ITL in s; goodput SLO "
              f"{report['setup']['slo']})")
        print(table(rep["policies"]))
        print(comparison_lines(rep["comparison"]))
        if args.natural:
            print(agreement_lines(rep["policies"]))
    log(f"wrote {Path(args.out) / 'summary.json'} and {', '.join(report['plots'])}")
    print(dumps({"policies": report["policies"], "comparison": report["comparison"],
                 "loads": {k: {"comparison": v["comparison"]} for k, v in report["loads"].items()}}), flush=True)


if __name__ == "__main__":
    main()
