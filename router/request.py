"""The request record: one request as the scheduler sees it.

Invariant: records are plain data; only the `sjf-oracle` policy ever reads `true_output_tokens`.
`priority` orders before any policy key (lower first, as in vLLM) and lies in
[MIN_PRIORITY, MAX_PRIORITY]; the starvation bound applies across priorities.
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_PRIORITY = -100
MAX_PRIORITY = 100


@dataclass(slots=True)
class RequestRecord:
    """One request as the scheduler sees it.

    `true_output_tokens` is for benchmarks only (the oracle baseline); production leaves it None.
    `max_tokens` / `ignore_eos` are what the request itself states about its length.
    """

    request_id: str
    arrival_time_s: float
    predicted_output_tokens: float | None  # None only while granted before its prediction (grant_now)
    true_output_tokens: int | None = None
    prompt_tokens: int = 0
    max_tokens: int | None = None
    ignore_eos: bool = False
    priority: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.priority, bool) or not isinstance(self.priority, int) \
                or not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be an int in [{MIN_PRIORITY}, {MAX_PRIORITY}], got {self.priority!r}")
