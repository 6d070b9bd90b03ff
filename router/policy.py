"""Scheduling policies as ordering keys.

Invariant: a policy is data — a name plus a time-invariant key function; smaller key runs first.
Linear aging `cost - a * (now - arrival)` orders exactly like `cost + a * arrival` (the `a * now` term
is common to every waiter), so keys never change after enqueue and a plain heap stays valid.
Only `sjf-oracle` reads `true_output_tokens`; nothing outside this module compares policy names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from router.request import RequestRecord

KeyFn = Callable[[RequestRecord, float], float]


@dataclass(frozen=True)
class Policy:
    """`key(record, aging_tokens_per_s)` -> float; ties fall back to arrival order."""

    name: str
    key: KeyFn
    description: str


def _fcfs_key(rec: RequestRecord, aging_tokens_per_s: float) -> float:
    return rec.arrival_time_s


def _ssjf_key(rec: RequestRecord, aging_tokens_per_s: float) -> float:
    return rec.predicted_output_tokens + aging_tokens_per_s * rec.arrival_time_s


def _oracle_key(rec: RequestRecord, aging_tokens_per_s: float) -> float:
    if rec.true_output_tokens is None:
        raise ValueError(f"sjf-oracle needs true_output_tokens (request {rec.request_id!r})")
    return rec.true_output_tokens + aging_tokens_per_s * rec.arrival_time_s


_REGISTRY: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("fcfs", _fcfs_key, "first come, first served (by arrival time)"),
        Policy("ssjf", _ssjf_key, "speculative SJF: predicted output tokens, minus aging"),
        Policy("sjf-oracle", _oracle_key, "SJF on the true output length (benchmarks only)"),
    )
}

POLICIES: tuple[str, ...] = tuple(_REGISTRY)


def get_policy(name: str) -> Policy:
    """Factory: the policy called `name`; unknown names raise ValueError listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}") from None
