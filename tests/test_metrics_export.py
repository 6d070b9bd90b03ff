"""Metrics you can find (issue 15, item 4): the status route's metrics URL, the fixed-port launcher
behind `make serve`, and the Grafana dashboard for the ssjf_* series."""

import json
import re
import socket
from pathlib import Path

import pytest

from deployments.metrics import METRIC_NAMES, metrics_endpoint
from deployments.serve_local import main as serve_local_main

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "ssjf_dashboard.json"


def test_metrics_endpoint_names_the_routers_node():
    nodes = [{"NodeID": "a", "NodeManagerAddress": "10.0.0.1", "MetricsExportPort": 8080},
             {"NodeID": "b", "NodeManagerAddress": "10.0.0.2", "MetricsExportPort": 9090}]
    found = metrics_endpoint("b", nodes)
    assert found["url"] == "http://10.0.0.2:9090/metrics" and found["prefix"] == "ray_"
    assert metrics_endpoint("zzz", nodes)["url"] is None


def test_serve_local_checks_args_before_starting_ray(capsys):
    assert serve_local_main(["policy=lifo"]) == 2
    assert capsys.readouterr().err.startswith("ssjf-serve: config error: argument policy=lifo")


def test_serve_local_refuses_a_busy_metrics_port(capsys):
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        assert serve_local_main(["--metrics-port", str(sock.getsockname()[1])]) == 2
    assert "in use" in capsys.readouterr().err


def test_serve_local_port_from_environment(monkeypatch):
    from deployments.serve_local import parse_args

    assert parse_args([]).metrics_port == 8080
    monkeypatch.setenv("RAY_METRICS_EXPORT_PORT", "9191")
    assert parse_args(["num_replicas=1"]).metrics_port == 9191


def test_makefile_serve_uses_the_fixed_port():
    makefile = (ROOT / "Makefile").read_text()
    assert "RAY_METRICS_EXPORT_PORT ?= 8080" in makefile
    assert "deployments.serve_local --metrics-port $(RAY_METRICS_EXPORT_PORT)" in makefile


def test_grafana_dashboard_covers_every_ssjf_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bray_(ssjf_[a-z_]+?)(?:_bucket)?\b", e)}
    assert used == set(METRIC_NAMES.values())
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
