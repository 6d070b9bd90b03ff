"""The ordering proof through Ray Serve: with every engine slot busy, queued requests start in
ascending predicted length under ssjf, in arrival order under fcfs, and one that waited past
max_wait_s goes next whatever its prediction."""

import time

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(400)]

# Two replicas, one slot each (batching "none"), so starts are totally ordered by the router.
# Queued requests fix their length with the benchmark-only stop field under a cap above every
# prediction, so ssjf ranks them by the predictor (ignore_eos would make the key exactly max_tokens).
# The starvation bound is far above any blocker's run: on a slow CI machine 1900-token blockers ran past
# the default 30 s, and the guard then (rightly) started the queued requests oldest-first.
BASE = {"engine.batching": "none", "engine_replicas.num_replicas": 2, "engine.max_context_tokens": 2048,
        "router.allow_benchmark_fields": True, "scheduler.max_wait_s": 600.0}
QUEUED_MAX_TOKENS = 1536
# Blockers must outlast the queueing steps on a quiet machine: engines now send ready tokens in chunks,
# so 400 demo tokens ended in < 0.5 s and the queued requests never waited (CI, 2026-12-01).
BLOCKER_TOKENS = 1900
CANDIDATE_PROMPTS = [
    "hi",
    "What is 2+2? Answer with one number.",
    "Translate 'good morning' to French.",
    "Write a detailed, multi-section essay on the history of the Roman Empire, covering its founding, "
    "expansion, government, culture, economy, military, decline and legacy, with examples.",
    "Write a Python program that implements a web server with routing, templates, sessions, and a "
    "database layer; explain every part of the code in detail step by step.",
    "Give a yes or no answer: is the sky blue?",
    "Write a long story about a dragon and a knight, with dialogue, at least ten chapters.",
    "List the planets of the solar system and describe each one in detail, including its moons.",
]


def predictions(prompts):
    from proxy_model import load_predictor

    return dict(zip(prompts, load_predictor().predict(prompts)))


def distinct_by_prediction(count):
    """`count` prompts whose predictions differ by >= 15% pairwise, as (prompt, prediction) pairs."""
    chosen = []
    for prompt, predicted in sorted(predictions(CANDIDATE_PROMPTS).items(), key=lambda kv: kv[1]):
        if predicted >= QUEUED_MAX_TOKENS:  # capped by max_tokens: would tie in the ssjf key
            continue
        if not chosen or predicted > chosen[-1][1] * 1.15:
            chosen.append((prompt, predicted))
    assert len(chosen) >= count, f"predictor does not separate enough prompts: {chosen}"
    step = (len(chosen) - 1) / (count - 1)
    return [chosen[round(i * step)] for i in range(count)]


def occupy_all_slots(handle, num_slots):
    """Start `num_slots` long requests and return their result futures once all are running."""
    blockers = [handle.generate.remote(prompt=f"blocker {i}", max_tokens=BLOCKER_TOKENS, ignore_eos=True)
                for i in range(num_slots)]
    deadline = time.monotonic() + 60
    while handle.status.remote().result(timeout_s=30)["scheduler"]["num_running"] < num_slots:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return blockers


def submit_in_order(handle, prompts, gap_s):
    """Submit each prompt `gap_s` apart; returns the result futures in submission order."""
    futures = []
    for prompt in prompts:
        futures.append(handle.generate.remote(prompt=prompt, max_tokens=QUEUED_MAX_TOKENS, bench_stop_after_tokens=2))
        time.sleep(gap_s)
    return futures


def release(blockers):
    """Cancel the blockers: their slots free at once and the queue drains in the policy's order (waiting
    for 1900 tokens instead cost ~60 s per test on a slow machine)."""
    for blocker in blockers:
        blocker.cancel()


def start_order(results):
    return [r["id"] for r in sorted(results, key=lambda r: r["ssjf"]["dispatch_seq"])]


def assert_queued_behind_blockers(handle, count, timeout_s=30.0, unless_a_blocker_ended=False):
    """Every one of `count` requests waits in the router's queue (queued once predicted: poll). With
    `unless_a_blocker_ended`, also return once a blocker has ended (a fast machine): the queue then
    drains by itself."""
    deadline = time.monotonic() + timeout_s
    while (status := handle.status.remote().result(timeout_s=30)["scheduler"])["num_waiting"] != count:
        if unless_a_blocker_ended and status["num_running"] < 2:
            return
        assert time.monotonic() < deadline and status["num_waiting"] < count, status
        time.sleep(0.05)


def run_queued_behind_blockers(deploy_app, policy):
    """Fill both slots, queue 4 prompts longest-predicted first; return their results in arrival order."""
    handle = deploy_app({**BASE, "scheduler.policy": policy})
    picked = distinct_by_prediction(4)
    blockers = occupy_all_slots(handle, 2)
    futures = submit_in_order(handle, [p for p, _ in reversed(picked)], gap_s=0.05)
    assert_queued_behind_blockers(handle, len(picked))
    release(blockers)
    return [f.result(timeout_s=120) for f in futures]


def test_ssjf_starts_shortest_predicted_first(deploy_app):
    results = run_queued_behind_blockers(deploy_app, "ssjf")
    by_start = sorted(results, key=lambda r: r["ssjf"]["dispatch_seq"])
    predicted = [r["ssjf"]["predicted_output_tokens"] for r in by_start]
    assert predicted == sorted(predicted), by_start
    assert len(set(predicted)) == len(predicted)
    assert start_order(results) != [r["id"] for r in results]  # not merely arrival order


def test_fcfs_starts_in_arrival_order(deploy_app):
    results = run_queued_behind_blockers(deploy_app, "fcfs")
    assert start_order(results) == [r["id"] for r in results]


def test_request_past_max_wait_goes_next(deploy_app):
    max_wait_s = 1.0
    handle = deploy_app({**BASE, "scheduler.policy": "ssjf", "scheduler.max_wait_s": max_wait_s,
                         "scheduler.aging_half_life_s": float("inf")})
    (short, _), (long_prompt, _) = distinct_by_prediction(2)
    blockers = occupy_all_slots(handle, 2)
    patient = handle.generate.remote(prompt=long_prompt, max_tokens=QUEUED_MAX_TOKENS, bench_stop_after_tokens=2)
    time.sleep(max_wait_s + 0.3)
    fresh = submit_in_order(handle, [short] * 3, gap_s=0.02)
    assert_queued_behind_blockers(handle, 4, unless_a_blocker_ended=True)
    release(blockers)
    results = [patient.result(timeout_s=120)] + [f.result(timeout_s=120) for f in fresh]
    assert results[0]["ssjf"]["queue_wait_s"] > max_wait_s
    first = min(results, key=lambda r: r["ssjf"]["dispatch_seq"])
    assert first["id"] == results[0]["id"], [(r["id"], r["timings"]) for r in results]
