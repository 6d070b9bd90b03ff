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


@pytest.fixture
def serve_scripts(monkeypatch):
    from ray.serve import scripts

    for name in ("ServeApplicationSchema", "get_all_interfaces_ip"):  # restored after the test
        monkeypatch.setattr(scripts, name, getattr(scripts, name))
    monkeypatch.setattr(scripts, "_ssjf_build_shim", False, raising=False)
    return scripts


def test_serve_build_shim_only_under_serve_build(serve_scripts):
    from deployments.serve_build_shim import apply_if_serve_build

    assert not apply_if_serve_build(["/venv/bin/serve", "run", "deployments:app"])
    assert not apply_if_serve_build(["pytest"])
    assert apply_if_serve_build(["/venv/bin/serve", "build", "deployments:app"])
    assert serve_scripts.get_all_interfaces_ip() == "127.0.0.1"
    ours = serve_scripts.ServeApplicationSchema(name="app1", route_prefix="/", import_path="deployments:app")
    other = serve_scripts.ServeApplicationSchema(name="app1", route_prefix="/", import_path="other:app")
    assert ours.name == "default" and other.name == "app1"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_build_writes_default_app_on_loopback(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "built.yaml"
    done = subprocess.run([str(Path(sys.executable).parent / "serve"), "build", "deployments:app", "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(Path.home())})
    assert done.returncode == 0, done.stderr[-2000:]
    built = yaml.safe_load(out.read_text())
    assert built["http_options"]["host"] == "127.0.0.1"
    assert [a["name"] for a in built["applications"]] == ["default"]
