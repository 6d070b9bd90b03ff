"""Online learning through the live app: finished requests become labels, a refit runs, cancelled
requests leave nothing behind, and /v1/scheduler reports it."""
import time

import pytest
import requests

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]
APP = "online_app"

PROMPTS = [f"{ask} (request {i})" for i, ask in enumerate(
    ["Write a long story about a dragon", "hi", "List ten fruits", "Explain relativity in detail", "Say yes",
     "Translate 'cat' to French", "Write an essay on rivers", "What is 2+2?"] * 2)]


def online(url: str) -> dict:
    return requests.get(url + "/v1/scheduler", timeout=30).json()["predictor"]["online"]


def wait_for(url: str, check, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while not check(stats := online(url)):
        assert time.monotonic() < deadline, f"online stats never got there: {stats}"
        time.sleep(0.2)
    return stats


def prometheus_value(metrics_url: str, name: str) -> float | None:
    """This module's app's series only: the endpoint may still export earlier modules' apps."""
    for line in requests.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith(name + "{") and f'application="{APP}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_labels_refit_and_cancel_through_the_app(serve_instance, deploy_app, metrics_url, tmp_path):
    url = serve_instance
    deploy_app({"engine.max_batch_size": 2, "engine_replicas.num_replicas": 1, "router.allow_benchmark_fields": True,
                "predictor.online": {"enabled": True, "min_labels": 12, "refit_every": 4, "holdout_fraction": 0.25,
                                     "save_dir": str(tmp_path)}}, name=APP)
    for i, prompt in enumerate(PROMPTS):  # stop after 1..8 tokens; those over 6 hit max_tokens (censored)
        body = {"prompt": prompt, "max_tokens": 6, "bench_stop_after_tokens": i % 8 + 1, "temperature": 0}
        r = requests.post(url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
    stats = wait_for(url, lambda s: s["num_refits"] >= 1 and not s["refit_running"])
    assert stats["labels_collected"] == len(PROMPTS) and stats["pending"] == 0
    assert {"tau_before", "tau_after", "swapped"} <= set(stats["last_refit"])
    assert stats["rolling_window"] == len(PROMPTS) and stats["rolling_tau"] is not None
    assert (tmp_path / "labels.npz").exists()
    deadline = time.monotonic() + 60  # Ray exports metrics every few seconds
    while prometheus_value(metrics_url, "ray_ssjf_predictor_labels_collected") != len(PROMPTS):
        assert time.monotonic() < deadline, "ray_ssjf_predictor_labels_collected never reached the label count"
        time.sleep(2)
    assert 0 <= prometheus_value(metrics_url, "ray_ssjf_predictor_version") <= stats["version"]  # set per label

    body = {"prompt": "a long one", "max_tokens": 400, "ignore_eos": True, "stream": True}
    with requests.post(url + "/v1/completions", json=body, stream=True, timeout=60) as r:
        next(line for line in r.iter_lines() if line)  # first token: the request is running, then hang up
    stats = wait_for(url, lambda s: s["pending"] == 0)
    assert stats["labels_collected"] == len(PROMPTS)
