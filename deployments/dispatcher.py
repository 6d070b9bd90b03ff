"""Asyncio futures around the pure `router.Scheduler`: a request waits on a future until the
scheduler grants it a lease.

Invariant: this module holds no request or replica state of its own beyond the futures of waiting
requests; every lease the scheduler grants is either handed to its waiter or given straight back
(the waiter is gone), so no slot leaks. Loss of a lease is signalled on the lease itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Iterable

from router import DuplicateRequestError, Lease, RequestRecord, Scheduler


class QueueTimeoutError(TimeoutError):
    """The request waited for a slot longer than its timeout."""


class Dispatcher:
    def __init__(self, scheduler: Scheduler, clock: Callable[[], float] = time.monotonic):
        self.scheduler = scheduler
        self._clock = clock
        self._waiters: dict[str, asyncio.Future] = {}

    def now_s(self) -> float:
        return self._clock()

    def grant_now(self, record: RequestRecord) -> Lease | None:
        """A lease at once if no one waits and a slot is free (no prediction needed), else None; raises
        DuplicateRequestError / QueueFullError / MissingOracleLengthError before the caller spends work."""
        if record.request_id in self._waiters:
            raise DuplicateRequestError(f"request {record.request_id!r} is already waiting or running")
        return self.scheduler.grant_now(record, self._clock())

    def withdraw_predicting(self, request_id: str) -> None:
        """A request `grant_now` refused ended before it was queued: later arrivals may go first again."""
        self.scheduler.withdraw_predicting(request_id)

    async def acquire(self, record: RequestRecord, timeout_s: float, requeue: bool = False) -> Lease:
        """Queue `record` and wait until the scheduler grants it a lease.

        Raises QueueFullError, DuplicateRequestError, MissingOracleLengthError, QueueTimeoutError or
        CancelledError; in each case the request holds no queue place and no slot afterwards.
        """
        request_id = record.request_id
        if request_id in self._waiters:  # never touch a waiting original's future
            raise DuplicateRequestError(f"request {request_id!r} is already waiting or running")
        if not requeue:
            self.scheduler.check_admission(request_id)
        future = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        try:
            admit = self.scheduler.requeue if requeue else self.scheduler.on_arrival
            self._hand_out(admit(record, self._clock()))
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

    def start(self, lease: Lease) -> None:
        self.scheduler.start(lease)

    def release(self, lease: Lease) -> None:
        """The request is done with its slot (a lease that already ended is a no-op)."""
        self._hand_out(self.scheduler.release(lease, self._clock()))

    def cancel(self, request_id: str) -> None:
        """Drop a waiting request or release the lease it holds."""
        self._waiters.pop(request_id, None)
        self._hand_out(self.scheduler.cancel(request_id, self._clock()))

    def add_replica(self, replica_id: str, num_slots: int, max_context_tokens: int, node_id: str | None) -> None:
        self._hand_out(self.scheduler.add_replica(replica_id, num_slots, self._clock(),
                                                  max_context_tokens=max_context_tokens, node_id=node_id))

    def drain_replica(self, replica_id: str) -> None:
        """Serve stopped routing to it: nothing new goes there; unstarted leases are lost (re-queued)."""
        self.scheduler.drain_replica(replica_id, self._clock())

    def replica_died(self, replica_id: str) -> None:
        """Every lease on it is lost and it is never granted again."""
        self.scheduler.remove_replica(replica_id, self._clock())

    def _hand_out(self, leases: Iterable[Lease]) -> None:
        pending = list(leases)
        while pending:
            lease = pending.pop(0)
            future = self._waiters.pop(lease.request_id, None)
            if future is None or future.done():
                pending.extend(self.scheduler.release(lease, self._clock()))
                continue
            future.set_result(lease)
