"""Survival under overload, timeouts, disconnects and a killed engine replica (real Serve, loopback)."""

import threading
import time

import pytest
import ray
import requests
from ray import serve
from ray.serve.exceptions import RequestCancelledError

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]
ONE_SLOT = {"engine.batching": "none", "engine_replicas.num_replicas": 1}


def completion(url, timeout_s=120, **body):
    return requests.post(url + "/v1/completions", json=body, timeout=timeout_s)


def wait_until(predicate, timeout_s=30.0, interval_s=0.05):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval_s)


def scheduler(handle):
    return handle.status.remote().result(timeout_s=30)["scheduler"]


def engine_idle(handle):
    replicas = handle.status.remote().result(timeout_s=30)["replicas"]
    return all(r.get("engine_num_free_slots") == r["capacity"] for r in replicas.values())


def in_background(fn, *args, **kwargs):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", fn(*args, **kwargs)), daemon=True)
    thread.start()
    return thread, box


@pytest.fixture(scope="module")
def one_slot_app(serve_instance):
    """One engine replica with one slot, a queue bound of 2 and a 4 KiB body limit."""
    from deployments.app import app_from_config
    from deployments.config import DEMO_OVERRIDES, load_config

    config = load_config(None, {**DEMO_OVERRIDES, **ONE_SLOT, "scheduler.max_queue_len": 2, "router.max_request_bytes": 4096})
    handle = serve.run(app_from_config(config), name="default", route_prefix="/")
    wait_until(lambda: handle.status.remote().result(timeout_s=30)["replicas"], timeout_s=120)
    yield handle
    serve.delete("default")


def test_overload_sheds_with_429_and_admitted_requests_complete(serve_instance, one_slot_app):
    handle = one_slot_app
    blocker, blocker_box = in_background(completion, serve_instance, prompt="block", max_tokens=150,
                                         ignore_eos=True)
    wait_until(lambda: scheduler(handle)["num_running"] == 1)
    admitted = [in_background(completion, serve_instance, prompt=f"queued {i}", max_tokens=2)
                for i in range(2)]
    wait_until(lambda: scheduler(handle)["num_waiting"] == 2)
    shed = completion(serve_instance, prompt="one too many", max_tokens=2)
    assert shed.status_code == 429
    assert shed.headers["Retry-After"] == "1"
    assert shed.json()["error"]["code"] == "queue_full"
    shed_stream = completion(serve_instance, prompt="streamed, one too many", max_tokens=2, stream=True)
    assert shed_stream.status_code == 429 and shed_stream.json()["error"]["code"] == "queue_full"
    for thread, box in [(blocker, blocker_box)] + admitted:
        thread.join(120)
        assert box["result"].status_code == 200, box["result"].text
    status = handle.status.remote().result(timeout_s=30)
    assert status["metrics"]["rejections"].get("queue_full") == 2
    assert status["scheduler"]["num_waiting"] == 0


def test_disconnected_plain_request_frees_its_slot(serve_instance, one_slot_app):
    handle = one_slot_app
    with pytest.raises(requests.exceptions.ReadTimeout):
        completion(serve_instance, timeout_s=1.0, prompt="abandon me", max_tokens=1500, ignore_eos=True)
    wait_until(lambda: scheduler(handle)["num_running"] == 0 and engine_idle(handle), timeout_s=20)
    ok = completion(serve_instance, prompt="next", max_tokens=2)
    assert ok.status_code == 200
    assert handle.status.remote().result(timeout_s=30)["metrics"]["completions"].get("cancelled") == 1


def test_oversized_body_is_413(serve_instance, one_slot_app):
    r = completion(serve_instance, prompt="x" * 10_000, max_tokens=2)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert completion(serve_instance, prompt="small", max_tokens=2).status_code == 200


def test_request_pinned_to_a_missing_replica_does_not_stall_routing(one_slot_app):
    """A call pinned to a replica Serve no longer lists (the window between a replica's removal and
    the router noticing) must wait in Serve's backoff, not spin its routing loop: other calls to the
    engine deployment are still routed, and cancelling the pinned call ends it."""
    engines = serve.get_deployment_handle("Engine", app_name="default")
    pinned = engines.info.remote(replica_id="no-such-replica")
    time.sleep(0.5)  # the pinned call is now in Serve's routing loop
    for _ in range(3):
        assert engines.info.remote().result(timeout_s=20)["capacity"] == 1
    pinned.cancel()
    with pytest.raises(RequestCancelledError):
        pinned.result(timeout_s=20)
    assert one_slot_app.generate.remote(prompt="still routed", max_tokens=2).result(timeout_s=60)["usage"][
        "completion_tokens"] == 2


def test_queue_timeout_is_a_clear_503(serve_instance, deploy_app):
    handle = deploy_app({**ONE_SLOT, "router.request_timeout_s": 1.0})
    blocker, box = in_background(completion, serve_instance, prompt="block", max_tokens=400, ignore_eos=True)
    wait_until(lambda: scheduler(handle)["num_running"] == 1)
    started = time.monotonic()
    r = completion(serve_instance, prompt="impatient", max_tokens=2)
    assert r.status_code == 503 and r.json()["error"]["code"] == "queue_timeout"
    assert 0.9 < time.monotonic() - started < 10
    assert scheduler(handle)["num_waiting"] == 0
    blocker.join(120)


def test_killed_engine_replica(serve_instance, deploy_app):
    handle = deploy_app({"engine.batching": "none", "engine_replicas.num_replicas": 2})
    running = [handle.generate.remote(prompt=f"long {i}", max_tokens=600, ignore_eos=True) for i in range(2)]
    wait_until(lambda: scheduler(handle)["num_running"] == 2)
    queued = [handle.generate.remote(prompt=f"queued {i}", max_tokens=3, ignore_eos=True) for i in range(4)]
    wait_until(lambda: scheduler(handle)["num_waiting"] == 4)
    victim = next(iter(handle.status.remote().result(timeout_s=30)["replicas"]))
    ray.kill(ray.get_actor(f"SERVE_REPLICA::default#Engine#{victim}", namespace="serve"), no_restart=True)

    outcomes = []
    for response in running:
        try:
            outcomes.append(("ok", response.result(timeout_s=120)["ssjf"]["replica"]))
        except Exception as exc:  # the request that was streaming on the victim
            outcomes.append(("error", str(exc)))
    errors = [o for o in outcomes if o[0] == "error"]
    assert len(errors) <= 1
    for _, message in errors:
        assert "503" in message or "failed while running" in message, message
    for response in queued:  # nothing queued is lost: all finish on the survivor or the replacement
        assert response.result(timeout_s=120)["usage"]["completion_tokens"] == 3
    # capacity recovers: Serve replaces the dead replica and the router registers it
    wait_until(lambda: len(handle.status.remote().result(timeout_s=30)["replicas"]) == 2
               and victim not in handle.status.remote().result(timeout_s=30)["replicas"], timeout_s=90,
               interval_s=0.5)
    assert handle.generate.remote(prompt="after", max_tokens=2).result(timeout_s=60)["finish_reason"] == "length"


def test_dynamic_batching_next_request_waits_for_the_batch_and_oracle_errors_are_400(serve_instance, deploy_app):
    """Audit findings, through Serve: (1) a static batch kept a finished member's slot while the router
    had freed it, so the next request waited 2 s in the replica and got 500 (EngineFullError); (2) the
    sjf-oracle's missing-length error was a 409 on `request_id`."""
    handle = deploy_app({"engine.batching": "dynamic", "engine.max_batch_size": 2, "engine.batch_wait_ms": 300.0,
                         "engine_replicas.num_replicas": 1, "scheduler.policy": "sjf-oracle",
                         "router.allow_benchmark_fields": True})
    missing = completion(serve_instance, prompt="no oracle length", max_tokens=2)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "oracle_output_tokens", missing.text
    long = handle.generate.remote(prompt="long member", max_tokens=400, ignore_eos=True, oracle_output_tokens=400)
    short = handle.generate.remote(prompt="short member", max_tokens=2, ignore_eos=True, oracle_output_tokens=2)
    assert short.result(timeout_s=60)["finish_reason"] == "length"
    assert scheduler(handle)["num_running"] == 2, "the short member's slot is held until its batch ends"
    started = time.monotonic()
    after = completion(serve_instance, prompt="next", max_tokens=2, ignore_eos=True, oracle_output_tokens=2)
    assert after.status_code == 200, after.text
    assert long.result(timeout_s=120)["usage"]["completion_tokens"] == 400
    assert after.json()["ssjf"]["queue_wait_s"] > 0 and time.monotonic() - started < 60


def test_no_engine_replica_is_503_and_unhealthy(serve_instance, deploy_app):
    """Audit finding: with no engine replica every request got 400 `context_length_exceeded` ("context is 1
    tokens") while /health said ok."""
    handle = deploy_app({**ONE_SLOT, "router.replica_wait_s": 0.2})
    victim = next(iter(handle.status.remote().result(timeout_s=30)["replicas"]))
    ray.kill(ray.get_actor(f"SERVE_REPLICA::default#Engine#{victim}", namespace="serve"), no_restart=True)
    health, answers = [], []
    deadline = time.monotonic() + 120
    while not (503 in health and health[-1] == 200):
        assert time.monotonic() < deadline, (health[-5:], answers)
        health.append(requests.get(serve_instance + "/health", timeout=10).status_code)
        if health[-1] == 503:
            r = completion(serve_instance, prompt="anyone there?", max_tokens=2)
            answers.append((r.status_code, r.json().get("error", {}).get("code")))
        time.sleep(0.05)
    assert (503, "no_replica") in answers, answers
    assert all(status in (200, 503) for status, _ in answers), answers  # never a 400
    assert completion(serve_instance, prompt="recovered", max_tokens=2).status_code == 200
