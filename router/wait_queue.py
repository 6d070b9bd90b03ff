"""The router's wait queue: a policy-ordered heap plus an arrival-ordered heap.

Invariant: every waiting request is in `_live`; heap entries whose (request_id, seq) is not live are
stale and skipped lazily. `pop_next` returns the oldest waiter if it has waited longer than
`max_wait_s - lead_s` (starvation guard, across priorities; the scheduler passes a lead so the start
itself comes by `max_wait_s`), otherwise the smallest (priority, policy key) (ties: arrival time, then
insertion order).
"""
from __future__ import annotations

import heapq

from router.aging import Aging
from router.errors import DuplicateRequestError
from router.policy import Policy, speculative_cost_tokens
from router.request import RequestRecord


class WaitQueue:
    def __init__(self, policy: Policy, aging: Aging, max_wait_s: float) -> None:
        self.policy = policy
        self.aging = aging
        self.max_wait_s = max_wait_s
        self._by_key: list[tuple[int, float, float, int, str]] = []
        self._by_arrival: list[tuple[float, int, str]] = []
        self._live: dict[str, tuple[int, RequestRecord]] = {}
        self._next_seq = 0
        self._predicted_tokens = 0.0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._live

    @property
    def predicted_tokens(self) -> float:
        """The queue's predicted work: the sum of the waiters' ssjf costs (prediction capped by max_tokens)."""
        return self._predicted_tokens if self._live else 0.0

    def push(self, rec: RequestRecord) -> None:
        if rec.request_id in self._live:
            raise DuplicateRequestError(f"request {rec.request_id!r} is already waiting")
        if rec.predicted_output_tokens is None:
            raise ValueError(f"request {rec.request_id!r} cannot wait without its prediction")
        key = self.policy.key(rec, self.aging)
        seq = self._next_seq
        self._next_seq += 1
        self._live[rec.request_id] = (seq, rec)
        self._predicted_tokens = (self._predicted_tokens if len(self._live) > 1 else 0.0) + speculative_cost_tokens(rec)
        heapq.heappush(self._by_key, (rec.priority, key, rec.arrival_time_s, seq, rec.request_id))
        heapq.heappush(self._by_arrival, (rec.arrival_time_s, seq, rec.request_id))

    def remove(self, request_id: str) -> RequestRecord | None:
        """Drop a waiter (cancel); its heap entries become stale. Unknown id -> None."""
        entry = self._live.pop(request_id, None)
        if entry is None:
            return None
        self._predicted_tokens -= speculative_cost_tokens(entry[1])
        self._maybe_compact()
        return entry[1]

    def oldest_arrival_s(self) -> float | None:
        self._drop_stale(self._by_arrival, seq_index=1)
        return self._by_arrival[0][0] if self._by_arrival else None

    def pop_next(self, now_s: float, lead_s: float = 0.0) -> RequestRecord:
        """Remove and return the request to dispatch next. Raises IndexError when empty."""
        if not self._live:
            raise IndexError("pop_next from an empty WaitQueue")
        oldest_s = self.oldest_arrival_s()
        if oldest_s is not None and now_s - oldest_s > self.max_wait_s - lead_s:
            request_id = self._by_arrival[0][2]
        else:
            self._drop_stale(self._by_key, seq_index=3)
            request_id = self._by_key[0][4]
        rec = self._live.pop(request_id)[1]
        self._predicted_tokens -= speculative_cost_tokens(rec)
        self._maybe_compact()
        return rec

    def _drop_stale(self, heap: list, seq_index: int) -> None:
        live = self._live
        while heap:
            entry = heap[0]
            current = live.get(entry[-1])
            if current is not None and current[0] == entry[seq_index]:
                return
            heapq.heappop(heap)

    def _maybe_compact(self) -> None:
        """Rebuild the heaps when stale entries dominate, so stale entries cannot grow without bound."""
        if len(self._by_key) + len(self._by_arrival) <= 128 + 8 * len(self._live):
            return
        live = self._live
        self._by_key = [e for e in self._by_key if e[4] in live and live[e[4]][0] == e[3]]
        self._by_arrival = [e for e in self._by_arrival if e[2] in live and live[e[2]][0] == e[1]]
        heapq.heapify(self._by_key)
        heapq.heapify(self._by_arrival)
