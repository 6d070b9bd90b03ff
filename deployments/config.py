"""The application's one typed config tree, loaded from one YAML file.

Invariant: `load_config` returns a fully validated `AppConfig` or raises `ConfigError` naming the
offending dotted key. Each leaf package owns its section (`engine.EngineConfig`,
`router.SchedulerConfig`); this module only composes them with the Serve-level settings.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from deployments.typed_config import ConfigError, build
from engine import EngineConfig
from router import SchedulerConfig

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"

# `serve run deployments:build_app key=value` shortcuts -> dotted config keys.
OVERRIDES = {
    "policy": "scheduler.policy",
    "batching": "engine.batching",
    "num_replicas": "engine_replicas.num_replicas",
    "max_batch_size": "engine.max_batch_size",
    "model": "engine.model",
    "max_wait_s": "scheduler.max_wait_s",
}

# What tests and the fast benchmarks deploy, whatever configs/default.yaml serves: the built-in demo model
# and its predictor (None: the shipped `default`, trained on ChatGPT answer lengths in the demo tokenizer).
DEMO_OVERRIDES = {"engine.model": "demo", "predictor.checkpoint": None}


@dataclass
class OnlineLearningConfig:
    """`predictor.online`: the router refits the predictor's head on finished requests' true lengths
    (proxy_model/online.py). Off by default: a refit changes the queue order from live traffic and
    costs the router CPU, so an operator turns it on per deployment (README "Online learning")."""

    enabled: bool = False
    min_labels: int = 200  # no refit before this many labels are held
    refit_every: int = 100  # new labels between refits
    buffer_size: int = 4096  # newest labels kept (features + length, ~4.7 KB each with the shipped head)
    holdout_fraction: float = 0.2  # newest share of the buffer a candidate head is judged on
    save_dir: Optional[str] = None  # labels (features + lengths, no prompt text) and the head survive restarts

    def __post_init__(self) -> None:
        if self.refit_every < 1 or self.buffer_size < 2:
            raise ValueError(f"refit_every must be >= 1 and buffer_size >= 2 (got {self.refit_every}, "
                             f"{self.buffer_size})")
        if not 2 <= self.min_labels <= self.buffer_size:
            raise ValueError(f"min_labels must be in 2..buffer_size ({self.buffer_size}), got {self.min_labels}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")


@dataclass
class PredictorConfig:
    """How the router hosts the output-length predictor."""

    checkpoint: Optional[str] = None  # None: the predictor shipped in proxy_model/
    device: str = "cpu"
    batch_wait_ms: float = 2.0  # arrivals within this window are predicted in one batch
    max_batch_size: int = 32
    # Predictions are multiplied by this before they are queued: set it to the served model's
    # verbosity relative to the predictor's training labels, so aging (tokens/s) and predictions
    # share one unit. The replay benchmark sets it to its output scale.
    length_scale: float = 1.0
    online: OnlineLearningConfig = field(default_factory=OnlineLearningConfig)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.length_scale) and self.length_scale > 0):
            raise ValueError(f"length_scale must be finite and > 0 (got {self.length_scale})")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0 (got {self.batch_wait_ms})")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (got {self.max_batch_size})")


@dataclass
class EngineReplicasConfig:
    """Serve settings of the engine deployment (one engine per replica)."""

    num_replicas: int = 2
    ray_actor_options: dict = field(default_factory=lambda: {"num_cpus": 0.5})
    autoscaling_config: Optional[dict] = None  # Serve autoscaling; replaces num_replicas when set
    # How long a replica Serve scales down may finish its generations before it is killed (Serve's own
    # default is 20 s); None: router.request_timeout_s.
    graceful_shutdown_timeout_s: Optional[float] = None

    def __post_init__(self) -> None:
        if self.num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1 (got {self.num_replicas})")
        if self.graceful_shutdown_timeout_s is not None and not self.graceful_shutdown_timeout_s > 0:
            raise ValueError(f"graceful_shutdown_timeout_s must be > 0 (got {self.graceful_shutdown_timeout_s})")


@dataclass
class RouterConfig:
    """Serve settings and request limits of the router (ingress) deployment."""

    served_model_name: Optional[str] = None  # name in /v1/models; default: engine.model
    ray_actor_options: dict = field(default_factory=lambda: {"num_cpus": 0.5})
    request_timeout_s: float = 600.0  # a request still waiting for a slot after this gets 503
    max_request_bytes: int = 1_000_000  # larger HTTP bodies get 413
    max_ongoing_requests: int = 4096  # concurrent requests the router replica accepts from Serve
    replica_sync_interval_s: float = 0.5  # how often the router reconciles the engine replica set
    replica_wait_s: float = 30.0  # with no engine replica active, a request waits this long for one, then 503
    # Accept oracle_output_tokens / bench_stop_after_tokens (trace replays only): off in production,
    # since they let a client state a length the scheduler's oracle baseline would trust.
    allow_benchmark_fields: bool = False
    # API keys for /v1/* (README "Authentication"). Prefer the SSJF_API_KEYS / SSJF_ADMIN_API_KEYS
    # environment variables (read by the router at start): keys in a config travel wherever it goes.
    api_keys: list[str] = field(default_factory=list, repr=False)
    admin_api_keys: list[str] = field(default_factory=list, repr=False)  # if any: GET /v1/scheduler needs one
    include_ssjf_block: bool = True  # responses carry the `ssjf` block (prediction, queue wait, replica)
    body_read_timeout_s: float = 30.0  # a request body not fully received by then gets 408
    max_queued_requests: int = 256  # requests Serve holds for the router beyond max_ongoing_requests; then 429

    def __post_init__(self) -> None:
        for name in ("request_timeout_s", "replica_sync_interval_s", "body_read_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 (got {getattr(self, name)})")
        if not self.replica_wait_s >= 0:
            raise ValueError(f"replica_wait_s must be >= 0 (got {self.replica_wait_s})")
        if self.max_request_bytes < 1024:
            raise ValueError(f"max_request_bytes must be >= 1024 (got {self.max_request_bytes})")
        if self.max_queued_requests < 1:
            raise ValueError(f"max_queued_requests must be >= 1 (got {self.max_queued_requests})")
        for name in ("api_keys", "admin_api_keys"):
            if not all(isinstance(k, str) and k and not set(k) & set(" \t\r\n,") for k in getattr(self, name)):
                raise ValueError(f"{name}: every key must be a non-empty string without spaces or commas")


@dataclass
class AppConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    engine_replicas: EngineReplicasConfig = field(default_factory=EngineReplicasConfig)
    router: RouterConfig = field(default_factory=RouterConfig)

    @property
    def served_model_name(self) -> str:
        return self.router.served_model_name or self.engine.model


class Overrides(dict):
    """Dotted-key overrides, remembering how each was spelled (`model=gpt2`) so errors can name it."""

    def __init__(self, *args, labels: Optional[dict[str, str]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.labels: dict[str, str] = dict(labels or {})

    def label(self, dotted: str) -> str:
        return self.labels.get(dotted) or f"override {dotted}={self[dotted]!r}"


ConfigSource = Optional[str | os.PathLike | dict]


def load_config(path: ConfigSource = None, overrides: Optional[dict[str, Any]] = None) -> AppConfig:
    """Load YAML at `path` (default: configs/default.yaml; a mapping is taken as the config itself),
    apply `overrides` (dotted keys), validate.

    A `ConfigError` names its source: the file (`configs/x.yaml: engine.batching: ...`) or the
    override that made the config invalid (`argument policy=lifo: ...`).
    """
    data, where = _read_source(path)
    overrides = overrides if isinstance(overrides, Overrides) else Overrides(overrides or {})
    try:
        return _build_with(data, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{_blame(data, where, overrides, exc)}: {exc}") from None


def source_of(key: str, path: ConfigSource, overrides: Optional[dict[str, Any]]) -> str:
    """Where the value of dotted `key` came from: the override that set it, else `file: key`."""
    if overrides and key in overrides:
        return overrides.label(key) if isinstance(overrides, Overrides) else f"override {key}={overrides[key]!r}"
    return f"{_read_source(path)[1]}: {key}"


def parse_cli_args(args: dict[str, Any]) -> tuple[ConfigSource, Overrides]:
    """`serve run deployments:build_app config=PATH policy=fcfs ...` args -> (path, dotted overrides).

    Values are parsed as YAML scalars (`5`, `true`, `.inf`); `inf` / `-inf` are accepted too. `config`
    may also be a mapping (the whole config inline, as `python -m deployments.serve_config` writes it).
    """
    args = dict(args)
    path = args.pop("config", None)
    overrides = Overrides()
    for key, raw in args.items():
        dotted = OVERRIDES.get(key, key if "." in key else None)
        if dotted is None:
            raise ConfigError(
                f"argument {key}={raw}: unknown argument {key!r}; use config=PATH, a dotted key "
                f"(engine.max_batch_size=8) or one of: {', '.join(sorted(OVERRIDES))}"
            )
        try:
            overrides[dotted] = yaml.safe_load(raw) if isinstance(raw, str) else raw
        except yaml.YAMLError:
            overrides[dotted] = raw  # not YAML: keep the string; the typed build says what is wrong
        overrides.labels[dotted] = f"argument {key}={raw}"
    return path, overrides


def _read_source(path: ConfigSource) -> tuple[dict, str]:
    if isinstance(path, dict):
        return copy.deepcopy(path), "args.config"
    path = Path(path) if path else DEFAULT_CONFIG_PATH
    where = _display_path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {where}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {where} is not valid YAML: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    return data or {}, where


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    except (OSError, ValueError):
        return str(path)


def _build_with(data: dict, overrides: dict) -> AppConfig:
    merged = copy.deepcopy(data)
    for dotted, value in overrides.items():
        _set_dotted(merged, dotted, value)
    return build(AppConfig, merged)


def _blame(data: dict, where: str, overrides: Overrides, error: ConfigError) -> str:
    """The file if it is invalid on its own, else the override(s) that break it."""
    if not overrides:
        return where
    try:
        _build_with(data, {})
    except ConfigError as file_error:
        if str(file_error) == str(error):
            return where
    culprits = []
    for dotted in overrides:
        try:
            _build_with(data, {dotted: overrides[dotted]})
        except ConfigError:
            culprits.append(dotted)
    chosen = culprits or list(overrides)
    return ", ".join(overrides.label(d) for d in chosen) + ("" if culprits else f" (with {where})")


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key} is not a mapping (cannot set {dotted})")
        node = child
    node[leaf] = value
