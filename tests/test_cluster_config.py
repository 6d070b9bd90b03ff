"""cluster.yaml validates offline against Ray's own cluster-launcher schema; configs/gpu.yaml
is a valid app config that asks one GPU per engine replica."""

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent


def test_cluster_yaml_matches_ray_schema():
    from ray.autoscaler._private.commands import prepare_config
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["max_workers"] >= workers["min_workers"] >= 1
    assert any("make install" in cmd for cmd in config["setup_commands"])


def test_cluster_yaml_schema_rejects_typos():
    import jsonschema
    from ray.autoscaler._private.commands import prepare_config
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["head_node_typo"] = "head"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


def test_gpu_app_config():
    from deployments.config import load_config

    config = load_config(ROOT / "configs" / "gpu.yaml")
    assert config.engine_replicas.ray_actor_options["num_gpus"] == 1
    assert config.engine.dtype == "bfloat16"
    assert config.engine.model != "demo"
