"""Scheduling policies as ordering keys.

Invariant: a policy is data — a name plus a time-invariant key function; smaller key runs first.
A job's cost (in tokens) goes through the scheduler's aging rule (router.aging), which keeps keys
fixed after enqueue, so a plain heap stays valid.
The ssjf cost uses only what is known at arrival: the prediction, capped by the request's own
`max_tokens`, or exactly `max_tokens` for `ignore_eos` requests. Only `sjf-oracle` reads
`true_output_tokens`; nothing outside this module compares policy names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from router.aging import Aging
from router.errors import MissingOracleLengthError
from router.request import RequestRecord

KeyFn = Callable[[RequestRecord, Aging], float]


@dataclass(frozen=True)
class Policy:
    """`key(record, aging)` -> float; ties fall back to arrival order. `check(record)` raises when the
    policy cannot rank the record at all (it runs even when nothing is ranked: a request granted at once)."""

    name: str
    key: KeyFn
    description: str
    check: Callable[[RequestRecord], None] = lambda rec: None


def speculative_cost_tokens(rec: RequestRecord) -> float:
    """What ssjf ranks by: the stated length when the request fixes it, else the capped prediction."""
    if rec.max_tokens is None:
        return rec.predicted_output_tokens
    if rec.ignore_eos:
        return float(rec.max_tokens)
    return min(rec.predicted_output_tokens, float(rec.max_tokens))


def _fcfs_key(rec: RequestRecord, aging: Aging) -> float:
    return rec.arrival_time_s


def _ssjf_key(rec: RequestRecord, aging: Aging) -> float:
    return aging.key(speculative_cost_tokens(rec), rec.arrival_time_s)


def _check_oracle(rec: RequestRecord) -> None:
    if rec.true_output_tokens is None:
        raise MissingOracleLengthError(f"sjf-oracle needs true_output_tokens (request {rec.request_id!r})")


def _oracle_key(rec: RequestRecord, aging: Aging) -> float:
    _check_oracle(rec)
    return aging.key(rec.true_output_tokens, rec.arrival_time_s)


_REGISTRY: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("fcfs", _fcfs_key, "first come, first served (by arrival time)"),
        Policy("ssjf", _ssjf_key, "speculative SJF: predicted output tokens (capped by max_tokens), aged"),
        Policy("sjf-oracle", _oracle_key, "SJF on the true output length (benchmarks only), aged", _check_oracle),
    )
}

POLICIES: tuple[str, ...] = tuple(_REGISTRY)


def get_policy(name: str) -> Policy:
    """Factory: the policy called `name`; unknown names raise ValueError listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}") from None
