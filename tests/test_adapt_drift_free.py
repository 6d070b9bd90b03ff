"""bench.adapt's drift-free JCT: both live arms replayed in the simulator at one fitted machine speed.

Fixture: the first 120 requests of each arm of `python -m bench.adapt --quick --load 0.6` (rows of its
requests.jsonl, AlpacaEval prompts with Meta-Llama-3-70B-Instruct lengths from
../shared/data/prompts/alpacaeval_8_models.jsonl, replayed on the demo model).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.adapt.drift_free import simulated_thirds
from bench.sim.records import Setup

ROWS = Path(__file__).parent / "fixtures" / "adapt" / "live_rows.jsonl"
SCHEDULER = {"aging": "relative", "aging_half_life_s": 5.0, "aging_tokens_per_s": 10.0, "max_wait_s": 30.0,
             "max_queue_len": 1024}
SETUP = Setup("continuous", 2, 2, 0.01, SCHEDULER, {}, 128, 0.6)


def _rows() -> list[dict]:
    return [json.loads(line) for line in ROWS.read_text().splitlines()]


@pytest.mark.timeout(60)
def test_both_arms_get_finite_thirds_and_ratios():
    out = simulated_thirds(_rows(), SETUP)
    assert set(out["mean_jct_s"]) == {"fcfs", "ssjf", "oracle"}
    for arm in out["mean_jct_s"].values():
        assert all(math.isfinite(v) and v > 0 for v in arm.values())
    assert out["cost"]["per_token_s"] > 0


@pytest.mark.timeout(60)
def test_one_arm_slower_machine_does_not_decide_the_ratio():
    """Live, a 50% slower SSJF arm would look 1.5x worse; replayed at one fitted speed it does not."""
    rows = _rows()
    slow = []
    for r in rows:
        if r["policy"] == "ssjf":
            r = dict(r)
            for key in ("first_token_s", "finished_s"):
                r[key] = r["sent_s"] + 1.5 * (r[key] - r["sent_s"])
        slow.append(r)
    base, skewed = simulated_thirds(rows, SETUP), simulated_thirds(slow, SETUP)
    for third in ("first_third", "last_third"):
        assert skewed[f"jct_ssjf_over_fcfs_{third}"] < 1.2
        assert skewed[f"jct_ssjf_over_fcfs_{third}"] == pytest.approx(base[f"jct_ssjf_over_fcfs_{third}"], rel=0.25)


@pytest.mark.timeout(60)
def test_perfect_predictions_beat_fcfs_where_requests_queue():
    rows = [dict(r, predicted_output_tokens=float(r["expected_output_tokens"])) if r["policy"] == "ssjf" else r
            for r in _rows()]
    out = simulated_thirds(rows, SETUP)
    fcfs, ssjf = out["mean_jct_s"]["fcfs"], out["mean_jct_s"]["ssjf"]
    assert sum(ssjf.values()) < sum(fcfs.values())


@pytest.mark.timeout(60)
def test_frozen_arm_replays_the_ssjf_workload_with_other_predictions():
    """Frozen predictions equal to the live ones give the live SSJF arm's JCT; perfect ones beat it."""
    rows = _rows()
    live = {r["index"]: r["predicted_output_tokens"] for r in rows if r["policy"] == "ssjf"}
    same = [live[i] for i in range(1 + max(live))]
    out = simulated_thirds(rows, SETUP, frozen_predicted_tokens=same)
    assert out["mean_jct_s"]["ssjf_frozen"] == out["mean_jct_s"]["ssjf"]
    assert out["jct_online_over_frozen_last_third"] == pytest.approx(1.0)
    true = {r["index"]: float(r["expected_output_tokens"]) for r in rows if r["policy"] == "ssjf"}
    oracle = simulated_thirds(rows, SETUP, frozen_predicted_tokens=[true[i] for i in range(1 + max(true))])
    assert sum(oracle["mean_jct_s"]["ssjf_frozen"].values()) < sum(oracle["mean_jct_s"]["ssjf"].values())
    # the oracle arm is that same replay with the true lengths as predictions
    assert oracle["mean_jct_s"]["oracle"] == oracle["mean_jct_s"]["ssjf_frozen"]
    assert out["jct_oracle_over_fcfs_last_third"] == pytest.approx(oracle["jct_frozen_over_fcfs_last_third"])
