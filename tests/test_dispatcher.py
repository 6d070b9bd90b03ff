"""Dispatcher: asyncio futures around the real Scheduler; every lease is handed out or given back."""

import asyncio

import pytest

from deployments.dispatcher import Dispatcher, QueueTimeoutError
from router import DuplicateRequestError, QueueFullError, RequestRecord, Scheduler, SchedulerConfig

pytestmark = pytest.mark.timeout(30)


def record(request_id, predicted):
    return RequestRecord(request_id, FAKE_CLOCK(), predicted)


def FAKE_CLOCK():
    return 100.0


def dispatcher(policy="fcfs", replicas=None, **config):
    d = Dispatcher(Scheduler(SchedulerConfig(policy=policy, **config)), clock=FAKE_CLOCK)
    for replica_id, num_slots in (replicas or {"r0": 1}).items():
        d.add_replica(replica_id, num_slots, max_context_tokens=512, node_id=None)
    return d


def test_waiters_are_granted_in_policy_order():
    async def scenario():
        d = dispatcher("ssjf")
        holder = await d.acquire(record("busy", 5), timeout_s=1)
        tasks = {rid: asyncio.create_task(d.acquire(record(rid, p), timeout_s=5))
                 for rid, p in [("long", 500), ("short", 5), ("mid", 50)]}
        await asyncio.sleep(0.01)
        order = []
        for _ in range(3):
            d.release(holder)
            done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
            holder = done.pop().result()
            order.append(holder.request_id)
            tasks.pop(holder.request_id)
        return order

    assert asyncio.run(scenario()) == ["short", "mid", "long"]


def test_timeout_and_cancel_release_queue_places():
    async def scenario():
        d = dispatcher(max_queue_len=1)
        held = await d.acquire(record("a", 1), timeout_s=1)
        with pytest.raises(QueueTimeoutError):
            await d.acquire(record("b", 1), timeout_s=0.05)
        waiter = asyncio.create_task(d.acquire(record("c", 1), timeout_s=5))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError):
            await d.acquire(record("d", 1), timeout_s=1)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert d.scheduler.num_waiting == 0
        d.release(held)
        assert d.scheduler.num_running == 0

    asyncio.run(scenario())


def test_dead_replica_signals_loss_and_a_stale_release_is_ignored():
    async def scenario():
        d = dispatcher(replicas={"r0": 1, "r1": 1})
        a = await d.acquire(record("a", 1), timeout_s=1)
        lost = []
        a.lost.subscribe(lost.append)
        d.replica_died(a.replica_id)
        assert lost == [f"replica {a.replica_id} died"]
        d.add_replica(a.replica_id, 1, 512, None)  # a dead replica is never re-added
        assert a.replica_id not in d.scheduler.replicas()
        again = await d.acquire(record("a", 1), timeout_s=1, requeue=True)
        d.release(a)  # stale release from the lost attempt: no effect
        assert d.scheduler.lease_of("a") is again
        d.release(again)
        assert d.scheduler.num_running == 0

    asyncio.run(scenario())


def test_drained_replica_finishes_started_work_and_loses_the_rest():
    async def scenario():
        d = dispatcher(replicas={"r0": 2})
        started = await d.acquire(record("started", 1), timeout_s=1)
        pending = await d.acquire(record("pending", 1), timeout_s=1)
        d.start(started)
        d.drain_replica("r0")  # Serve stopped routing to r0 (scale-down) ...
        d.add_replica("r1", 1, 512, None)  # ... and added r1
        heard = []
        pending.lost.subscribe(heard.append)  # even subscribed after the drain, the loss is heard
        assert heard == ["replica r0 is draining"] and started.lost.reason is None
        retried = await d.acquire(record("pending", 1), timeout_s=1, requeue=True)
        assert retried.replica_id == "r1"
        assert d.scheduler.replicas()["r0"]["state"] == "draining"  # still finishing "started"
        d.release(started)
        assert "r0" not in d.scheduler.replicas()

    asyncio.run(scenario())


def test_duplicate_id_is_refused_without_dropping_the_waiting_original():
    """Audit finding: a second request with the id of a *waiting* one got 409 and silently removed the
    original's waiter, which then timed out with every slot free."""
    async def scenario():
        d = dispatcher()
        busy = await d.acquire(record("busy", 5), timeout_s=1)
        original = asyncio.create_task(d.acquire(record("dup", 5), timeout_s=5))
        await asyncio.sleep(0.01)
        with pytest.raises(DuplicateRequestError, match="already waiting or running"):
            await d.acquire(record("dup", 5), timeout_s=1)
        with pytest.raises(DuplicateRequestError, match="already waiting or running"):
            await d.acquire(record("busy", 5), timeout_s=1)
        d.release(busy)
        return (await asyncio.wait_for(original, 2)).request_id

    assert asyncio.run(scenario()) == "dup"


def test_requeue_after_a_loss_never_drops_a_newcomer_with_the_same_id():
    async def scenario():
        d = dispatcher(replicas={"r0": 1, "r1": 1})
        lost = await d.acquire(record("x", 1), timeout_s=1)
        busy = await d.acquire(record("busy", 1), timeout_s=1)
        d.replica_died(lost.replica_id)  # "x" lost its lease; its owner has not re-queued yet ...
        newcomer = asyncio.create_task(d.acquire(record("x", 1), timeout_s=5))  # ... when "x" arrives again
        await asyncio.sleep(0.01)
        with pytest.raises(DuplicateRequestError):
            await d.acquire(record("x", 1), timeout_s=1, requeue=True)
        d.release(busy)
        return await asyncio.wait_for(newcomer, 2)

    assert asyncio.run(scenario()).request_id == "x"
