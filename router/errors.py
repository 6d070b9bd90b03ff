"""Errors the scheduling core raises, one type per cause, so callers map each to its own answer.

Invariant: nothing in router/ raises a bare ValueError for a request-time condition; configuration
errors (`SchedulerConfig`, `RequestRecord` fields) stay ValueError because they are construction-time.
"""
from __future__ import annotations


class QueueFullError(RuntimeError):
    """The bounded wait queue is full; the caller should answer 429."""


class DuplicateRequestError(RuntimeError):
    """A request with this id is already waiting or holds a lease; the caller should answer 409."""


class MissingOracleLengthError(RuntimeError):
    """The sjf-oracle policy needs the request's true output length and it was not given (a 400)."""


class UnknownReplicaError(KeyError):
    """A replica id the scheduler does not know (never added, or already forgotten)."""
