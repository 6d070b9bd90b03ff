"""bench.adapt's pure parts: options, per-third metrics, the headline and its done-when checks."""
import pytest

from bench.adapt.cli import parse_args
from bench.adapt.run import headline, third_metrics
from bench.replay.metrics import RequestResult


def result(index: int, predicted: float, tokens: int, jct_s: float, ok: bool = True) -> RequestResult:
    r = RequestResult(index, scheduled_s=float(index), sent_s=0.0, finished_s=jct_s if ok else None,
                      output_tokens=tokens, expected_output_tokens=tokens, predicted_output_tokens=predicted)
    r.error = None if ok else "timeout"
    return r


@pytest.mark.timeout(60)
def test_options_turn_online_learning_on():
    args = parse_args(["--quick", "--min-labels", "60", "--set", "scheduler.max_wait_s=20"])
    assert args.num_requests == 600 and args.client_max_tokens == args.max_output_tokens
    from bench.replay.run import workload_options

    assert args.natural is False and workload_options(args, None)["natural"] is False  # bench.replay reads them
    assert args.set[:3] == ["predictor.online.enabled=True", "predictor.online.min_labels=60",
                            "predictor.online.refit_every=50"] and args.set[-1] == "scheduler.max_wait_s=20"
    # side by side by default: one app per arm, in bench.adapt's arm order, each only setting its policy
    from bench.adapt.run import ARMS

    assert args.sequential is False and [a.label for a in args.arms] == list(ARMS)
    assert [a.overrides for a in args.arms] == [{"scheduler.policy": p} for p in ARMS]
    assert parse_args(["--sequential"]).sequential is True
    with pytest.raises(SystemExit):
        parse_args(["--num-requests", "10"])


@pytest.mark.timeout(60)
def test_thirds_measure_tau_and_jct_by_arrival_order():
    # first third ranked backwards, last third perfectly; one failed request is left out
    results = [result(i, predicted=10 - i, tokens=i + 1, jct_s=1.0) for i in range(3)]
    results += [result(3 + i, predicted=5.0, tokens=i + 1, jct_s=2.0, ok=i != 1) for i in range(3)]
    results += [result(6 + i, predicted=i, tokens=i + 1, jct_s=4.0) for i in range(3)]
    thirds = third_metrics(results)
    assert thirds["first_third"]["tau"] == pytest.approx(-1.0)
    assert thirds["last_third"]["tau"] == pytest.approx(1.0)
    assert thirds["middle_third"]["completed"] == 2 and thirds["last_third"]["mean_jct_s"] == 4.0


@pytest.mark.timeout(60)
def test_headline_checks_the_done_when():
    def arm(first_jct, last_jct, first_tau=0.3, last_tau=0.5):
        return {"thirds": {"first_third": {"tau": first_tau, "mean_jct_s": first_jct},
                           "last_third": {"tau": last_tau, "mean_jct_s": last_jct}},
                "summary": {"num_errors": 0}, "predictor": {"online": {"num_refits": 7, "version": 3}}}

    reference = {"tau_offline_fresh": 0.52, "tau_offline_warm_start": 0.49, "tau_current_head": 0.33}
    sim_better = {"jct_ssjf_over_fcfs_first_third": 0.95, "jct_ssjf_over_fcfs_last_third": 0.8,
                  "jct_online_over_frozen_last_third": 0.9}
    sim_worse = {"jct_ssjf_over_fcfs_first_third": 0.9, "jct_ssjf_over_fcfs_last_third": 0.92,
                 "jct_online_over_frozen_last_third": 1.02}
    out = headline({"fcfs": arm(2.0, 2.0), "ssjf": arm(1.8, 1.5)}, reference, sim_better)
    assert out["num_refits"] == 7 and out["jct_ssjf_over_fcfs_last_third"] == pytest.approx(0.75)
    assert out["drift_free"] is sim_better
    assert out["done_when"] == {"tau_gain_ge_0.15": True, "tau_last_within_0.03_of_offline": True,
                                "jct_ratio_last_lt_first": True, "jct_ratio_last_lt_first_drift_free": True,
                                "online_beats_frozen_last_third_drift_free": True}
    worse = headline({"fcfs": arm(2.0, 2.0), "ssjf": arm(1.8, 1.9, last_tau=0.4)}, reference, sim_worse)
    assert not any(worse["done_when"].values())
