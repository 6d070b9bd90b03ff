"""bench.adapt's arrivals: each third of the run offered the same load, order and lengths kept."""
from dataclasses import dataclass

import numpy as np
import pytest

from bench.adapt.arrivals import even_load_thirds, thirds


@dataclass(frozen=True)
class Item:
    arrival_s: float
    output_tokens: int


@pytest.mark.timeout(60)
def test_each_third_carries_the_target_load_and_keeps_its_bursts():
    # a burst-then-quiet trace: the first third arrives 10x denser than the rest; the last third's
    # jobs are twice as long
    gaps = np.r_[0.0, np.full(29, 0.1), np.full(60, 1.0)]
    tokens = [10] * 60 + [20] * 30
    items = [Item(float(t), n) for t, n in zip(np.cumsum(gaps), tokens)]
    out, timing = even_load_thirds(items, output_tokens_per_s=100.0, load=0.8)
    assert [it.output_tokens for it in out] == tokens
    arrival_s = np.array([it.arrival_s for it in out])
    assert arrival_s[0] == 0.0 and np.all(np.diff(arrival_s) >= 0)
    assert timing["offered_rps"] == pytest.approx((len(items) - 1) / arrival_s[-1])  # of the re-timed run
    for name, idx in thirds(len(items)).items():
        t = timing["per_third"][name]
        work_per_s = t["offered_rps"] * t["mean_output_tokens"]
        assert work_per_s == pytest.approx(0.8 * 100.0)
    # the last third's longer jobs arrive at half the rate
    assert timing["per_third"]["last_third"]["offered_rps"] == pytest.approx(
        timing["per_third"]["first_third"]["offered_rps"] / 2)
    # the first third keeps the trace's gaps (one factor): the burst
    inner = np.diff(arrival_s[1:30])
    assert np.allclose(inner, inner[0])


@pytest.mark.timeout(60)
def test_every_third_replays_the_windows_first_gaps():
    rng = np.random.default_rng(0)
    gaps = np.r_[0.0, rng.exponential(1.0, 89) * np.r_[np.full(29, 0.1), np.ones(60)]]
    items = [Item(float(t), 10) for t in np.cumsum(gaps)]
    out, _ = even_load_thirds(items, output_tokens_per_s=100.0, load=0.5)
    arrival_s = np.array([it.arrival_s for it in out])
    out_gaps = np.diff(arrival_s)  # out_gaps[i - 1] = the gap before request i
    shapes = [out_gaps[lo - 1:lo + 28] / out_gaps[lo - 1] for lo in (1, 30, 60)]  # a third's first 29 gaps
    expected = gaps[1:30] / gaps[1]
    for shape in shapes:
        assert np.allclose(shape, expected)


@pytest.mark.timeout(60)
def test_simultaneous_arrivals_are_spread_and_bad_rates_refused():
    items = [Item(0.0, 5) for _ in range(9)]
    out, timing = even_load_thirds(items, output_tokens_per_s=10.0, load=1.0)
    assert np.allclose(np.diff([it.arrival_s for it in out]), 0.5)
    with pytest.raises(ValueError):
        even_load_thirds(items, output_tokens_per_s=0.0, load=1.0)
