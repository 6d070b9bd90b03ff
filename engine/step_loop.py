"""The engine's background thread: `step()` = plan (cancellations, admissions) -> run (prefill, decode) ->
post-process (sample, drop finished rows, release slots, emit "done").

Invariant: only this thread touches the model, the KV batch and sequence token state; an exception in a model
step ends the sequences it touched with finish_reason "error" and the loop keeps serving; a failure that
belongs to one sequence (sampling, detokenizing) ends only that sequence.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .runner import ModelRunner
from .sampler import sample_next_tokens
from .scheduler import BatchScheduler
from .sequence import Sequence

logger = logging.getLogger(__name__)


class StepLoop:
    def __init__(self, runner: ModelRunner, scheduler: BatchScheduler, eos_token_ids: set[int]) -> None:
        self.runner = runner
        self.scheduler = scheduler
        self.eos_token_ids = eos_token_ids
        self.num_steps = 0
        self._wakeup = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="engine-step-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def step(self) -> bool:
        """Run one engine iteration; return False when there was nothing to do."""
        cancelled = self.scheduler.take_cancelled()
        for seq in cancelled:
            seq.finish("cancelled")
        self._retire(cancelled)
        newcomers = self.scheduler.admit(len(self.runner.rows), time.monotonic())
        if not newcomers and not self.runner.rows:
            return False
        try:
            if newcomers:
                self._sample_into(newcomers, self.runner.prefill(newcomers))
                self._retire(newcomers)
            if self.runner.rows:
                rows = self.runner.rows
                self._sample_into(rows, self.runner.decode())
                self._retire(rows)
        except Exception as exc:
            logger.exception("engine step failed")
            self._fail(newcomers + self.runner.reset(), f"{type(exc).__name__}: {exc}")
        self.num_steps += 1
        return True

    def _sample_into(self, seqs: list[Sequence], logits: Any) -> None:
        """Sample and append one token per live sequence; a sequence whose sampling or detokenizing
        fails ends with "error" alone, its batch mates carry on."""
        live_rows = [row for row, seq in enumerate(seqs) if not seq.is_finished]
        live = [seqs[row] for row in live_rows]
        try:
            token_ids = sample_next_tokens(logits[live_rows], [seq.request.temperature for seq in live],
                                           [seq.request.top_p for seq in live], [seq.generator for seq in live])
        except Exception:
            logger.exception("batched sampling failed; sampling each sequence alone")
            token_ids = [self._sample_alone(logits[row], seq) for row, seq in zip(live_rows, live)]
        for seq, token_id in zip(live, token_ids, strict=True):
            if token_id is None:
                continue
            try:
                seq.append_token(token_id, self.eos_token_ids)
            except Exception as exc:
                logger.exception("request %s failed after sampling", seq.request_id)
                seq.finish("error", f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _sample_alone(row_logits: Any, seq: Sequence) -> int | None:
        try:
            return sample_next_tokens(row_logits[None], [seq.request.temperature], [seq.request.top_p],
                                      [seq.generator])[0]
        except Exception as exc:
            seq.finish("error", f"sampling failed: {type(exc).__name__}: {exc}")
            return None

    def _fail(self, seqs: list[Sequence], error: str) -> None:
        for seq in seqs:
            seq.finish("error", error)
        self._retire(seqs)

    def _retire(self, seqs: list[Sequence]) -> None:
        """Drop finished rows (a static batch keeps them until all are done), release slots, then emit "done",
        so a consumer that sees "done" also sees the freed slot."""
        finished = [seq for seq in seqs if seq.is_finished]
        if not finished:
            return
        if not self.scheduler.keeps_finished_rows or all(seq.is_finished for seq in self.runner.rows):
            self.runner.drop_finished()
        self.scheduler.release_finished(len(self.runner.rows))
        for seq in finished:
            seq.emit_done()

    def _run(self) -> None:
        while not self._stopping:
            try:
                if self.step():
                    continue
            except Exception:
                logger.exception("engine loop error")
                self._fail(self.runner.reset(), "engine loop error")
            self._wakeup.wait(self.scheduler.seconds_until_ready(time.monotonic()))
            self._wakeup.clear()
        self._finish_all("engine shut down")

    def _finish_all(self, reason: str) -> None:
        seqs = self.scheduler.take_cancelled() + self.runner.reset() + self.scheduler.drain_waiting()
        for seq in seqs:
            seq.finish("cancelled", reason)
        self._retire(seqs)
