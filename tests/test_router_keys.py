"""The ssjf key: what it reads (prediction, max_tokens, ignore_eos, priority), relative aging."""
import pytest

from router import (
    MAX_PRIORITY,
    RelativeAging,
    RequestRecord,
    Scheduler,
    SchedulerConfig,
    get_policy,
    speculative_cost_tokens,
)
from test_router import fill_then_drain

def drain_order(records, policy="ssjf", **cfg):
    """Start order behind one busy slot, without the guard (and without aging unless `cfg` sets it)."""
    return fill_then_drain(policy, records, **cfg)


@pytest.mark.timeout(10)
def test_prediction_is_capped_by_max_tokens():
    capped = RequestRecord("capped", 1.0, 500.0, max_tokens=10)
    open_ended = RequestRecord("open", 2.0, 50.0, max_tokens=1024)
    assert speculative_cost_tokens(capped) == 10.0
    assert speculative_cost_tokens(open_ended) == 50.0
    assert drain_order([open_ended, capped]) == ["capped", "open"]


@pytest.mark.timeout(10)
def test_ignore_eos_cost_is_exactly_max_tokens():
    fixed = RequestRecord("fixed", 1.0, 3.0, max_tokens=400, ignore_eos=True)
    assert speculative_cost_tokens(fixed) == 400.0
    assert drain_order([fixed, RequestRecord("guess", 2.0, 100.0)]) == ["guess", "fixed"]


@pytest.mark.timeout(10)
def test_ssjf_key_never_reads_benchmark_fields():
    """true_output_tokens (the oracle's field) is the only benchmark-only field a record carries;
    the ssjf key is the same whatever it holds, while the oracle's key follows it."""
    aging = RelativeAging(10.0)
    ssjf, oracle = get_policy("ssjf"), get_policy("sjf-oracle")
    keys = {ssjf.key(RequestRecord("a", 5.0, 40.0, true_output_tokens=t, max_tokens=256), aging)
            for t in (1, 40, 10**9)}
    assert len(keys) == 1
    assert oracle.key(RequestRecord("a", 5.0, 40.0, 1), aging) < oracle.key(RequestRecord("a", 5.0, 40.0, 99), aging)


@pytest.mark.timeout(10)
def test_relative_aging_is_scale_free():
    """Multiplying every prediction by a constant (predictor.length_scale) keeps the order."""
    base = [(0.0, 400.0), (3.0, 40.0), (7.0, 90.0), (9.0, 5.0), (12.0, 60.0)]
    def order(scale):
        return drain_order([RequestRecord(f"r{i}", t, p * scale) for i, (t, p) in enumerate(base)],
                           aging="relative", aging_half_life_s=4.0)
    assert order(1.0) == order(0.125) == order(8.0)


@pytest.mark.timeout(10)
def test_relative_aging_halves_cost_per_half_life():
    """A 4x longer job overtakes fresh ones once it has waited two half-lives longer than they have."""
    old = RequestRecord("old", 0.0, 400.0)
    early = RequestRecord("early", 19.0, 100.0)  # old waited 19 s more: 400/2^1.9 > 100
    late = RequestRecord("late", 21.0, 100.0)  # old waited 21 s more: 400/2^2.1 < 100
    assert drain_order([old, early, late], aging="relative", aging_half_life_s=10.0) == ["early", "old", "late"]


@pytest.mark.timeout(10)
def test_priority_orders_before_the_policy_key():
    records = [RequestRecord("long-urgent", 1.0, 900.0, priority=-1), RequestRecord("short", 2.0, 5.0),
               RequestRecord("short-low", 3.0, 1.0, priority=3)]
    assert drain_order(records) == ["long-urgent", "short", "short-low"]
    assert drain_order(records, policy="fcfs") == ["long-urgent", "short", "short-low"]


@pytest.mark.timeout(10)
def test_starvation_bound_applies_across_priorities():
    s = Scheduler(SchedulerConfig(policy="ssjf", max_wait_s=30.0))
    s.add_replica("r0", 1, 0.0)
    s.on_arrival(RequestRecord("blocker", 0.0, 1.0), 0.0)
    s.on_arrival(RequestRecord("low", 0.0, 5.0, priority=MAX_PRIORITY), 0.0)
    s.on_arrival(RequestRecord("urgent", 31.0, 5.0, priority=-5), 31.0)
    assert s.release(s.lease_of("blocker"), 32.0)[0].request_id == "low"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("bad", [MAX_PRIORITY + 1, -10**6, 1.5, True, "1"])
def test_priority_out_of_range_is_rejected(bad):
    with pytest.raises(ValueError, match="priority"):
        RequestRecord("x", 0.0, 1.0, priority=bad)
