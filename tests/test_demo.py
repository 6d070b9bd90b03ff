"""`python -m bench.demo` (issue 15, item 5): fast checks of its pieces, and a live run on Ray asserting
that short requests overtake earlier long ones under SSJF but not under FCFS."""

import pytest

from bench.demo import burst, demo_overrides, overtakes, parse_args, plot, report, run_demo
from deployments.config import load_config


def _rows(order, sent):
    rows = []
    for i, name in enumerate(order):
        rows.append({"name": name, "long": name.startswith("L"), "sent_s": sent[name], "started_s": float(i),
                     "finished_s": i + 0.9, "waited_s": max(0.0, i - sent[name]), "predicted_tokens": 10.0,
                     "tokens": 4, "dispatch_seq": i})
    return rows


SENT = {"L1": 0.0, "L2": 0.1, "S1": 0.2, "S2": 0.3}


def test_burst_sends_long_first_and_fixes_lengths():
    requests = burst(96, 4)
    assert [r.name for r in requests] == ["L1", "L2", "L3", "L4", "S1", "S2", "S3", "S4"]
    assert {r.tokens for r in requests if r.is_long} == {96} and {r.tokens for r in requests if not r.is_long} == {4}


@pytest.mark.parametrize("policy", ["fcfs", "ssjf"])
def test_demo_config_is_one_slot_with_benchmark_fields(policy):
    config = load_config(None, demo_overrides(policy))
    assert config.engine.capacity == 1 and config.engine_replicas.num_replicas == 1
    assert config.router.allow_benchmark_fields and config.scheduler.policy == policy


def test_overtakes_and_report(tmp_path):
    fcfs = _rows(["L1", "L2", "S1", "S2"], SENT)
    ssjf = _rows(["L1", "S1", "S2", "L2"], SENT)
    assert overtakes(fcfs) == []
    assert overtakes(ssjf) == [("S1", "L2"), ("S2", "L2")]
    text = report({"fcfs": fcfs, "ssjf": ssjf})
    assert "order: L1 S1 S2 L2" in text and "2 of 2" in text and "0 of 2" in text
    assert plot({"fcfs": fcfs, "ssjf": ssjf}, tmp_path / "demo.png").stat().st_size > 0


def test_help_shows_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "(default: 0.1)" in capsys.readouterr().out


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_ssjf_lets_short_requests_overtake(own_ray):
    results = run_demo(log=lambda message: None)
    fcfs, ssjf = results["fcfs"], results["ssjf"]
    assert [r["name"] for r in fcfs] == ["L1", "L2", "L3", "L4", "S1", "S2", "S3", "S4"]  # send order
    assert overtakes(fcfs) == []
    # L1 takes the free slot at once; every short request then starts before the remaining long ones
    names = [r["name"] for r in ssjf]
    assert names[0] == "L1" and set(names[1:5]) == {"S1", "S2", "S3", "S4"}, names
    assert {s for s, _ in overtakes(ssjf)} == {"S1", "S2", "S3", "S4"}
    mean = lambda rows: sum(r["waited_s"] for r in rows if not r["long"]) / 4  # noqa: E731
    assert mean(ssjf) < mean(fcfs) / 2
