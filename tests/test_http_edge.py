"""The edge's body reading (size and time limits) and disconnect watching, on real Starlette requests
fed by an ASGI receive channel."""

import asyncio
import time

import pytest
from starlette.requests import Request

from deployments.http_edge import ClientDisconnected, read_json_body, unless_disconnected
from deployments.protocol import RequestError

pytestmark = pytest.mark.timeout(30)


def request_from(messages, headers=()):
    """A Request whose receive channel yields `messages`, then blocks (a client that sends nothing more)."""
    queue = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": list(headers)}
    return Request(scope, queue.get), queue


def body(data, more=False):
    return {"type": "http.request", "body": data, "more_body": more}


def run(coro):
    return asyncio.run(coro)


def test_body_in_chunks_is_parsed():
    request, _ = request_from([body(b'{"prompt": ', True), body(b'"hi"}')])
    assert run(read_json_body(request, 1024, 5)) == {"prompt": "hi"}


def test_declared_oversize_is_refused_before_reading():
    request, queue = request_from([body(b"{}")], headers=[(b"content-length", b"5000")])
    with pytest.raises(RequestError) as err:
        run(read_json_body(request, 1024, 5))
    assert err.value.status == 413 and queue.qsize() == 1


def test_streamed_oversize_stops_reading_at_the_limit():
    request, queue = request_from([body(b"x" * 600, True), body(b"x" * 600, True), body(b"x" * 600)])
    with pytest.raises(RequestError) as err:
        run(read_json_body(request, 1024, 5))
    assert err.value.status == 413 and queue.qsize() == 1


def test_a_stalled_body_gets_408_at_the_deadline():
    request, _ = request_from([body(b'{"prompt": ', True)])
    started = time.monotonic()
    with pytest.raises(RequestError) as err:
        run(read_json_body(request, 1024, 0.3))
    assert err.value.status == 408 and err.value.code == "body_timeout"
    assert 0.3 <= time.monotonic() - started < 3


@pytest.mark.parametrize("data", [b"{bad", b"\xff", b'{"a": 1' + b"0" * 5000 + b"}"])
def test_unreadable_bodies_are_400(data):
    request, _ = request_from([body(data)])
    with pytest.raises(RequestError) as err:
        run(read_json_body(request, 10_000, 5))
    assert err.value.status == 400


def test_work_finishes_while_the_client_stays():
    async def scenario():
        request, _ = request_from([])
        return await unless_disconnected(request, asyncio.sleep(0.05, result="answer"))
    assert run(scenario()) == "answer"


def test_a_disconnect_cancels_the_work():
    """Serve's proxy forwards http.disconnect even when a client asked it not to cancel
    (x-request-disconnect-disabled); this is what stops the work then."""
    cancelled = asyncio.Event()

    async def work():
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.set()

    async def scenario():
        request, queue = request_from([])
        asyncio.get_running_loop().call_later(0.1, queue.put_nowait, {"type": "http.disconnect"})
        with pytest.raises(ClientDisconnected):
            await unless_disconnected(request, work())
        assert cancelled.is_set()
    run(scenario())


def test_errors_of_the_work_pass_through():
    async def failing():
        raise RequestError(429, "full")

    async def scenario():
        request, _ = request_from([])
        with pytest.raises(RequestError):
            await unless_disconnected(request, failing())
    run(scenario())
