"""Router admission capacity: the app with simulated engines (configs/sim.yaml: many replicas, many slots,
no model weights) driven at increasing offered rates of short requests.

    python -m bench.capacity [--quick] [--replicas 64] [--slots 8] [--rates 50,100,200] [--profile]

Per rate: admitted req/s, router-added latency p50/p99 and its parts (bench/capacity/report.py), the
predictor's mean batch, CPU cores used by the router (and per admitted request), the engines, this driver
and the whole machine, and the router's RSS; also what router and engines use when idle. The knee is the highest rate whose p99 router-added latency stays under 50 ms while the
admitted rate keeps up; the rate at half the knee is then measured again for `router_added_p50_ms`.
Writes docs/bench/capacity_summary.json and capacity.png (with --out), and prints the table; the last
stdout line is the JSON summary. Run it alone (`flock /tmp/ssjf_ray.lock ...`): it is a timed measurement.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any, Optional

import psutil

from bench.capacity import report
from bench.capacity.driver import offer
from bench.capacity.procs import ENGINE_TITLE, ROUTER_TITLE, ProcessGroup, machine_busy_cores
from bench.common import REPO_ROOT, HelpFormatter, deployed_app, serve_session

SIM_CONFIG = REPO_ROOT / "configs" / "sim.yaml"
# Each simulated replica is a Ray worker with torch imported (~240 MB unique memory): 32 fit beside other work
# on a 24 GB machine, 64 need ~15 GB.
QUICK = {"rates": [5, 10, 25, 50, 100, 200, 300, 400, 600], "duration_s": 6.0, "replicas": 32}
FULL = {"rates": [5, 10, 25, 50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000], "duration_s": 20.0,
        "replicas": 64}
ENGINE_CPUS_TOTAL = 1.4  # what all engine replicas reserve together; the router reserves 0.5 of 2
IDLE_TIMEOUT_S = 60.0


def log(message: str) -> None:
    print(f"[capacity {time.strftime('%H:%M:%S')}] {message}", flush=True)


def app_overrides(args: argparse.Namespace) -> dict[str, Any]:
    model = "sim" + (f":{args.costs}" if args.costs else "")
    return {"engine.model": model, "engine.max_batch_size": args.slots,
            "engine_replicas.num_replicas": args.replicas,
            "engine_replicas.ray_actor_options": {"num_cpus": round(ENGINE_CPUS_TOTAL / args.replicas, 4)},
            "predictor.checkpoint": args.predictor}


class Usage:
    """CPU seconds of router, engines, driver and machine over one measured interval."""

    def __init__(self) -> None:
        self.groups = {"router": ProcessGroup.named(ROUTER_TITLE), "engines": ProcessGroup.named(ENGINE_TITLE),
                       "driver": ProcessGroup.this_process()}

    def start(self) -> None:
        self._cpu = {name: group.cpu_s() for name, group in self.groups.items()}
        self._machine, self._wall_s = psutil.cpu_times(), time.monotonic()

    def stop(self) -> dict[str, float]:
        wall_s = time.monotonic() - self._wall_s
        usage = {f"{name}_cpu_cores": round((group.cpu_s() - self._cpu[name]) / wall_s, 3)
                 for name, group in self.groups.items()}
        usage["machine_busy_cores"] = round(machine_busy_cores(self._machine, psutil.cpu_times(), wall_s), 3)
        usage["router_rss_mb"] = round(self.groups["router"].rss_mb(), 1)
        return usage


async def wait_idle(handle) -> None:
    deadline_s = time.monotonic() + IDLE_TIMEOUT_S
    while True:
        scheduler = (await handle.status.remote())["scheduler"]
        if scheduler["num_waiting"] == 0 and scheduler["num_running"] == 0:
            return
        if time.monotonic() > deadline_s:
            raise TimeoutError(f"router not idle after {IDLE_TIMEOUT_S:g} s: {scheduler}")
        await asyncio.sleep(0.2)


async def measure(handle, usage: Usage, rate_per_s: float, args: argparse.Namespace, seed: int) -> dict:
    await wait_idle(handle)
    before = (await handle.status.remote())["predictor"]
    usage.start()
    samples = await offer(handle, rate_per_s, args.duration_s, args.max_tokens, seed)
    used = usage.stop()
    after = (await handle.status.remote())["predictor"]
    batches, prompts = after["batches"] - before["batches"], after["prompts"] - before["prompts"]
    used["predictor_mean_batch"] = round(prompts / batches, 2) if batches else None
    used["predictor_ms_per_prompt"] = round((after["seconds"] - before["seconds"]) * 1000 / max(prompts, 1), 3)
    row = report.summarize_rate(rate_per_s, args.duration_s, samples, used)
    log(" ".join(f"{label}={row.get(key)}" for key, label in report.COLUMNS))
    return row


async def idle_usage(usage: Usage, duration_s: float) -> dict[str, float]:
    """What the router and engines burn with no requests (Ray's and Serve's background work, replica sync)."""
    usage.start()
    await asyncio.sleep(duration_s)
    idle = usage.stop()
    log(f"idle: {idle}")
    return idle


async def sweep(handle, args: argparse.Namespace) -> dict[str, Any]:
    usage = Usage()
    await measure(handle, usage, min(args.rates), args, seed=-1)  # warm-up: predictor, handles, allocator
    await wait_idle(handle)
    idle = await idle_usage(usage, args.duration_s)
    rows, misses = [], 0
    for index, rate in enumerate(args.rates):
        rows.append(await measure(handle, usage, rate, args, seed=index))
        misses = 0 if report.keeps_up(rows[-1]) else misses + 1
        if misses == 2:
            break
    knee = report.knee(rows)
    half = await measure(handle, usage, knee / 2, args, seed=99) if knee else None
    profile = None
    if args.profile:
        from bench.capacity.profile import profile_router

        profile = await profile_router(handle, usage, knee or rows[0]["offered_per_s"], args, measure)
    return {"rows": rows, "knee": knee, "half": half, "profile": profile, "idle": idle}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.common import load_app_config

    config = load_app_config(str(SIM_CONFIG), app_overrides(args))
    started_s = time.monotonic()
    with serve_session(num_cpus=2), deployed_app(config, timeout_s=args.startup_timeout_s):
        startup_s = time.monotonic() - started_s
        from ray import serve

        handle = serve.get_app_handle("default")
        engines = ProcessGroup.named(ENGINE_TITLE)
        memory = {"engine_replica_rss_mb": round(engines.rss_mb() / max(len(engines.processes), 1), 1),
                  "engine_replica_uss_mb": round(engines.uss_mb() / max(len(engines.processes), 1), 1),
                  "engine_processes": len(engines.processes)}
        log(f"{args.replicas} replicas x {args.slots} slots up in {startup_s:.0f} s; {memory}")
        result = asyncio.run(sweep(handle, args))
    return {**result, "memory": memory, "startup_s": round(startup_s, 1), "config": app_overrides(args)}


def summary(args: argparse.Namespace, result: dict) -> dict[str, Any]:
    half = result["half"]
    return {"max_admissions_per_s": result["knee"],
            "router_added_p50_ms": half["router_added_p50_ms"] if half else None,
            "half_knee_rate_per_s": half["offered_per_s"] if half else None,
            "p99_bound_ms": report.P99_BOUND_MS, "replicas": args.replicas, "slots_per_replica": args.slots,
            "max_tokens": args.max_tokens, "duration_s_per_rate": args.duration_s,
            "predictor": args.predictor or "default", "costs": args.costs or "sim defaults",
            "startup_s": result["startup_s"], **result["memory"],
            "idle": result["idle"], "rows": result["rows"], "half": half, "profile": result["profile"],
            "config": result["config"],
            "note": "timed on a shared 2-core machine: other processes' CPU shows in machine_busy_cores"}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"rates {QUICK['rates']}, {QUICK['duration_s']:g} s each")
    parser.add_argument("--replicas", type=int, help="engine replicas; default: 32 with --quick, else 64")
    parser.add_argument("--slots", type=int, default=8, help="engine slots per replica")
    parser.add_argument("--max-tokens", type=int, default=4, help="output tokens per request (ignore_eos)")
    parser.add_argument("--rates", help="comma-separated offered rates (req/s); default: by --quick")
    parser.add_argument("--duration-s", type=float, help="seconds per rate; default: by --quick")
    parser.add_argument("--costs", default="", help="sim costs, e.g. decode_step_ms=10,join_ms=5 (engine/sim_runner.py)")
    parser.add_argument("--predictor", default=None, help="predictor checkpoint (default: the shipped one; 'fast')")
    parser.add_argument("--profile", action="store_true", help="py-spy the router at the knee (or the lowest rate when none keeps up; needs ptrace)")
    parser.add_argument("--startup-timeout-s", type=float, default=900.0)
    parser.add_argument("--out", default=None, help="write capacity_summary.json and capacity.png here")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.rates = sorted(float(r) for r in args.rates.split(",")) if args.rates else preset["rates"]
    args.duration_s = args.duration_s or preset["duration_s"]
    args.replicas = args.replicas or preset["replicas"]
    if args.replicas < 1 or args.slots < 1 or args.max_tokens < 1 or min(args.rates) <= 0:
        parser.error("--replicas, --slots, --max-tokens and every rate must be > 0")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    result = summary(args, run(args))
    print(report.table(result["rows"] + ([result["half"]] if result["half"] else [])), flush=True)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "capacity_summary.json").write_text(json.dumps(result, indent=1) + "\n")
        report.plot(result["rows"], out / "capacity.png",
                    f"{args.replicas} sim replicas x {args.slots} slots, {args.max_tokens}-token requests, "
                    f"knee {result['max_admissions_per_s']:g}/s")
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "half", "profile", "config", "idle")}),
          flush=True)
    return 0
