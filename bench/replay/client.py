"""Open-loop HTTP client for the live replay (asyncio + aiohttp, loopback only).

Invariant: a request is sent at its trace time whatever happened to earlier ones (open loop); every
request ends in the returned list with a completion or a named error; nothing outlives `deadline_s`
(requests still running then are cancelled by closing their connection, which frees their slot).
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Callable, Iterable, Optional, Sequence
from urllib.parse import urlparse

import aiohttp

from bench.replay.metrics import RequestResult
from bench.replay.natural import CHAT_PATH, natural_payload
from bench.replay.workload import WorkItem

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def check_loopback(base_url: str) -> None:
    host = urlparse(base_url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"the replay only sends traffic to loopback; got host {host!r} in {base_url}")


def payload(item: WorkItem) -> dict:
    """A realistic cap in `max_tokens`; the replayed length only in benchmark-only fields (a natural
    item: no forced length at all, bench.replay.natural)."""
    if item.finish_reason is not None:
        return natural_payload(item)
    return {"prompt": item.prompt, "max_tokens": item.max_tokens, "stream": True, "temperature": 0,
            "bench_stop_after_tokens": item.output_tokens, "oracle_output_tokens": item.output_tokens}


def url_of(base_url: str, item: WorkItem) -> str:
    return base_url + (CHAT_PATH if item.finish_reason is not None else "/v1/completions")


async def send_one(session: aiohttp.ClientSession, url: str, item: WorkItem, clock: Callable[[], float],
                   result: RequestResult) -> RequestResult:
    """Stream one completion, filling `result` with client-side times and the server's final facts."""
    result.expected_output_tokens = item.output_tokens
    result.expected_finish_reason, result.expected_prompt_tokens = item.finish_reason, item.prompt_tokens
    result.sent_s = clock()
    async with session.post(url, json=payload(item)) as resp:
        result.status = resp.status
        if resp.status != 200:
            result.detail = (await resp.text())[:300]
            result.error = f"http_{resp.status}"
            return result
        async for raw in resp.content:
            line = raw.decode("utf-8").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                result.finished_s = clock()
                break
            chunk = json.loads(data)
            if "error" in chunk:
                result.error = "stream_error"
                result.detail = str(chunk["error"].get("message"))[:300]
            elif chunk.get("usage"):
                ssjf = chunk.get("ssjf") or {}
                result.output_tokens = int(chunk["usage"]["completion_tokens"])
                result.prompt_tokens = int(chunk["usage"]["prompt_tokens"])
                result.predicted_output_tokens = ssjf.get("predicted_output_tokens")
                result.queue_wait_s = ssjf.get("queue_wait_s")
                result.replica = ssjf.get("replica")
                result.finish_reason = (chunk.get("choices") or [{}])[0].get("finish_reason")
            else:
                result.token_times_s.append(clock())
                if result.first_token_s is None:
                    result.first_token_s = result.token_times_s[0]
    if result.finished_s is None and result.error is None:
        result.error = "truncated_stream"
    return result


async def _guarded(coro, result: RequestResult) -> RequestResult:
    try:
        return await coro
    except asyncio.CancelledError:
        result.error = result.error or "timeout"
        return result
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        result.error = result.error or f"client_{type(exc).__name__}"
        return result


async def poll_scheduler(session: aiohttp.ClientSession, base_url: str, clock: Callable[[], float],
                         samples: list, interval_s: float = 0.25) -> None:
    """Append (t_s, num_waiting, num_running) every `interval_s` until cancelled."""
    while True:
        started = time.monotonic()
        try:
            async with session.get(f"{base_url}/v1/scheduler", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                status = await resp.json()
            sched = status.get("scheduler", {})
            samples.append((clock(), int(sched.get("num_waiting", 0)), int(sched.get("num_running", 0))))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            pass
        await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))


async def replay(base_url: str, items: Sequence[WorkItem], deadline_s: float,
                 on_done: Optional[Callable[[RequestResult], None]] = None,
                 poll_interval_s: float = 0.25) -> tuple[list[RequestResult], list]:
    """Send each item at its `arrival_s` (open loop); returns (results by index, queue samples)."""
    check_loopback(base_url)
    start = time.monotonic()
    clock = lambda: time.monotonic() - start  # noqa: E731
    results = [RequestResult(it.index, it.arrival_s) for it in items]
    samples: list = []
    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        poller = asyncio.create_task(poll_scheduler(session, base_url, clock, samples, poll_interval_s))
        try:
            for item, result in zip(items, results):
                delay = item.arrival_s - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                url = url_of(base_url, item)
                task = asyncio.create_task(_guarded(send_one(session, url, item, clock, result), result))
                if on_done:
                    task.add_done_callback(lambda _t, r=result: on_done(r))
                tasks.append(task)
                if clock() > deadline_s:
                    break
            remaining = max(0.0, deadline_s - clock())
            _, pending = await asyncio.wait(tasks, timeout=remaining) if tasks else (set(), set())
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
    for result in results[len(tasks):]:
        result.error = "not_sent"
    for result in results[:len(tasks)]:
        if not result.ok and result.error is None:
            result.error = "timeout"
    return results, samples


async def closed_loop(base_url: str, items: Iterable[WorkItem], concurrency: int,
                      duration_s: float) -> list[RequestResult]:
    """Keep `concurrency` requests in flight for `duration_s`, then cancel the rest (calibration,
    warm-up). Returns every request that was started."""
    check_loopback(base_url)
    start = time.monotonic()
    clock = lambda: time.monotonic() - start  # noqa: E731
    source = iter(items)
    results: list[RequestResult] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for item in source:
            if clock() >= duration_s:
                return
            result = RequestResult(item.index, clock())
            results.append(result)
            await _guarded(send_one(session, url_of(base_url, item), item, clock, result), result)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        _, pending = await asyncio.wait(workers, timeout=duration_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return results
