"""The typed config tree: YAML loading, overrides, unknown keys and bad values rejected by name."""

import pytest

from deployments.config import AppConfig, load_config, parse_cli_args
from deployments.typed_config import ConfigError

pytestmark = pytest.mark.timeout(30)


def test_default_config_loads():
    config = load_config()
    assert isinstance(config, AppConfig)
    assert config.scheduler.policy == "ssjf"
    assert config.engine.batching == "continuous"
    assert config.served_model_name == config.engine.model


def test_overrides_from_serve_run_args(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("engine:\n  max_batch_size: 2\n")
    config_path, overrides = parse_cli_args(
        {"config": str(path), "policy": "fcfs", "batching": "dynamic", "num_replicas": "3"})
    config = load_config(config_path, overrides)
    assert config.engine.max_batch_size == 2
    assert config.scheduler.policy == "fcfs"
    assert config.engine.batching == "dynamic"
    assert config.engine_replicas.num_replicas == 3


def test_dotted_override():
    path, overrides = parse_cli_args({"router.request_timeout_s": "5"})
    assert load_config(path, overrides).router.request_timeout_s == 5.0


@pytest.mark.parametrize("yaml_text, fragment", [
    ("engine:\n  modle: demo\n", "engine.modle"),
    ("schedulr: {}\n", "schedulr"),
    ("scheduler:\n  policy: lifo\n", "lifo"),
    ("engine_replicas:\n  num_replicas: two\n", "engine_replicas.num_replicas"),
    ("engine_replicas:\n  num_replicas: 0\n", "num_replicas"),
    ("router:\n  request_timeout_s: -1\n", "request_timeout_s"),
    ("predictor:\n  max_batch_size: true\n", "predictor.max_batch_size"),
    ("predictor:\n  length_scale: 0\n", "length_scale"),
    ("predictor:\n  length_scale: .nan\n", "length_scale"),
    ("engine: [1, 2]\n", "engine"),
])
def test_bad_config_names_the_key(tmp_path, yaml_text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(path)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: {model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_unknown_cli_argument():
    with pytest.raises(ConfigError, match="unknown argument 'polcy'"):
        parse_cli_args({"polcy": "fcfs"})
