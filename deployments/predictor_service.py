"""The router's output-length predictor: batched predictions off the event loop, and the one place
that hears how each prediction turned out.

Invariant: `predict` never runs the model on the event loop (one worker thread, one batch at a time);
requests arriving within `batch_wait_ms` of the first waiting one share one model call, and so do all
that arrive while a batch runs (the next batch takes them when it ends), up to `max_batch_size`, so
the batch grows with the load instead of a backlog of small batches. Cancelled requests are skipped.
`on_finished` is called exactly once for each request that finished normally ("stop" or "length"),
never for cancelled or failed ones, so it only ever sees true lengths. A `PendingPrediction` runs
beside its request (which may already be running): it is awaited where the value is needed and
cancelled before the request's `on_ended`, so nothing is remembered for a request that ended.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from deployments.config import PredictorConfig
from deployments.predictor_metrics import PredictorMetrics
from proxy_model import load_predictor
from proxy_model.online import OnlineLearner


class PredictorService:
    def __init__(self, config: PredictorConfig):
        self._config = config
        self._predictor = load_predictor(config.checkpoint, device=config.device)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ssjf-predictor")
        self._pending: list[tuple[str | list[dict], asyncio.Future]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._batch_running = False
        self._num_batches = 0
        self._num_prompts = 0
        self._busy_s = 0.0
        self._num_finished = 0
        self._online = OnlineLearner(self._predictor, config.online) if config.online.enabled else None
        self._online_metrics = PredictorMetrics() if self._online is not None else None

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
        predicted, features = await future
        if self._online is not None:
            self._online.remember(request_id, features, predicted)
        return self._config.length_scale * predicted

    def on_finished(self, request_id: str, output_tokens: int, finish_reason: str) -> None:
        """A request predicted here finished with `output_tokens` (its true length); online learning
        of the predictor plugs in here."""
        self._num_finished += 1
        # the learner labels in the predictor's own units: predictions are scaled by length_scale on
        # the way out, so a label is scaled back on the way in (else a refit head would be scaled twice)
        if self._online is not None and self._online.observe(
                request_id, output_tokens / self._config.length_scale, finish_reason):
            self._online_metrics.observe(self._online.stats())

    def on_ended(self, request_id: str) -> None:
        """Any ending (after on_finished, or cancelled / failed): drop what was kept for the request."""
        if self._online is not None:
            self._online.forget(request_id)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "batches": self._num_batches, "prompts": self._num_prompts,
                "seconds": round(self._busy_s, 6), "finished_observed": self._num_finished,
                "mean_ms_per_prompt": 1000 * self._busy_s / max(self._num_prompts, 1),
                "online": self._online.stats() if self._online is not None else {"enabled": False}}

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._batch_running:
            return
        self._pending = [entry for entry in self._pending if not entry[1].done()]
        size = self._config.max_batch_size
        batch, self._pending = self._pending[:size], self._pending[size:]
        if batch:
            self._batch_running = True
            asyncio.get_running_loop().create_task(self._predict_batch(batch))

    async def _predict_batch(self, batch: list[tuple[str | list[dict], asyncio.Future]]) -> None:
        try:
            await self._run_batch(batch)
        finally:
            self._batch_running = False
            if self._pending:
                self._flush()

    async def _run_batch(self, batch: list[tuple[str | list[dict], asyncio.Future]]) -> None:
        started_s = time.perf_counter()
        prompts = [prompt for prompt, _ in batch]
        try:
            predictions, features = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._predictor.predict_with_features, prompts)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self._num_batches += 1
        self._num_prompts += len(prompts)
        self._busy_s += time.perf_counter() - started_s
        for (_, future), predicted, row in zip(batch, predictions, features, strict=True):
            if not future.done():
                future.set_result((float(predicted), row))


class PendingPrediction:
    """One request's prediction, started once admitted and awaited only where its value is needed;
    `predict_ms` is from `arrival_s` to the value (on `clock`)."""

    def __init__(self, service: PredictorService, request_id: str, predictor_input: str | list[dict],
                 clock: Callable[[], float]):
        self._service = service
        self._request_id = request_id
        self._input = predictor_input
        self._clock = clock
        self._task: asyncio.Task | None = None
        self.predict_ms: float | None = None

    def start(self, arrival_s: float) -> None:
        self._task = asyncio.get_running_loop().create_task(self._predict(arrival_s))

    async def value(self) -> float:
        """The predicted output tokens (waits for them); raises what the predictor raised."""
        return await self._task

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _predict(self, arrival_s: float) -> float:
        predicted = await self._service.predict(self._request_id, self._input)
        self.predict_ms = 1000 * (self._clock() - arrival_s)
        return predicted
