"""Keeps the scheduler's replica table equal to the engine replicas Serve routes to.

Invariant: every `interval_s` the replica set Serve last pushed (`replica_registry`) is reconciled
into the scheduler: a new replica is added once it answered `info` (capacity, context, node), a
listed draining one is re-activated, an active one Serve no longer lists is drained, a dead one is
never re-added. `ready` is set exactly while at least one replica is active, so /health and request
admission see the same truth. This module holds no replica state of its own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from deployments import replica_registry
from deployments.dispatcher import Dispatcher
from deployments.metrics import RouterMetrics

logger = logging.getLogger("ray.serve")
INFO_TIMEOUT_S = 10.0
STATUS_TIMEOUT_S = 2.0


class ReplicaSync:
    def __init__(self, engines: Any, dispatcher: Dispatcher, registry_key: str, interval_s: float,
                 metrics: RouterMetrics):
        self._engines = engines
        self._dispatcher = dispatcher
        self._registry_key = registry_key
        self._interval_s = interval_s
        self._metrics = metrics
        self.ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run_forever())

    def check_health(self) -> None:
        if self._task.done():
            raise RuntimeError(f"replica sync task stopped: {self._task.exception()!r}")

    async def wait_ready(self, timeout_s: float) -> bool:
        """True once some replica is active (at once if one is), False after `timeout_s` without one."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def live_facts(self, replica_id: str) -> dict[str, Any]:
        """What the replica says now (for status); never raises."""
        try:
            info = await asyncio.wait_for(self._engines.info.remote(replica_id=replica_id), STATUS_TIMEOUT_S)
            return {"engine_num_free_slots": info["num_free_slots"]}
        except Exception as exc:
            return {"engine_error": type(exc).__name__}

    async def _run_forever(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception:  # keep serving: the next round retries
                logger.exception("engine replica sync failed")
            scheduler = self._dispatcher.scheduler
            self._metrics.observe_queue(scheduler.num_waiting, scheduler.waiting_predicted_tokens, {
                rid: facts["num_running"] for rid, facts in scheduler.replicas().items()})
            await asyncio.sleep(self._interval_s)

    async def sync_once(self) -> None:
        listed = replica_registry.snapshot(self._registry_key)
        if listed is None:  # Serve creates the handle's request router on its first call
            await asyncio.wait_for(self._engines.info.remote(), 30)
            return
        scheduler = self._dispatcher.scheduler
        known = scheduler.replicas()
        for replica_id, facts in known.items():
            if replica_id not in listed and facts["state"] == "active":
                self._dispatcher.drain_replica(replica_id)
            elif replica_id in listed and facts["state"] == "draining":
                self._dispatcher.add_replica(replica_id, facts["capacity"], facts["max_context_tokens"],
                                             facts["node_id"])
        for replica_id in set(listed) - set(known):
            if not scheduler.is_dead(replica_id):
                await self._register(replica_id, listed)
        scheduler.forget_absent(set(listed))
        if scheduler.num_active_replicas:
            self.ready.set()
        else:
            self.ready.clear()

    async def _register(self, replica_id: str, listed: Mapping[str, dict]) -> None:
        try:
            info = await asyncio.wait_for(self._engines.info.remote(replica_id=replica_id), INFO_TIMEOUT_S)
        except Exception as exc:
            logger.warning("engine replica %s did not answer info: %r", replica_id, exc)
            return
        if self._dispatcher.scheduler.is_dead(replica_id):  # died while we asked
            return
        self._dispatcher.add_replica(replica_id, info["capacity"], info["max_context_tokens"],
                                     listed[replica_id].get("node_id"))
