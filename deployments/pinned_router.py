"""Serve request router for the engine deployment: sends each request to the replica the SSJF
scheduler chose for it.

Invariant: a request carrying `replica_id=<id>` is only ever sent to that replica (it waits in
Serve's backoff if the replica is gone, and the SSJF router then cancels and re-queues it); calls
without it (health and info probes) go to any replica. Every routing round ends in Serve's backoff
sleep: Serve retries a round without sleeping unless the router asks for backoff, and a round that
finds no replica does not await, so without it one pinned request to a vanished replica would spin
the handle's event loop and stall every other call through that handle. Every replica-set update
from Serve is published to `replica_registry`, which is how the SSJF router learns of added and
removed replicas.
"""

from __future__ import annotations

from typing import List, Optional

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from deployments import replica_registry

TARGET_KWARG = "replica_id"


def registry_key(app_name: str, deployment_name: str) -> str:
    return f"{app_name}/{deployment_name}"


class PinnedReplicaRouter(RequestRouter):
    """No FIFOMixin on purpose: its matching hands a chosen replica to the oldest pending request,
    which would break pinning; the base class matches the exact request."""

    def update_replicas(self, replicas: List[RunningReplica]) -> None:
        super().update_replicas(replicas)
        replica_registry.publish(
            registry_key(self._deployment_id.app_name, self._deployment_id.name),
            {r.replica_id.unique_id: {"node_id": r.node_id} for r in replicas},
        )

    async def choose_replicas(
        self,
        candidate_replicas: List[RunningReplica],
        pending_request: Optional[PendingRequest] = None,
    ) -> List[List[RunningReplica]]:
        if pending_request is None:
            return [candidate_replicas]
        pending_request.routing_context.should_backoff = True
        target = pending_request.kwargs.get(TARGET_KWARG)
        if target is None:
            return [candidate_replicas]
        return [[r for r in candidate_replicas if r.replica_id.unique_id == target]]
