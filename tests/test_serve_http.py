"""The Serve app end to end over real HTTP on loopback and through a handle from another app."""

import json
import time

import pytest
import requests
from ray import serve

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]
# the app's own name: Ray's Prometheus endpoint may still export series of earlier modules' apps
APP = "serve_http"


@pytest.fixture(scope="module")
def app_url(serve_instance):
    from deployments.app import app_from_config
    from deployments.config import DEMO_OVERRIDES, load_config

    config = load_config(None, {**DEMO_OVERRIDES, "engine.max_batch_size": 2, "engine_replicas.num_replicas": 1,
                                "engine.max_context_tokens": 256})
    handle = serve.run(app_from_config(config), name=APP, route_prefix="/")
    deadline = time.monotonic() + 120
    while not handle.status.remote().result(timeout_s=30)["replicas"]:
        assert time.monotonic() < deadline, "engine replica never registered"
        time.sleep(0.2)
    yield serve_instance
    serve.delete(APP)


def post(url, path, body, **kwargs):
    return requests.post(url + path, json=body, timeout=60, **kwargs)


def test_completion(app_url):
    r = post(app_url, "/v1/completions", {"prompt": "hello there", "max_tokens": 5, "ignore_eos": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["prompt_tokens"] > 0
    assert set(body["ssjf"]) >= {"predicted_output_tokens", "queue_wait_s", "replica"}
    assert body["ssjf"]["predicted_output_tokens"] > 0


def test_chat_completion(app_url):
    r = post(app_url, "/v1/chat/completions",
             {"messages": [{"role": "user", "content": "Write a poem"}], "max_tokens": 4, "ignore_eos": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] == 4


def test_streamed_completion_ends_with_done(app_url):
    r = post(app_url, "/v1/completions", {"prompt": "stream me", "max_tokens": 6, "ignore_eos": True,
                                          "stream": True}, stream=True)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in r.iter_lines(decode_unicode=True) if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    assert all("error" not in c for c in chunks)
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "length"
    assert final["usage"]["completion_tokens"] == 6
    assert len(chunks) >= 2


def test_streamed_chat(app_url):
    r = post(app_url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                               "max_tokens": 3, "stream": True, "ignore_eos": True}, stream=True)
    lines = [line for line in r.iter_lines(decode_unicode=True) if line]
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][len("data: "):])
    assert first["object"] == "chat.completion.chunk" and "delta" in first["choices"][0]


def test_models_health_and_status(app_url):
    models = requests.get(app_url + "/v1/models", timeout=10).json()
    assert models["data"][0]["id"] == "demo"
    assert requests.get(app_url + "/health", timeout=10).json() == {"status": "ok"}
    status = requests.get(app_url + "/v1/scheduler", timeout=10).json()
    assert status["scheduler"]["policy"] == "ssjf"
    assert len(status["replicas"]) == 1
    assert status["predictor"]["name"]


@pytest.mark.parametrize("body, status, param", [
    ({"max_tokens": 3}, 400, "prompt"),
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": 100_000}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
    ({"prompt": "word " * 400}, 400, "prompt"),
    ({"prompt": "x", "model": "nope"}, 404, "model"),
    ({"prompt": "x", "n": 3}, 400, "n"),
    ({"prompt": "x", "surprise": True}, 400, "surprise"),
])
def test_bad_requests_get_openai_errors(app_url, body, status, param):
    r = post(app_url, "/v1/completions", body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000,
                                  b'{"prompt": "hi", "max_tokens": 1' + b"0" * 5000 + b"}"])  # > 4,300 digits
def test_malformed_bodies(app_url, data):
    r = requests.post(app_url + "/v1/completions", data=data, timeout=30,
                      headers={"content-type": "application/json"})
    assert r.status_code in (400, 413), r.text
    assert "error" in r.json()


def test_router_keeps_serving_after_errors(app_url):
    for _ in range(3):
        post(app_url, "/v1/completions", {"prompt": 5})
    r = post(app_url, "/v1/completions", {"prompt": "still alive?", "max_tokens": 2})
    assert r.status_code == 200


def test_disconnect_cancels_and_frees_slot(app_url):
    r = post(app_url, "/v1/completions", {"prompt": "long", "max_tokens": 200, "ignore_eos": True,
                                          "stream": True}, stream=True)
    lines = r.iter_lines()
    next(lines)
    r.close()
    deadline = time.monotonic() + 20
    while True:
        status = requests.get(app_url + "/v1/scheduler", timeout=10).json()
        replica = next(iter(status["replicas"].values()))
        if status["scheduler"]["num_running"] == 0 and replica["engine_num_free_slots"] == replica["capacity"]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    # the freed capacity serves the next request
    assert post(app_url, "/v1/completions", {"prompt": "next", "max_tokens": 2}).status_code == 200


@serve.deployment(ray_actor_options={"num_cpus": 0})
class OtherApp:
    async def __call__(self, streamed: bool):
        handle = serve.get_app_handle(APP)
        if not streamed:
            return await handle.generate.remote(prompt="from another app", max_tokens=3, ignore_eos=True)
        chunks = []
        async for chunk in handle.options(stream=True).generate_stream.remote(
                prompt="from another app", max_tokens=3, ignore_eos=True):
            chunks.append(chunk)
        return chunks


def test_handle_api_from_another_app(app_url):
    other = serve.run(OtherApp.bind(), name="other", route_prefix=None)
    try:
        result = other.remote(False).result(timeout_s=60)
        assert set(result) >= {"text", "usage", "ssjf", "finish_reason"}
        assert result["usage"]["completion_tokens"] == 3
        chunks = other.remote(True).result(timeout_s=60)
        assert [c["type"] for c in chunks][-1] == "done"
        assert sum(len(c["token_ids"]) for c in chunks if c["type"] == "token") == 3
    finally:
        serve.delete("other")


def test_prometheus_metrics_agree_with_status(app_url, metrics_url):
    """The router's metrics reach Ray's Prometheus endpoint and match the status endpoint's totals."""
    post(app_url, "/v1/completions", {"prompt": "count me", "max_tokens": 2})
    post(app_url, "/v1/completions", {"prompt": "x", "max_tokens": 0})
    deadline = time.monotonic() + 60
    while True:
        status = requests.get(app_url + "/v1/scheduler", timeout=10).json()["metrics"]
        text = requests.get(metrics_url, timeout=10).text
        samples = _prometheus_samples(text)
        completed = sum(v for (name, labels), v in samples.items()
                        if name == "ray_ssjf_requests_completed_total" and 'finish_reason="length"' in labels
                        and f'application="{APP}"' in labels)
        if completed == status["completions"].get("length"):
            break
        assert time.monotonic() < deadline, (status, [k for k in samples if "ssjf" in k[0]])
        time.sleep(2)
    rejected = sum(v for (name, labels), v in samples.items()
                   if name == "ray_ssjf_rejections_total" and 'reason="invalid_request"' in labels
                   and f'application="{APP}"' in labels)
    assert rejected >= 1
    for name in ("ray_ssjf_queue_length", "ray_ssjf_jct_seconds_bucket", "ray_ssjf_queue_wait_seconds_bucket",
                 "ray_ssjf_ttft_seconds_bucket", "ray_ssjf_prediction_abs_error_tokens_bucket"):
        assert any(n == name and f'application="{APP}"' in labels for n, labels in samples), name


def _prometheus_samples(text):
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        samples[(name, labels)] = samples.get((name, labels), 0.0) + float(value)
    return samples
