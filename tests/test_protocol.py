"""OpenAI request parsing: every bad input is a 4xx naming its field; good input is complete."""

import pytest

from deployments.protocol import PLAIN_CHAT_SUFFIX, RequestError, parse_request
from engine import demo_tokenizer

pytestmark = pytest.mark.timeout(60)
MODEL = "demo"
CONTEXT = 64


@pytest.fixture(scope="module")
def tokenizer():
    return demo_tokenizer()


def parse(body, tokenizer, kind="completion"):
    return parse_request(body, kind, tokenizer, MODEL, CONTEXT)


def test_completion_defaults(tokenizer):
    parsed = parse({"prompt": "hello world"}, tokenizer)
    assert parsed.prompt_token_ids == tokenizer("hello world", add_special_tokens=False)["input_ids"]
    assert parsed.max_tokens == 16 and parsed.temperature == 1.0 and parsed.top_p == 1.0
    assert parsed.stream is False and parsed.oracle_output_tokens is None
    assert parsed.engine_request()["prompt_token_ids"] == parsed.prompt_token_ids


def test_token_id_prompt_and_chat(tokenizer):
    assert parse({"prompt": [5, 6, 7]}, tokenizer).prompt_token_ids == [5, 6, 7]
    chat = parse({"messages": [{"role": "user", "content": "hi there"}], "max_completion_tokens": 3},
                 tokenizer, kind="chat")
    assert chat.max_tokens == 3
    assert chat.prompt_text.endswith(PLAIN_CHAT_SUFFIX)


@pytest.mark.parametrize("body, status, param", [
    ([1, 2], 400, None),
    ({}, 400, "prompt"),
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": 5}, 400, "prompt"),
    ({"prompt": ["a", "b"]}, 400, "prompt"),
    ({"prompt": [1, -1]}, 400, "prompt"),
    ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "hi", "max_tokens": "5"}, 400, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 10_000}, 400, "max_tokens"),
    ({"prompt": "word " * 100}, 400, "prompt"),
    ({"prompt": "hi", "temperature": -0.5}, 400, "temperature"),
    ({"prompt": "hi", "top_p": 0}, 400, "top_p"),
    ({"prompt": "hi", "top_p": 1.5}, 400, "top_p"),
    ({"prompt": "hi", "n": 2}, 400, "n"),
    ({"prompt": "hi", "stop": [""]}, 400, "stop"),
    ({"prompt": "hi", "stream": "yes"}, 400, "stream"),
    ({"prompt": "hi", "model": "gpt-9"}, 404, "model"),
    ({"prompt": "hi", "bogus": 1}, 400, "bogus"),
    ({"prompt": "hi", "logprobs": 5}, 400, "logprobs"),
    ({"prompt": "hi", "seed": 1.5}, 400, "seed"),
])
def test_bad_completion_requests(tokenizer, body, status, param):
    with pytest.raises(RequestError) as info:
        parse(body, tokenizer)
    assert info.value.status == status
    assert info.value.param == param
    assert info.value.body()["error"]["message"]


@pytest.mark.parametrize("body, param", [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x"}], "prompt": "y"}, "prompt"),
])
def test_bad_chat_requests(tokenizer, body, param):
    with pytest.raises(RequestError) as info:
        parse(body, tokenizer, kind="chat")
    assert info.value.status == 400 and info.value.param == param


def test_request_error_pickles():
    import pickle
    err = pickle.loads(pickle.dumps(RequestError(429, "full", code="queue_full", headers={"Retry-After": "1"})))
    assert (err.status, err.code, err.headers) == (429, "queue_full", {"Retry-After": "1"})


def test_benchmark_fields_need_the_switch(tokenizer):
    for name in ("oracle_output_tokens", "bench_stop_after_tokens"):
        with pytest.raises(RequestError, match="benchmark-only") as err:
            parse({"prompt": "hi", name: 5}, tokenizer)
        assert err.value.status == 400 and err.value.param == name
    parsed = parse_request({"prompt": "hi", "max_tokens": 40, "oracle_output_tokens": 7,
                            "bench_stop_after_tokens": 7}, "completion", tokenizer, MODEL, CONTEXT, True)
    assert parsed.oracle_output_tokens == 7
    assert parsed.engine_request()["stop_after_tokens"] == 7


def test_ssjf_key_ignores_benchmark_fields(tokenizer):
    """The scheduler record of a request is the same with or without benchmark-only fields, except
    for the oracle's true length, which the ssjf key never reads."""
    from router import RelativeAging, get_policy

    plain = parse({"prompt": "hi", "max_tokens": 40}, tokenizer)
    bench = parse_request({"prompt": "hi", "max_tokens": 40, "oracle_output_tokens": 3,
                           "bench_stop_after_tokens": 3}, "completion", tokenizer, MODEL, CONTEXT, True)
    ssjf, aging = get_policy("ssjf"), RelativeAging(10.0)
    assert ssjf.key(plain.record(1.0, 25.0), aging) == ssjf.key(bench.record(1.0, 25.0), aging)
    assert bench.record(1.0, 25.0).max_tokens == 40 and bench.record(1.0, 25.0).true_output_tokens == 3


@pytest.mark.parametrize("priority, ok", [(0, True), (-100, True), (100, True), (101, False), (-101, False),
                                          (1.5, False), ("1", False)])
def test_priority_range(tokenizer, priority, ok):
    if ok:
        assert parse({"prompt": "hi", "priority": priority}, tokenizer).record(0.0, 1.0).priority == priority
    else:
        with pytest.raises(RequestError) as err:
            parse({"prompt": "hi", "priority": priority}, tokenizer)
        assert err.value.status == 400 and err.value.param == "priority"


def test_predictor_reads_messages_of_a_chat_and_text_of_a_completion(tokenizer):
    chat = parse({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
                 tokenizer, kind="chat")
    assert chat.predictor_input == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert parse({"prompt": "hello"}, tokenizer).predictor_input == "hello"


@pytest.mark.parametrize("body, param", [
    ({"prompt": "\u200b"}, "prompt"),  # only a zero-width space: no tokens
    ({"prompt": "a\ud800b"}, "prompt"),  # lone surrogate
    ({"prompt": "hi", "stop": "\ud800"}, "stop"),
    ({"prompt": "hi", "seed": 2**64}, "seed"),
    ({"prompt": "hi", "seed": -1}, "seed"),
])
def test_inputs_that_used_to_500_are_400(tokenizer, body, param):
    """Audit findings: these reached the tokenizer or the engine and failed there with a 500."""
    with pytest.raises(RequestError) as err:
        parse(body, tokenizer)
    assert err.value.status == 400 and err.value.param == param


def test_chat_with_a_lone_surrogate_is_a_400(tokenizer):
    with pytest.raises(RequestError) as err:
        parse({"messages": [{"role": "user", "content": "x\udfff"}]}, tokenizer, kind="chat")
    assert err.value.status == 400
