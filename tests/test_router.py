"""Unit tests for the pure scheduling core (router/)."""
import math
import subprocess
import sys

import pytest

from router import (
    POLICIES,
    DuplicateRequestError,
    Lease,
    MissingOracleLengthError,
    QueueFullError,
    RequestRecord,
    Scheduler,
    SchedulerConfig,
)

NO_GUARD = dict(aging="linear", aging_tokens_per_s=0.0, max_wait_s=math.inf)


def rec(rid, arrival_s, predicted, true=None):
    return RequestRecord(rid, arrival_s, predicted, true_output_tokens=true)


def fill_then_drain(policy, records, **cfg):
    """One slot, occupied by a blocker; queue `records`, then free slots one at a time."""
    s = Scheduler(SchedulerConfig(policy=policy, **{**NO_GUARD, **cfg}))
    s.add_replica("r0", 1, 0.0)
    assert [d.request_id for d in s.on_arrival(rec("blocker", 0.0, 1, 1), 0.0)] == ["blocker"]
    for r in records:
        assert s.on_arrival(r, r.arrival_time_s) == []
    order, running, now_s = [], s.lease_of("blocker"), 10.0
    while running:
        out = s.release(running, now_s)
        running = out[0] if out else None
        if running:
            order.append(running.request_id)
        now_s += 1.0
    return order


SKEWED = [rec("long", 1.0, 500, 480), rec("mid", 2.0, 100, 600), rec("short", 3.0, 10, 5)]


@pytest.mark.timeout(10)
def test_policies_listed():
    assert POLICIES == ("fcfs", "ssjf", "sjf-oracle")


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "policy, expected",
    [("fcfs", ["long", "mid", "short"]), ("ssjf", ["short", "mid", "long"]), ("sjf-oracle", ["short", "long", "mid"])],
)
def test_ordering_per_policy(policy, expected):
    assert fill_then_drain(policy, SKEWED) == expected


@pytest.mark.timeout(10)
def test_ties_break_by_arrival():
    records = [rec(f"r{i}", float(i + 1), 50) for i in range(5)]
    assert fill_then_drain("ssjf", records) == [f"r{i}" for i in range(5)]


@pytest.mark.timeout(10)
def test_ssjf_never_reads_true_length():
    normal = [rec("a", 1.0, 300, 300), rec("b", 2.0, 20, 20), rec("c", 3.0, 100, 100)]
    absurd = [rec("a", 1.0, 300, -10**9), rec("b", 2.0, 20, 10**12), rec("c", 3.0, 100, None)]
    assert fill_then_drain("ssjf", normal) == fill_then_drain("ssjf", absurd) == ["b", "c", "a"]


@pytest.mark.timeout(10)
def test_oracle_requires_true_length():
    s = Scheduler(SchedulerConfig(policy="sjf-oracle"))
    with pytest.raises(MissingOracleLengthError, match="true_output_tokens"):
        s.on_arrival(rec("x", 0.0, 5), 0.0)


@pytest.mark.timeout(10)
def test_aging_promotes_long_request():
    # aging 10 tok/s: the 500-token request (arrival 0) beats 10-token requests arriving after 49 s.
    records = [rec("long", 0.0, 500)] + [rec(f"s{t}", float(t), 10) for t in range(1, 80, 5)]
    order = fill_then_drain("ssjf", records, aging_tokens_per_s=10.0)
    pos = order.index("long")
    assert all(int(r[1:]) < 50 for r in order[:pos])
    assert all(int(r[1:]) > 49 for r in order[pos + 1:])
    assert fill_then_drain("ssjf", records)[-1] == "long"  # no aging, no guard: starves to the end


@pytest.mark.timeout(10)
def test_max_wait_guard_sends_over_waited_request_next():
    s = Scheduler(SchedulerConfig(policy="ssjf", aging="linear", aging_tokens_per_s=0.0, max_wait_s=30.0))
    s.add_replica("r0", 1, 0.0)
    s.on_arrival(rec("blocker", 0.0, 1), 0.0)
    s.on_arrival(rec("long", 0.0, 500), 0.0)
    s.on_arrival(rec("short", 20.0, 5), 20.0)
    assert s.release(s.lease_of("blocker"), 25.0)[0].request_id == "short"  # 25 s < 30 s: SJF order
    s.on_arrival(rec("short2", 26.0, 5), 26.0)
    d = s.release(s.lease_of("short"), 31.0)[0]
    assert (d.request_id, d.queue_wait_s) == ("long", 31.0)  # waited 31 s > 30 s: goes next


@pytest.mark.timeout(10)
def test_guard_starts_an_old_waiter_before_its_bound_not_after():
    """Slots free every 3 s while short requests keep arriving: the guard's lead (4 release
    intervals = 12 s) starts the long request at 21 s, not at the first release after 30 s (33 s)."""
    s = Scheduler(SchedulerConfig(policy="ssjf", aging="linear", aging_tokens_per_s=0.0, max_wait_s=30.0))
    s.add_replica("r0", 1, 0.0)
    s.on_arrival(rec("s0", 0.0, 5), 0.0)
    s.on_arrival(rec("long", 0.0, 500), 0.0)
    running, started = s.lease_of("s0"), {}
    for t in range(3, 41, 3):
        s.on_arrival(rec(f"s{t}", t - 0.5, 5), t - 0.5)
        (d,) = s.release(running, float(t))
        running, started[d.request_id] = d, d.queue_wait_s
    assert started["long"] == 21.0
    assert s.snapshot(40.0)["guard_lead_s"] == pytest.approx(12.0)
    assert Scheduler(SchedulerConfig()).guard_lead_s == 0.0  # no release seen yet: no lead


@pytest.mark.timeout(10)
def test_queue_bound_raises():
    s = Scheduler(SchedulerConfig(max_queue_len=2))
    s.add_replica("r0", 1, 0.0)
    for i in range(3):  # one runs, two wait
        s.on_arrival(rec(f"r{i}", 0.0, 10), 0.0)
    with pytest.raises(QueueFullError, match="max_queue_len=2"):
        s.on_arrival(rec("r3", 0.0, 10), 0.0)
    assert s.num_waiting == 2
    s.requeue(rec("back", 0.0, 10), 0.0)  # requeue bypasses the bound
    assert s.num_waiting == 3


@pytest.mark.timeout(10)
def test_dispatch_goes_to_replica_with_most_free_slots():
    s = Scheduler(SchedulerConfig())
    s.add_replica("a", 1, 0.0)
    s.add_replica("b", 3, 0.0)
    targets = [s.on_arrival(rec(f"r{i}", 0.0, 10), 0.0)[0].replica_id for i in range(4)]
    # b(3) ; tie a(1) b(2)->b ; tie a(1) b(1): a least recently used ; b
    assert targets == ["b", "b", "a", "b"]
    assert s.on_arrival(rec("r4", 0.0, 10), 0.0) == []
    assert {rid: (f["num_slots"], f["num_running"]) for rid, f in s.replicas().items()} == {"a": (1, 1), "b": (3, 3)}


@pytest.mark.timeout(10)
def test_add_replica_and_set_capacity_dispatch_waiters():
    s = Scheduler(SchedulerConfig(policy="fcfs"))
    for i in range(3):
        assert s.on_arrival(rec(f"r{i}", float(i), 10), float(i)) == []
    out = s.add_replica("a", 2, 5.0)
    assert [(d.request_id, d.replica_id, d.queue_wait_s) for d in out] == [("r0", "a", 5.0), ("r1", "a", 4.0)]
    assert isinstance(out[0], Lease) and out[0].record.arrival_time_s == 0.0
    assert s.set_capacity("a", 1, 6.0) == []
    assert s.release(out[0], 7.0) == []  # 1 running == 1 slot
    assert [d.request_id for d in s.set_capacity("a", 2, 8.0)] == ["r2"]


@pytest.mark.timeout(10)
def test_remove_replica_returns_in_flight_and_redispatch():
    s = Scheduler(SchedulerConfig(policy="fcfs"))
    s.add_replica("a", 2, 0.0)
    s.add_replica("b", 1, 0.0)
    records = {f"r{i}": rec(f"r{i}", float(i), 10) for i in range(4)}
    placed = {d.request_id: d.replica_id for r in records.values() for d in s.on_arrival(r, r.arrival_time_s)}
    lost = [lease.request_id for lease in s.remove_replica("a", 5.0)]
    assert sorted(lost) == sorted(k for k, v in placed.items() if v == "a")
    assert s.remove_replica("a", 5.0) == [] and s.cancel(lost[0], 5.0) == []
    for rid in lost:
        s.requeue(records[rid], 5.0)
    out = s.add_replica("c", 4, 6.0)
    assert {d.request_id for d in out} == set(lost) | {"r3"}
    assert all(d.replica_id == "c" for d in out)


@pytest.mark.timeout(10)
def test_requeue_keeps_arrival_time():
    s = Scheduler(SchedulerConfig(policy="fcfs"))
    s.add_replica("a", 1, 0.0)
    first = rec("old", 1.0, 10)
    s.on_arrival(first, 1.0)
    assert [lease.request_id for lease in s.remove_replica("a", 1.5)] == ["old"]
    s.on_arrival(rec("new", 2.0, 10), 2.0)
    s.requeue(first, 3.0)
    d = s.add_replica("b", 1, 4.0)[0]
    assert (d.request_id, d.queue_wait_s, d.record.arrival_time_s) == ("old", 3.0, 1.0)


@pytest.mark.timeout(10)
def test_requeue_of_running_request_frees_its_slot():
    s = Scheduler(SchedulerConfig(policy="ssjf", **NO_GUARD))
    s.add_replica("a", 1, 0.0)
    s.on_arrival(rec("long", 1.0, 500), 1.0)
    s.on_arrival(rec("short", 2.0, 5), 2.0)
    assert [d.request_id for d in s.requeue(rec("long", 1.0, 500), 3.0)] == ["short"]
    assert s.num_waiting == 1 and s.snapshot(4.0)["oldest_wait_s"] == 3.0


@pytest.mark.timeout(10)
def test_cancel_waiting_and_running():
    s = Scheduler(SchedulerConfig(policy="fcfs"))
    s.add_replica("a", 1, 0.0)
    for i in range(3):
        s.on_arrival(rec(f"r{i}", float(i), 10), float(i))
    assert s.cancel("r1", 3.0) == [] and s.num_waiting == 1
    assert [d.request_id for d in s.cancel("r0", 4.0)] == ["r2"]
    assert s.cancel("nope", 5.0) == []
    assert s.num_running == 1 and s.num_waiting == 0


@pytest.mark.timeout(10)
def test_duplicate_id_rejected():
    s = Scheduler(SchedulerConfig())
    s.on_arrival(rec("x", 0.0, 1), 0.0)
    with pytest.raises(DuplicateRequestError, match="already"):
        s.on_arrival(rec("x", 0.0, 1), 0.0)


@pytest.mark.timeout(10)
def test_snapshot_is_json_able():
    import json

    s = Scheduler(SchedulerConfig())
    s.add_replica("a", 1, 0.0)
    s.on_arrival(rec("x", 0.0, 1), 0.0)
    s.on_arrival(rec("y", 1.0, 1), 1.0)
    snap = json.loads(json.dumps(s.snapshot(4.0)))
    assert snap["policy"] == "ssjf" and snap["num_waiting"] == 1 and snap["oldest_wait_s"] == 3.0
    assert snap["replicas"] == {"a": {"state": "active", "capacity": 1, "num_slots": 1, "num_running": 1,
                                      "max_context_tokens": None, "node_id": None}}


@pytest.mark.timeout(10)
def test_config_validation():
    with pytest.raises(ValueError, match="fcfs, ssjf, sjf-oracle"):
        SchedulerConfig(policy="lifo")
    for bad in (dict(aging_tokens_per_s=-1.0), dict(aging="quadratic"), dict(aging_half_life_s=0.0),
                dict(max_wait_s=0.0), dict(max_queue_len=-1), dict(max_queue_len=1.5)):
        with pytest.raises(ValueError):
            SchedulerConfig(**bad)
    with pytest.raises(ValueError, match="unknown scheduler config key"):
        SchedulerConfig.from_dict({"policy": "ssjf", "agin": 1})
    assert SchedulerConfig.from_dict({"policy": "fcfs"}).policy == "fcfs"


@pytest.mark.timeout(10)
def test_many_cancels_keep_heaps_bounded():
    s = Scheduler(SchedulerConfig())
    for i in range(10_000):
        s.on_arrival(rec(f"r{i}", float(i), i % 7), float(i))
        s.cancel(f"r{i}", float(i))
    assert s.num_waiting == 0 and len(s._queue._by_key) < 200


@pytest.mark.timeout(60)
def test_router_imports_no_ray_torch_asyncio():
    code = (
        "import sys, router, router.scheduler, router.policy, router.wait_queue, router.config, router.request,"
        " router.lease, router.events, router.replicas, router.errors\n"
        "bad = [m for m in ('ray', 'torch', 'asyncio') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=50)


@pytest.mark.timeout(10)
def test_resubmitted_id_after_cancel_uses_new_entry():
    s = Scheduler(SchedulerConfig(policy="ssjf", **NO_GUARD))
    s.on_arrival(rec("x", 0.0, 1), 0.0)  # would go first ...
    s.cancel("x", 0.5)
    s.on_arrival(rec("y", 1.0, 50), 1.0)
    s.on_arrival(rec("x", 2.0, 100), 2.0)  # ... but was resubmitted as a long request
    order = [d.request_id for d in s.add_replica("a", 2, 3.0)]
    assert order == ["y", "x"] and s.num_waiting == 0


@pytest.mark.timeout(10)
def test_re_registering_replica_keeps_in_flight():
    s = Scheduler(SchedulerConfig(policy="fcfs"))
    s.add_replica("a", 1, 0.0)
    s.on_arrival(rec("x", 0.0, 1), 0.0)
    s.on_arrival(rec("y", 1.0, 1), 1.0)
    assert [d.request_id for d in s.add_replica("a", 2, 2.0)] == ["y"]
    assert s.replicas()["a"]["num_slots"] == 2 and s.replicas()["a"]["num_running"] == 2
