"""Aging rules: how waiting shortens a job's effective size, as time-invariant ordering keys.

Invariant: `key(cost_tokens, arrival_time_s)` never depends on the current time, so a plain heap stays
valid. Each rule equals "effective cost at time `now`" up to a term common to every waiter:
- linear:   cost - a * (now - arrival)            == cost + a * arrival            (minus a * now)
- relative: log2(cost) - (now - arrival) / h      == log2(cost) + arrival / h      (minus now / h)
Relative aging halves a job's effective size every `half_life_s` seconds of waiting, whatever the unit
or scale of the sizes, so it weighs waiting against the spread of the keys it competes with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MIN_COST_TOKENS = 1.0  # log2 of anything smaller would let a zero-length prediction jump every queue


@dataclass(frozen=True)
class LinearAging:
    tokens_per_s: float

    def key(self, cost_tokens: float, arrival_time_s: float) -> float:
        return cost_tokens + self.tokens_per_s * arrival_time_s

    def describe(self) -> str:
        return f"linear: a waiting job counts {self.tokens_per_s:g} tokens shorter per second waited"


@dataclass(frozen=True)
class RelativeAging:
    half_life_s: float

    def key(self, cost_tokens: float, arrival_time_s: float) -> float:
        return math.log2(max(cost_tokens, MIN_COST_TOKENS)) + arrival_time_s / self.half_life_s

    def describe(self) -> str:
        return f"relative: a waiting job counts half as long every {self.half_life_s:g} s waited"


Aging = LinearAging | RelativeAging
_FACTORIES = {"relative": lambda half_life_s, tokens_per_s: RelativeAging(half_life_s),
              "linear": lambda half_life_s, tokens_per_s: LinearAging(tokens_per_s)}
AGING_KINDS: tuple[str, ...] = tuple(_FACTORIES)


def make_aging(kind: str, half_life_s: float, tokens_per_s: float) -> Aging:
    """The rule called `kind`; unknown kinds raise ValueError listing the valid ones."""
    try:
        return _FACTORIES[kind](half_life_s, tokens_per_s)
    except KeyError:
        raise ValueError(f"unknown aging {kind!r}; valid: {', '.join(AGING_KINDS)}") from None
