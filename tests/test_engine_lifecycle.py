"""Slots and lifecycle: capacity, cancel, early close, static-batch slot holding, step errors, shutdown."""
import asyncio

import pytest

from engine import Engine, EngineConfig, EngineFullError, GenerationRequest

pytestmark = pytest.mark.timeout(120)

LONG_TOKENS = 1000


@pytest.fixture(scope="module")
def engine():
    built = Engine(EngineConfig(batching="continuous", max_batch_size=2))
    yield built
    built.close()


def long_request(request_id, max_tokens=LONG_TOKENS):
    return GenerationRequest(request_id, prompt="count forever", max_tokens=max_tokens, ignore_eos=True)


async def first_event(agen):
    event = await agen.__anext__()
    assert event["type"] == "token"
    return event


async def drain(agen):
    return [event async for event in agen]


async def wait_until(predicate, timeout_s=5.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_over_capacity_raises_engine_full_before_yielding(engine):
    async def scenario():
        running = [engine.generate(long_request(f"full-{i}")) for i in range(2)]
        for agen in running:
            await first_event(agen)
        assert engine.num_free_slots == 0
        with pytest.raises(EngineFullError):
            await engine.generate(long_request("full-extra")).__anext__()
        for agen in running:
            await agen.aclose()
        assert engine.num_free_slots == 2

    asyncio.run(scenario())


def test_cancel_frees_slot_within_one_step(engine):
    async def scenario():
        agen = engine.generate(long_request("cancel-me"))
        await first_event(agen)
        assert engine.num_free_slots == 1
        steps_at_cancel = engine.num_steps
        assert engine.cancel("cancel-me") is True
        assert engine.num_free_slots == 2
        events = await drain(agen)
        assert events[-1]["finish_reason"] == "cancelled"
        assert engine.num_steps - steps_at_cancel <= 2
        await wait_until(lambda: not engine._loop.runner.rows)
        assert engine.cancel("cancel-me") is False

    asyncio.run(scenario())


def test_closing_the_generator_early_cancels(engine):
    async def scenario():
        agen = engine.generate(long_request("close-me"))
        await first_event(agen)
        await agen.aclose()
        assert engine.num_free_slots == 2
        await wait_until(lambda: not engine._loop.runner.rows)

    asyncio.run(scenario())


def test_breaking_out_and_task_cancellation_cancel(engine):
    async def consume_forever():
        async for _ in engine.generate(long_request("task-cancelled")):
            pass

    async def scenario():
        async for _ in engine.generate(long_request("break-out")):
            break
        task = asyncio.create_task(consume_forever())
        await wait_until(lambda: engine.num_free_slots < 2 and engine._loop.runner.rows)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: engine.num_free_slots == 2 and not engine._loop.runner.rows)

    asyncio.run(scenario())


def test_duplicate_request_id_is_rejected(engine):
    async def scenario():
        agen = engine.generate(long_request("dup"))
        await first_event(agen)
        with pytest.raises(ValueError, match="^request_id: "):
            await engine.generate(long_request("dup")).__anext__()
        await agen.aclose()

    asyncio.run(scenario())


def test_invalid_request_raises_before_reserving(engine):
    async def scenario():
        with pytest.raises(ValueError, match="^max_tokens: "):
            await engine.generate(long_request("bad", max_tokens=0)).__anext__()
        with pytest.raises(ValueError, match="^max_tokens: "):
            engine.validate(long_request("bad", max_tokens=engine.max_context_tokens))
        assert engine.num_free_slots == 2

    asyncio.run(scenario())


def test_step_error_ends_requests_with_error_and_engine_survives(engine, monkeypatch):
    model = engine._loop.runner.model
    real_forward = model.forward
    calls = {"n": 0}

    def flaky_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", flaky_forward)

    async def scenario():
        return await asyncio.gather(drain(engine.generate(long_request("err-1", 20))),
                                    drain(engine.generate(long_request("err-2", 20))))

    results = asyncio.run(scenario())
    for events in results:
        assert events[-1]["finish_reason"] == "error"
        assert "injected failure" in events[-1]["error"]
    assert engine.num_free_slots == 2
    after = asyncio.run(drain(engine.generate(long_request("after-error", 4))))
    assert after[-1]["finish_reason"] == "length" and after[-1]["usage"]["completion_tokens"] == 4


def test_dynamic_batch_holds_slots_until_the_batch_ends():
    engine = Engine(EngineConfig(batching="dynamic", max_batch_size=2, batch_wait_ms=50.0))

    async def scenario():
        short, long = engine.generate(long_request("short", 3)), engine.generate(long_request("long", 40))
        short_task = asyncio.create_task(drain(short))
        await first_event(long)
        short_events = await short_task
        assert short_events[-1]["finish_reason"] == "length"
        assert engine.num_free_slots == 0, "a static batch keeps finished members' slots"
        assert len(engine._loop.runner.rows) == 2, "and computes their rows until the batch ends"
        assert engine.cancel("short") is False
        freed = asyncio.create_task(engine.wait_slot_freed("short"))
        await asyncio.sleep(0.05)
        assert not freed.done(), "the short member's slot is free only when its batch ends"
        await drain(long)
        await asyncio.wait_for(freed, 5)
        assert engine.num_free_slots == 2

    try:
        asyncio.run(scenario())
    finally:
        engine.close()


def test_a_sampling_failure_ends_only_its_own_sequence(engine, monkeypatch):
    """One sequence whose sampling raises ends with "error"; its batch mate finishes normally."""
    from engine import step_loop

    real_sample = step_loop.sample_next_tokens
    poisoned_temperature = 1.25

    def sample(logits, temperatures, top_ps, generators):
        if poisoned_temperature in temperatures:
            raise RuntimeError("injected sampling failure")
        return real_sample(logits, temperatures, top_ps, generators)

    monkeypatch.setattr(step_loop, "sample_next_tokens", sample)
    victim = GenerationRequest("victim", prompt="count forever", max_tokens=20, temperature=poisoned_temperature)

    async def scenario():
        mate = engine.generate(long_request("mate", 40))
        await first_event(mate)  # running: the victim joins its batch
        return await asyncio.gather(drain(engine.generate(victim)), drain(mate))

    victim_events, mate_events = asyncio.run(scenario())
    assert victim_events[-1]["finish_reason"] == "error" and "injected" in victim_events[-1]["error"]
    assert mate_events[-1]["finish_reason"] == "length" and mate_events[-1]["usage"]["completion_tokens"] == 40
    assert engine.num_free_slots == 2


def test_shutdown_ends_running_and_waiting_requests():
    engine = Engine(EngineConfig(batching="none"))

    async def scenario():
        agen = engine.generate(long_request("running"))
        await first_event(agen)
        engine.check_health()
        await engine.shutdown()
        with pytest.raises(RuntimeError, match="not running"):
            engine.check_health()
        events = await drain(agen)
        assert events[-1]["finish_reason"] == "cancelled"
        with pytest.raises(RuntimeError, match="shut down"):
            await engine.generate(long_request("late")).__anext__()

    asyncio.run(scenario())
