"""Serve request router for the engine deployment: sends each request to the replica the SSJF
scheduler chose for it.

Invariant: a request carrying `replica_id=<id>` is only ever sent to that replica (it waits in
Serve's backoff if the replica is gone, and the SSJF router then cancels and re-queues it); calls
without it (health and info probes) go to any replica. Every replica-set update from Serve is
published to `replica_registry`, which is how the SSJF router learns of added and removed replicas.
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
        target = pending_request.kwargs.get(TARGET_KWARG) if pending_request else None
        if target is None:
            return [candidate_replicas]
        return [[r for r in candidate_replicas if r.replica_id.unique_id == target]]
