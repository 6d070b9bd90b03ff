"""The one owner of request and replica state, synchronous, with an injected clock.

Invariants: no ray/torch/asyncio; every mutating method takes `now_s` and returns the leases it
granted. A request is waiting (in the queue), holds exactly one lease (granted, then started), or is
unknown here; waiters and free slots never coexist after a call returns. Replicas move
active -> draining -> forgotten, or to dead (see router.replicas); when a replica is drained or dies,
the leases it loses end here first and their `lost` signals fire last, so subscribers see a
consistent scheduler. A request goes to the replica with the most free slots (ties: least recently
dispatched to, then id); the order among waiters comes only from the policy key (router.policy). A
request arriving to an empty queue and a free slot may be granted before it is predicted (`grant_now`),
but not while an earlier arrival is still being predicted (it would overtake it): a request refused by
`grant_now` counts as predicting until it arrives (`on_arrival`) or is withdrawn (`withdraw_predicting`).
A waiting request always has its prediction.
Starvation guard: a slot goes to the oldest waiter once its wait is within `guard_lead_s` of
`max_wait_s`, where the lead is GUARD_LEAD_RELEASES mean slot-release intervals (measured only
while requests wait, capped at half the bound), so its start, not just its turn, comes by the bound.
"""
from __future__ import annotations

from typing import Any

from router.config import SchedulerConfig
from router.errors import DuplicateRequestError, QueueFullError
from router.lease import Lease, LeaseState
from router.policy import get_policy
from router.replicas import Replica, ReplicaState, ReplicaTable, check_slots
from router.request import RequestRecord
from router.wait_queue import WaitQueue

# The guard serves an old waiter this many mean release intervals before its bound: one interval is
# when the next slot frees on average; with roughly memoryless releases, no slot frees within four
# intervals only ~2% of the time (two left ~14%: live replays overshot the bound by 0.1-0.2 s).
GUARD_LEAD_RELEASES = 4.0
RELEASE_INTERVAL_EWMA_WEIGHT = 0.2


class Scheduler:
    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.policy = get_policy(self.config.policy)
        self.aging = self.config.make_aging()
        self._queue = WaitQueue(self.policy, self.aging, self.config.max_wait_s)
        self._replicas = ReplicaTable()
        self._leases: dict[str, Lease] = {}
        self._predicting: set[str] = set()  # refused by grant_now, not yet arrived nor withdrawn
        self._dispatch_seq = 0
        self._release_interval_s: float | None = None  # EWMA over releases while requests wait
        self._last_busy_release_s: float | None = None

    # ---- replica lifecycle ----------------------------------------------------------------------
    def add_replica(self, replica_id: str, num_slots: int, now_s: float, *, max_context_tokens: int | None = None,
                    node_id: str | None = None) -> list[Lease]:
        """Register (or re-activate) a replica with `num_slots` slots; its leases are kept. A dead
        replica stays dead: adding it again grants nothing."""
        check_slots(num_slots)
        replica = self._replicas.find(replica_id)
        if replica is None:
            self._replicas.add(Replica(replica_id, num_slots, max_context_tokens, node_id, capacity=num_slots))
        elif replica.state is not ReplicaState.DEAD:
            self._replicas.update(replica, num_slots=num_slots, capacity=num_slots, state=ReplicaState.ACTIVE,
                                  max_context_tokens=max_context_tokens, node_id=node_id)
        return self._dispatch(now_s)

    def set_capacity(self, replica_id: str, num_slots: int, now_s: float) -> list[Lease]:
        """Change a replica's usable slots; leases above a lowered count keep running."""
        check_slots(num_slots)
        self._replicas.update(self._replicas.get(replica_id), num_slots=num_slots)
        return self._dispatch(now_s)

    def drain_replica(self, replica_id: str, now_s: float) -> list[Lease]:
        """Send the replica nothing new; started leases finish there, granted ones are lost (their
        owners re-queue them). The replica is forgotten with its last lease. Returns the lost leases."""
        replica = self._replicas.find(replica_id)
        if replica is None or replica.state is not ReplicaState.ACTIVE:
            return []
        self._replicas.update(replica, state=ReplicaState.DRAINING)
        lost = [lease for lease in replica.leases.values() if lease.state is LeaseState.GRANTED]
        return self._lose(replica, lost, f"replica {replica_id} is draining")

    def remove_replica(self, replica_id: str, now_s: float) -> list[Lease]:
        """The replica died: every lease on it is lost, and the id is never granted again."""
        replica = self._replicas.find(replica_id)
        if replica is None:
            self._replicas.add(Replica(replica_id, 0, state=ReplicaState.DEAD))
            return []
        if replica.state is ReplicaState.DEAD:
            return []
        self._replicas.update(replica, state=ReplicaState.DEAD)
        return self._lose(replica, list(replica.leases.values()), f"replica {replica_id} died")

    def forget_absent(self, present: set[str]) -> None:
        """Drop the tombstones of dead replicas that are no longer listed anywhere."""
        self._replicas.forget_dead_except(present)

    def is_dead(self, replica_id: str) -> bool:
        return self._replicas.is_dead(replica_id)

    # ---- request lifecycle ----------------------------------------------------------------------
    def check_admission(self, request_id: str) -> None:
        """Raise what `on_arrival` would raise for this id now (duplicate, full queue), before any work."""
        if request_id in self._leases or request_id in self._queue:
            raise DuplicateRequestError(f"request {request_id!r} is already waiting or running")
        if self._replicas.num_free_slots == 0 and len(self._queue) >= self.config.max_queue_len:
            raise QueueFullError(f"wait queue full ({len(self._queue)} waiting, max_queue_len="
                                 f"{self.config.max_queue_len}); request {request_id!r} rejected, retry later")

    def on_arrival(self, rec: RequestRecord, now_s: float) -> list[Lease]:
        """Enqueue a new request; raises QueueFullError when it would have to wait in a full queue."""
        self._predicting.discard(rec.request_id)
        self.check_admission(rec.request_id)
        self._queue.push(rec)
        return self._dispatch(now_s)

    def grant_now(self, rec: RequestRecord, now_s: float) -> Lease | None:
        """A lease at once when no one waits or is being predicted and a slot is free: the policy has
        nothing to reorder, so the request needs no prediction (`predicted_output_tokens` may still be
        None). Otherwise None, and the request counts as predicting: the caller predicts and calls
        `on_arrival`, or `withdraw_predicting` if it ends first. Raises what `on_arrival` would
        (duplicate; a record the policy cannot rank)."""
        self.check_admission(rec.request_id)
        self.policy.check(rec)
        if self._queue or self._predicting or self._replicas.num_free_slots == 0:
            self._predicting.add(rec.request_id)
            return None
        return self._grant(rec, now_s)

    def withdraw_predicting(self, request_id: str) -> None:
        """The request refused by `grant_now` ended before `on_arrival` (cancelled, failed); no-op
        for any other id."""
        self._predicting.discard(request_id)

    def requeue(self, rec: RequestRecord, now_s: float) -> list[Lease]:
        """Put a request back keeping its arrival time; ignores max_queue_len. A lease it still holds
        is released first (preemption)."""
        held = self._leases.get(rec.request_id)
        if held is not None:
            self._end(held)
        if rec.request_id in self._queue:
            raise DuplicateRequestError(f"request {rec.request_id!r} is already waiting")
        self._queue.push(rec)
        return self._dispatch(now_s)

    def start(self, lease: Lease) -> None:
        """The replica began the request: a drain now lets it finish there."""
        if self._leases.get(lease.request_id) is lease:
            lease.state = LeaseState.STARTED

    def release(self, lease: Lease, now_s: float) -> list[Lease]:
        """Free the lease's slot; a lease that already ended (lost, or released before) is a no-op."""
        if self._leases.get(lease.request_id) is not lease:
            return []
        self._end(lease)
        self._observe_release(now_s)
        return self._dispatch(now_s)

    def cancel(self, request_id: str, now_s: float) -> list[Lease]:
        """Waiting: drop it from the queue. Holding a lease: release it. Unknown: no-op."""
        if self._queue.remove(request_id) is not None:
            return []
        lease = self._leases.get(request_id)
        return [] if lease is None else self.release(lease, now_s)

    # ---- introspection --------------------------------------------------------------------------
    @property
    def num_waiting(self) -> int:
        return len(self._queue)

    @property
    def num_predicting(self) -> int:
        return len(self._predicting)

    @property
    def waiting_predicted_tokens(self) -> float:
        return self._queue.predicted_tokens

    @property
    def num_running(self) -> int:
        return len(self._leases)

    @property
    def num_free_slots(self) -> int:
        return self._replicas.num_free_slots

    @property
    def num_active_replicas(self) -> int:
        return sum(1 for _ in self._replicas.active())

    @property
    def max_context_tokens(self) -> int | None:
        """The smallest context of the active replicas (a request must fit wherever it lands); None
        when no replica is active or none stated its context."""
        limits = [r.max_context_tokens for r in self._replicas.active() if r.max_context_tokens is not None]
        return min(limits) if limits else None

    def lease_of(self, request_id: str) -> Lease | None:
        return self._leases.get(request_id)

    def replicas(self) -> dict[str, dict[str, Any]]:
        """Active and draining replicas (dead ones are not listed)."""
        return {r.replica_id: r.facts() for r in sorted(self._replicas.live(), key=lambda r: r.replica_id)}

    def snapshot(self, now_s: float) -> dict[str, Any]:
        """JSON-able status for a status endpoint."""
        oldest_s = self._queue.oldest_arrival_s()
        return {
            "policy": self.policy.name,
            "aging": self.aging.describe(),
            "max_wait_s": self.config.max_wait_s,
            "max_queue_len": self.config.max_queue_len,
            "num_waiting": self.num_waiting,
            "num_predicting": self.num_predicting,
            "waiting_predicted_tokens": round(self.waiting_predicted_tokens, 2),
            "num_running": self.num_running,
            "num_free_slots": self.num_free_slots,
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

    def _end(self, lease: Lease) -> None:
        """The lease stops holding its slot; a draining replica is forgotten with its last lease."""
        del self._leases[lease.request_id]
        lease.state = LeaseState.ENDED
        replica = self._replicas.find(lease.replica_id)
        if replica is None or lease.request_id not in replica.leases:
            return
        self._replicas.give_back(replica, lease.request_id)
        if replica.state is ReplicaState.DRAINING and not replica.leases:
            self._replicas.drop(replica.replica_id)

    def _lose(self, replica: Replica, lost: list[Lease], reason: str) -> list[Lease]:
        for lease in lost:
            self._end(lease)
        if replica.state is ReplicaState.DRAINING and not replica.leases and replica.replica_id in self._replicas:
            self._replicas.drop(replica.replica_id)
        for lease in lost:
            lease.lost.set(reason)
        return lost

    def _dispatch(self, now_s: float) -> list[Lease]:
        granted: list[Lease] = []
        lead_s = self.guard_lead_s
        while self._replicas.num_free_slots > 0 and len(self._queue) > 0:
            granted.append(self._grant(self._queue.pop_next(now_s, lead_s), now_s))
        return granted

    def _grant(self, rec: RequestRecord, now_s: float) -> Lease:
        replica = self._replicas.pick()
        lease = Lease(rec, replica.replica_id, self._dispatch_seq, max(0.0, now_s - rec.arrival_time_s))
        self._replicas.take(replica, lease, self._dispatch_seq)
        self._dispatch_seq += 1
        self._leases[rec.request_id] = lease
        return lease
