"""What every benchmark shares: repo and data paths, free ports, percentiles, and the Ray + Serve
lifecycle (one local session per run, one fresh app per deployment).

Invariant: whatever happens, `serve_session` leaves no Ray running (serve.shutdown and ray.shutdown
in `finally`), and `deployed_app` deletes its app before the next one is deployed. Serve's HTTP
proxy binds to 127.0.0.1 only.
"""
from __future__ import annotations

import argparse
import math
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"  # the dev machine's data; absent in a fresh clone
FIXTURES = REPO_ROOT / "tests" / "fixtures"
APP_NAME = "default"
RAY_TEMP_DIR = "/tmp/ray_ssjf_replay"
RUNTIME_ENV = {"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every bench CLI's `--help` lists each option's default (also options without help text; not
    when the help already names its default or the option is required)."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and action.option_strings and action.default is not argparse.SUPPRESS:
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or "default" in text.lower() or isinstance(action, argparse._HelpAction):
            return text
        return super()._get_help_string(action)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: Sequence[float], q: float) -> float:
    """numpy's linear interpolation; NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else math.nan


def load_app_config(config_path: Optional[str], overrides: dict):
    from deployments.config import load_config

    return load_config(config_path, overrides)


def cpus_needed(config) -> int:
    """Logical CPUs the app reserves (engine replicas + router), at least 2."""
    engine = config.engine_replicas.num_replicas * config.engine_replicas.ray_actor_options.get("num_cpus", 1)
    router = config.router.ray_actor_options.get("num_cpus", 1)
    return max(2, math.ceil(engine + router))


@contextmanager
def serve_session(num_cpus: int = 2, temp_dir: str = RAY_TEMP_DIR) -> Iterator[str]:
    """Start local Ray + Serve (HTTP on a free loopback port); yields the base URL."""
    import ray
    from ray import serve

    for attempt in range(2):  # a busy box can time Ray's node startup out once
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir, runtime_env=RUNTIME_ENV,
                     logging_level="WARNING", log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt:
                raise
    try:
        yield start_http(serve)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def start_http(serve, attempts: int = 3) -> str:
    """serve.start on a free loopback port; another process may grab the port first, so retry."""
    for attempt in range(attempts):
        port = free_port()
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            return f"http://127.0.0.1:{port}"
        except RuntimeError:
            serve.shutdown()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def wait_for_replicas(handle, num_replicas: int, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status = handle.status.remote().result(timeout_s=30)
        if len(status["replicas"]) >= num_replicas:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"engine replicas never registered within {timeout_s:.0f} s: {status}")
        time.sleep(0.2)


@contextmanager
def deployed_app(config, timeout_s: float = 180.0) -> Iterator[dict]:
    """Deploy the app built from `config` at route "/", wait for every engine replica, yield the
    router's first status; delete the app afterwards."""
    from ray import serve

    from deployments.app import app_from_config

    try:
        handle = serve.run(app_from_config(config), name=APP_NAME, route_prefix="/")
    except RuntimeError as exc:
        raise RuntimeError(f"{exc} (replica logs: {RAY_TEMP_DIR}/session_latest/logs/serve/)") from None
    try:
        yield wait_for_replicas(handle, config.engine_replicas.num_replicas, timeout_s)
    finally:
        serve.delete(APP_NAME)
