"""Shared fixtures. Ray-backed tests share one local Ray + Serve instance per test module (started
lazily by the first test that asks for it, always shut down at the module's end, so a module may
also start a multi-node cluster of its own)."""

import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
RAY_TEMP_DIR = "/tmp/ray_ssjf_tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def serve_instance():
    """A local Ray cluster (2 CPUs) with Serve's HTTP proxy on a free loopback port; yields the base URL."""
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=RAY_TEMP_DIR,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
             logging_level="WARNING", _metrics_export_port=free_port())
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture
def metrics_url(serve_instance):
    """Ray's Prometheus endpoint of the local node."""
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])
    return f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"


@pytest.fixture
def deploy_app(serve_instance):
    """deploy_app(overrides: dotted config keys -> values, name=...) -> the router's handle, once every
    engine replica is registered with the router. Deletes the apps it deployed afterwards."""
    import time

    from ray import serve

    from deployments.app import app_from_config
    from deployments.config import DEMO_OVERRIDES, load_config

    deployed = []

    def deploy(overrides=None, name="default", route_prefix="/"):
        config = load_config(None, {**DEMO_OVERRIDES, **(overrides or {})})
        handle = serve.run(app_from_config(config), name=name, route_prefix=route_prefix)
        deployed.append(name)
        deadline = time.monotonic() + 120
        while True:
            status = handle.status.remote().result(timeout_s=30)
            if len(status["replicas"]) >= config.engine_replicas.num_replicas:
                return handle
            if time.monotonic() > deadline:
                raise TimeoutError(f"engine replicas never registered: {status}")
            time.sleep(0.2)

    yield deploy
    for name in deployed:
        serve.delete(name)
