"""Open-loop driver: Poisson arrivals at a fixed offered rate, sent through the router's DeploymentHandle.

Invariant: a request is sent at its planned time whatever happened to earlier ones (open loop); every
planned request ends as one `Sample` (its result or a named error) within `request_timeout_s` of its
send; the driver records how late it sent each request, so a driver that cannot keep up shows as
`send_lag_ms`, not as router latency.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any, Optional

WORDS = ("tell", "me", "a", "story", "about", "the", "sea", "write", "code", "for", "sorting", "why", "is",
         "sky", "blue", "explain", "quantum", "physics", "simply", "list", "three", "fruits", "poem", "cats")


@dataclass
class Sample:
    sent_s: float  # wall clock (time.time), comparable with the engine's timings on this machine
    send_lag_s: float  # how late the driver sent it versus its planned time
    done_s: float = 0.0
    error: Optional[str] = None
    result: Optional[dict] = None


def prompts(num_prompts: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))) + f" #{i}" for i in range(num_prompts)]


async def _one(handle: Any, prompt: str, max_tokens: int, planned_s: float, timeout_s: float) -> Sample:
    sample = Sample(sent_s=time.time(), send_lag_s=max(0.0, time.monotonic() - planned_s))
    try:
        response = handle.generate.remote(prompt=prompt, max_tokens=max_tokens, ignore_eos=True,
                                          temperature=0.0)
        sample.result = await asyncio.wait_for(response, timeout_s)
    except asyncio.TimeoutError:
        sample.error = "timeout"
    except Exception as exc:  # the router's RequestError (429 / 503 ...) arrives wrapped by Ray
        cause = getattr(exc, "cause", None) or exc
        sample.error = f"{type(cause).__name__}: {getattr(cause, 'status', '')} {str(cause)[:120]}"
    sample.done_s = time.time()
    return sample


async def offer(handle: Any, rate_per_s: float, duration_s: float, max_tokens: int, seed: int,
                request_timeout_s: float = 60.0) -> list[Sample]:
    """Send Poisson arrivals at `rate_per_s` for `duration_s`; return every request's sample."""
    rng = random.Random(seed)
    texts = prompts(512, seed)
    tasks: list[asyncio.Task] = []
    start_s = time.monotonic()
    next_s = start_s
    while True:
        next_s += rng.expovariate(rate_per_s)
        if next_s - start_s >= duration_s:
            break
        delay_s = next_s - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        tasks.append(asyncio.create_task(
            _one(handle, texts[len(tasks) % len(texts)], max_tokens, next_s, request_timeout_s)))
    return list(await asyncio.gather(*tasks))
