"""The scheduler as the one owner of replica and request lifecycle: leases, drain, death, lost signals."""
import pytest

from router import (
    DuplicateRequestError,
    LeaseState,
    MissingOracleLengthError,
    QueueFullError,
    RequestRecord,
    Scheduler,
    SchedulerConfig,
    parse_event,
)

pytestmark = pytest.mark.timeout(10)


def rec(rid, arrival_s=0.0, predicted=10.0):
    return RequestRecord(rid, arrival_s, predicted)


def test_drain_loses_granted_leases_keeps_started_and_forgets_the_replica_with_its_last():
    s = Scheduler(SchedulerConfig(policy="fcfs"))
    s.add_replica("r0", 2, 0.0)
    started, granted = s.on_arrival(rec("started"), 0.0) + s.on_arrival(rec("granted"), 0.0)
    s.start(started)
    lost = []
    granted.lost.subscribe(lost.append)
    assert s.drain_replica("r0", 1.0) == [granted]
    assert lost == ["replica r0 is draining"] and granted.state is LeaseState.ENDED
    assert s.replicas()["r0"]["state"] == "draining" and s.num_free_slots == 0
    s.requeue(granted.record, 1.0)
    assert s.num_waiting == 1  # nothing new goes to a draining replica
    assert s.release(started, 2.0) == []
    assert "r0" not in s.replicas()
    assert [lease.replica_id for lease in s.add_replica("r1", 1, 3.0)] == ["r1"]


def test_loss_before_subscription_is_still_delivered():
    """Audit finding: a drain landing between the grant and the owner's watch() was never delivered."""
    s = Scheduler(SchedulerConfig(policy="fcfs"))
    s.add_replica("r0", 1, 0.0)
    (lease,) = s.on_arrival(rec("a"), 0.0)
    s.drain_replica("r0", 0.5)
    heard = []
    lease.lost.subscribe(heard.append)  # subscribed after the loss
    assert heard == ["replica r0 is draining"]


def test_dead_replica_is_never_granted_again_until_forgotten():
    s = Scheduler(SchedulerConfig(policy="fcfs"))
    s.add_replica("r0", 1, 0.0)
    (lease,) = s.on_arrival(rec("a"), 0.0)
    s.start(lease)
    assert s.remove_replica("r0", 1.0) == [lease] and lease.lost.reason == "replica r0 died"
    assert s.add_replica("r0", 1, 2.0) == [] and s.is_dead("r0") and s.replicas() == {}
    assert s.release(lease, 2.0) == []  # a stale release of a lost lease changes nothing
    s.forget_absent({"r1"})
    assert not s.is_dead("r0")


def test_context_limit_is_none_without_an_active_replica():
    """Audit finding: with no engine replica the router used a context of 1 token (a 400 for everything)."""
    s = Scheduler()
    assert s.max_context_tokens is None and s.num_active_replicas == 0
    s.add_replica("a", 1, 0.0, max_context_tokens=512, node_id="n1")
    s.add_replica("b", 1, 0.0, max_context_tokens=256)
    assert s.max_context_tokens == 256 and s.replicas()["a"]["node_id"] == "n1"
    s.drain_replica("b", 1.0)
    assert s.max_context_tokens == 512
    s.remove_replica("a", 2.0)
    assert s.max_context_tokens is None and s.num_active_replicas == 0


def test_check_admission_raises_before_any_state_changes():
    s = Scheduler(SchedulerConfig(max_queue_len=1))
    s.add_replica("a", 1, 0.0)
    s.on_arrival(rec("running"), 0.0)
    s.on_arrival(rec("waiting"), 0.0)
    with pytest.raises(DuplicateRequestError):
        s.check_admission("running")
    with pytest.raises(DuplicateRequestError):
        s.check_admission("waiting")
    with pytest.raises(QueueFullError):
        s.check_admission("new")
    assert s.num_waiting == 1 and s.num_running == 1


def test_lease_carries_its_dispatch_order_and_wait():
    s = Scheduler(SchedulerConfig(policy="fcfs"))
    s.on_arrival(rec("a", 0.0), 0.0)
    s.on_arrival(rec("b", 1.0), 1.0)
    first, second = s.add_replica("r", 2, 3.0)
    assert (first.dispatch_seq, first.queue_wait_s, second.dispatch_seq, second.queue_wait_s) == (0, 3.0, 1, 2.0)
    assert s.lease_of("a") is first


def test_engine_events_parse_once_into_typed_events_and_back():
    token = parse_event({"type": "token", "token_ids": [5], "text": "hi"})
    done = parse_event({"type": "done", "text": "hi", "finish_reason": "length",
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1}, "timings": {}, "error": None})
    assert token.to_dict() == {"type": "token", "token_ids": [5], "text": "hi"}
    assert done.finished_normally and done.to_dict()["usage"] == {"prompt_tokens": 3, "completion_tokens": 1}
    with pytest.raises(ValueError, match="unknown engine event type"):
        parse_event({"type": "surprise"})


def test_waiting_predicted_tokens_follow_the_queue():
    s = Scheduler(SchedulerConfig(policy="fcfs"))
    s.on_arrival(RequestRecord("a", 0.0, 100.0), 0.0)
    s.on_arrival(RequestRecord("b", 1.0, 500.0, max_tokens=50), 1.0)  # capped, as ssjf ranks it
    s.on_arrival(RequestRecord("c", 2.0, 7.0), 2.0)
    assert s.waiting_predicted_tokens == 157.0 and s.snapshot(3.0)["waiting_predicted_tokens"] == 157.0
    s.cancel("c", 3.0)
    s.add_replica("r", 1, 4.0)  # "a" starts
    assert s.waiting_predicted_tokens == 50.0
    s.cancel("b", 5.0)
    assert s.waiting_predicted_tokens == 0.0


def test_grant_now_only_with_an_empty_queue_and_a_free_slot_and_nothing_else_changes():
    s = Scheduler(SchedulerConfig(policy="ssjf"))
    assert s.grant_now(RequestRecord("early", 0.0, None), 0.0) is None  # no replica yet
    s.withdraw_predicting("early")  # it ended before its prediction (else it would go first, below)
    s.add_replica("r0", 1, 0.0)
    lease = s.grant_now(RequestRecord("a", 0.0, None), 0.5)
    assert lease.replica_id == "r0" and lease.queue_wait_s == 0.5 and s.num_running == 1
    assert s.grant_now(RequestRecord("b", 1.0, None), 1.0) is None and s.num_waiting == 0
    with pytest.raises(ValueError, match="without its prediction"):
        s.on_arrival(RequestRecord("b", 1.0, None), 1.0)
    assert s.num_waiting == 0
    s.on_arrival(rec("b", 1.0), 1.0)
    for waiting_or_running in ("a", "b"):
        with pytest.raises(DuplicateRequestError):
            s.grant_now(rec(waiting_or_running), 2.0)
    assert [granted.request_id for granted in s.release(lease, 2.0)] == ["b"]


def test_grant_now_never_overtakes_an_earlier_arrival_still_being_predicted():
    s = Scheduler(SchedulerConfig(policy="ssjf"))
    s.add_replica("r0", 1, 0.0)
    first = s.grant_now(RequestRecord("a", 0.0, None), 0.0)
    assert s.grant_now(RequestRecord("b", 0.1, None), 0.1) is None and s.num_predicting == 1  # no slot
    assert s.release(first, 0.2) == []  # the slot frees while b is being predicted
    assert s.grant_now(RequestRecord("c", 0.3, None), 0.3) is None  # c does not overtake b
    assert s.snapshot(0.3)["num_predicting"] == 2
    granted = s.on_arrival(rec("b", 0.1, predicted=50.0), 0.4)
    assert [g.request_id for g in granted] == ["b"]
    s.withdraw_predicting("c")  # c ended (e.g. cancelled) before its prediction
    s.withdraw_predicting("never-seen")  # no-op
    assert s.num_predicting == 0 and s.num_waiting == 0


def test_grant_now_refuses_what_the_policy_cannot_rank():
    s = Scheduler(SchedulerConfig(policy="sjf-oracle"))
    s.add_replica("r0", 1, 0.0)
    with pytest.raises(MissingOracleLengthError):
        s.grant_now(RequestRecord("a", 0.0, None), 0.0)
    assert s.num_running == 0
    assert s.grant_now(RequestRecord("b", 0.0, None, true_output_tokens=5), 0.0).replica_id == "r0"
