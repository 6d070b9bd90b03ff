"""Process-local view of the engine replica set, as Ray Serve's handle machinery sees it.

Invariant: `snapshot(key)` is the replica set Serve last pushed to the request router of the
handle identified by `key` (a deployment id string); it is replaced whole, never mutated, so
readers on another thread or event loop always see a consistent set.
"""

from __future__ import annotations

import threading
from types import MappingProxyType
from typing import Mapping

_lock = threading.Lock()
_replica_sets: dict[str, Mapping[str, dict]] = {}


def publish(key: str, replicas: Mapping[str, dict]) -> None:
    """Record the current replicas of deployment `key`: replica id -> facts (node id, stats)."""
    frozen = MappingProxyType(dict(replicas))
    with _lock:
        _replica_sets[key] = frozen


def snapshot(key: str) -> Mapping[str, dict] | None:
    """The last published replica set of `key`, or None before Serve pushed any."""
    with _lock:
        return _replica_sets.get(key)
