"""OpenAI response shapes: stream_options (include_usage, continuous_usage_stats) and the optional
ssjf block, on real parsed requests."""

import pytest

from deployments.openai_format import ResponseWriter
from deployments.protocol import parse_request
from engine import demo_tokenizer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def tokenizer():
    return demo_tokenizer()


def writer(tokenizer, kind="chat", include_ssjf=True, **fields):
    body = {"messages": [{"role": "user", "content": "hi"}]} if kind == "chat" else {"prompt": "hi"}
    parsed = parse_request({**body, **fields}, kind, tokenizer, "demo", 64)
    return parsed, ResponseWriter(parsed, kind, include_ssjf)


def events(prompt_tokens):
    tokens = [{"type": "token", "token_ids": [7], "text": "a"}, {"type": "token", "token_ids": [8, 9], "text": "bc"}]
    done = {"type": "done", "text": "abc", "finish_reason": "length",
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 3}, "timings": {},
            "ssjf": {"predicted_output_tokens": 5.0}}
    return tokens + [done]


def stream(w, prompt_tokens):
    return [chunk for event in events(prompt_tokens) for chunk in w.chunks(event)]


def test_plain_stream_puts_usage_on_the_finish_chunk_only(tokenizer):
    parsed, w = writer(tokenizer, stream=True)
    chunks = stream(w, len(parsed.prompt_token_ids))
    assert len(chunks) == 3
    assert all("usage" not in c for c in chunks[:2])
    assert chunks[-1]["usage"]["total_tokens"] == len(parsed.prompt_token_ids) + 3
    assert chunks[0]["object"] == "chat.completion.chunk" and chunks[0]["choices"][0]["delta"]["content"] == "a"


def test_include_usage_adds_a_usage_chunk_with_no_choices(tokenizer):
    parsed, w = writer(tokenizer, stream=True, stream_options={"include_usage": True})
    chunks = stream(w, len(parsed.prompt_token_ids))
    assert len(chunks) == 4
    assert [c["usage"] for c in chunks[:3]] == [None, None, None]
    assert chunks[2]["choices"][0]["finish_reason"] == "length"
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["completion_tokens"] == 3


def test_continuous_usage_stats_counts_tokens_on_every_chunk(tokenizer):
    parsed, w = writer(tokenizer, kind="completion", stream=True,
                       stream_options={"include_usage": True, "continuous_usage_stats": True})
    prompt_tokens = len(parsed.prompt_token_ids)
    chunks = stream(w, prompt_tokens)
    assert [c["usage"]["completion_tokens"] for c in chunks] == [1, 3, 3, 3]
    assert all(c["usage"]["prompt_tokens"] == prompt_tokens for c in chunks)
    assert chunks[0]["object"] == "text_completion" and chunks[0]["choices"][0]["text"] == "a"


def test_ssjf_block_can_be_left_out(tokenizer):
    parsed, with_block = writer(tokenizer)
    done = events(len(parsed.prompt_token_ids))[-1]
    assert with_block.full(done)["ssjf"] == {"predicted_output_tokens": 5.0}
    _, without = writer(tokenizer, include_ssjf=False)
    assert "ssjf" not in without.full(done)
    _, streamed = writer(tokenizer, include_ssjf=False, stream=True)
    assert all("ssjf" not in c for c in stream(streamed, 1))
    assert without.full(done)["choices"][0]["message"] == {"role": "assistant", "content": "abc"}
