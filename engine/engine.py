"""The public engine: async streaming generation over a background step loop.

Invariant: `generate` reserves a slot before yielding anything (or raises `EngineFullError` / `ValueError`);
every admitted request ends with exactly one "done" event (its last), and a consumer that stops early (aclose, break,
task cancellation) cancels its request, which frees its slot immediately.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any, AsyncIterator

from .config import EngineConfig
from .detokenizer import IncrementalDetokenizer
from .loader import eos_token_ids, load_model_and_tokenizer, model_max_positions
from .models import is_sim_model
from .request import GenerationRequest, encode_and_validate
from .runner import ModelRunner
from .sampler import make_generator
from .scheduler import BatchScheduler
from .sequence import Sequence
from .sim_runner import SimRunner, load_sim_model
from .step_loop import StepLoop


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        simulated = is_sim_model(config.model)
        self.model, self.tokenizer = load_sim_model(config) if simulated else load_model_and_tokenizer(config)
        self.device = next(self.model.parameters()).device
        self.max_context_tokens = _resolve_max_context_tokens(config, self.model)
        self._seed_rng = random.Random(config.seed)
        self._scheduler = BatchScheduler(config.batching, config.capacity, config.max_batch_size, config.batch_wait_ms)
        runner = SimRunner(self.model) if simulated else ModelRunner(self.model, self.device)
        self._loop = StepLoop(runner, self._scheduler,
                              eos_token_ids(self.model, self.tokenizer))
        self._loop.start()

    @property
    def model_name(self) -> str:
        return self.config.model

    @property
    def capacity(self) -> int:
        return self.config.capacity

    @property
    def num_free_slots(self) -> int:
        return self._scheduler.num_free_slots

    @property
    def num_steps(self) -> int:
        return self._loop.num_steps

    def validate(self, req: GenerationRequest) -> list[int]:
        """Raise `ValueError` (message starts with the field name) or return the prompt token ids."""
        return encode_and_validate(req, self.tokenizer, self.max_context_tokens)

    async def generate(self, req: GenerationRequest) -> AsyncIterator[dict]:
        async with contextlib.aclosing(self.generate_chunks(req)) as chunks:
            async for chunk in chunks:
                for event in chunk:
                    yield event

    async def generate_chunks(self, req: GenerationRequest) -> AsyncIterator[list[dict]]:
        """`generate`'s events, each item every event ready at that moment (in order), so a consumer
        that falls behind catches up in one message instead of one per token."""
        if not self._loop.is_alive:
            raise RuntimeError("engine is shut down")
        prompt_token_ids = self.validate(req)
        events: asyncio.Queue[dict] = asyncio.Queue()
        seq = Sequence(request=req, prompt_token_ids=prompt_token_ids,
                       detokenizer=IncrementalDetokenizer(self.tokenizer, req.stop),
                       emit=_threadsafe_put(asyncio.get_running_loop(), events),
                       generator=self._make_generator(req))
        self._scheduler.reserve(seq)
        self._loop.wake()
        is_done = False
        try:
            while not is_done:
                chunk = [await events.get()]
                while not events.empty():
                    chunk.append(events.get_nowait())
                is_done = chunk[-1]["type"] == "done"
                yield chunk
        finally:
            if not is_done:
                self.cancel(req.request_id)

    async def wait_slot_freed(self, request_id: str, poll_s: float = 0.005) -> None:
        """Return once `request_id` no longer holds a slot (at once, except for a finished member of a
        running static batch: then when its batch ends)."""
        while self._scheduler.holds_slot(request_id):
            await asyncio.sleep(poll_s)

    def check_health(self) -> None:
        """Raise RuntimeError if the step loop is no longer running."""
        if not self._loop.is_alive:
            raise RuntimeError("engine step loop is not running")

    def cancel(self, request_id: str) -> bool:
        """Cancel a waiting or running request; its slot is free on return, its stream ends within one step."""
        cancelled = self._scheduler.cancel(request_id)
        if cancelled:
            self._loop.wake()
        return cancelled

    def close(self) -> None:
        """Stop the step loop; unfinished requests end with finish_reason "cancelled"."""
        self._loop.stop()

    async def shutdown(self) -> None:
        await asyncio.to_thread(self.close)

    def stats(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "num_free_slots": self.num_free_slots,
                "num_waiting": self._scheduler.num_waiting, "num_steps": self.num_steps}

    def _make_generator(self, req: GenerationRequest) -> Any:
        if req.temperature == 0:
            return None
        seed = req.seed if req.seed is not None else self._seed_rng.getrandbits(63)
        return make_generator(seed, self.device)


def _resolve_max_context_tokens(config: EngineConfig, model: Any) -> int:
    max_positions = model_max_positions(model)
    if config.max_context_tokens is None:
        return max_positions or 2048
    if max_positions is not None and config.max_context_tokens > max_positions:
        raise ValueError(f"max_context_tokens: exceeds the model's max_position_embeddings ({max_positions}) "
                         f"(got {config.max_context_tokens})")
    return config.max_context_tokens


def _threadsafe_put(loop: asyncio.AbstractEventLoop, events: asyncio.Queue) -> Any:
    def emit(event: dict) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:
            pass

    return emit
