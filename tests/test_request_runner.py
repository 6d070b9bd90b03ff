"""The request runner on real parts without Ray: the real Scheduler, a real in-process engine (driven the
way EngineReplica drives it) and the real predictor."""

import asyncio

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from deployments.protocol import RequestError
from engine import Engine, EngineConfig
from local_runner import engine, make, parsed, predictor, run_to_done, wait_until  # noqa: F401 (fixtures)
from router import RequestRecord

pytestmark = pytest.mark.timeout(120)


def test_dynamic_batch_slot_is_held_until_the_batch_ends(predictor):
    """Audit finding: the router freed a slot at the stream's done event while a static batch kept it in
    the engine; the next request went to the full replica (EngineFullError after 2 s -> 500)."""
    engine = Engine(EngineConfig(batching="dynamic", max_batch_size=2, batch_wait_ms=100.0))

    async def scenario():
        dispatcher, replicas, runner = make(engine, predictor)
        short = asyncio.create_task(run_to_done(runner, parsed(engine, "short", 2)))
        long = asyncio.create_task(run_to_done(runner, parsed(engine, "long", 200)))
        assert (await short).finish_reason == "length"  # the client has its answer before the batch ends
        assert not long.done() and dispatcher.scheduler.num_running == 2
        third = asyncio.create_task(run_to_done(runner, parsed(engine, "third", 2)))
        await wait_until(lambda: dispatcher.scheduler.num_waiting == 1)
        assert (await long).completion_tokens == 200
        done = await third
        assert done.finish_reason == "length" and done.ssjf["queue_wait_s"] > 0
        await wait_until(lambda: dispatcher.scheduler.num_running == 0)
        return replicas.refusals

    try:
        assert asyncio.run(scenario()) == 0
    finally:
        engine.close()


def test_full_queue_and_duplicate_ids_are_refused_before_any_prediction(engine, predictor):
    async def scenario():
        dispatcher, _, runner = make(engine, predictor, max_queue_len=0)
        dispatcher.add_replica("r0", 1, engine.max_context_tokens, None)
        holder = await dispatcher.acquire(RequestRecord("holder", dispatcher.now_s(), 1.0), 1.0)
        before = predictor.status()["prompts"]
        with pytest.raises(RequestError) as full:
            await run_to_done(runner, parsed(engine, "late", 2))
        with pytest.raises(RequestError) as duplicate:
            await run_to_done(runner, parsed(engine, "holder", 2))
        dispatcher.release(holder)
        return full.value, duplicate.value, predictor.status()["prompts"] - before

    full, duplicate, predicted = asyncio.run(scenario())
    assert (full.status, full.code) == (429, "queue_full")
    assert (duplicate.status, duplicate.param) == (409, "request_id")
    assert predicted == 0


def test_oracle_without_a_true_length_is_a_400_on_that_field(engine, predictor):
    """Audit finding: the sjf-oracle's missing-length error was answered as 409 `request_id`."""
    async def scenario():
        _, _, runner = make(engine, predictor, policy="sjf-oracle")
        with pytest.raises(RequestError) as missing:
            await run_to_done(runner, parsed(engine, "no-oracle", 2))
        ok = await run_to_done(runner, parsed(engine, "with-oracle", 2, oracle_output_tokens=2))
        return missing.value, ok

    missing, ok = asyncio.run(scenario())
    assert (missing.status, missing.param) == (400, "oracle_output_tokens")
    assert ok.finish_reason == "length" and ok.ssjf["policy"] == "sjf-oracle"


def test_unavailable_replica_is_temporary_a_dead_one_is_final(engine, predictor):
    """Audit finding: ActorUnavailableError (temporary) blacklisted a replica forever."""
    async def scenario():
        dispatcher, replicas, runner = make(engine, predictor, replica_ids=("r0",))
        replicas.failures["r0"] = ActorUnavailableError("unreachable for now", None)
        retried = await run_to_done(runner, parsed(engine, "retried", 2))
        assert retried.ssjf["replica"] == "r0" and replicas.opened == ["r0", "r0"]
        await wait_until(lambda: dispatcher.scheduler.num_running == 0)  # its slot comes back after its stream
        dispatcher.add_replica("r1", 1, engine.max_context_tokens, None)  # fewer free slots: r0 goes first
        replicas.failures["r0"] = ActorDiedError()
        moved = await run_to_done(runner, parsed(engine, "moved", 2, priority=-1))
        return retried, moved, dispatcher

    retried, moved, dispatcher = asyncio.run(scenario())
    assert retried.finish_reason == moved.finish_reason == "length"
    assert moved.ssjf["replica"] == "r1"
    assert set(dispatcher.scheduler.replicas()) == {"r1"} and dispatcher.scheduler.is_dead("r0")


def test_drain_between_grant_and_stream_requeues_the_request(engine, predictor):
    """Audit finding: a drain landing between the slot grant and the stream's watch() was never delivered."""
    async def scenario():
        dispatcher, replicas, runner = make(engine, predictor, replica_ids=("r0",))
        real_open = replicas.open

        def open_then_drain(request, replica_id, stream_tokens):
            stream = real_open(request, replica_id, stream_tokens)
            if replica_id == "r0":
                dispatcher.drain_replica("r0")  # lands after the grant, before the runner subscribes
                dispatcher.add_replica("r1", engine.capacity, engine.max_context_tokens, None)
            return stream

        runner._open_stream = open_then_drain
        done = await run_to_done(runner, parsed(engine, "moved", 2))
        return done, replicas.opened

    done, opened = asyncio.run(scenario())
    assert done.ssjf["replica"] == "r1" and opened == ["r0", "r1"]


def test_ttft_and_jct_come_from_one_clock(engine, predictor):
    async def scenario():
        _, _, runner = make(engine, predictor)
        return await run_to_done(runner, parsed(engine, "timed", 5))

    done = asyncio.run(scenario())
    assert 0 < done.timings["ttft_s"] <= done.timings["jct_s"]


def test_prompts_are_tokenized_off_the_event_loop(engine):
    """Audit finding: huge prompts were tokenized on the router's event loop, stalling every stream."""
    import threading

    from deployments.request_parser import RequestParser

    class RecordingTokenizer:
        """The real tokenizer, noting which thread encodes."""

        def __init__(self, real):
            self._real, self.threads = real, []

        def __call__(self, *args, **kwargs):
            self.threads.append(threading.current_thread().name)
            return self._real(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._real, name)

        def __len__(self):
            return len(self._real)

    tokenizer = RecordingTokenizer(engine.tokenizer)
    parser = RequestParser(tokenizer, "demo", allow_benchmark_fields=False, sampling_defaults={})
    request = asyncio.run(parser.parse({"prompt": "hello there", "max_tokens": 2}, "completion", 512))
    assert request.prompt_token_ids and tokenizer.threads
    assert all(name.startswith("ssjf-parse") for name in tokenizer.threads), tokenizer.threads
    with pytest.raises(RequestError) as bad:
        asyncio.run(parser.parse({"prompt": "hello", "max_tokens": 0}, "completion", 512))
    assert bad.value.param == "max_tokens"
