"""Pure scheduling core shared by the live router deployment and the simulator.

Invariant: synchronous, clock injected (every method takes `now_s`), and no ray / torch / asyncio
imports anywhere in this package.
"""
from router.config import (
    DEFAULT_AGING_TOKENS_PER_S,
    DEFAULT_MAX_QUEUE_LEN,
    DEFAULT_MAX_WAIT_S,
    SchedulerConfig,
)
from router.policy import POLICIES, Policy, get_policy
from router.request import Dispatch, QueueFullError, RequestRecord
from router.scheduler import Scheduler

__all__ = [
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
