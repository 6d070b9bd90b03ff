"""The simulated engine (`engine.model: sim`): the real Engine over SimRunner honours every request field,
sleeps at least its configured step costs, loads no model weights, and rejects bad cost specs clearly."""
import asyncio
import time

import pytest

from deployments.model_check import ModelNotFound, check_name
from engine import Engine, EngineConfig, EngineFullError, GenerationRequest
from engine.models import is_sim_model
from engine.sim_runner import SimCosts, SimModel, _prompt_hash, natural_output_tokens, parse_sim_costs

pytestmark = pytest.mark.timeout(120)
FAST = "sim:decode_step_ms=1,decode_step_growth_ms=0,join_ms=1,prefill_ms_per_token=0"


@pytest.fixture
def make_engine():
    engines = []

    def make(model: str = FAST, **fields) -> Engine:
        engine = Engine(EngineConfig(model=model, tokenizer="demo", **fields))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


async def collect(engine: Engine, request: GenerationRequest) -> tuple[list[dict], dict]:
    events = [event async for event in engine.generate(request)]
    return events[:-1], events[-1]


def run(engine: Engine, **fields) -> dict:
    request = GenerationRequest(request_id=fields.pop("request_id", f"r{time.monotonic_ns()}"), **fields)
    return asyncio.run(collect(engine, request))[1]


def test_cost_spec_parsing_and_errors():
    assert parse_sim_costs("sim") == SimCosts()
    costs = parse_sim_costs("sim:decode_step_ms=10, join_ms=2,max_positions=512")
    assert (costs.decode_step_ms, costs.join_ms, costs.max_positions) == (10.0, 2.0, 512)
    assert costs.decode_s(3) == pytest.approx((10 + 2 * 0.3) / 1000)
    assert costs.join_s([100, 20]) == pytest.approx((2 * 2 + 0.1 * 120) / 1000)
    assert is_sim_model("sim") and is_sim_model("sim:join_ms=1") and not is_sim_model("simple-model")
    for bad, message in [("sim:warp=9", "keys"), ("sim:join_ms", "key=value"), ("sim:join_ms=fast", "number"),
                         ("sim:join_ms=-1", ">= 0"), ("sim:decode_step_ms=nan", "finite"),
                         ("sim:max_positions=1", "max_positions")]:
        with pytest.raises(ValueError, match=message) as info:
            parse_sim_costs(bad)
        assert str(info.value).startswith("model: ")


def test_model_check_accepts_sim_only_as_a_model():
    check_name("sim", "model")
    check_name("sim:decode_step_ms=5", "model")
    with pytest.raises(ModelNotFound):
        check_name("sim", "tokenizer")


def test_loads_no_weights_and_serves_the_demo_tokenizer(make_engine):
    engine = make_engine(max_context_tokens=256)
    assert isinstance(engine.model, SimModel)
    assert sum(p.numel() for p in engine.model.parameters()) == 1
    assert engine.max_context_tokens == 256 and len(engine.tokenizer) == 30522


def test_length_stop_after_tokens_and_natural_eos(make_engine):
    engine = make_engine("sim:decode_step_ms=1,join_ms=1,mean_output_tokens=3")
    prompt = "tell me a story"
    natural = natural_output_tokens(_prompt_hash(engine.validate(GenerationRequest("x", prompt=prompt))), 3)
    assert 1 <= natural < 64
    done = run(engine, prompt=prompt, max_tokens=64)
    assert (done["finish_reason"], done["usage"]["completion_tokens"]) == ("stop", natural)
    done = run(engine, prompt=prompt, max_tokens=natural + 5, ignore_eos=True)  # the EOS counts, words follow
    assert (done["finish_reason"], done["usage"]["completion_tokens"]) == ("length", natural + 5)
    assert len(done["text"].split()) == natural + 4
    done = run(engine, prompt=prompt, max_tokens=64, stop_after_tokens=natural + 2)
    assert (done["finish_reason"], done["usage"]["completion_tokens"]) == ("stop", natural + 2)


def test_greedy_is_deterministic_seeds_are_honoured_and_stop_strings_cut(make_engine):
    engine = make_engine(FAST + ",mean_output_tokens=0")
    greedy = [run(engine, prompt="hello there", max_tokens=12, ignore_eos=True)["text"] for _ in range(2)]
    assert greedy[0] == greedy[1] and len(greedy[0].split()) == 12
    sample = lambda seed: run(engine, prompt="hello there", max_tokens=12, ignore_eos=True, temperature=1.0,
                              seed=seed)["text"]
    sampled = {seed: sample(seed) for seed in (1, 2, 3)}
    assert sample(1) == sampled[1]
    assert len(set(sampled.values())) > 1, sampled
    stop = greedy[0].split()[3]
    stopped = run(engine, prompt="hello there", max_tokens=12, ignore_eos=True, stop=[stop])
    assert stopped["finish_reason"] == "stop" and stop not in stopped["text"]
    assert stopped["text"] == greedy[0][:greedy[0].find(stop)]


def test_steps_cost_at_least_what_is_configured(make_engine):
    engine = make_engine("sim:decode_step_ms=20,join_ms=50,prefill_ms_per_token=1,decode_step_growth_ms=0")
    num_prompt_tokens = len(engine.validate(GenerationRequest("x", prompt="one two three four")))
    started_s = time.monotonic()
    done = run(engine, prompt="one two three four", max_tokens=5, ignore_eos=True)
    elapsed_s = time.monotonic() - started_s
    # one join (with the first token) + 4 decode steps
    expected_s = (50 + num_prompt_tokens + 4 * 20) / 1000
    assert done["usage"]["completion_tokens"] == 5
    assert expected_s <= elapsed_s < expected_s + 2.0, (elapsed_s, expected_s)


def test_slots_cancellation_and_full_engine(make_engine):
    engine = make_engine("sim:decode_step_ms=5,join_ms=1", max_batch_size=2)

    async def scenario() -> None:
        streams = [engine.generate(GenerationRequest(f"long{i}", prompt="go", max_tokens=500, ignore_eos=True))
                   for i in range(2)]
        firsts = [await stream.__anext__() for stream in streams]
        assert all(event["type"] == "token" for event in firsts) and engine.num_free_slots == 0
        with pytest.raises(EngineFullError):
            await engine.generate(GenerationRequest("third", prompt="go")).__anext__()
        await streams[0].aclose()  # a consumer that stops cancels its request and frees its slot at once
        assert engine.num_free_slots == 1
        events = [event async for event in engine.generate(GenerationRequest("next", prompt="go", max_tokens=3))]
        assert events[-1]["finish_reason"] in ("length", "stop")
        assert engine.cancel("long1")
        rest = [event async for event in streams[1]]
        assert rest[-1]["finish_reason"] == "cancelled" and engine.num_free_slots == 2

    asyncio.run(scenario())


def test_bad_requests_get_field_errors(make_engine):
    engine = make_engine(max_context_tokens=16)
    with pytest.raises(ValueError, match="^max_tokens"):
        run(engine, prompt="hello", max_tokens=100)
    with pytest.raises(ValueError, match="^prompt_token_ids"):
        run(engine, prompt_token_ids=[10**6], max_tokens=2)
    assert run(engine, prompt="hello", max_tokens=2)["finish_reason"] in ("length", "stop")


@pytest.mark.parametrize("batching", ["none", "dynamic", "continuous"])
def test_every_batching_mode_runs_over_the_sim(make_engine, batching):
    engine = make_engine(FAST + ",mean_output_tokens=0", batching=batching, max_batch_size=4, batch_wait_ms=5)

    requests = [GenerationRequest(f"{batching}{i}", prompt=f"prompt {i}", max_tokens=3 + i, ignore_eos=True)
                for i in range(engine.capacity)]

    async def all_at_once() -> list[dict]:
        return [done for _, done in await asyncio.gather(*(collect(engine, request) for request in requests))]

    done = asyncio.run(all_at_once())
    assert [d["usage"]["completion_tokens"] for d in done] == [3 + i for i in range(engine.capacity)]
    assert engine.num_free_slots == engine.capacity


def test_router_tokenizer_of_a_sim_model_is_the_demo_one():
    from engine import EngineConfig, demo_tokenizer, load_tokenizer

    for model in ("sim", "sim:decode_step_ms=1"):
        assert load_tokenizer(EngineConfig(model=model)).get_vocab() == demo_tokenizer().get_vocab()
