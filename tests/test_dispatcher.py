"""Dispatcher: asyncio waiters around the real Scheduler release every slot exactly once."""

import asyncio

import pytest

from deployments.dispatcher import Dispatcher, QueueFullError, QueueTimeoutError
from router import RequestRecord, Scheduler, SchedulerConfig

pytestmark = pytest.mark.timeout(30)


def record(request_id, predicted):
    return RequestRecord(request_id, FAKE_CLOCK(), predicted)


def FAKE_CLOCK():
    return 100.0


def test_waiters_are_granted_in_policy_order():
    async def scenario():
        d = Dispatcher(Scheduler(SchedulerConfig(policy="ssjf")), clock=FAKE_CLOCK)
        d.sync_replicas({"r0": 1})
        first = await d.acquire(record("busy", 5), timeout_s=1)
        tasks = {rid: asyncio.create_task(d.acquire(record(rid, p), timeout_s=5))
                 for rid, p in [("long", 500), ("short", 5), ("mid", 50)]}
        await asyncio.sleep(0.01)
        order = []
        holder = first
        for _ in range(3):
            d.release(holder.request_id, holder.replica_id)
            done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
            holder = done.pop().result()
            order.append(holder.request_id)
            tasks.pop(holder.request_id)
        return order

    assert asyncio.run(scenario()) == ["short", "mid", "long"]


def test_timeout_and_cancel_release_queue_places():
    async def scenario():
        d = Dispatcher(Scheduler(SchedulerConfig(policy="fcfs", max_queue_len=1)), clock=FAKE_CLOCK)
        d.sync_replicas({"r0": 1})
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
        d.release(held.request_id, held.replica_id)
        assert d.scheduler.num_running == 0

    asyncio.run(scenario())


def test_removed_replica_notifies_and_stale_release_is_ignored():
    async def scenario():
        d = Dispatcher(Scheduler(SchedulerConfig(policy="fcfs")), clock=FAKE_CLOCK)
        d.sync_replicas({"r0": 1, "r1": 1})
        a = await d.acquire(record("a", 1), timeout_s=1)
        lost = []
        d.watch("a", lambda: lost.append("a"))
        d.remove_replica(a.replica_id, dead=True)
        assert lost == ["a"]
        d.sync_replicas({"r0": 1, "r1": 1})  # a dead replica is never re-added
        assert a.replica_id not in d.scheduler.replicas()
        again = await d.acquire(record("a", 1), timeout_s=1, requeue=True)
        d.release("a", a.replica_id)  # stale release from the lost attempt: no effect
        assert d.running_on("a") == again.replica_id
        d.release("a", again.replica_id)
        assert d.scheduler.num_running == 0

    asyncio.run(scenario())


def test_drained_replica_finishes_started_work_and_requeues_the_rest():
    async def scenario():
        d = Dispatcher(Scheduler(SchedulerConfig(policy="fcfs")), clock=FAKE_CLOCK)
        d.sync_replicas({"r0": 2})
        started = await d.acquire(record("started", 1), timeout_s=1)
        pending = await d.acquire(record("pending", 1), timeout_s=1)
        lost = []
        d.watch("started", lambda: lost.append("started"))
        d.watch("pending", lambda: lost.append("pending"))
        d.mark_started("started")
        d.sync_replicas({"r1": 1})  # Serve stopped routing to r0 (scale-down) and added r1
        assert lost == ["pending"]  # never begun on r0: re-queued by its owner
        assert d.scheduler.replicas()["r0"]["num_slots"] == 0
        d.release("pending", pending.replica_id)
        retried = await d.acquire(record("pending", 1), timeout_s=1, requeue=True)
        assert retried.replica_id == "r1"
        assert "r0" in d.scheduler.replicas()  # still finishing "started"
        d.release("started", started.replica_id)
        assert "r0" not in d.scheduler.replicas()

    asyncio.run(scenario())


def test_duplicate_id_is_refused_without_dropping_the_waiting_original():
    """Audit finding: a second request with the id of a *waiting* one got 409 and silently removed the
    original's waiter, which then timed out with every slot free."""
    async def scenario():
        d = Dispatcher(Scheduler(SchedulerConfig(policy="fcfs")), clock=FAKE_CLOCK)
        d.sync_replicas({"r0": 1})
        busy = await d.acquire(record("busy", 5), timeout_s=1)
        original = asyncio.create_task(d.acquire(record("dup", 5), timeout_s=5))
        await asyncio.sleep(0.01)
        with pytest.raises(ValueError, match="already waiting or running"):
            await d.acquire(record("dup", 5), timeout_s=1)
        with pytest.raises(ValueError, match="already waiting or running"):
            await d.acquire(record("busy", 5), timeout_s=1)
        d.release(busy.request_id, busy.replica_id)
        return (await asyncio.wait_for(original, 2)).request_id

    assert asyncio.run(scenario()) == "dup"
