"""HTTP edge I/O: reading a request body under size and time limits, and noticing a client that left.

Invariant: `read_json_body` returns parsed JSON or raises a `RequestError` (400, 408 or 413) without
buffering more than the size limit or waiting past the deadline. `until_disconnected` returns only
once the client is gone, whatever Serve's proxy was told by a client's `x-request-disconnect-disabled`
header (the proxy then stops cancelling the request, but still forwards the disconnect message), so
the ingress cancels abandoned work itself.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, TypeVar

from starlette.requests import Request

from deployments.request_error import RequestError

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The HTTP client went away before its answer was ready."""


async def read_json_body(request: Request, max_bytes: int, timeout_s: float) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    try:
        raw = await asyncio.wait_for(_read_bytes(request, max_bytes), timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(408, f"request body not received within {timeout_s:g} s",
                           code="body_timeout") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError(400, "request body is not valid UTF-8") from None
    except RecursionError:
        raise RequestError(400, "request body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    except ValueError as exc:  # e.g. an integer literal over Python's 4,300-digit conversion limit
        raise RequestError(400, f"request body has an unusable value: {str(exc)[:200]}") from None


async def _read_bytes(request: Request, max_bytes: int) -> bytes:
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(raw)


def _too_large(max_bytes: int) -> RequestError:
    return RequestError(413, f"request body larger than {max_bytes} bytes", code="body_too_large")


async def until_disconnected(request: Request) -> None:
    """Wait for the ASGI `http.disconnect` message (call only after the body was read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it and raising `ClientDisconnected` if the client leaves first."""
    work_task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({work_task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work_task.done():
            return work_task.result()
        if watcher.exception() is None:
            raise ClientDisconnected()
        return await work_task  # the receive channel failed: no way to tell, so finish the work
    finally:
        for task in (work_task, watcher):
            task.cancel()
        await asyncio.gather(work_task, watcher, return_exceptions=True)
