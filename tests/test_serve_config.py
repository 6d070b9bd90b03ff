"""`python -m deployments.serve_config` turns any project config into a `serve deploy` file (issue 15,
item 2): one app named `default` at `/`, HTTP on 127.0.0.1, the validated config inline."""

from pathlib import Path

import pytest
import yaml

from deployments.app import resolve_config
from deployments.config import load_config
from deployments.serve_config import main, serve_deploy_config

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("config_path", [None, str(ROOT / "configs" / "gpu.yaml")])
def test_deploy_config_round_trips(config_path):
    deploy = serve_deploy_config(config_path, {"policy": "fcfs"})
    assert deploy["http_options"] == {"host": "127.0.0.1", "port": 8000}
    (app,) = deploy["applications"]
    assert app["name"] == "default" and app["route_prefix"] == "/"
    assert app["import_path"] == "deployments:build_app"
    # what the Serve controller will call: build_app(args) -> the same config
    rebuilt = resolve_config(yaml.safe_load(yaml.safe_dump(app["args"])), check_model=False)
    expected = load_config(config_path, {"scheduler.policy": "fcfs"})
    assert rebuilt == expected


def test_cli_writes_yaml(tmp_path, capsys):
    out = tmp_path / "serve.yaml"
    assert main(["--config", str(ROOT / "configs" / "gpu.yaml"), "--out", str(out), "--port", "8001",
                 "--env", "HF_HUB_OFFLINE=1"]) == 0
    deploy = yaml.safe_load(out.read_text())
    assert deploy["http_options"]["port"] == 8001
    assert deploy["applications"][0]["runtime_env"] == {"env_vars": {"HF_HUB_OFFLINE": "1"}}
    assert deploy["applications"][0]["args"]["config"]["engine"]["model"] == "Qwen/Qwen2.5-1.5B-Instruct"


def test_cli_bad_override_is_one_line(capsys):
    assert main(["--set", "policy=lifo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ssjf-serve: config error: argument policy=lifo")


def test_help_shows_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "(default: 127.0.0.1)" in capsys.readouterr().out
