"""EngineConfig and GenerationRequest validation: every bad field raises ValueError naming that field."""
import pytest

from engine import EngineConfig, GenerationRequest, demo_tokenizer
from engine.request import encode_and_validate

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def tokenizer():
    return demo_tokenizer()


@pytest.mark.parametrize("field, value", [
    ("model", ""), ("tokenizer", ""), ("device", "gpu"), ("device", "cuda:x"), ("dtype", "int8"),
    ("batching", "static"), ("max_batch_size", 0), ("max_batch_size", 2.5), ("batch_wait_ms", -1.0),
    ("max_context_tokens", 1), ("seed", "0"),
])
def test_config_rejects_bad_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        EngineConfig(**{field: value})


def test_config_capacity_per_mode():
    assert EngineConfig(batching="none", max_batch_size=8).capacity == 1
    assert EngineConfig(batching="dynamic", max_batch_size=8).capacity == 8
    assert EngineConfig(batching="continuous", max_batch_size=3).capacity == 3


@pytest.mark.parametrize("changes, field", [
    ({"prompt": None}, "prompt"),
    ({"prompt": "hi", "prompt_token_ids": [1, 2]}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": None, "prompt_token_ids": [1, 10**6]}, "prompt_token_ids"),
    ({"prompt": None, "prompt_token_ids": ["a"]}, "prompt_token_ids"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"max_tokens": 2.0}, "max_tokens"),
    ({"max_tokens": 63}, "max_tokens"),
    ({"prompt": "word " * 70}, "prompt"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"seed": 1.5}, "seed"),
    ({"stop": "x"}, "stop"),
    ({"stop": ["ok", ""]}, "stop"),
    ({"stop": [3]}, "stop"),
    ({"ignore_eos": "yes"}, "ignore_eos"),
    ({"request_id": ""}, "request_id"),
])
def test_request_rejects_bad_field(tokenizer, changes, field):
    fields = {"request_id": "r", "prompt": "hello world", "max_tokens": 8} | changes
    with pytest.raises(ValueError, match=rf"^{field}: "):
        encode_and_validate(GenerationRequest(**fields), tokenizer, max_context_tokens=64)


def test_max_tokens_message_matches_contract(tokenizer):
    with pytest.raises(ValueError, match=r"^max_tokens: must be > 0 \(got 0\)$"):
        encode_and_validate(GenerationRequest("r", prompt="hi", max_tokens=0), tokenizer, 64)


def test_valid_request_returns_prompt_ids(tokenizer):
    ids = encode_and_validate(GenerationRequest("r", prompt="Hello world", max_tokens=8, stop=["x"]), tokenizer, 64)
    assert ids == tokenizer("hello world", add_special_tokens=False)["input_ids"]
    assert encode_and_validate(GenerationRequest("r", prompt_token_ids=[5, 6], max_tokens=62), tokenizer, 64) == [5, 6]
