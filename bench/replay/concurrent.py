"""Simultaneous arms (`bench.replay --concurrent`): every arm of a round is served at the same time, each by
its own app (router + engine replicas) on the one machine, so a change in the machine's speed hits every
arm alike instead of whichever arm happened to run then.

Invariant: each arm replays the identical requests at the identical times against its own app (route
prefix `/arm<i>`); the arms share nothing but the machine (CPU time is split by the OS among all engines,
so an arm with idle engines leaves more to the others). The calibration also runs every arm at once, so
the service rate, and with it `load`, is per arm at the shared speed.
"""
from __future__ import annotations

import asyncio
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from tqdm import tqdm

from bench.common import load_app_config, wait_for_replicas
from bench.replay import client
from bench.replay.cli import config_overrides
from bench.replay.metrics import Slo, summarize


def arm_app_names(num_arms: int) -> list[str]:
    return [f"arm{i}" for i in range(num_arms)]


@contextmanager
def deployed_arms(base_url: str, configs: list, timeout_s: float = 180.0) -> Iterator[list[str]]:
    """Deploy one app per config at `/arm<i>`, wait for every engine replica, yield the apps' base
    URLs; delete every app deployed, also on failure."""
    from ray import serve

    from deployments.app import app_from_config

    deployed: list[str] = []
    try:
        for name, config in zip(arm_app_names(len(configs)), configs):
            handle = serve.run(app_from_config(config), name=name, route_prefix=f"/{name}")
            deployed.append(name)
            wait_for_replicas(handle, config.engine_replicas.num_replicas, timeout_s)
        yield [f"{base_url}/{name}" for name in deployed]
    finally:
        for name in deployed:
            serve.delete(name)


def arm_configs(args, arms) -> list:
    return [load_app_config(args.config, {**config_overrides(args), **arm.overrides}) for arm in arms]


async def closed_loop_all(urls: list[str], items_per_url: list, concurrency: int, duration_s: float) -> list[list]:
    return list(await asyncio.gather(*(client.closed_loop(url, items, concurrency, duration_s)
                                       for url, items in zip(urls, items_per_url))))


async def replay_all(urls: list[str], items, deadline_s: float, poll_interval_s: float) -> list:
    """Every arm's open-loop replay of `items`, started together; [(results, samples)] in `urls` order."""
    bar = tqdm(total=len(items) * len(urls), desc="all arms", unit="req", file=sys.stderr, leave=True)
    try:
        return list(await asyncio.gather(*(client.replay(url, items, deadline_s, on_done=lambda r: bar.update(1),
                                                         poll_interval_s=poll_interval_s) for url in urls)))
    finally:
        bar.close()


def replay_round(base_url: str, args, items_for, state: dict) -> list:
    """One round with every arm on its own app at the same time; [(label, (results, samples, summary))]
    in arm order."""
    from bench.replay.run import log, slots_of, wait_idle, warm_up

    configs = arm_configs(args, args.arms)
    slots = slots_of(configs[0])
    started = time.monotonic()
    with deployed_arms(base_url, configs) as urls:
        log(f"{len(urls)} arms deployed side by side in {time.monotonic() - started:.1f} s; warming up")
        for url in urls:
            warm_up(url, state["pool"], slots, args.seed)
        if state["rate"] is None:
            state["rate"] = {"output_tokens_per_s": calibrate_side_by_side(urls, args, state, slots)}
        items = items_for()
        for url in urls:
            asyncio.run(wait_idle(url))
        deadline_s = items[-1].arrival_s + args.drain_timeout_s
        outs = asyncio.run(replay_all(urls, items, deadline_s, args.poll_interval_s))
    slo = Slo(args.slo_jct_base_s, args.slo_jct_per_token_s)
    return [(arm.label, (results, samples, summarize(results, slo, config.scheduler.max_wait_s)))
            for arm, config, (results, samples) in zip(args.arms, configs, outs)]


def calibrate_side_by_side(urls: list[str], args, state: dict, slots: int) -> float:
    """Every arm closed-loop at once; the per-arm rate is the mean over arms (each arm's in the log)."""
    from bench.replay.run import calibration_items, calibration_rate, log

    log(f"calibrating {len(urls)} arms at once for {args.calibration_s:.0f} s ({2 * slots} in flight each)")
    items = calibration_items(args, state["pool"], state["tokenizer"], slots)
    per_arm = [calibration_rate(results, args, slots) for results in
               asyncio.run(closed_loop_all(urls, [list(items) for _ in urls], 2 * slots, args.calibration_s))]
    rate = float(np.mean([c["output_tokens_per_s"] for c in per_arm]))
    state["calibration"] = {**per_arm[0], "output_tokens_per_s": rate, "side_by_side_arms": len(urls),
                            "per_arm_output_tokens_per_s": [c["output_tokens_per_s"] for c in per_arm]}
    each = ", ".join(f"{c['output_tokens_per_s']:.0f}" for c in per_arm)
    log(f"calibration: {rate:.0f} output tok/s per arm ({each})")
    return rate
