"""The router's output-length predictor: batched predictions off the event loop, and the one place
that hears how each prediction turned out.

Invariant: `predict` never runs the model on the event loop (one worker thread); requests arriving
within `batch_wait_ms` of the first waiting one (up to `max_batch_size`) share one model call.
`on_finished` is called exactly once for each request that finished normally ("stop" or "length"),
never for cancelled or failed ones, so it only ever sees true lengths.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deployments.config import PredictorConfig
from proxy_model import load_predictor


class PredictorService:
    def __init__(self, config: PredictorConfig):
        self._config = config
        self._predictor = load_predictor(config.checkpoint, device=config.device)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ssjf-predictor")
        self._pending: list[tuple[str | list[dict], asyncio.Future]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._num_batches = 0
        self._num_prompts = 0
        self._busy_s = 0.0
        self._num_finished = 0

    @property
    def name(self) -> str:
        return self._predictor.name

    async def predict(self, request_id: str, predictor_input: str | list[dict]) -> float:
        """Predicted output tokens for one request, in the served model's units (`length_scale`)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((predictor_input, future))
        if len(self._pending) >= self._config.max_batch_size:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = loop.call_later(self._config.batch_wait_ms / 1000.0, self._flush)
        return self._config.length_scale * await future

    def on_finished(self, request_id: str, output_tokens: int, finish_reason: str) -> None:
        """A request predicted here finished with `output_tokens` (its true length); online learning
        of the predictor plugs in here."""
        self._num_finished += 1

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "batches": self._num_batches, "prompts": self._num_prompts,
                "seconds": round(self._busy_s, 6), "finished_observed": self._num_finished,
                "mean_ms_per_prompt": 1000 * self._busy_s / max(self._num_prompts, 1)}

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._pending = self._pending, []
        if batch:
            asyncio.get_running_loop().create_task(self._predict_batch(batch))

    async def _predict_batch(self, batch: list[tuple[str | list[dict], asyncio.Future]]) -> None:
        started_s = time.perf_counter()
        prompts = [prompt for prompt, _ in batch]
        try:
            predictions = await asyncio.get_running_loop().run_in_executor(self._pool, self._predictor.predict, prompts)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self._num_batches += 1
        self._num_prompts += len(prompts)
        self._busy_s += time.perf_counter() - started_s
        for (_, future), predicted in zip(batch, predictions, strict=True):
            if not future.done():
                future.set_result(float(predicted))
