"""The scheduler's table of engine replicas and their lifecycle: active -> draining -> gone, or dead.

Invariants: only an ACTIVE replica has free slots; a DRAINING one keeps its leases until they end and
is forgotten with the last; a DEAD one is a tombstone (it never comes back under the same id) until
`forget_absent` drops it. `num_free_slots` is the sum over replicas, kept incrementally.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Iterable

from router.errors import UnknownReplicaError
from router.lease import Lease


class ReplicaState(enum.Enum):
    ACTIVE = "active"
    DRAINING = "draining"  # Serve stopped routing to it: nothing new; started work finishes there
    DEAD = "dead"


@dataclass
class Replica:
    replica_id: str
    num_slots: int
    max_context_tokens: int | None = None
    node_id: str | None = None
    capacity: int = 0  # the engine's own slot count; num_slots may be lower (a running static batch)
    state: ReplicaState = ReplicaState.ACTIVE
    leases: dict[str, Lease] = field(default_factory=dict)
    last_dispatch_seq: int = -1

    @property
    def num_free_slots(self) -> int:
        if self.state is not ReplicaState.ACTIVE:
            return 0
        return max(0, self.num_slots - len(self.leases))

    def facts(self) -> dict[str, Any]:
        return {"state": self.state.value, "capacity": self.capacity, "num_slots": self.num_slots,
                "num_running": len(self.leases), "max_context_tokens": self.max_context_tokens,
                "node_id": self.node_id}


def check_slots(num_slots: int) -> None:
    if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 0:
        raise ValueError(f"num_slots must be an int >= 0, got {num_slots!r}")


class ReplicaTable:
    def __init__(self) -> None:
        self._replicas: dict[str, Replica] = {}
        self.num_free_slots = 0

    def __contains__(self, replica_id: str) -> bool:
        return replica_id in self._replicas

    def get(self, replica_id: str) -> Replica:
        try:
            return self._replicas[replica_id]
        except KeyError:
            raise UnknownReplicaError(f"unknown replica {replica_id!r}; call add_replica first") from None

    def find(self, replica_id: str) -> Replica | None:
        return self._replicas.get(replica_id)

    def live(self) -> Iterable[Replica]:
        return (r for r in self._replicas.values() if r.state is not ReplicaState.DEAD)

    def active(self) -> Iterable[Replica]:
        return (r for r in self._replicas.values() if r.state is ReplicaState.ACTIVE)

    def add(self, replica: Replica) -> None:
        self._replicas[replica.replica_id] = replica
        self.num_free_slots += replica.num_free_slots

    def update(self, replica: Replica, **changes: Any) -> None:
        """Change fields of `replica` (num_slots, state, ...) keeping the free-slot total exact."""
        before = replica.num_free_slots
        for name, value in changes.items():
            setattr(replica, name, value)
        self.num_free_slots += replica.num_free_slots - before

    def take(self, replica: Replica, lease: Lease, dispatch_seq: int) -> None:
        self.update(replica, last_dispatch_seq=dispatch_seq)
        before = replica.num_free_slots
        replica.leases[lease.request_id] = lease
        self.num_free_slots += replica.num_free_slots - before

    def give_back(self, replica: Replica, request_id: str) -> None:
        before = replica.num_free_slots
        del replica.leases[request_id]
        self.num_free_slots += replica.num_free_slots - before

    def drop(self, replica_id: str) -> None:
        replica = self._replicas.pop(replica_id)
        self.num_free_slots -= replica.num_free_slots

    def pick(self) -> Replica:
        """The active replica with the most free slots (ties: least recently dispatched to, then id)."""
        return min(self.active(), key=lambda r: (-r.num_free_slots, r.last_dispatch_seq, r.replica_id))

    def forget_dead_except(self, keep: set[str]) -> None:
        for replica_id in [r for r, rep in self._replicas.items() if rep.state is ReplicaState.DEAD and r not in keep]:
            del self._replicas[replica_id]

    def is_dead(self, replica_id: str) -> bool:
        replica = self._replicas.get(replica_id)
        return replica is not None and replica.state is ReplicaState.DEAD
