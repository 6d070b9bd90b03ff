"""In-process stand-ins for the router's Ray parts, on real parts: a real engine driven the way
EngineReplica drives it (its own `sent_chunks`), the real Scheduler and Dispatcher, the real RouterMetrics;
shared by the request runner tests (which import its fixtures by name)."""

import asyncio

import pytest
from ray.serve.exceptions import RequestCancelledError

from deployments.config import PredictorConfig
from deployments.dispatcher import Dispatcher
from deployments.engine_replica import sent_chunks
from deployments.metrics import RouterMetrics
from deployments.predictor_service import PredictorService
from deployments.protocol import parse_request
from deployments.request_runner import RequestRunner
from engine import Engine, EngineConfig, EngineFullError, GenerationRequest
from router import DoneEvent, Scheduler, SchedulerConfig


class LocalStream:
    """EngineReplica.generate_stream in-process: no free engine slot -> EngineFullError; lists of events
    (without `stream_tokens` only the first token and the done); then the stream ends once the engine
    freed the slot. `cancel` behaves like a Serve response's cancel."""

    def __init__(self, replica, request, stream_tokens, fail_with=None):
        self._replica, self._request, self._fail_with = replica, request, fail_with
        self._stream_tokens = stream_tokens
        self._events = self._generate()
        self._cancelled = False

    async def _generate(self):
        engine, request_id = self._replica.engine, self._request["request_id"]
        if self._fail_with is not None:
            raise self._fail_with
        if engine.num_free_slots == 0:
            self._replica.refusals += 1
            raise EngineFullError(f"no free slot for {request_id}")
        async for chunk in sent_chunks(engine, GenerationRequest(**self._request), self._stream_tokens):
            self._replica.messages += 1
            yield chunk
        await engine.wait_slot_freed(request_id)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._cancelled:
            raise RequestCancelledError(self._request["request_id"])
        return await self._events.__anext__()

    def cancel(self):
        self._cancelled = True
        self._replica.engine.cancel(self._request["request_id"])


class LocalReplicas:
    def __init__(self, engine):
        self.engine = engine
        self.refusals = 0
        self.opened = []
        self.failures = {}  # replica id -> exception its next stream raises
        self.messages = 0  # stream items sent (each one Ray message in the real replica)

    def open(self, request, replica_id, stream_tokens=True):
        self.opened.append(replica_id)
        return LocalStream(self, request, stream_tokens, self.failures.pop(replica_id, None))


def make(engine, predictor, policy="fcfs", replica_ids=("r0",), **scheduler):
    dispatcher = Dispatcher(Scheduler(SchedulerConfig(policy=policy, **scheduler)))
    for replica_id in replica_ids:
        dispatcher.add_replica(replica_id, engine.capacity, engine.max_context_tokens, None)
    replicas = LocalReplicas(engine)
    return dispatcher, replicas, RequestRunner(dispatcher, predictor, replicas.open, RouterMetrics(), 30.0, policy)


def parsed(engine, request_id, max_tokens, **extra):
    body = {"prompt": f"say {request_id}", "max_tokens": max_tokens, "ignore_eos": True, "request_id": request_id,
            **extra}
    return parse_request(body, "completion", engine.tokenizer, "demo", engine.max_context_tokens, True)


async def run_to_done(runner, request):
    events = [event async for event in runner.run(request)]
    assert isinstance(events[-1], DoneEvent)
    return events[-1]


async def wait_until(predicate, timeout_s=20.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def predictor():
    return PredictorService(PredictorConfig())


@pytest.fixture(scope="module")
def engine():
    built = Engine(EngineConfig(batching="continuous", max_batch_size=2))
    yield built
    built.close()
