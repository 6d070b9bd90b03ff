"""Pure scheduling core shared by the live router deployment and the simulator.

Invariant: synchronous, clock injected (every method takes `now_s`), and no ray / torch / asyncio
imports anywhere in this package.
"""
from router.aging import AGING_KINDS, LinearAging, RelativeAging
from router.config import (
    DEFAULT_AGING,
    DEFAULT_AGING_HALF_LIFE_S,
    DEFAULT_AGING_TOKENS_PER_S,
    DEFAULT_MAX_QUEUE_LEN,
    DEFAULT_MAX_WAIT_S,
    SchedulerConfig,
)
from router.policy import POLICIES, Policy, get_policy, speculative_cost_tokens
from router.request import MAX_PRIORITY, MIN_PRIORITY, Dispatch, QueueFullError, RequestRecord
from router.scheduler import Scheduler

__all__ = [
    "AGING_KINDS",
    "DEFAULT_AGING",
    "DEFAULT_AGING_HALF_LIFE_S",
    "LinearAging",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "RelativeAging",
    "speculative_cost_tokens",
    "DEFAULT_AGING_TOKENS_PER_S",
    "DEFAULT_MAX_QUEUE_LEN",
    "DEFAULT_MAX_WAIT_S",
    "POLICIES",
    "Dispatch",
    "Policy",
    "QueueFullError",
    "RequestRecord",
    "Scheduler",
    "SchedulerConfig",
    "get_policy",
]
