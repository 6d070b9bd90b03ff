"""Prediction off the critical path when nothing waits, and the router's cheaper paths: on real parts (the
real predictor service, Scheduler, Dispatcher and an in-process engine driven as EngineReplica drives it).
The predictor is held back by the test where a test needs to see what happens before it answers."""

import asyncio

import pytest

from deployments.config import PredictorConfig
from deployments.engine_replica import without_later_tokens
from deployments.predictor_service import PredictorService
from engine import GenerationRequest
from local_runner import engine, make, parsed, predictor, run_to_done, wait_until  # noqa: F401 (fixtures)
from router import DoneEvent, RequestRecord, TokenEvent

pytestmark = pytest.mark.timeout(120)


class HeldPredictor:
    """The real predictor service; its predictions start only once the test sets `go`."""

    def __init__(self, real: PredictorService):
        self._real = real
        self.go = asyncio.Event()
        self.asked: list[str] = []

    async def predict(self, request_id, predictor_input):
        self.asked.append(request_id)
        await self.go.wait()
        return await self._real.predict(request_id, predictor_input)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_an_idle_router_dispatches_before_the_prediction_and_still_reports_it(engine, predictor):
    async def scenario():
        held = HeldPredictor(predictor)
        dispatcher, replicas, runner = make(engine, held, policy="ssjf")
        finished_before = predictor.status()["finished_observed"]
        task = asyncio.create_task(run_to_done(runner, parsed(engine, "idle", 2)))
        await wait_until(lambda: replicas.opened == ["r0"])  # on the engine, its prediction not begun
        assert held.asked == ["idle"] and predictor.status()["finished_observed"] == finished_before
        await asyncio.sleep(0.2)
        assert not task.done()  # the done event waits for the prediction it reports
        held.go.set()
        done = await task
        return done, predictor.status()["finished_observed"] - finished_before, dispatcher

    done, observed, dispatcher = asyncio.run(scenario())
    assert done.finish_reason == "length" and done.ssjf["predicted_before_dispatch"] is False
    assert done.ssjf["predicted_output_tokens"] > 0 and done.ssjf["predict_ms"] > 200
    assert done.ssjf["queue_wait_s"] < 0.05
    assert observed == 1  # the predictor heard the outcome (online learning's hook)
    assert dispatcher.scheduler.num_running == 0


def test_waiting_requests_queue_by_their_prediction_in_policy_order(engine, predictor):
    async def scenario():
        held = HeldPredictor(predictor)
        dispatcher, replicas, runner = make(engine, held, policy="ssjf")
        dispatcher.add_replica("r0", 1, engine.max_context_tokens, None)
        holder = await dispatcher.acquire(RequestRecord("holder", dispatcher.now_s(), 1.0), 1.0)
        long = asyncio.create_task(run_to_done(runner, parsed(engine, "long", 6, temperature=0)))
        short = asyncio.create_task(run_to_done(runner, parsed(engine, "short", 2, temperature=0)))
        await wait_until(lambda: held.asked == ["long", "short"])
        await asyncio.sleep(0.1)
        assert dispatcher.scheduler.num_waiting == 0 and replicas.opened == []  # nobody queues unpredicted
        held.go.set()
        await wait_until(lambda: dispatcher.scheduler.num_waiting == 2)
        dispatcher.release(holder)
        return await long, await short

    long, short = asyncio.run(scenario())
    assert short.ssjf["dispatch_seq"] < long.ssjf["dispatch_seq"]  # ssjf order, as before the fast path
    assert long.ssjf["predicted_before_dispatch"] is short.ssjf["predicted_before_dispatch"] is True
    assert short.ssjf["queue_wait_s"] > 0


def test_a_request_cancelled_before_its_prediction_costs_no_prediction(engine, predictor):
    async def scenario():
        held = HeldPredictor(predictor)
        dispatcher, replicas, runner = make(engine, held)
        before = predictor.status()["prompts"]
        events = runner.run(parsed(engine, "gone", 200, temperature=0))
        assert isinstance(await events.__anext__(), TokenEvent)  # running, prediction held
        await events.aclose()
        held.go.set()
        await asyncio.sleep(0.3)
        return predictor.status()["prompts"] - before, dispatcher

    predicted, dispatcher = asyncio.run(scenario())
    assert predicted == 0
    assert dispatcher.scheduler.num_running == 0 and engine.num_free_slots == engine.capacity


def test_without_token_streaming_the_engine_sends_the_first_token_and_the_done(engine, predictor):
    async def scenario(stream_tokens):
        _, replicas, runner = make(engine, predictor)
        request = parsed(engine, "thin", 8, temperature=0)
        events = [event async for event in runner.run(request, stream_tokens)]
        return events, replicas.messages

    thin, thin_messages = asyncio.run(scenario(False))
    full, _ = asyncio.run(scenario(True))
    assert [type(event) for event in thin] == [TokenEvent, DoneEvent]
    assert [type(event) for event in full] == [TokenEvent] * 8 + [DoneEvent]
    assert thin[-1].text == full[-1].text == "".join(event.text for event in full[:-1])
    assert thin[-1].completion_tokens == 8 and thin[-1].timings["ttft_s"] > 0
    assert thin_messages <= 2


def test_engine_chunks_hold_every_ready_event_and_thinning_keeps_the_first_token(engine):
    async def scenario():
        chunks = []
        async for chunk in engine.generate_chunks(GenerationRequest("slow-reader", prompt="hi", max_tokens=12,
                                                                    ignore_eos=True, temperature=0)):
            chunks.append(chunk)
            await asyncio.sleep(0.05)  # a consumer behind the engine
        return chunks

    chunks = asyncio.run(scenario())
    events = [event for chunk in chunks for event in chunk]
    assert [event["type"] for event in events] == ["token"] * 12 + ["done"]
    assert len(chunks) < 13 and chunks[-1][-1]["type"] == "done"
    token = {"type": "token", "text": "a"}
    done = {"type": "done", "text": "ab"}
    assert without_later_tokens([token, dict(token, text="b"), done], token_sent=False) == [token, done]
    assert without_later_tokens([dict(token, text="b")], token_sent=True) == []


def test_predictions_arriving_during_a_batch_share_the_next_one():
    service = PredictorService(PredictorConfig(batch_wait_ms=0.0))

    async def scenario():
        first = asyncio.create_task(service.predict("first", "tell me a story about the sea"))
        await asyncio.sleep(0.002)  # its batch is on the worker thread now
        rest = [asyncio.create_task(service.predict(f"r{i}", f"list {i} fruits")) for i in range(5)]
        return await asyncio.gather(first, *rest)

    predictions = asyncio.run(scenario())
    assert len(predictions) == 6 and all(p > 0 for p in predictions)
    assert service.status()["prompts"] == 6 and service.status()["batches"] == 2
