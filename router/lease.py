"""Leases: what a grant hands out, and the one-shot `lost` signal that travels with it.

Invariant: a lease is created by the scheduler when it grants a slot and is the only handle to that
slot. Its `lost` signal fires at most once; a callback subscribed after it fired runs at once, so a
replica loss that lands between the grant and the subscription is never missed.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

from router.request import RequestRecord

LostCallback = Callable[[str], None]


class LostSignal:
    """Set once with a reason; subscribers run synchronously in the setter's thread."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._callbacks: list[LostCallback] = []

    @property
    def is_set(self) -> bool:
        return self.reason is not None

    def set(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(reason)

    def subscribe(self, callback: LostCallback) -> None:
        if self.reason is not None:
            callback(self.reason)
        else:
            self._callbacks.append(callback)


class LeaseState(enum.Enum):
    GRANTED = "granted"  # the slot is reserved; the replica has not begun the request
    STARTED = "started"  # the replica produced its first event: a drain lets it finish there
    ENDED = "ended"  # released, cancelled or lost: the slot is no longer held


@dataclass(eq=False)
class Lease:
    """Request `record` may run on `replica_id`; it waited `queue_wait_s`; `dispatch_seq` orders grants."""

    record: RequestRecord
    replica_id: str
    dispatch_seq: int
    queue_wait_s: float
    state: LeaseState = LeaseState.GRANTED
    lost: LostSignal = field(default_factory=LostSignal)

    @property
    def request_id(self) -> str:
        return self.record.request_id
