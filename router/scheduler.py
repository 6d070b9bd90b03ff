"""Synchronous SSJF scheduler core with an injected clock.

Invariants: no ray/torch/asyncio; every public method takes `now_s` and returns the decisions it
enables. Waiters and free slots never coexist after a call returns: each call dispatches while both
exist. A request goes to the replica with the most free slots (ties: least recently dispatched to,
then replica id). Policy behaviour comes only from the policy's key (see router.policy).
Starvation guard: a slot goes to the oldest waiter once its wait is within `guard_lead_s` of
`max_wait_s`, where the lead is GUARD_LEAD_RELEASES mean slot-release intervals (measured only
while requests wait, capped at half the bound), so its start, not just its turn, comes by the bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from router.config import SchedulerConfig
from router.policy import get_policy
from router.request import Dispatch, QueueFullError, RequestRecord
from router.wait_queue import WaitQueue

# The guard serves an old waiter this many mean release intervals before its bound: one interval is
# when the next slot frees on average; with roughly memoryless releases, no slot frees within four
# intervals only ~2% of the time (two left ~14%: live replays overshot the bound by 0.1-0.2 s).
GUARD_LEAD_RELEASES = 4.0
RELEASE_INTERVAL_EWMA_WEIGHT = 0.2


@dataclass
class _Replica:
    replica_id: str
    num_slots: int
    running: dict[str, RequestRecord] = field(default_factory=dict)
    last_dispatch_seq: int = -1

    @property
    def num_free_slots(self) -> int:
        return max(0, self.num_slots - len(self.running))


def _check_slots(num_slots: int) -> None:
    if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 0:
        raise ValueError(f"num_slots must be an int >= 0, got {num_slots!r}")


class Scheduler:
    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.policy = get_policy(self.config.policy)
        self.aging = self.config.make_aging()
        self._queue = WaitQueue(self.policy, self.aging, self.config.max_wait_s)
        self._replicas: dict[str, _Replica] = {}
        self._running_on: dict[str, str] = {}
        self._num_free_slots = 0
        self._dispatch_seq = 0
        self._release_interval_s: float | None = None  # EWMA over releases while requests wait
        self._last_busy_release_s: float | None = None

    # ---- capacity -------------------------------------------------------------------------------
    def add_replica(self, replica_id: str, num_slots: int, now_s: float) -> list[Dispatch]:
        """Register a replica (re-registering keeps its in-flight requests and updates its slots)."""
        _check_slots(num_slots)
        if replica_id not in self._replicas:
            self._replicas[replica_id] = _Replica(replica_id, 0)
        return self.set_capacity(replica_id, num_slots, now_s)

    def set_capacity(self, replica_id: str, num_slots: int, now_s: float) -> list[Dispatch]:
        """Change a replica's slot count; running requests above a lowered count keep running."""
        _check_slots(num_slots)
        replica = self._get_replica(replica_id)
        before = replica.num_free_slots
        replica.num_slots = num_slots
        self._num_free_slots += replica.num_free_slots - before
        return self._dispatch(now_s)

    def remove_replica(self, replica_id: str, now_s: float) -> list[str]:
        """Forget a replica; returns the ids that were in flight there (caller fails or requeues)."""
        replica = self._replicas.pop(replica_id, None)
        if replica is None:
            return []
        self._num_free_slots -= replica.num_free_slots
        for request_id in replica.running:
            del self._running_on[request_id]
        return list(replica.running)

    # ---- request lifecycle ----------------------------------------------------------------------
    def on_arrival(self, rec: RequestRecord, now_s: float) -> list[Dispatch]:
        """Enqueue a new request; raises QueueFullError when it would have to wait in a full queue."""
        self._check_new(rec)
        if self._num_free_slots == 0 and len(self._queue) >= self.config.max_queue_len:
            raise QueueFullError(
                f"wait queue full ({len(self._queue)} waiting, max_queue_len="
                f"{self.config.max_queue_len}); request {rec.request_id!r} rejected, retry later"
            )
        self._queue.push(rec)
        return self._dispatch(now_s)

    def requeue(self, rec: RequestRecord, now_s: float) -> list[Dispatch]:
        """Put a request back keeping its arrival time; ignores max_queue_len. If it is still
        running somewhere its slot is freed first (preemption)."""
        if rec.request_id in self._running_on:
            self._release(rec.request_id)
        self._check_new(rec)
        self._queue.push(rec)
        return self._dispatch(now_s)

    def on_finish(self, request_id: str, now_s: float) -> list[Dispatch]:
        """Free the finished request's slot; unknown ids are a no-op."""
        if request_id not in self._running_on:
            return []
        self._release(request_id)
        self._observe_release(now_s)
        return self._dispatch(now_s)

    def cancel(self, request_id: str, now_s: float) -> list[Dispatch]:
        """Waiting: drop it from the queue. Running: free its slot. Unknown: no-op."""
        if self._queue.remove(request_id) is not None:
            return []
        return self.on_finish(request_id, now_s)

    # ---- introspection --------------------------------------------------------------------------
    @property
    def num_waiting(self) -> int:
        return len(self._queue)

    @property
    def num_running(self) -> int:
        return len(self._running_on)

    @property
    def num_free_slots(self) -> int:
        return self._num_free_slots

    def replicas(self) -> dict[str, dict[str, int]]:
        return {
            rid: {"num_slots": r.num_slots, "num_running": len(r.running)}
            for rid, r in sorted(self._replicas.items())
        }

    def snapshot(self, now_s: float) -> dict[str, Any]:
        """JSON-able status for a status endpoint."""
        oldest_s = self._queue.oldest_arrival_s()
        return {
            "policy": self.policy.name,
            "aging": self.aging.describe(),
            "max_wait_s": self.config.max_wait_s,
            "max_queue_len": self.config.max_queue_len,
            "num_waiting": self.num_waiting,
            "num_running": self.num_running,
            "num_free_slots": self._num_free_slots,
            "oldest_wait_s": 0.0 if oldest_s is None else max(0.0, now_s - oldest_s),
            "guard_lead_s": self.guard_lead_s,
            "replicas": self.replicas(),
        }

    @property
    def guard_lead_s(self) -> float:
        """How long before `max_wait_s` the oldest waiter is served first (see module docstring)."""
        if self._release_interval_s is None:
            return 0.0
        return min(GUARD_LEAD_RELEASES * self._release_interval_s, self.config.max_wait_s / 2)

    # ---- mechanism ------------------------------------------------------------------------------
    def _observe_release(self, now_s: float) -> None:
        """Track the mean time between slot releases, counting only intervals with requests waiting."""
        if not self._queue:
            self._last_busy_release_s = None
            return
        if self._last_busy_release_s is not None:
            interval_s = max(0.0, now_s - self._last_busy_release_s)
            previous = self._release_interval_s
            self._release_interval_s = interval_s if previous is None else \
                previous + RELEASE_INTERVAL_EWMA_WEIGHT * (interval_s - previous)
        self._last_busy_release_s = now_s

    def _check_new(self, rec: RequestRecord) -> None:
        if rec.request_id in self._running_on or rec.request_id in self._queue:
            raise ValueError(f"request {rec.request_id!r} is already waiting or running")

    def _get_replica(self, replica_id: str) -> _Replica:
        try:
            return self._replicas[replica_id]
        except KeyError:
            raise KeyError(f"unknown replica {replica_id!r}; call add_replica first") from None

    def _release(self, request_id: str) -> None:
        replica = self._replicas[self._running_on.pop(request_id)]
        before = replica.num_free_slots
        del replica.running[request_id]
        self._num_free_slots += replica.num_free_slots - before

    def _pick_replica(self) -> _Replica:
        return min(
            self._replicas.values(),
            key=lambda r: (-r.num_free_slots, r.last_dispatch_seq, r.replica_id),
        )

    def _dispatch(self, now_s: float) -> list[Dispatch]:
        dispatches: list[Dispatch] = []
        lead_s = self.guard_lead_s
        while self._num_free_slots > 0 and len(self._queue) > 0:
            rec = self._queue.pop_next(now_s, lead_s)
            replica = self._pick_replica()
            replica.running[rec.request_id] = rec
            replica.last_dispatch_seq = self._dispatch_seq
            self._dispatch_seq += 1
            self._running_on[rec.request_id] = replica.replica_id
            self._num_free_slots -= 1
            wait_s = max(0.0, now_s - rec.arrival_time_s)
            dispatches.append(Dispatch(rec.request_id, replica.replica_id, wait_s, rec))
        return dispatches
