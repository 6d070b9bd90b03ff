"""Pure scheduling core shared by the live router deployment and the simulator.

Invariant: synchronous, clock injected (every method takes `now_s`), and no ray / torch / asyncio
imports anywhere in this package. `Scheduler` is the one owner of request and replica state.
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
from router.errors import DuplicateRequestError, MissingOracleLengthError, QueueFullError, UnknownReplicaError
from router.events import DoneEvent, StreamEvent, TokenEvent, parse_event
from router.lease import Lease, LeaseState, LostSignal
from router.policy import POLICIES, Policy, get_policy, speculative_cost_tokens
from router.replicas import ReplicaState
from router.request import MAX_PRIORITY, MIN_PRIORITY, RequestRecord
from router.scheduler import Scheduler

__all__ = [
    "AGING_KINDS",
    "DEFAULT_AGING",
    "DEFAULT_AGING_HALF_LIFE_S",
    "DEFAULT_AGING_TOKENS_PER_S",
    "DEFAULT_MAX_QUEUE_LEN",
    "DEFAULT_MAX_WAIT_S",
    "DoneEvent",
    "DuplicateRequestError",
    "Lease",
    "LeaseState",
    "LinearAging",
    "LostSignal",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "MissingOracleLengthError",
    "POLICIES",
    "Policy",
    "QueueFullError",
    "RelativeAging",
    "ReplicaState",
    "RequestRecord",
    "Scheduler",
    "SchedulerConfig",
    "StreamEvent",
    "TokenEvent",
    "UnknownReplicaError",
    "get_policy",
    "parse_event",
    "speculative_cost_tokens",
]
