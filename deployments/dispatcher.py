"""Asyncio glue between live requests and the pure `router.Scheduler`.

Invariant: every admitted request id is either waiting (an unresolved future), running on exactly
one replica, or gone; each slot the scheduler grants is released exactly once (by `release`, by
`cancel`, or by the replica's removal), so no slot leaks and no request is dropped silently.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Callable, Iterable, Optional

from router import Dispatch, QueueFullError, RequestRecord, Scheduler

__all__ = ["Dispatcher", "QueueFullError", "QueueTimeoutError", "ReplicaLostError"]


class QueueTimeoutError(TimeoutError):
    """The request waited for a slot longer than its timeout."""


class ReplicaLostError(RuntimeError):
    """The replica running this request went away (died, removed or scaled down)."""


class Dispatcher:
    def __init__(self, scheduler: Scheduler, clock: Callable[[], float] = time.monotonic):
        self._scheduler = scheduler
        self._clock = clock
        self._waiters: dict[str, asyncio.Future] = {}
        self._running: dict[str, str] = {}  # request id -> replica id
        self._on_lost: dict[str, Callable[[], None]] = {}
        self._dead_replicas: set[str] = set()
        self._draining: set[str] = set()  # replicas Serve stopped routing to; removed once empty
        self._started: set[str] = set()  # running requests whose replica has produced an event
        self._dispatch_counter = itertools.count()
        self._dispatch_seq: dict[str, int] = {}  # running request id -> its dispatch order

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    def now_s(self) -> float:
        return self._clock()

    async def acquire(self, record: RequestRecord, timeout_s: float, requeue: bool = False) -> Dispatch:
        """Queue `record` and wait until the scheduler grants it a slot on some replica.

        Raises QueueFullError (queue bound reached), QueueTimeoutError, or CancelledError; in each
        case the request no longer holds a queue place or a slot.
        """
        request_id = record.request_id
        if request_id in self._waiters or request_id in self._running:  # before touching the original's state
            raise ValueError(f"request {request_id!r} is already waiting or running")
        future = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        try:
            admit = self._scheduler.requeue if requeue else self._scheduler.on_arrival
            self._apply(admit(record, self._clock()))
        except BaseException:
            self._waiters.pop(request_id, None)
            raise
        try:
            return await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            self.cancel(request_id)
            raise QueueTimeoutError(f"no engine slot became free within {timeout_s:g} s") from None
        except BaseException:
            self.cancel(request_id)
            raise

    def watch(self, request_id: str, on_lost: Callable[[], None]) -> None:
        """Call `on_lost` if the replica running `request_id` is removed before it is released."""
        self._on_lost[request_id] = on_lost

    def mark_started(self, request_id: str) -> None:
        """The replica has begun the request: a drain lets it finish there instead of re-queueing it."""
        self._started.add(request_id)

    def release(self, request_id: str, replica_id: str) -> None:
        """The request finished on `replica_id`: free its slot (no-op if already freed)."""
        self._on_lost.pop(request_id, None)
        if self._running.get(request_id) != replica_id:
            return
        del self._running[request_id]
        self._dispatch_seq.pop(request_id, None)
        self._started.discard(request_id)
        self._apply(self._scheduler.on_finish(request_id, self._clock()))
        self._remove_if_drained(replica_id)

    def cancel(self, request_id: str) -> None:
        """Drop a waiting request or free a running one's slot."""
        self._waiters.pop(request_id, None)
        self._on_lost.pop(request_id, None)
        replica_id = self._running.pop(request_id, None)
        self._dispatch_seq.pop(request_id, None)
        self._started.discard(request_id)
        self._apply(self._scheduler.cancel(request_id, self._clock()))
        if replica_id is not None:
            self._remove_if_drained(replica_id)

    def sync_replicas(self, capacities: dict[str, int]) -> None:
        """Make the scheduler's replica set equal `capacities` (replica id -> slots)."""
        known = self._scheduler.replicas()
        for replica_id in set(known) - set(capacities):
            self.drain_replica(replica_id)
        now_s = self._clock()
        for replica_id, num_slots in capacities.items():
            if replica_id in self._dead_replicas:
                continue
            self._draining.discard(replica_id)
            if replica_id not in known:
                self._apply(self._scheduler.add_replica(replica_id, num_slots, now_s))
            elif known[replica_id]["num_slots"] != num_slots:
                self._apply(self._scheduler.set_capacity(replica_id, num_slots, now_s))

    def drain_replica(self, replica_id: str) -> None:
        """Serve stopped routing to `replica_id` (scale-down, or a failure it noticed first): send it
        nothing new; requests it already began finish there (or fail on their own if it died); requests
        pinned to it that it never began are re-queued through their `watch` callbacks."""
        if replica_id not in self._scheduler.replicas():
            return
        self._draining.add(replica_id)
        self._apply(self._scheduler.set_capacity(replica_id, 0, self._clock()))
        for request_id, running_on in list(self._running.items()):
            if running_on == replica_id and request_id not in self._started:
                self._notify_lost(request_id)
        self._remove_if_drained(replica_id)

    def _remove_if_drained(self, replica_id: str) -> None:
        if replica_id in self._draining and self._scheduler.replicas().get(replica_id, {}).get("num_running") == 0:
            self._draining.discard(replica_id)
            self._scheduler.remove_replica(replica_id, self._clock())

    def remove_replica(self, replica_id: str, dead: bool = False) -> None:
        """Forget a replica; its in-flight requests are told through their `watch` callbacks."""
        if dead:
            self._dead_replicas.add(replica_id)
        self._draining.discard(replica_id)
        if replica_id not in self._scheduler.replicas():
            return
        for request_id in self._scheduler.remove_replica(replica_id, self._clock()):
            self._running.pop(request_id, None)
            self._started.discard(request_id)
            self._notify_lost(request_id)

    def _notify_lost(self, request_id: str) -> None:
        """Tell the request's owner (once) that its replica will not run it."""
        callback = self._on_lost.pop(request_id, None)
        if callback is not None:
            callback()

    def is_dead(self, replica_id: str) -> bool:
        return replica_id in self._dead_replicas

    def dispatch_seq(self, request_id: str) -> int:
        """Position of the request's (latest) dispatch in this router's dispatch order."""
        return self._dispatch_seq[request_id]

    def running_on(self, request_id: str) -> Optional[str]:
        return self._running.get(request_id)

    def _apply(self, dispatches: Iterable[Dispatch]) -> None:
        pending = list(dispatches)
        while pending:
            dispatch = pending.pop(0)
            future = self._waiters.pop(dispatch.request_id, None)
            if future is None or future.done():
                pending.extend(self._scheduler.on_finish(dispatch.request_id, self._clock()))
                continue
            self._running[dispatch.request_id] = dispatch.replica_id
            self._dispatch_seq[dispatch.request_id] = next(self._dispatch_counter)
            future.set_result(dispatch)
