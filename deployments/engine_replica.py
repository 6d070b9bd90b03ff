"""Engine deployment: one batched generation engine per Serve replica (a GPU actor in production).

Invariant: this replica never queues work of its own. It accepts a generation only for a free engine
slot (the engine raises `EngineFullError` otherwise) and only when the request was pinned to it, so
the SSJF router's queue stays the one queue of record. A generation's stream ends only once its
engine slot is free again (after its done event; later in a static batch), so the router, which holds
the slot until the stream ends, never grants a slot the engine still holds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Optional

from ray import serve

from engine import Engine, EngineConfig, EngineFullError, GenerationRequest

SLOT_RELEASE_GRACE_S = 2.0


class EngineReplica:
    def __init__(self, engine_config: dict):
        self._engine = Engine(EngineConfig(**engine_config))
        self._replica_id = serve.get_replica_context().replica_id.unique_id

    async def info(self, replica_id: Optional[str] = None) -> dict[str, Any]:
        """Capacity and model facts the router registers this replica with."""
        return {
            "replica_id": self._replica_id,
            "capacity": self._engine.capacity,
            "num_free_slots": self._engine.num_free_slots,
            "model": self._engine.model_name,
            "max_context_tokens": self._engine.max_context_tokens,
        }

    async def generate_stream(self, request: dict[str, Any], replica_id: str) -> AsyncIterator[dict]:
        """Run one pinned request; yields the engine's token events, then its `done` event."""
        if replica_id != self._replica_id:
            raise RuntimeError(f"request pinned to replica {replica_id} reached {self._replica_id}")
        request_id = request.get("request_id", "?")
        await self._wait_for_slot(request_id)
        async for event in self._engine.generate(GenerationRequest(**request)):
            yield event
        await self._engine.wait_slot_freed(request_id)  # a static batch holds it until the batch ends

    async def check_health(self) -> None:
        """Serve calls this every health_check_period_s; a replica whose engine stopped is replaced."""
        self._engine.check_health()

    async def _wait_for_slot(self, request_id: str) -> None:
        """Bridge the short gap between the router freeing a cancelled request's slot and the engine
        ending it (at most one decode step); a longer gap is an accounting bug and fails loudly."""
        deadline_s = time.monotonic() + SLOT_RELEASE_GRACE_S
        while self._engine.num_free_slots == 0:
            if time.monotonic() > deadline_s:
                raise EngineFullError(f"replica {self._replica_id} has no free slot for {request_id}")
            await asyncio.sleep(0.002)

    async def __del__(self):
        # Serve calls this even when __init__ failed (e.g. the model did not load): nothing to stop then.
        engine = self.__dict__.get("_engine")
        if engine is not None:
            await engine.shutdown()
