"""Mixed overload traffic for `bench.load`: what each request sends and how its answer is judged.

Invariant: every planned request ends in exactly one `Outcome` whose category is one of
completed / rejected / disconnected / lost. "lost" means the server failed the client (no answer,
connection reset, a 5xx or 4xx without an OpenAI error message, a stream without `data: [DONE]`, a
200 with a malformed body, or an invalid request that was accepted); a healthy server has none.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import aiohttp

# Share of each traffic kind (sums to 1). Invalid requests cycle through INVALID_VARIANTS.
KIND_SHARES = {
    "completion": 0.34,         # POST /v1/completions, max_tokens 1-16
    "stream": 0.18,             # the same with stream: true, read to data: [DONE]
    "chat": 0.14,               # POST /v1/chat/completions (half of them streamed)
    "disconnect_stream": 0.08,  # streamed, client closes the connection after 1-3 chunks
    "disconnect_early": 0.06,   # non-streamed, client closes after 20-300 ms (usually before the answer)
    "invalid": 0.20,            # one of INVALID_VARIANTS, must get a 4xx OpenAI error
}
INVALID_VARIANTS = ("bad_json", "max_tokens_zero", "unknown_field", "huge_max_tokens", "n_two",
                    "non_utf8", "oversized_body", "deep_nesting", "unknown_model", "prompt_not_text")
EXPECTED_INVALID_STATUS = {"oversized_body": 413, "unknown_model": 404}  # others: 400
SHEDDING_STATUSES = (429, 503)  # clear rejections of valid requests under overload
WORDS = ("tell", "me", "a", "story", "about", "the", "sea", "write", "code", "for", "sorting", "why",
         "is", "sky", "blue", "explain", "quantum", "physics", "simply", "list", "three", "fruits")


@dataclass
class Planned:
    index: int
    kind: str
    body: Any  # a JSON-able dict, or raw bytes for malformed bodies
    path: str = "/v1/completions"
    max_tokens: int = 16
    variant: str = ""
    disconnect_after: float = 0.0  # chunks (disconnect_stream) or seconds (disconnect_early)


@dataclass
class Outcome:
    kind: str
    category: str  # completed | rejected | disconnected | lost
    status: Optional[int] = None
    latency_s: float = 0.0
    detail: str = ""
    flags: set = field(default_factory=set)


def plan(num_requests: int, seed: int, max_request_bytes: int) -> list[Planned]:
    """The seeded request mix: same seed, same requests in the same order."""
    rng = random.Random(seed)
    kinds, weights = zip(*KIND_SHARES.items())
    planned = []
    for i in range(num_requests):
        kind = rng.choices(kinds, weights)[0]
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 24)))
        max_tokens = rng.randint(1, 16)
        body: Any = {"prompt": prompt, "max_tokens": max_tokens, "seed": i}
        item = Planned(i, kind, body, max_tokens=max_tokens)
        if kind == "stream":
            body["stream"] = True
        elif kind == "chat":
            item.path = "/v1/chat/completions"
            item.body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                         "stream": rng.random() < 0.5}
        elif kind in ("disconnect_stream", "disconnect_early"):
            item.max_tokens = body["max_tokens"] = rng.randint(32, 96)
            body["ignore_eos"] = True
            body["stream"] = kind == "disconnect_stream"
            item.disconnect_after = rng.randint(1, 3) if body["stream"] else rng.uniform(0.02, 0.3)
        elif kind == "invalid":
            item.variant = INVALID_VARIANTS[i % len(INVALID_VARIANTS)]
            item.body = _invalid_body(item.variant, prompt, max_request_bytes)
        planned.append(item)
    return planned


def _invalid_body(variant: str, prompt: str, max_request_bytes: int) -> Any:
    if variant == "bad_json":
        return b'{"prompt": "unterminated'
    if variant == "non_utf8":
        return b'{"prompt": "\xff\xfe\xfa"}'
    if variant == "oversized_body":
        return json.dumps({"prompt": "x" * (max_request_bytes + 1024)}).encode()
    if variant == "deep_nesting":  # well under max_request_bytes, far deeper than json's recursion limit
        return b"[" * 20_000 + b"]" * 20_000
    return {"max_tokens_zero": {"prompt": prompt, "max_tokens": 0},
            "unknown_field": {"prompt": prompt, "frobnicate": True},
            "huge_max_tokens": {"prompt": prompt, "max_tokens": 10_000_000},
            "n_two": {"prompt": prompt, "n": 2},
            "unknown_model": {"prompt": prompt, "model": "no-such-model"},
            "prompt_not_text": {"prompt": {"text": prompt}}}[variant]


async def send(session: aiohttp.ClientSession, url: str, item: Planned, timeout_s: float) -> Outcome:
    """Send one planned request and classify its answer; never raises (except CancelledError)."""
    started_s = time.perf_counter()
    try:
        if item.kind == "disconnect_early":
            try:
                outcome = await asyncio.wait_for(_exchange(session, url, item, timeout_s), item.disconnect_after)
            except asyncio.TimeoutError:  # cancelling the request closes its connection
                outcome = Outcome(item.kind, "disconnected", detail="closed before the answer")
        else:
            outcome = await asyncio.wait_for(_exchange(session, url, item, timeout_s), timeout_s)
    except asyncio.TimeoutError:
        outcome = Outcome(item.kind, "lost", detail=f"no answer within {timeout_s:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        outcome = Outcome(item.kind, "lost", detail=f"connection error: {type(exc).__name__}: {exc}"[:200])
    outcome.latency_s = time.perf_counter() - started_s
    return outcome


async def _exchange(session: aiohttp.ClientSession, url: str, item: Planned, timeout_s: float) -> Outcome:
    if isinstance(item.body, bytes):
        kwargs = {"data": item.body, "headers": {"content-type": "application/json"}}
    else:
        kwargs = {"json": item.body}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.post(url + item.path, timeout=timeout, **kwargs) as resp:
        if resp.status != 200:
            return _judge_error(item, resp.status, await resp.read(), resp.headers)
        if item.kind == "invalid":
            return Outcome(item.kind, "lost", 200, detail=f"invalid request {item.variant} was accepted")
        if resp.content_type == "text/event-stream":
            return await _read_stream(item, resp)
        return _judge_full(item, await resp.read())


def _judge_error(item: Planned, status: int, raw: bytes, headers) -> Outcome:
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    if not isinstance(message, str) or not message:
        return Outcome(item.kind, "lost", status, detail=f"HTTP {status} without an OpenAI error message: "
                                                         f"{raw[:120]!r}")
    outcome = Outcome(item.kind, "rejected", status, detail=message[:200])
    expected = _expected_statuses(item)
    if status not in expected:
        outcome.flags.add(f"unexpected_status:{status}")
    if status in SHEDDING_STATUSES and "Retry-After" not in headers:
        outcome.flags.add("missing_retry_after")
    return outcome


def _expected_statuses(item: Planned) -> tuple[int, ...]:
    if item.kind == "invalid":
        return (EXPECTED_INVALID_STATUS.get(item.variant, 400),)
    return SHEDDING_STATUSES


def _judge_full(item: Planned, raw: bytes) -> Outcome:
    try:
        body = json.loads(raw)
        choice = body["choices"][0]
        text = choice["text"] if item.path == "/v1/completions" else choice["message"]["content"]
        completion_tokens = body["usage"]["completion_tokens"]
        ok = (isinstance(text, str) and choice["finish_reason"] in ("length", "stop")
              and 0 <= completion_tokens <= item.max_tokens)
    except (ValueError, KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        return Outcome(item.kind, "lost", 200, detail=f"malformed 200 body: {raw[:200]!r}")
    return Outcome(item.kind, "completed", 200)


async def _read_stream(item: Planned, resp: aiohttp.ClientResponse) -> Outcome:
    chunks: list[dict] = []
    async for raw_line in resp.content:
        line = raw_line.decode("utf-8", "replace").strip()
        if not line:
            continue
        if not line.startswith("data: "):
            return Outcome(item.kind, "lost", 200, detail=f"not an SSE data line: {line[:120]!r}")
        data = line[len("data: "):]
        if data == "[DONE]":
            return _judge_stream(item, chunks)
        try:
            chunks.append(json.loads(data))
        except ValueError:
            return Outcome(item.kind, "lost", 200, detail=f"malformed SSE chunk: {data[:120]!r}")
        if "error" in chunks[-1]:
            continue  # judged at [DONE]: the stream must still end properly
        if item.kind == "disconnect_stream" and len(chunks) >= item.disconnect_after:
            resp.close()  # drop the connection mid-stream
            return Outcome(item.kind, "disconnected", 200, detail=f"closed after {len(chunks)} chunks")
    return Outcome(item.kind, "lost", 200, detail=f"stream ended without [DONE] after {len(chunks)} chunks")


def _judge_stream(item: Planned, chunks: list[dict]) -> Outcome:
    errors = [c["error"] for c in chunks if "error" in c]
    if errors:  # an in-band error: clear if it carries a message
        message = errors[-1].get("message") if isinstance(errors[-1], dict) else None
        if not isinstance(message, str) or not message:
            return Outcome(item.kind, "lost", 200, detail=f"stream error without a message: {errors[-1]!r}"[:200])
        outcome = Outcome(item.kind, "rejected", 200, detail=message[:200])
        outcome.flags.add(f"in_stream:{errors[-1].get('code') or errors[-1].get('type')}")
        return outcome
    try:
        final = chunks[-1]
        ok = (final["choices"][0]["finish_reason"] in ("length", "stop")
              and 0 <= final["usage"]["completion_tokens"] <= item.max_tokens
              and all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1]))
    except (KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        return Outcome(item.kind, "lost", 200, detail=f"malformed stream ending: {chunks[-1:]!r}"[:200])
    return Outcome(item.kind, "completed", 200)
