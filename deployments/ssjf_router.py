"""The SSJF router deployment: the public handle API over one scheduler, one predictor service, one
replica sync and one request runner (each in its own module).

Invariant: this class only composes them and converts typed events to the public dict shape
(`{"type": "token", ...}` chunks, then one `{"type": "done", ...}`). The scheduler (router.Scheduler)
is the one owner of request and replica state. A request is parsed (and its prompt tokenized) on a
worker thread (request_parser), never on the event loop, and only while some engine replica is active.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

import psutil

from deployments.config import AppConfig
from deployments.dispatcher import Dispatcher
from deployments.metrics import RouterMetrics, find_metrics_endpoint
from deployments.pinned_router import registry_key
from deployments.predictor_service import PredictorService
from deployments.protocol import ParsedRequest, RequestError
from deployments.replica_sync import ReplicaSync
from deployments.request_parser import RequestParser
from deployments.request_runner import RequestRunner
from deployments.typed_config import build
from engine import load_tokenizer
from engine.models import sampling_defaults
from router import Scheduler


class SSJFRouter:
    async def __init__(self, engines: Any, config: dict):
        self._config: AppConfig = build(AppConfig, config)
        self._engines = engines
        self._engine_streams = engines.options(stream=True)  # one handle for every generation, not one per call
        self._parser = RequestParser(load_tokenizer(self._config.engine), self._config.served_model_name,
                                     self._config.router.allow_benchmark_fields,
                                     sampling_defaults(self._config.engine.model))
        self._metrics = RouterMetrics()
        self._metrics_endpoint = find_metrics_endpoint()
        self._dispatcher = Dispatcher(Scheduler(self._config.scheduler))
        self._predictor = PredictorService(self._config.predictor)
        self._replica_sync = ReplicaSync(engines, self._dispatcher,
                                         registry_key(engines.app_name, engines.deployment_name),
                                         self._config.router.replica_sync_interval_s, self._metrics)
        self._ready = self._replica_sync.ready  # /health reads it
        self._runner = RequestRunner(self._dispatcher, self._predictor, self._open_stream, self._metrics,
                                     self._config.router.request_timeout_s, self._config.scheduler.policy)

    # ---- public handle API -------------------------------------------------------------------

    async def generate(self, **request: Any) -> dict[str, Any]:
        """Run one completion to the end; returns text, finish_reason, usage, timings and ssjf."""
        parsed = await self._parse(request, "chat" if "messages" in request else "completion")
        async for event in self._run(parsed, stream_tokens=False):
            pass
        return {"id": parsed.request_id, **{k: v for k, v in event.items() if k != "type"}}

    async def generate_stream(self, **request: Any) -> AsyncIterator[dict[str, Any]]:
        """Stream one completion: `{"type": "token", ...}` chunks, then one `{"type": "done", ...}`."""
        parsed = await self._parse(request, "chat" if "messages" in request else "completion")
        async for event in self._run(parsed, stream_tokens=True):
            yield event

    async def status(self) -> dict[str, Any]:
        """Scheduler status: queue, per-replica in-flight work, predictor facts."""
        scheduler = self._dispatcher.scheduler
        known = scheduler.replicas()
        live = await asyncio.gather(*(self._replica_sync.live_facts(rid) for rid in known))
        return {
            "scheduler": scheduler.snapshot(self._dispatcher.now_s()),
            "replicas": {rid: {**facts, "model": self._config.engine.model, **engine_facts}
                         for (rid, facts), engine_facts in zip(known.items(), live)},
            "predictor": self._predictor.status(),
            "model": self._config.served_model_name,
            "metrics": self._metrics.totals(),
            "metrics_export": self._metrics_endpoint,
            "router_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        }

    async def check_health(self) -> None:
        self._replica_sync.check_health()

    # ---- request path (the HTTP layer calls these too) -------------------------------------------

    async def _parse(self, body: dict, kind: str) -> ParsedRequest:
        try:
            parsed = await self._parser.parse(body, kind, await self._active_context_tokens())
        except RequestError as exc:
            self.observe_rejection(exc)
            raise
        parsed.created_at_s = time.time()
        return parsed

    async def _active_context_tokens(self) -> int:
        """The context every active replica can hold; 503 when no replica becomes active in time."""
        wait_s = self._config.router.replica_wait_s
        if await self._replica_sync.wait_ready(wait_s):
            limit = self._dispatcher.scheduler.max_context_tokens
            if limit is not None:
                return limit
        raise RequestError(503, f"no engine replica is available (waited {wait_s:g} s)", type_="server_error",
                           code="no_replica", headers={"Retry-After": "5"})

    def observe_rejection(self, exc: RequestError) -> None:
        self._metrics.observe_request_error(exc)

    async def _run(self, parsed: ParsedRequest, stream_tokens: bool) -> AsyncIterator[dict[str, Any]]:
        """The request's events as dicts; without `stream_tokens` the engine sends only the first token
        event and the done event (whose text is the whole answer)."""
        async for event in self._runner.run(parsed, stream_tokens):
            yield event.to_dict()

    def _open_stream(self, engine_request: dict[str, Any], replica_id: str, stream_tokens: bool):
        return self._engine_streams.generate_stream.remote(engine_request, replica_id=replica_id,
                                                           stream_tokens=stream_tokens)
