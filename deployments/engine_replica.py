"""Engine deployment: one batched generation engine per Serve replica (a GPU actor in production).

Invariant: this replica never queues work of its own. It accepts a generation only for a free engine
slot (the engine raises `EngineFullError` otherwise) and only when the request was pinned to it, so
the SSJF router's queue stays the one queue of record. A generation's stream ends only once its
engine slot is free again (after its done event; later in a static batch), so the router, which holds
the slot until the stream ends, never grants a slot the engine still holds.
A stream item is a list of events: every event ready when the replica looked (one Ray message, not
one per token). A caller that wants no tokens (`stream_tokens=False`) gets only the first token event
(the request started) and the done event, which carries the whole text.
"""

from __future__ import annotations

import asyncio
import contextlib
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

    async def generate_stream(self, request: dict[str, Any], replica_id: str,
                              stream_tokens: bool = True) -> AsyncIterator[list[dict]]:
        """Run one pinned request; yields lists of the engine's token events, the last ending with its
        `done` event (without `stream_tokens`: only the first token event and the done event)."""
        if replica_id != self._replica_id:
            raise RuntimeError(f"request pinned to replica {replica_id} reached {self._replica_id}")
        request_id = request.get("request_id", "?")
        await self._wait_for_slot(request_id)
        chunks = sent_chunks(self._engine, GenerationRequest(**request), stream_tokens)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk
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


async def sent_chunks(engine: Engine, request: GenerationRequest, stream_tokens: bool) -> AsyncIterator[list[dict]]:
    """What the replica sends of `request`: the engine's event chunks, thinned without `stream_tokens`."""
    token_sent = False
    async with contextlib.aclosing(engine.generate_chunks(request)) as chunks:
        async for chunk in chunks:
            if not stream_tokens:
                chunk = without_later_tokens(chunk, token_sent)
                token_sent = token_sent or any(event["type"] == "token" for event in chunk)
            if chunk:
                yield chunk


def without_later_tokens(chunk: list[dict], token_sent: bool) -> list[dict]:
    """`chunk` less every token event but the request's first (already sent if `token_sent`)."""
    tokens = [i for i, event in enumerate(chunk) if event["type"] == "token"]
    first = None if token_sent or not tokens else tokens[0]
    return [event for i, event in enumerate(chunk) if event["type"] != "token" or i == first]
