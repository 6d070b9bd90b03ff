"""The official `openai` Python SDK against a live Serve app with an API key: chat, completion,
streaming with usage, and errors raised as the SDK's own exception classes."""

import openai
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]
KEY = "sk-sdk-test"


@pytest.fixture(scope="module")
def base_url(serve_instance):
    from bench.common import deployed_app
    from deployments.config import DEMO_OVERRIDES, load_config

    config = load_config(None, {**DEMO_OVERRIDES, "engine.max_batch_size": 2,
                                "engine.max_context_tokens": 256, "engine_replicas.num_replicas": 1,
                                "router.api_keys": [KEY]})
    with deployed_app(config):
        yield serve_instance + "/v1"


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=60)


def test_models_and_chat(client):
    assert [m.id for m in client.models.list()] == ["demo"]
    reply = client.chat.completions.create(
        model="demo", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        max_completion_tokens=5, extra_body={"ignore_eos": True})
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5


def test_completion(client):
    reply = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=4, seed=7,
                                      temperature=0.0, extra_body={"ignore_eos": True})
    assert reply.object == "text_completion" and reply.usage.completion_tokens == 4
    assert isinstance(reply.choices[0].text, str) and reply.choices[0].finish_reason == "length"


def test_streamed_chat_with_text_parts_and_usage(client):
    stream = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": [{"type": "text", "text": "tell me"}]}],
        max_tokens=6, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_errors_are_the_sdks_exception_classes(client, base_url):
    wrong_key = openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong_key.completions.create(model="demo", prompt="hi", max_tokens=2)
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}], n=2)
    assert err.value.param == "n"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="demo", prompt="word " * 300, max_tokens=2)
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="hi", max_tokens=2)
