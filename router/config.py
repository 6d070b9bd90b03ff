"""Scheduler configuration.

Invariant: a constructed SchedulerConfig is valid (checked in __post_init__); unknown keys in
`from_dict` are rejected with a clear message.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from router.aging import AGING_KINDS, Aging, make_aging
from router.policy import POLICIES

# Relative aging (default): a waiting job counts half as long every 5 s it waits (64x shorter at the
# 30 s bound); unit-free, so it holds whatever the length scale. 5 s was chosen with bench.sim.tune on
# val-split prompts: the best mean JCT whose p99 stays within 1.5x FCFS's at load 1.3 (README).
DEFAULT_AGING = "relative"
DEFAULT_AGING_HALF_LIFE_S = 5.0
# Linear aging (aging: linear): a waiting request gains this many tokens of priority per second
# waited: after 10 s it competes as if 100 tokens shorter.
DEFAULT_AGING_TOKENS_PER_S = 10.0
# Hard starvation bound: a request that has waited longer than this is dispatched next, whatever
# its predicted length (interactive users give up long before a minute).
DEFAULT_MAX_WAIT_S = 30.0
# Waiting requests held by the router before on_arrival raises QueueFullError (HTTP 429/503).
DEFAULT_MAX_QUEUE_LEN = 1024


@dataclass(frozen=True)
class SchedulerConfig:
    policy: str = "ssjf"
    aging_tokens_per_s: float = DEFAULT_AGING_TOKENS_PER_S
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    max_queue_len: int = DEFAULT_MAX_QUEUE_LEN
    aging: str = DEFAULT_AGING
    aging_half_life_s: float = DEFAULT_AGING_HALF_LIFE_S

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; valid policies: {', '.join(POLICIES)}")
        if self.aging not in AGING_KINDS:
            raise ValueError(f"unknown aging {self.aging!r}; valid: {', '.join(AGING_KINDS)}")
        if math.isnan(self.aging_half_life_s) or self.aging_half_life_s <= 0:
            raise ValueError(f"aging_half_life_s must be > 0 (.inf: no aging), got {self.aging_half_life_s!r}")
        if not (math.isfinite(self.aging_tokens_per_s) and self.aging_tokens_per_s >= 0):
            raise ValueError(f"aging_tokens_per_s must be finite and >= 0, got {self.aging_tokens_per_s!r}")
        if math.isnan(self.max_wait_s) or self.max_wait_s <= 0:
            raise ValueError(f"max_wait_s must be > 0 (.inf disables the guard), got {self.max_wait_s!r}")
        if isinstance(self.max_queue_len, bool) or not isinstance(self.max_queue_len, int) or self.max_queue_len < 0:
            raise ValueError(f"max_queue_len must be an int >= 0, got {self.max_queue_len!r}")

    def make_aging(self) -> Aging:
        return make_aging(self.aging, self.aging_half_life_s, self.aging_tokens_per_s)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SchedulerConfig":
        """Build from a YAML/JSON mapping; unknown keys raise ValueError naming the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"unknown scheduler config key(s) {unknown}; valid keys: {valid}")
        return cls(**data)
