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

from bench import replay_client as client
from bench.replay_cli import config_overrides, parse_args
from bench.replay_metrics import RequestResult, Slo, summarize
from bench.replay_plots import write_plots
from bench.replay_report import comparison, dumps, table
from bench.replay_serve import cpus_needed, deployed_app, load_app_config, serve_session
from bench.replay_trace import mean_rate_rps, read_trace, scale_to_rate, window
from bench.replay_workload import build_workload, demo_tokenizer, fingerprint, load_prompt_rows

CALIBRATION_SEED_OFFSET = 1000  # calibration draws its own requests from the same pool
WARMUP_TOKENS = 8


def log(msg: str) -> None:
    print(f"[replay] {msg}", file=sys.stderr, flush=True)


def predictor_split_seed(config) -> int:
    """The split seed stored in the predictor checkpoint the app will load (its config.json)."""
    from proxy_model import DEFAULT_CHECKPOINT

    path = Path(config.predictor.checkpoint or DEFAULT_CHECKPOINT) / "config.json"
    try:
        return int(json.loads(path.read_text())["split"]["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # refuse rather than risk training prompts
        raise SystemExit(f"cannot read the predictor's split seed from {path} ({exc!r}); pass --split-seed") from None


def workload_options(args, tokenizer) -> dict:
    return {"output_scale": args.output_scale, "max_output_tokens": args.max_output_tokens or None,
            "tokenizer": tokenizer, "max_prompt_tokens": args.max_prompt_tokens or None}


def timed_workload(args, pool, offsets_s, tokenizer, service_rps: float):
    """Scale the window to load x service rate, keep arrivals within max_span_s, build the items."""
    target_rps = args.load * service_rps
    scaled = scale_to_rate(offsets_s, target_rps)
    kept = scaled[scaled <= args.max_span_s]
    items = build_workload(kept, pool, args.seed, **workload_options(args, tokenizer))
    return items, {"target_rps": target_rps, "num_requests": len(items), "arrival_span_s": float(kept[-1]),
                   "offered_rps": mean_rate_rps(kept) if len(kept) > 1 else float("nan"),
                   "dropped_beyond_max_span": int(scaled.size - kept.size)}


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


def calibrate(base_url: str, args, pool, tokenizer, slots: int) -> dict:
    """Closed loop with 2 x slots in flight for calibration_s; output tokens/s of the requests that
    finished after a ramp of a quarter of the window."""
    items = build_workload(np.zeros(50 * slots), pool, args.seed + CALIBRATION_SEED_OFFSET,
                           **workload_options(args, tokenizer))
    duration_s = args.calibration_s
    results = asyncio.run(client.closed_loop(base_url, items, 2 * slots, duration_s))
    ramp_s = duration_s / 4
    done = [r for r in results if r.ok and r.finished_s >= ramp_s]
    window_s = duration_s - ramp_s
    tokens = sum(r.output_tokens for r in done)
    if not done:
        raise RuntimeError(f"calibration completed no request in {duration_s:.0f} s")
    return {"duration_s": duration_s, "measured_window_s": window_s, "completed": len(done),
            "output_tokens_per_s": tokens / window_s, "requests_per_s": len(done) / window_s,
            "concurrency": 2 * slots, "errors": sum(r.error not in (None, "timeout") for r in results)}


def run_policy(base_url: str, policy: str, items, args, max_wait_s: float):
    deadline_s = items[-1].arrival_s + args.drain_timeout_s
    bar = tqdm(total=len(items), desc=f"{policy:>10}", unit="req", file=sys.stderr, leave=True)
    try:
        results, samples = asyncio.run(client.replay(base_url, items, deadline_s, on_done=lambda r: bar.update(1),
                                                     poll_interval_s=args.poll_interval_s))
    finally:
        bar.close()
    slo = Slo(args.slo_jct_base_s, args.slo_jct_per_token_s)
    return results, samples, summarize(results, slo, max_wait_s)


def run_policies(base_url: str, args, pool, offsets_s, tokenizer) -> dict:
    """Deploy, warm up, (calibrate once), replay and delete, for each policy in turn."""
    report = {"policies": {}, "calibration": None, "workload": None}
    raw = {}
    items = None
    for policy in args.policies:
        config = load_app_config(args.config, {**config_overrides(args), "scheduler.policy": policy})
        slots = config.engine_replicas.num_replicas * (1 if args.batching == "none" else config.engine.max_batch_size)
        started = time.monotonic()
        with deployed_app(config):
            log(f"{policy}: deployed in {time.monotonic() - started:.1f} s; warming up")
            warm_up(base_url, pool, slots, args.seed)
            if items is None:
                items, report = prepare_workload(base_url, args, pool, offsets_s, tokenizer, slots, report)
            asyncio.run(wait_idle(base_url))
            results, samples, summary = run_policy(base_url, policy, items, args, config.scheduler.max_wait_s)
        report["policies"][policy] = summary
        raw[policy] = (results, samples)
        log(f"{policy}: mean JCT {summary['mean_jct_s']:.2f} s, p99 {summary['p99_jct_s']:.2f} s, "
            f"errors {summary['num_errors']}")
    report["max_wait_s"] = config.scheduler.max_wait_s
    report["comparison"] = comparison(report["policies"])
    report["_raw"] = raw
    return report


def prepare_workload(base_url, args, pool, offsets_s, tokenizer, slots, report):
    if args.service_rate_rps:
        service_rps = args.service_rate_rps
        report["calibration"] = {"service_rate_rps": service_rps, "source": "--service-rate-rps"}
    else:
        log(f"calibrating for {args.calibration_s:.0f} s (closed loop, {2 * slots} in flight)")
        cal = calibrate(base_url, args, pool, tokenizer, slots)
        probe = build_workload(offsets_s, pool, args.seed, **workload_options(args, tokenizer))
        mean_tokens = float(np.mean([it.output_tokens for it in probe]))
        service_rps = cal["output_tokens_per_s"] / mean_tokens
        report["calibration"] = {**cal, "workload_mean_output_tokens": mean_tokens, "service_rate_rps": service_rps}
        log(f"calibration: {cal['output_tokens_per_s']:.0f} output tok/s -> service rate {service_rps:.2f} req/s")
    items, timing = timed_workload(args, pool, offsets_s, tokenizer, service_rps)
    report["workload"] = {**timing, "fingerprint": fingerprint(items), "seed": args.seed,
                          "mean_output_tokens": float(np.mean([it.output_tokens for it in items])),
                          "max_output_tokens": max(it.output_tokens for it in items)}
    return items, report


def write_outputs(out_dir: Path, args, report: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = report.pop("_raw")
    with open(out_dir / "requests.jsonl", "w") as f:
        for policy, (results, _) in raw.items():
            for r in results:
                f.write(dumps({"policy": policy, **asdict(r)}) + "\n")
    (out_dir / "queue_samples.json").write_text(dumps({p: s for p, (_, s) in raw.items()}))
    w = report["workload"]
    title = (f"{args.batching} batching, {args.num_replicas} replicas x {args.max_batch_size} slots, load "
             f"{args.load:g}, {w['num_requests']} requests, outputs <= {w['max_output_tokens']} tokens")
    jcts = {p: [r.jct_s for r in results if r.ok] for p, (results, _) in raw.items()}
    report["plots"] = write_plots(out_dir, jcts, report["policies"], {p: s for p, (_, s) in raw.items()}, title)
    (out_dir / "summary.json").write_text(dumps(report, indent=2) + "\n")
    return report


def run(args) -> dict:
    config = load_app_config(args.config, config_overrides(args))
    split_seed = args.split_seed if args.split_seed is not None else predictor_split_seed(config)
    tokenizer = demo_tokenizer()
    pool = load_prompt_rows(args.prompts, tokenizer, split_seed, args.split)
    offsets_s = window(read_trace(args.trace), args.num_requests, args.trace_start)
    log(f"{len(pool)} {args.split}-split prompts (split seed {split_seed}) from {args.prompts}; "
        f"{len(offsets_s)} arrivals from {args.trace}")
    started = time.monotonic()
    with serve_session(cpus_needed(config)) as base_url:
        report = run_policies(base_url, args, pool, offsets_s, tokenizer)
    report["setup"] = {
        "command": " ".join(["python -m bench.replay"] + sys.argv[1:]), "trace": args.trace,
        "prompts": args.prompts, "split": args.split, "split_seed": split_seed, "batching": args.batching,
        "num_replicas": args.num_replicas, "max_batch_size": args.max_batch_size, "load": args.load,
        "output_scale": args.output_scale, "max_output_tokens": args.max_output_tokens,
        "max_prompt_tokens": args.max_prompt_tokens, "config": args.config, "wall_s": time.monotonic() - started,
        "slo": Slo(args.slo_jct_base_s, args.slo_jct_per_token_s).describe(),
        "load_definition": "mean arrival rate / service rate; service rate = calibration output tok/s "
                           "/ workload mean output tokens",
        "paper_first25pct_rps": "paper-style: N//4 completions / time from first send to the (N//4)-th",
    }
    return write_outputs(Path(args.out), args, report)


def main(argv=None) -> None:
    args = parse_args(argv)
    report = run(args)
    print(table(report["policies"]))
    print("* 25%-rate: paper-style completion rate of the first 25% of jobs; goodput SLO: "
          + report["setup"]["slo"])
    log(f"wrote {Path(args.out) / 'summary.json'} and {', '.join(report['plots'])}")
    print(dumps({"policies": report["policies"], "comparison": report["comparison"]}), flush=True)


if __name__ == "__main__":
    main()
