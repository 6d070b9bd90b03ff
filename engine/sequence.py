"""One request's generation state inside the engine.

Invariant: a `Sequence` moves WAITING -> RUNNING -> FINISHED (or WAITING -> FINISHED) exactly once, emits
token events in order and exactly one final "done" event (after its slot is released, or held by a
static batch); `completion_token_ids` never includes a stopping eos.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .detokenizer import IncrementalDetokenizer
from .request import GenerationRequest

EmitFn = Callable[[dict], None]


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    prompt_token_ids: list[int]
    detokenizer: IncrementalDetokenizer
    emit: EmitFn
    generator: Any = None
    status: SequenceStatus = SequenceStatus.WAITING
    completion_token_ids: list[int] = field(default_factory=list)
    admitted_at_s: float = field(default_factory=time.time)
    arrival_monotonic_s: float = field(default_factory=time.monotonic)
    first_token_at_s: float | None = None
    finished_at_s: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    _done_emitted: bool = False

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.completion_token_ids)

    @property
    def last_token_id(self) -> int:
        """The token the next decode step feeds (a finished row in a static batch may have none: feed 0)."""
        return self.completion_token_ids[-1] if self.completion_token_ids else 0

    def append_token(self, token_id: int, eos_token_ids: set[int]) -> None:
        """Record one sampled token, emit its text delta and finish on eos, stop string or length."""
        if self.first_token_at_s is None:
            self.first_token_at_s = time.time()
        request = self.request
        if token_id in eos_token_ids and not request.ignore_eos and request.stop_after_tokens is None:
            self.finish("stop")
            return
        self.completion_token_ids.append(token_id)
        delta = self.detokenizer.add(token_id)
        num_tokens = len(self.completion_token_ids)
        if self.detokenizer.hit_stop:
            self._emit_token([token_id], delta)
            self.finish("stop")
        elif num_tokens >= request.max_tokens:
            self._emit_token([token_id], delta + self.detokenizer.flush())
            self.finish("length")
        elif request.stop_after_tokens is not None and num_tokens >= request.stop_after_tokens:
            self._emit_token([token_id], delta + self.detokenizer.flush())
            self.finish("stop")
        else:
            self._emit_token([token_id], delta)

    def finish(self, finish_reason: str, error: str | None = None) -> None:
        if self.is_finished:
            return
        held_text = self.detokenizer.flush()
        if held_text:
            self._emit_token([], held_text)
        self.status = SequenceStatus.FINISHED
        self.finish_reason, self.error, self.finished_at_s = finish_reason, error, time.time()

    def emit_done(self) -> None:
        """Emit the final event once; the engine calls it after the slot bookkeeping for this finish."""
        if self.is_finished and not self._done_emitted:
            self._done_emitted = True
            self.emit(self._done_event())

    def _emit_token(self, token_ids: list[int], text: str) -> None:
        self.emit({"type": "token", "token_ids": token_ids, "text": text})

    def _done_event(self) -> dict:
        return {
            "type": "done",
            "text": self.detokenizer.text,
            "finish_reason": self.finish_reason,
            "usage": {"prompt_tokens": len(self.prompt_token_ids),
                      "completion_tokens": len(self.completion_token_ids)},
            "timings": {"admitted_at_s": self.admitted_at_s, "first_token_at_s": self.first_token_at_s,
                        "finished_at_s": self.finished_at_s},
            "error": self.error,
        }
