"""Shared fixtures. Ray-backed tests share one local Ray + Serve instance (started lazily by the first
module that asks for it, kept for the next modules, shut down at the session's end). A module that
starts a Ray of its own (a multi-node cluster, its own metrics interval) asks for `own_ray` first, which
shuts the shared one down; the next module that needs it starts it again. Every module must delete the
apps it deployed: at its end any leftover app is deleted and the module fails."""

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


class SharedServe:
    """The one shared local Ray cluster (2 CPUs) with Serve's HTTP proxy on a free loopback port."""

    url: str | None = None

    @classmethod
    def start(cls) -> str:
        if cls.url is None:
            import ray
            from ray import serve

            from bench.common import RUNTIME_ENV, start_http

            ray.init(num_cpus=2, include_dashboard=False, _temp_dir=RAY_TEMP_DIR, runtime_env=RUNTIME_ENV,
                     logging_level="WARNING", _metrics_export_port=free_port())
            try:
                cls.url = start_http(serve)
            except BaseException:
                ray.shutdown()
                raise
        return cls.url

    @classmethod
    def stop(cls) -> None:
        if cls.url is not None:
            import ray
            from ray import serve

            cls.url = None
            try:
                serve.shutdown()
            finally:
                ray.shutdown()


def pytest_sessionfinish(session, exitstatus):
    SharedServe.stop()


@pytest.fixture(scope="module")
def own_ray():
    """For a module that starts its own Ray: the shared instance is shut down first."""
    SharedServe.stop()
    yield


@pytest.fixture(scope="module")
def serve_instance():
    """The shared Ray + Serve; yields the base URL. Apps the module left behind are deleted (and fail it)."""
    from ray import serve

    url = SharedServe.start()
    yield url
    if SharedServe.url is None:  # the module shut it down itself
        return
    leftover = list(serve.status().applications)
    for name in leftover:
        serve.delete(name)
    assert not leftover, f"the module left Serve apps deployed: {leftover}"


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
