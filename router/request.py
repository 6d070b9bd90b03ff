"""Request records and dispatch decisions.

Invariant: records are plain data; only the `sjf-oracle` policy ever reads `true_output_tokens`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RequestRecord:
    """One request as the scheduler sees it.

    `true_output_tokens` is for benchmarks only (the oracle baseline); production leaves it None.
    """

    request_id: str
    arrival_time_s: float
    predicted_output_tokens: float
    true_output_tokens: int | None = None
    prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Decision: run `request_id` on `replica_id` now; it waited `queue_wait_s` in the router."""

    request_id: str
    replica_id: str
    queue_wait_s: float
    record: RequestRecord


class QueueFullError(RuntimeError):
    """The bounded wait queue is full; the caller should answer 429/503."""
