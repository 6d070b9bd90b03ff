"""bench.guidellm_run without a server: the GuideLLM command it runs and how it reads GuideLLM's report."""

import json
from pathlib import Path

import pytest

from bench.guidellm_run import guidellm_command, parse_args, request_counts

pytestmark = pytest.mark.timeout(60)
FIXTURE = Path(__file__).parent / "fixtures" / "guidellm" / "benchmarks_trimmed.json"


def test_reads_request_totals_of_a_real_report():
    assert request_counts(FIXTURE) == {"successful": 20, "errored": 0, "incomplete": 0}


def test_sums_over_benchmarks(tmp_path):
    report = json.loads(FIXTURE.read_text())
    report["benchmarks"].append({"metrics": {"request_totals": {"successful": 1, "errored": 2, "incomplete": 3}}})
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert request_counts(path) == {"successful": 21, "errored": 2, "incomplete": 3}


def test_command_sends_the_key_and_the_constraints(tmp_path):
    args = parse_args(["--requests", "25", "--streams", "3", "--out", str(tmp_path), "engine.max_batch_size=8"])
    command = guidellm_command(args, "http://127.0.0.1:8000", "sk-x")
    joined = " ".join(command)
    assert command[1] == "run" and args.app_args == ["engine.max_batch_size=8"]
    assert "kind=openai_http,target=http://127.0.0.1:8000,model=demo,api_key=sk-x" in joined
    assert "kind=concurrent,streams=3" in joined and "kind=max_requests,count=25" in joined
    assert f"kind=json,path={tmp_path / 'benchmarks.json'}" in joined
