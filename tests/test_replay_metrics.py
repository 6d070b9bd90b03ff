"""Replay metrics on synthetic results: percentiles, goodput, paper-style 25%-rate, Kendall tau-b,
errors, and the report's JSON/ratios. Fast, no Ray."""
import json
import math

import numpy as np
import pytest

from bench.replay.metrics import RequestResult, Slo, first25pct_rps, kendall_tau_b, percentile, summarize
from bench.replay.compare import compare_rounds, median_summaries, summary_ratios
from bench.replay.report import comparison_lines, dumps, table


def _result(i, sent, ttft, jct, tokens, predicted=None, wait=0.0, error=None):
    r = RequestResult(i, scheduled_s=sent, sent_s=sent, expected_output_tokens=tokens, output_tokens=tokens,
                      predicted_output_tokens=predicted, queue_wait_s=wait)
    if error:
        r.error = error
        return r
    r.first_token_s, r.finished_s, r.status = sent + ttft, sent + jct, 200
    return r


@pytest.mark.timeout(10)
def test_percentile_is_linear_interpolation():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 99) == 99.0
    assert math.isnan(percentile([], 50))


@pytest.mark.timeout(10)
def test_summary_latencies_throughput_and_goodput():
    results = [_result(0, 0.0, 0.5, 2.0, 11), _result(1, 1.0, 1.0, 3.0, 21), _result(2, 2.0, 0.2, 8.0, 41),
               _result(3, 3.0, 0.0, 0.0, 5, error="http_429")]
    s = summarize(results, Slo(jct_base_s=1.0, jct_per_token_s=0.1), max_wait_s=30)
    assert s["num_completed"] == 3 and s["num_errors"] == 1 and s["errors"] == {"http_429": 1}
    assert s["mean_jct_s"] == pytest.approx(13 / 3)
    assert s["p50_jct_s"] == pytest.approx(3.0)
    assert s["mean_ttft_s"] == pytest.approx(1.7 / 3)
    assert s["mean_tpot_s"] == pytest.approx(((2 - 0.5) / 10 + (3 - 1) / 20 + (8 - 0.2) / 40) / 3)
    span = 10.0 - 0.0  # first send (incl. the rejected one) to last completion
    assert s["span_s"] == span
    assert s["throughput_rps"] == pytest.approx(3 / span)
    assert s["output_tokens_per_s"] == pytest.approx(73 / span)
    # SLO JCT <= 1 + 0.1 x tokens: 2.0 <= 2.1 yes, 3.0 <= 3.1 yes, 8.0 <= 5.1 no
    assert s["goodput_rps"] == pytest.approx(2 / span)
    assert s["slo_attainment"] == pytest.approx(2 / 4)


@pytest.mark.timeout(10)
def test_queue_wait_and_starvation_count():
    results = [_result(i, float(i), 0.1, 1.0, 5, wait=w) for i, w in enumerate([0.0, 12.0, 31.5, 29.9])]
    s = summarize(results, max_wait_s=30.0)
    assert s["max_queue_wait_s"] == 31.5 and s["num_waits_over_bound"] == 1
    assert s["frac_queued"] == pytest.approx(3 / 4)
    assert s["mean_queue_wait_s"] == pytest.approx(73.4 / 4)


@pytest.mark.timeout(10)
def test_first25pct_rate_is_paper_style():
    # 8 jobs sent from t=1; completions at 3, 5, 2, 9, ...: the 2nd (=8//4) completion is at t=3
    sent = [1.0] * 8
    done = [3.0, 5.0, 2.0, 9.0, 10.0, 11.0, 12.0, 13.0]
    assert first25pct_rps(sent, done, 8) == pytest.approx(2 / (3.0 - 1.0))
    assert first25pct_rps([0.0], [4.0], 1) == pytest.approx(1 / 4.0)  # at least one job
    assert math.isnan(first25pct_rps([0.0] * 8, [1.0], 8))  # fewer completions than a quarter


@pytest.mark.timeout(10)
def test_kendall_tau_b_with_ties():
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau_b([4, 3, 2, 1], [10, 20, 30, 40]) == pytest.approx(-1.0)
    # tau-b (not tau-a) with ties: scipy's definition
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(4 / math.sqrt(5 * 5))
    assert math.isnan(kendall_tau_b([1], [1]))
    results = [_result(i, 0.0, 0.1, 1.0, t, predicted=p) for i, (p, t) in enumerate([(5, 1), (50, 2), (9, 3)])]
    assert summarize(results)["kendall_tau_b"] == pytest.approx(1 / 3)


@pytest.mark.timeout(10)
def test_all_failed_is_nan_not_crash_and_json_is_strict():
    results = [_result(0, 0.0, 0, 0, 5, error="timeout"), _result(1, 0.5, 0, 0, 5, error="stream_error")]
    s = summarize(results)
    assert s["num_completed"] == 0 and math.isnan(s["mean_jct_s"]) and math.isnan(s["throughput_rps"])
    out = json.loads(dumps({"policies": {"fcfs": s}}))
    assert out["policies"]["fcfs"]["mean_jct_s"] is None


@pytest.mark.timeout(10)
def test_comparison_ratios_and_table():
    scale = {"fcfs": 4.0, "ssjf": 2.0, "sjf-oracle": 1.0}
    rounds = [{p: [_result(i, 0.0, 0.1, k * (1 + i % 3 + r), 5) for i in range(30)] for p, k in scale.items()}
              for r in range(3)]
    c = compare_rounds(rounds)
    assert c["ssjf_over_fcfs_mean_jct_s"] == pytest.approx(0.5)
    assert c["ssjf_over_sjf_oracle_mean_jct_s"] == pytest.approx(2.0)
    assert c["capture"] == pytest.approx(2 / 3)
    lo, hi = c["ssjf_over_fcfs_mean_jct_s_ci95"]
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)  # exactly proportional: no spread
    summaries = {p: summarize(res) for p, res in rounds[0].items()}
    text = table(summaries)
    assert text.splitlines()[0].split()[0] == "policy" and "sjf-oracle" in text
    assert "capture" in comparison_lines(c)
    rates = summary_ratios([{p: summarize(res) for p, res in r.items()} for r in rounds])
    assert rates["ssjf_over_fcfs_throughput_rps"] > 1.0


@pytest.mark.timeout(10)
def test_bootstrap_ci_covers_noisy_ratio_and_pairs_by_index():
    rng = np.random.default_rng(0)
    rounds = []
    for _ in range(3):
        base = rng.lognormal(0, 1, 200)
        noise = rng.lognormal(0, 0.3, 200)
        rounds.append({"fcfs": [_result(i, 0.0, 0.1, float(b), 5) for i, b in enumerate(base)],
                       "ssjf": [_result(i, 0.0, 0.1, float(b * 0.7 * n), 5) for i, (b, n) in enumerate(zip(base, noise))]})
    c = compare_rounds(rounds)
    lo, hi = c["ssjf_over_fcfs_mean_jct_s_ci95"]
    assert lo < c["ssjf_over_fcfs_mean_jct_s"] < hi and 0.6 < lo and hi < 0.9
    assert "capture" not in c  # needs the oracle too


@pytest.mark.timeout(10)
def test_median_summaries_over_rounds():
    rounds = [{"fcfs": {"mean_jct_s": v, "errors": {}, "num_errors": e}} for v, e in ((1.0, 0), (3.0, 2), (2.0, 1))]
    merged = median_summaries(rounds)["fcfs"]
    assert merged["mean_jct_s"] == 2.0 and merged["num_errors"] == 1 and merged["num_rounds"] == 3
