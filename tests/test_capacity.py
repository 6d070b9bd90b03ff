"""bench.capacity's arithmetic: router-added latency per request, the knee, the profile summary, the CLI."""
import pytest

from bench.capacity.driver import Sample, prompts
from bench.capacity.profile import top_frames
from bench.capacity.report import keeps_up, knee, request_times_ms, summarize_rate, table
from bench.capacity.run import parse_args

pytestmark = pytest.mark.timeout(30)


def sample(sent_s: float, admitted_s: float, first_token_s: float, finished_s: float, done_s: float,
           predict_ms: float = 2.0, queue_wait_s: float = 0.003, predicted_first: bool = True) -> Sample:
    result = {"timings": {"admitted_at_s": admitted_s, "first_token_at_s": first_token_s, "finished_at_s": finished_s},
              "ssjf": {"predict_ms": predict_ms, "queue_wait_s": queue_wait_s,
                       "predicted_before_dispatch": predicted_first}}
    return Sample(sent_s=sent_s, send_lag_s=0.0, done_s=done_s, result=result)


def test_router_added_is_everything_outside_the_engine():
    times = request_times_ms(sample(100.0, 100.010, 100.030, 100.100, 100.105))
    assert times["router_added"] == pytest.approx(15.0)  # 105 ms end to end, 90 ms in the engine
    assert times["arrival_to_dispatch"] == pytest.approx(3.0)
    assert times["dispatch_to_engine"] == pytest.approx(7.0)
    assert times["dispatch_to_first_token"] == pytest.approx(27.0)


def test_knee_needs_no_errors_and_p99_under_the_bound():
    fast = [sample(i, i + 0.005, i + 0.01, i + 0.05, i + 0.06) for i in range(100)]
    slow = fast[:98] + [sample(i, i + 0.2, i + 0.21, i + 0.25, i + 0.26) for i in (98, 99)]
    rows = [summarize_rate(10, 10.0, fast, {"router_cpu_cores": 0.1}),
            summarize_rate(20, 10.0, fast + [Sample(0.0, 0.0, error="timeout")], {}),
            summarize_rate(40, 10.0, slow, {})]
    assert rows[0]["admitted_per_s"] == 10.0 and rows[0]["router_cpu_ms_per_request"] == 10.0
    assert rows[0]["dispatched_unpredicted_share"] == 0.0
    immediate = [sample(i, i + 0.005, i + 0.01, i + 0.05, i + 0.06, predicted_first=i % 4 == 0) for i in range(8)]
    assert summarize_rate(10, 1.0, immediate, {})["dispatched_unpredicted_share"] == 0.75
    assert [keeps_up(row) for row in rows] == [True, False, False]
    assert rows[1]["error_kinds"] == {"timeout": 1} and rows[2]["router_added_p99_ms"] > 50
    assert knee(rows) == 10 and knee(rows[1:]) == 0.0
    assert table(rows).count("\n") == 4


def test_profile_summary_counts_inclusive_and_self_samples():
    collapsed = ("main (a/x.py:1);predict (b/p.py:10);forward (c/l.py:5) 6\n"
                 "main (a/x.py:1);loop (a/x.py:9) 4\n"
                 "garbage line\n")
    summary = top_frames(collapsed)
    assert summary["samples"] == 10
    assert dict(summary["inclusive"])["main (x.py)"] == 1.0
    assert dict(summary["self"]) == {"forward (l.py)": 0.6, "loop (x.py)": 0.4}


def test_cli_defaults_and_bad_arguments(capsys):
    quick = parse_args(["--quick"])
    assert quick.replicas == 32 and quick.duration_s == 6.0 and quick.rates[0] == 5
    assert parse_args(["--rates", "50,10", "--replicas", "4"]).rates == [10.0, 50.0]
    with pytest.raises(SystemExit):
        parse_args(["--rates", "0,10"])
    assert "must be > 0" in capsys.readouterr().err
    assert len(set(prompts(64, seed=1))) == 64 and prompts(8, seed=1) == prompts(8, seed=1)
