"""Runs one parsed request: admission check -> lease (at once, or after its prediction) -> engine stream
-> done.

Invariants: a request costs no prediction if it would be refused (duplicate id, full queue). Its
prediction starts on admission; when no one waits and a slot is free the request is dispatched at once
and the prediction finishes beside it (nothing to reorder), otherwise it waits for its prediction and
queues by it. Either way the done event carries the prediction, and the predictor hears the outcome.
A request reaches
an engine replica only under a lease; every request ends with its output, a `RequestError`, or
cancellation, and is counted once in the metrics. The lease is held until the replica's stream ends,
which is when the engine has freed the slot: a static ("dynamic") batch keeps a finished member's slot
until the batch ends, so the client gets its done event first and the slot is released later by a
background task. A request whose replica is lost before it produced a token is re-queued once.
TTFT and JCT are measured on the dispatcher's clock from the moment the runner took the request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, AsyncIterator, Callable, Protocol

from ray.exceptions import ActorUnavailableError, RayActorError

from deployments.dispatcher import Dispatcher, QueueTimeoutError
from deployments.metrics import RouterMetrics
from deployments.predictor_service import PendingPrediction, PredictorService
from deployments.protocol import ParsedRequest, RequestError
from engine import EngineFullError
from router import (DoneEvent, DuplicateRequestError, Lease, MissingOracleLengthError, QueueFullError,
                    RequestRecord, StreamEvent, TokenEvent, parse_event)

logger = logging.getLogger("ray.serve")


class EngineStream(Protocol):
    """What `open_stream` returns: the replica's events (lists of dicts, see EngineReplica), and a way
    to stop them."""

    def __aiter__(self) -> AsyncIterator[list[dict]]: ...
    def cancel(self) -> None: ...


OpenStream = Callable[[dict[str, Any], str, bool], EngineStream]  # (engine request, replica id, stream_tokens)


class ReplicaLostError(RuntimeError):
    """The replica could not run this request (died, unreachable for now, drained, or full)."""


def admission_error(exc: Exception) -> RequestError:
    """The answer for each way the scheduler can refuse a request."""
    if isinstance(exc, DuplicateRequestError):
        return RequestError(409, f"request_id: {exc}", param="request_id", code="duplicate_request_id")
    if isinstance(exc, QueueFullError):
        return RequestError(429, f"server overloaded: {exc}", type_="overloaded_error", code="queue_full",
                            headers={"Retry-After": "1"})
    if isinstance(exc, QueueTimeoutError):
        return RequestError(503, f"request timed out waiting for an engine slot: {exc}", type_="timeout_error",
                            code="queue_timeout", headers={"Retry-After": "1"})
    if isinstance(exc, MissingOracleLengthError):
        return RequestError(400, f"oracle_output_tokens: required by the sjf-oracle policy ({exc})",
                            param="oracle_output_tokens")
    raise TypeError(f"not an admission error: {exc!r}")


ADMISSION_ERRORS = (DuplicateRequestError, QueueFullError, QueueTimeoutError, MissingOracleLengthError)


def replica_is_dead(exc: RayActorError) -> bool:
    """ActorUnavailableError is temporary (the actor may answer again); any other actor error is final."""
    return not isinstance(exc, ActorUnavailableError)


class RequestRunner:
    def __init__(self, dispatcher: Dispatcher, predictor: PredictorService, open_stream: OpenStream,
                 metrics: RouterMetrics, request_timeout_s: float, policy: str):
        self._dispatcher = dispatcher
        self._predictor = predictor
        self._open_stream = open_stream
        self._metrics = metrics
        self._request_timeout_s = request_timeout_s
        self._policy = policy
        self._holders: set[asyncio.Task] = set()  # leases kept until their replica stream ends

    async def run(self, parsed: ParsedRequest, stream_tokens: bool = True) -> AsyncIterator[StreamEvent]:
        """Token events, then one DoneEvent (carrying the `ssjf` facts); counted in the metrics. Without
        `stream_tokens` only the first token event (the request started) comes before the DoneEvent."""
        ending = "cancelled"
        prediction = PendingPrediction(self._predictor, parsed.request_id, parsed.predictor_input,
                                       self._dispatcher.now_s)
        try:
            async for event in self._run(parsed, prediction, stream_tokens):
                if isinstance(event, DoneEvent):
                    ending = event.finish_reason
                yield event
        except RequestError as exc:
            ending = "error"
            self._metrics.observe_request_error(exc)
            raise
        finally:
            prediction.cancel()
            self._dispatcher.withdraw_predicting(parsed.request_id)
            self._predictor.on_ended(parsed.request_id)
            if ending == "cancelled":
                self._metrics.observe_cancelled()

    async def _run(self, parsed: ParsedRequest, prediction: PendingPrediction,
                   stream_tokens: bool) -> AsyncIterator[StreamEvent]:
        arrival_s = self._dispatcher.now_s()
        record = parsed.record(arrival_s, None)
        try:
            lease = self._dispatcher.grant_now(record)
        except ADMISSION_ERRORS as exc:
            raise admission_error(exc) from None
        prediction.start(arrival_s)
        first_token_s = None
        async for event in self._attempts(parsed, record, lease, prediction, stream_tokens):
            if isinstance(event, TokenEvent) and first_token_s is None:
                first_token_s = self._dispatcher.now_s()
            if isinstance(event, DoneEvent):
                record.predicted_output_tokens = await prediction.value()
                event = self._finish(parsed, record, event, prediction.predict_ms, first_token_s, lease is None)
            yield event

    def _finish(self, parsed: ParsedRequest, record: RequestRecord, done: DoneEvent, predict_ms: float,
                first_token_s: float | None, predicted_before_dispatch: bool) -> DoneEvent:
        now_s = self._dispatcher.now_s()
        jct_s = now_s - record.arrival_time_s
        ttft_s = None if first_token_s is None else first_token_s - record.arrival_time_s
        self._metrics.observe_finish(done.finish_reason, record.predicted_output_tokens, done.completion_tokens,
                                     jct_s=jct_s, ttft_s=ttft_s)
        if done.finished_normally:
            self._predictor.on_finished(parsed.request_id, done.completion_tokens, done.finish_reason)
        ssjf = {**done.ssjf, "predicted_output_tokens": round(record.predicted_output_tokens, 2),
                "predict_ms": round(predict_ms, 3), "predicted_before_dispatch": predicted_before_dispatch,
                "policy": self._policy}
        return dataclasses.replace(done, timings={**done.timings, "ttft_s": ttft_s, "jct_s": jct_s}, ssjf=ssjf)

    async def _attempts(self, parsed: ParsedRequest, record: RequestRecord, lease: Lease | None,
                        prediction: PendingPrediction, stream_tokens: bool) -> AsyncIterator[StreamEvent]:
        """Run under `lease` (granted at once), else queue by the prediction; a request whose replica
        is lost before its first token is re-queued once (by then it needs its prediction)."""
        for attempt in range(2):
            if lease is None:
                record.predicted_output_tokens = await prediction.value()
                try:
                    lease = await self._dispatcher.acquire(record, self._request_timeout_s, requeue=attempt > 0)
                except ADMISSION_ERRORS as exc:
                    raise admission_error(exc) from None
            self._metrics.observe_dispatch(lease.queue_wait_s)
            produced_token = False
            try:
                async for event in self._stream(parsed, lease, stream_tokens):
                    produced_token |= isinstance(event, TokenEvent)
                    yield event
                return
            except ReplicaLostError as lost:
                if produced_token or attempt == 1:
                    raise RequestError(503, f"engine replica {lease.replica_id} failed while running the "
                                            f"request: {lost}", type_="server_error",
                                       headers={"Retry-After": "1"}) from None
                logger.warning("replica %s could not run request %s (%s); re-queued", lease.replica_id,
                               parsed.request_id, lost)
                lease = None

    async def _stream(self, parsed: ParsedRequest, lease: Lease, stream_tokens: bool) -> AsyncIterator[StreamEvent]:
        """The replica's events under `lease`; releases the lease on every path (after the replica's
        stream ends, when it produced a done event)."""
        if lease.lost.is_set:
            self._dispatcher.release(lease)
            raise ReplicaLostError(lease.lost.reason)
        stream = self._open_stream(parsed.engine_request(), lease.replica_id, stream_tokens)
        lost = asyncio.Event()
        lease.lost.subscribe(lambda reason: (lost.set(), stream.cancel()))
        handed_off = False
        try:
            async for chunk in stream:
                self._dispatcher.start(lease)
                for event in map(parse_event, chunk):
                    if isinstance(event, DoneEvent):
                        handed_off = self._hold_until_stream_ends(stream, lease)
                        if event.finish_reason == "error":
                            raise RequestError(500, f"engine error: {event.error}", type_="server_error")
                        yield dataclasses.replace(event, ssjf={"queue_wait_s": round(lease.queue_wait_s, 6),
                                                               "replica": lease.replica_id,
                                                               "dispatch_seq": lease.dispatch_seq})
                        return
                    yield event
        except RayActorError as exc:
            if replica_is_dead(exc):
                self._dispatcher.replica_died(lease.replica_id)
            raise ReplicaLostError(type(exc).__name__) from None
        except (asyncio.CancelledError, Exception) as exc:
            if lost.is_set():
                raise ReplicaLostError(lease.lost.reason) from None
            if isinstance(exc, (asyncio.CancelledError, RequestError)):
                raise
            if isinstance(_cause(exc), EngineFullError):
                raise ReplicaLostError(f"engine full: {_cause(exc)}") from None
            logger.exception("engine error for request %s", parsed.request_id)
            raise RequestError(500, f"engine error: {_describe(exc)}", type_="server_error") from None
        finally:
            if not handed_off:
                stream.cancel()
                self._dispatcher.release(lease)

    def _hold_until_stream_ends(self, stream: EngineStream, lease: Lease) -> bool:
        task = asyncio.get_running_loop().create_task(self._drain_then_release(stream, lease))
        self._holders.add(task)
        task.add_done_callback(self._holders.discard)
        return True

    async def _drain_then_release(self, stream: EngineStream, lease: Lease) -> None:
        try:
            async for _ in stream:
                pass
        except Exception as exc:  # the answer is already out; the slot is freed either way
            logger.info("stream of %s ended with %r after its done event", lease.request_id, exc)
        finally:
            self._dispatcher.release(lease)


def _cause(exc: BaseException) -> BaseException:
    return getattr(exc, "cause", None) or exc


def _describe(exc: BaseException) -> str:
    cause = _cause(exc)
    return f"{type(cause).__name__}: {cause}"[:500]
