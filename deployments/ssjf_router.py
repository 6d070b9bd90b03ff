"""The SSJF router deployment: predicts output lengths, holds the one cluster-wide wait queue and
streams each request from the engine replica the scheduler picked.

Invariant: a request reaches an engine replica only once the scheduler granted it a slot there, and
every request ends with its output, a `RequestError`, or cancellation; its slot is released on every
path. A request whose replica is lost before any token was produced is re-queued once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Optional

import psutil
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from deployments import replica_registry
from deployments.config import AppConfig
from deployments.dispatcher import Dispatcher, QueueFullError, QueueTimeoutError, ReplicaLostError
from deployments.metrics import RouterMetrics, find_metrics_endpoint
from deployments.pinned_router import registry_key
from deployments.protocol import ParsedRequest, RequestError, parse_request
from deployments.typed_config import build
from engine import load_tokenizer
from proxy_model import load_predictor
from router import RequestRecord, Scheduler

logger = logging.getLogger("ray.serve")
_REPLICA_GONE = (ActorDiedError, ActorUnavailableError, RayActorError)


class SSJFRouter:
    async def __init__(self, engines: Any, config: dict):
        self._config: AppConfig = build(AppConfig, config)
        self._engines = engines
        self._registry_key = registry_key(engines.app_name, engines.deployment_name)
        self._tokenizer = load_tokenizer(self._config.engine)
        predictor_config = self._config.predictor
        self._predictor = load_predictor(predictor_config.checkpoint, device=predictor_config.device)
        self._predict_pool = ThreadPoolExecutor(1, thread_name_prefix="ssjf-predictor")
        self._predict_batch.set_max_batch_size(predictor_config.max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(predictor_config.batch_wait_ms / 1000.0)
        self._predictor_stats = {"batches": 0, "prompts": 0, "seconds": 0.0}
        self._dispatcher = Dispatcher(Scheduler(self._config.scheduler))
        self._replica_info: dict[str, dict] = {}
        self._metrics = RouterMetrics()
        self._metrics_endpoint = find_metrics_endpoint()
        self._ready = asyncio.Event()
        self._sync_task = asyncio.get_running_loop().create_task(self._sync_replicas_forever())

    # ---- public handle API -------------------------------------------------------------------

    async def generate(self, **request: Any) -> dict[str, Any]:
        """Run one completion to the end; returns text, finish_reason, usage, timings and ssjf."""
        parsed = await self._parse(request, "chat" if "messages" in request else "completion")
        async for event in self._run(parsed):
            pass
        return {"id": parsed.request_id, **_strip_type(event)}

    async def generate_stream(self, **request: Any) -> AsyncIterator[dict[str, Any]]:
        """Stream one completion: `{"type": "token", ...}` chunks, then one `{"type": "done", ...}`."""
        parsed = await self._parse(request, "chat" if "messages" in request else "completion")
        async for event in self._run(parsed):
            yield event

    async def status(self) -> dict[str, Any]:
        """Scheduler status: queue, per-replica in-flight work, predictor facts."""
        stats = self._predictor_stats
        scheduled = self._dispatcher.scheduler.replicas()
        known = dict(self._replica_info)  # the sync task may change the registry while we await below
        live = [await self._live_engine_facts(rid) for rid in known]
        return {
            "scheduler": self._dispatcher.scheduler.snapshot(self._dispatcher.now_s()),
            "replicas": {rid: {**info, **scheduled.get(rid, {}), **facts}
                         for (rid, info), facts in zip(known.items(), live)},
            "predictor": {
                "name": self._predictor.name,
                "batches": stats["batches"],
                "prompts": stats["prompts"],
                "seconds": round(stats["seconds"], 6),
                "mean_ms_per_prompt": 1000 * stats["seconds"] / max(stats["prompts"], 1),
            },
            "model": self._config.served_model_name,
            "metrics": self._metrics.totals(),
            "metrics_export": self._metrics_endpoint,
            "router_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        }

    async def _live_engine_facts(self, replica_id: str) -> dict[str, Any]:
        try:
            info = await asyncio.wait_for(self._engines.info.remote(replica_id=replica_id), 2.0)
            return {"engine_num_free_slots": info["num_free_slots"]}
        except Exception as exc:
            return {"engine_error": type(exc).__name__}

    async def check_health(self) -> None:
        if self._sync_task.done():
            raise RuntimeError(f"replica sync task stopped: {self._sync_task.exception()!r}")

    # ---- request path ------------------------------------------------------------------------

    async def _parse(self, body: dict, kind: str) -> ParsedRequest:
        try:
            await self._wait_ready()
            parsed = parse_request(body, kind, self._tokenizer, self._config.served_model_name,
                                   self._max_context_tokens(), self._config.router.allow_benchmark_fields)
        except RequestError as exc:
            self.observe_rejection(exc)
            raise
        parsed.created_at_s = time.time()
        return parsed

    def observe_rejection(self, exc: RequestError) -> None:
        self._metrics.observe_rejection(exc.code or ("invalid_request" if exc.status == 400 else f"http_{exc.status}"))

    async def _run(self, parsed: ParsedRequest) -> AsyncIterator[dict[str, Any]]:
        """Predict, queue, stream; every ending is counted in the metrics."""
        finish_reason = "cancelled"
        try:
            async for event in self._run_attempts(parsed):
                if event["type"] == "done":
                    finish_reason = event["finish_reason"]
                    self._observe_done(parsed, event)
                yield event
        except RequestError as exc:
            finish_reason = "error"
            self.observe_rejection(exc)
            raise
        finally:
            if finish_reason == "cancelled":
                self._metrics.observe_cancelled()

    def _observe_done(self, parsed: ParsedRequest, done: dict) -> None:
        first_token_at_s = done["timings"].get("first_token_at_s")
        self._metrics.observe_finish(
            done["finish_reason"], done["ssjf"]["predicted_output_tokens"], done["usage"]["completion_tokens"],
            jct_s=time.time() - parsed.created_at_s,
            ttft_s=None if first_token_at_s is None else first_token_at_s - parsed.created_at_s)

    async def _run_attempts(self, parsed: ParsedRequest) -> AsyncIterator[dict[str, Any]]:
        predict_started_s = time.perf_counter()
        predicted = self._config.predictor.length_scale * await self._predict_batch(parsed.predictor_input)
        predict_ms = 1000 * (time.perf_counter() - predict_started_s)
        arrival_s = self._dispatcher.now_s()
        record = parsed.record(arrival_s, float(predicted))
        for attempt in range(2):
            dispatch = await self._acquire(record, requeue=attempt > 0)
            dispatch_seq = self._dispatcher.dispatch_seq(parsed.request_id)
            self._metrics.observe_dispatch(dispatch.queue_wait_s)
            produced_token = False
            try:
                async for event in self._stream_from(parsed, dispatch.replica_id):
                    produced_token |= event["type"] == "token"
                    if event["type"] == "done" and event["finish_reason"] == "error":
                        raise RequestError(500, f"engine error: {event.get('error')}", type_="server_error")
                    if event["type"] == "done":
                        event["ssjf"] = {"predicted_output_tokens": round(float(predicted), 2),
                                         "predict_ms": round(predict_ms, 3),
                                         "queue_wait_s": round(dispatch.queue_wait_s, 6),
                                         "replica": dispatch.replica_id,
                                         "dispatch_seq": dispatch_seq,
                                         "policy": self._config.scheduler.policy}
                    yield event
                return
            except ReplicaLostError as lost:
                if produced_token or attempt == 1:
                    raise RequestError(503, f"engine replica {dispatch.replica_id} failed while running the "
                                            f"request: {lost}", type_="server_error",
                                       headers={"Retry-After": "1"}) from None
                logger.warning("replica %s lost before request %s produced a token; re-queued",
                               dispatch.replica_id, parsed.request_id)
            finally:
                self._dispatcher.release(parsed.request_id, dispatch.replica_id)

    async def _acquire(self, record: RequestRecord, requeue: bool):
        try:
            return await self._dispatcher.acquire(record, self._config.router.request_timeout_s, requeue)
        except ValueError as exc:  # the scheduler already holds this request_id
            raise RequestError(409, f"request_id: {exc}", param="request_id") from None
        except QueueFullError as exc:
            raise RequestError(429, f"server overloaded: {exc}", type_="overloaded_error",
                               code="queue_full", headers={"Retry-After": "1"}) from None
        except QueueTimeoutError as exc:
            raise RequestError(503, f"request timed out waiting for an engine slot: {exc}",
                               type_="timeout_error", code="queue_timeout", headers={"Retry-After": "1"}) from None

    async def _stream_from(self, parsed: ParsedRequest, replica_id: str) -> AsyncIterator[dict]:
        stream = self._engines.options(stream=True).generate_stream.remote(
            parsed.engine_request(), replica_id=replica_id)
        lost = asyncio.Event()
        self._dispatcher.watch(parsed.request_id, lambda: (lost.set(), stream.cancel()))
        try:
            async for event in stream:
                self._dispatcher.mark_started(parsed.request_id)
                yield event
        except _REPLICA_GONE as exc:
            self._dispatcher.remove_replica(replica_id, dead=True)
            raise ReplicaLostError(type(exc).__name__) from None
        except (asyncio.CancelledError, Exception) as exc:
            if lost.is_set():
                raise ReplicaLostError("replica removed") from None
            if isinstance(exc, asyncio.CancelledError):
                raise
            logger.exception("engine error for request %s", parsed.request_id)
            raise RequestError(500, f"engine error: {_cause(exc)}", type_="server_error") from None
        finally:
            stream.cancel()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _predict_batch(self, prompts: list[str | list[dict]]) -> list[float]:
        started_s = time.perf_counter()
        loop = asyncio.get_running_loop()
        predictions = await loop.run_in_executor(self._predict_pool, self._predictor.predict, prompts)
        stats = self._predictor_stats
        stats["batches"] += 1
        stats["prompts"] += len(prompts)
        stats["seconds"] += time.perf_counter() - started_s
        return predictions

    # ---- replica membership ------------------------------------------------------------------

    async def _wait_ready(self) -> None:
        try:
            await asyncio.wait_for(self._ready.wait(), self._config.router.request_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(503, "no engine replica is available", type_="server_error",
                               headers={"Retry-After": "5"}) from None

    def _max_context_tokens(self) -> int:
        return min(info["max_context_tokens"] for info in self._replica_info.values()) \
            if self._replica_info else self._config.engine.max_context_tokens or 1

    async def _sync_replicas_forever(self) -> None:
        while True:
            try:
                await self._sync_replicas()
            except Exception:  # keep serving: the next round retries
                logger.exception("engine replica sync failed")
            scheduler = self._dispatcher.scheduler
            self._metrics.observe_queue(scheduler.num_waiting, {
                rid: facts["num_running"] for rid, facts in scheduler.replicas().items()})
            await asyncio.sleep(self._config.router.replica_sync_interval_s)

    async def _sync_replicas(self) -> None:
        current = replica_registry.snapshot(self._registry_key)
        if current is None:  # Serve creates the handle's request router on its first call
            await asyncio.wait_for(self._engines.info.remote(), 30)
            return
        for replica_id in set(current) - set(self._replica_info):
            if self._dispatcher.is_dead(replica_id):
                continue
            try:
                info = await asyncio.wait_for(self._engines.info.remote(replica_id=replica_id), 10)
            except Exception as exc:
                logger.warning("engine replica %s did not answer info: %r", replica_id, exc)
                continue
            self._replica_info[replica_id] = {"capacity": info["capacity"], "model": info["model"],
                                              "max_context_tokens": info["max_context_tokens"],
                                              **current[replica_id]}
        for replica_id in set(self._replica_info) - set(current):
            del self._replica_info[replica_id]
        self._dispatcher.sync_replicas({rid: info["capacity"] for rid, info in self._replica_info.items()
                                        if not self._dispatcher.is_dead(rid)})
        if self._replica_info:
            self._ready.set()


def _strip_type(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "type"}


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {cause}"[:500]
