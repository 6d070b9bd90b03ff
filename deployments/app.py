"""Application graph: the SSJF router (HTTP ingress) bound to the engine deployment.

Invariant: everything here is derived from one validated `AppConfig`; no setting is decided twice.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from deployments.config import AppConfig, load_config, parse_cli_args, source_of
from deployments.model_check import ModelNotFound, check_name
from deployments.typed_config import ConfigError, to_dict

# Serve handles control calls (info, health) beside generations: leave room for them.
CONTROL_CALL_HEADROOM = 16


def build_app(args: Optional[dict] = None):
    """`serve run deployments:build_app config=PATH policy=fcfs batching=dynamic num_replicas=2`.

    Fails fast: the config is validated and the model and tokenizer are checked (`check_models`)
    before anything is imported or deployed. Under the `serve` CLI a bad config or model prints one
    line naming its source and exits with status 2 instead of a Serve traceback.
    """
    try:
        return app_from_config(resolve_config(args))
    except ConfigError as exc:
        if _under_serve_cli():
            print(f"ssjf-serve: config error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        raise


def resolve_config(args: Optional[dict] = None, check_model: bool = True) -> AppConfig:
    """Builder args -> validated `AppConfig`, with the model and tokenizer checked."""
    path, overrides = parse_cli_args(args or {})
    config = load_config(path, overrides)
    if check_model:
        check_models(config, path, overrides)
    return config


def check_models(config: AppConfig, path: Any = None, overrides: Optional[dict] = None) -> None:
    """Raise `ConfigError` naming the key (and where it was set) if the model or tokenizer cannot load."""
    engine = config.engine
    checks = [("engine.model", engine.model, "model")]
    if engine.tokenizer is not None:
        checks.append(("engine.tokenizer", engine.tokenizer, "tokenizer"))
    for key, name, kind in checks:
        try:
            check_name(name, kind)
        except ModelNotFound as exc:
            raise ConfigError(f"{source_of(key, path, overrides)}: {exc}") from None


def _under_serve_cli() -> bool:
    """True in the `serve run` / `serve build` process (not in a Ray worker, a test or a script)."""
    return Path(sys.argv[0]).name == "serve"


def app_from_config(config: AppConfig):
    from ray import serve
    from ray.serve.config import BackpressureConfig, RequestRouterConfig

    from deployments.engine_replica import EngineReplica
    from deployments.http_api import HTTPRouter

    replicas = config.engine_replicas
    scaling = ({"autoscaling_config": replicas.autoscaling_config} if replicas.autoscaling_config
               else {"num_replicas": replicas.num_replicas})
    engine = serve.deployment(EngineReplica, name="Engine").options(
        ray_actor_options=replicas.ray_actor_options,
        max_ongoing_requests=config.engine.capacity + CONTROL_CALL_HEADROOM,
        request_router_config=RequestRouterConfig(
            request_router_class="deployments.pinned_router:PinnedReplicaRouter"),
        health_check_period_s=5,
        # Scale-down: the router drains the replica (nothing new; started generations finish there) and
        # Serve waits this long for them before it kills the replica.
        graceful_shutdown_timeout_s=replicas.graceful_shutdown_timeout_s or config.router.request_timeout_s,
        **scaling,
    )
    router = serve.deployment(HTTPRouter, name="SSJFRouter").options(
        num_replicas=1,
        ray_actor_options=config.router.ray_actor_options,
        max_ongoing_requests=config.router.max_ongoing_requests,
        # Beyond max_ongoing_requests Serve's proxy holds up to this many requests, then answers 429
        # with Retry-After (its own plain-text body, before our ingress runs).
        max_queued_requests=config.router.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=429, retry_after_s=1),
    )
    config_dict = to_dict(config)
    return router.bind(engine.bind(to_dict(config.engine)), config_dict)
