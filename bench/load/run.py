"""Overload test of the live app: mixed, partly hostile traffic at high concurrency, then a health check.

`python -m bench.load --requests 2000 --concurrency 200 [--url URL] [--seed N] [--timeout-s T]`
Without --url it starts local Ray + Serve (HTTP on a free loopback port), deploys the app with
`OVERLOAD_OVERRIDES` (few slots, a short queue, so load shedding really happens) and shuts it all
down at the end. The last stdout line is the JSON summary.

Invariant: at most `concurrency` requests are in flight, every request and every wait is bounded in
time, and only the given URL (loopback) is contacted. A healthy server ends with `lost == 0` and
`idle_after_load` true: nothing running or waiting, every engine slot free, one more request served.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any, Optional

import aiohttp

from bench.common import HelpFormatter, percentile
from bench.load.traffic import Outcome, Planned, plan, send

# Few slots and a short queue: at 200 concurrent clients the router must shed load with 429s.
OVERLOAD_OVERRIDES = {
    "engine.batching": "continuous",
    "engine.max_batch_size": 4,
    "engine.max_context_tokens": 512,
    "engine_replicas.num_replicas": 2,
    "scheduler.policy": "ssjf",
    "scheduler.max_queue_len": 64,
    "router.request_timeout_s": 60.0,
    "router.max_request_bytes": 262_144,
}
RAY_TEMP_DIR = "/tmp/ray_ssjf_load"
STATUS_POLL_S = 0.5


async def get_status(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "/v1/scheduler", timeout=aiohttp.ClientTimeout(total=15)) as resp:
        resp.raise_for_status()
        return await resp.json()


async def _poll_status(session: aiohttp.ClientSession, url: str, samples: list[tuple[float, int]],
                       stop: asyncio.Event) -> None:
    """Append (router_rss_mb, num_waiting) every STATUS_POLL_S until `stop` is set."""
    while not stop.is_set():
        try:
            status = await get_status(session, url)
            samples.append((status["router_rss_mb"], status["scheduler"]["num_waiting"]))
        except (aiohttp.ClientError, asyncio.TimeoutError, KeyError):
            pass  # a slow status answer under overload is not a failure of the load itself
        try:
            await asyncio.wait_for(stop.wait(), STATUS_POLL_S)
        except asyncio.TimeoutError:
            pass


def is_idle(status: dict) -> bool:
    scheduler = status["scheduler"]
    replicas = status["replicas"].values()
    return (scheduler["num_running"] == 0 and scheduler["num_waiting"] == 0 and len(replicas) > 0
            and all(r.get("engine_num_free_slots") == r["capacity"] for r in replicas))


async def check_idle(session: aiohttp.ClientSession, url: str, within_s: float = 10.0) -> tuple[bool, dict]:
    """Wait up to `within_s` for an idle scheduler and all-free engines, then serve one more request."""
    deadline_s = time.monotonic() + within_s
    status: dict = {}
    while True:
        try:
            status = await get_status(session, url)
            if is_idle(status):
                break
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        if time.monotonic() > deadline_s:
            return False, status
        await asyncio.sleep(0.25)
    probe = Planned(-1, "completion", {"prompt": "are you still there?", "max_tokens": 4}, max_tokens=4)
    after = await send(session, url, probe, timeout_s=30.0)
    return after.category == "completed", status


async def run_load(url: str, num_requests: int, concurrency: int, seed: int = 0, timeout_s: float = 600.0,
                   request_timeout_s: float = 120.0, max_request_bytes: int = 1_000_000) -> dict[str, Any]:
    """Send the seeded mix with at most `concurrency` in flight; returns the summary dict."""
    started_s = time.monotonic()
    queue = list(reversed(plan(num_requests, seed, max_request_bytes)))
    outcomes: list[Outcome] = []
    samples: list[tuple[float, int]] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2)) as control:
        start_rss = (await get_status(control, url))["router_rss_mb"]
        stop = asyncio.Event()
        poller = asyncio.create_task(_poll_status(control, url, samples, stop))

        async def worker() -> None:
            while queue:
                outcomes.append(await send(session, url, queue.pop(), request_timeout_s))

        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, num_requests))]
        done, pending = await asyncio.wait(workers, timeout=max(1.0, timeout_s - (time.monotonic() - started_s)))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        aborted = len(pending)  # requests in flight at the deadline (each cancelled worker had one)
        stop.set()
        await poller
        load_s = time.monotonic() - started_s
        idle, last_status = await check_idle(control, url)
        end_status = last_status or await get_status(control, url)
    return summarize(outcomes, num_requests, aborted, len(queue), start_rss, samples, end_status,
                     idle, load_s, time.monotonic() - started_s)


def summarize(outcomes: list[Outcome], num_requests: int, aborted: int, not_sent: int, start_rss: float,
              samples: list[tuple[float, int]], end_status: dict, idle: bool, load_s: float,
              seconds: float) -> dict[str, Any]:
    rss_samples = [rss for rss, _ in samples]
    by_category = Counter(o.category for o in outcomes)
    latencies = sorted(o.latency_s for o in outcomes if o.category == "completed")
    rejected_by_status = Counter(str(o.status) for o in outcomes if o.category == "rejected")
    flags = Counter(flag for o in outcomes for flag in o.flags)
    lost_details = Counter(o.detail[:120] for o in outcomes if o.category == "lost")
    end_rss = end_status.get("router_rss_mb", float("nan"))
    return {
        "sent": len(outcomes) + aborted,
        "planned": num_requests,
        "completed": by_category["completed"],
        "rejected": by_category["rejected"],
        "disconnected": by_category["disconnected"],
        "lost": by_category["lost"] + aborted,
        "not_sent": not_sent,
        "aborted_at_deadline": aborted,
        "rejected_by_status": dict(sorted(rejected_by_status.items())),
        "rejection_flags": dict(sorted(flags.items())),
        "lost_details": dict(lost_details.most_common(5)),
        "by_kind": {kind: dict(Counter(o.category for o in outcomes if o.kind == kind))
                    for kind in sorted({o.kind for o in outcomes})},
        "p50_latency_s": round(percentile(latencies, 50), 4) if latencies else None,
        "p99_latency_s": round(percentile(latencies, 99), 4) if latencies else None,
        "completed_per_s": round(by_category["completed"] / load_s, 2) if load_s else None,
        "start_router_rss_mb": start_rss,
        "peak_router_rss_mb": max(rss_samples + [start_rss, end_rss]),
        "end_router_rss_mb": end_rss,
        # after the first quarter of the run (allocator and predictor warm): growth beyond it would be a leak
        "warm_router_rss_mb": rss_samples[len(rss_samples) // 4] if rss_samples else None,
        "rss_samples": len(rss_samples),
        "peak_num_waiting": max((waiting for _, waiting in samples), default=None),
        "end_scheduler": {k: end_status.get("scheduler", {}).get(k) for k in ("num_waiting", "num_running")},
        "router_metrics": {k: end_status.get("metrics", {}).get(k) for k in ("completions", "rejections")},
        "idle_after_load": idle,
        "load_seconds": round(load_s, 2),
        "seconds": round(seconds, 2),
    }


def _run_with_local_app(args: argparse.Namespace) -> dict[str, Any]:
    """Start Ray + Serve on loopback, deploy the overload config, run the load, shut everything down."""
    import ray
    from ray import serve

    from bench.common import free_port, wait_for_replicas
    from deployments.app import app_from_config
    from deployments.config import DEMO_OVERRIDES, load_config

    config = load_config(None, {**DEMO_OVERRIDES, **OVERLOAD_OVERRIDES})
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=RAY_TEMP_DIR, logging_level="WARNING",
             log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        handle = serve.run(app_from_config(config), name="default", route_prefix="/")
        wait_for_replicas(handle, config.engine_replicas.num_replicas, timeout_s=180)
        summary = asyncio.run(run_load(f"http://127.0.0.1:{port}", args.requests, args.concurrency, args.seed,
                                       args.timeout_s, args.request_timeout_s, config.router.max_request_bytes))
        summary["config"] = OVERLOAD_OVERRIDES
        return summary
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--url", default=None, help="a running app (e.g. http://127.0.0.1:8000); "
                                                     "default: start a local one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=900.0, help="bound on the whole load phase")
    parser.add_argument("--request-timeout-s", type=float, default=120.0, help="bound on each request")
    parser.add_argument("--max-request-bytes", type=int, default=1_000_000,
                        help="the app's router.max_request_bytes (with --url; sizes the oversized body)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be >= 1")
    if args.url:
        summary = asyncio.run(run_load(args.url.rstrip("/"), args.requests, args.concurrency, args.seed,
                                       args.timeout_s, args.request_timeout_s, args.max_request_bytes))
    else:
        summary = _run_with_local_app(args)
    print(json.dumps(summary), flush=True)
    return 0 if summary["lost"] == 0 and summary["idle_after_load"] else 1


