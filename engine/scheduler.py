"""Slot accounting and admission for the three batching modes.

Invariant: at most `capacity` requests hold a slot (waiting, running, or — in "dynamic" mode — finished but
still part of their static batch); a slot is taken by `reserve` and given back exactly once, by `cancel`,
by finishing ("none"/"continuous"), or by the end of its batch ("dynamic").
Thread use: `reserve`, `cancel` and `num_free_slots` run on the caller's thread, the rest on the engine thread;
one lock guards the shared state.
"""
from __future__ import annotations

import threading
from collections import deque

from .request import EngineFullError
from .sequence import Sequence, SequenceStatus


class BatchScheduler:
    def __init__(self, batching: str, capacity: int, max_batch_size: int, batch_wait_ms: float) -> None:
        self.batching = batching
        self.capacity = capacity
        self.max_running = 1 if batching == "none" else max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.keeps_finished_rows = batching == "dynamic"
        self._lock = threading.Lock()
        self._slot_holders: dict[str, Sequence] = {}
        self._waiting: deque[Sequence] = deque()
        self._cancelled: list[Sequence] = []
        self._batch_members: list[Sequence] = []

    @property
    def num_free_slots(self) -> int:
        with self._lock:
            return self.capacity - len(self._slot_holders)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def holds_slot(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._slot_holders

    def reserve(self, seq: Sequence) -> None:
        with self._lock:
            if seq.request_id in self._slot_holders:
                raise ValueError(f"request_id: already in use (got {seq.request_id!r})")
            if len(self._slot_holders) >= self.capacity:
                raise EngineFullError(f"engine full: all {self.capacity} slots are taken")
            self._slot_holders[seq.request_id] = seq
            self._waiting.append(seq)

    def cancel(self, request_id: str) -> bool:
        """Free the slot now; the engine thread ends the sequence at its next step."""
        with self._lock:
            seq = self._slot_holders.get(request_id)
            if seq is None or seq.is_finished:
                return False
            del self._slot_holders[request_id]
            self._cancelled.append(seq)
            return True

    def take_cancelled(self) -> list[Sequence]:
        with self._lock:
            cancelled, self._cancelled = self._cancelled, []
            for seq in cancelled:
                if seq.status is SequenceStatus.WAITING:
                    self._waiting.remove(seq)
            return cancelled

    def drain_waiting(self) -> list[Sequence]:
        with self._lock:
            drained = list(self._waiting)
            self._waiting.clear()
            for seq in drained:
                self._slot_holders.pop(seq.request_id, None)
            return drained

    def admit(self, num_running: int, now_s: float) -> list[Sequence]:
        """Pop the waiting sequences that start running now (FIFO), according to the batching mode."""
        with self._lock:
            if self.batching == "dynamic" and not self._dynamic_batch_ready(num_running, now_s):
                return []
            num_admitted = min(len(self._waiting), self.max_running - num_running)
            admitted = [self._waiting.popleft() for _ in range(max(num_admitted, 0))]
            for seq in admitted:
                seq.status = SequenceStatus.RUNNING
            self._batch_members.extend(admitted)
            return admitted

    def seconds_until_ready(self, now_s: float) -> float | None:
        """How long the engine may sleep before `admit` could return something (None: until woken)."""
        with self._lock:
            if not self._waiting:
                return None
            if self.batching != "dynamic":
                return 0.0
            return max(self._waiting[0].arrival_monotonic_s + self.batch_wait_s - now_s, 0.0)

    def release_finished(self, num_running: int) -> None:
        """Give back the slots of finished sequences; a static batch holds them until it is empty."""
        if self.keeps_finished_rows and num_running > 0:
            return
        with self._lock:
            for seq in self._batch_members:
                if seq.is_finished and self._slot_holders.get(seq.request_id) is seq:
                    del self._slot_holders[seq.request_id]
            self._batch_members = [seq for seq in self._batch_members if not seq.is_finished]

    def _dynamic_batch_ready(self, num_running: int, now_s: float) -> bool:
        if num_running > 0 or not self._waiting:
            return False
        if len(self._waiting) >= self.max_running:
            return True
        return now_s - self._waiting[0].arrival_monotonic_s >= self.batch_wait_s
