"""Application graph: the SSJF router (HTTP ingress) bound to the engine deployment.

Invariant: everything here is derived from one validated `AppConfig`; no setting is decided twice.
"""

from __future__ import annotations

from typing import Optional

from ray import serve
from ray.serve.config import RequestRouterConfig

from deployments.config import AppConfig, load_config, parse_cli_args
from deployments.engine_replica import EngineReplica
from deployments.http_api import HTTPRouter
from deployments.typed_config import to_dict

# Serve handles control calls (info, health) beside generations: leave room for them.
CONTROL_CALL_HEADROOM = 16


def build_app(args: Optional[dict] = None):
    """`serve run deployments:build_app config=PATH policy=fcfs batching=dynamic num_replicas=2`."""
    path, overrides = parse_cli_args(args or {})
    return app_from_config(load_config(path, overrides))


def app_from_config(config: AppConfig):
    replicas = config.engine_replicas
    scaling = ({"autoscaling_config": replicas.autoscaling_config} if replicas.autoscaling_config
               else {"num_replicas": replicas.num_replicas})
    engine = serve.deployment(EngineReplica, name="Engine").options(
        ray_actor_options=replicas.ray_actor_options,
        max_ongoing_requests=config.engine.capacity + CONTROL_CALL_HEADROOM,
        request_router_config=RequestRouterConfig(
            request_router_class="deployments.pinned_router:PinnedReplicaRouter"),
        health_check_period_s=5,
        **scaling,
    )
    router = serve.deployment(HTTPRouter, name="SSJFRouter").options(
        num_replicas=1,
        ray_actor_options=config.router.ray_actor_options,
        max_ongoing_requests=config.router.max_ongoing_requests,
    )
    config_dict = to_dict(config)
    return router.bind(engine.bind(to_dict(config.engine)), config_dict)
