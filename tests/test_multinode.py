"""The router's one queue across a multi-node Ray cluster on this machine: a head node (router, Serve
controller, HTTP proxy) and three worker nodes, each with two `engine_node` resources standing in for
GPUs, so two engine replicas land on each node. The engines are simulated (`engine.model: sim`: the real
engine, no weights, 40 ms per token, so blockers hold their slots for 12 s) and six fit this machine.
Requests start in SSJF order across the nodes, and removing a node mid-run loses no queued request.

This module starts its own cluster (ray.cluster_utils.Cluster), not the conftest single-node one.
"""
import glob
import os
import subprocess
import time
from collections import Counter

import pytest
import requests

from conftest import free_port
from test_ordering import QUEUED_MAX_TOKENS, distinct_by_prediction

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

TEMP_DIR = "/tmp/ray_ssjf_multinode"
BLOCKER_TOKENS = 300
NUM_WORKER_NODES, REPLICAS_PER_NODE = 3, 2
NUM_REPLICAS = NUM_WORKER_NODES * REPLICAS_PER_NODE
OVERRIDES = {
    "engine.model": "sim:decode_step_ms=40,join_ms=2,mean_output_tokens=0",  # blockers run 12 s
    "engine.tokenizer": "demo",
    "engine.batching": "none",  # one slot per replica: starts are totally ordered by the router
    "engine.max_context_tokens": 2048,
    "engine_replicas.num_replicas": NUM_REPLICAS,
    "engine_replicas.ray_actor_options": {"num_cpus": 0, "resources": {"engine_node": 1}},
    "router.ray_actor_options": {"num_cpus": 0.5, "resources": {"head_node": 0.1}},  # survives node loss
    "router.replica_sync_interval_s": 0.2,
    "scheduler.policy": "ssjf",
    "router.allow_benchmark_fields": True,  # queued requests fix their length without stating it
}


@pytest.fixture(scope="module")
def cluster_app(own_ray):
    """(cluster, router handle, base URL) with two engine replicas on each of three worker nodes."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from deployments.app import app_from_config
    from deployments.config import DEMO_OVERRIDES, load_config

    # Cluster writes the head's address to the *default* temp dir's ray_current_cluster even when the head
    # uses another temp_dir, and fails if that dir does not exist (a fresh machine that never ran Ray)
    os.makedirs(os.path.dirname(ray._private.utils.get_ray_address_file(None)), exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"head_node": 1}, "include_dashboard": False, "temp_dir": TEMP_DIR})
    try:
        for _ in range(NUM_WORKER_NODES):
            cluster.add_node(num_cpus=1, resources={"engine_node": REPLICAS_PER_NODE}, temp_dir=TEMP_DIR)
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        port = free_port()
        # One proxy, on the head node: every node of this cluster shares the loopback address.
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        handle = serve.run(app_from_config(load_config(None, {**DEMO_OVERRIDES, **OVERRIDES})), name="default", route_prefix="/")
        wait_until(lambda: len(status(handle)["replicas"]) == NUM_REPLICAS, 180, "every engine replica registered")
        yield cluster, handle, f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()


def status(handle) -> dict:
    return handle.status.remote().result(timeout_s=30)


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting until {what}"
        time.sleep(poll_s)


def replica_nodes(handle) -> dict[str, str]:
    return {rid: info["node_id"] for rid, info in status(handle)["replicas"].items()}


def occupy_all_replicas(handle, tag: str) -> list:
    blockers = [handle.generate.remote(prompt=f"{tag} blocker {i}", max_tokens=BLOCKER_TOKENS, ignore_eos=True)
                for i in range(NUM_REPLICAS)]
    wait_until(lambda: status(handle)["scheduler"]["num_running"] == NUM_REPLICAS, 60, "every blocker runs")
    return blockers


def queue_requests(handle, prompts, max_tokens: int) -> list:
    """Submit `prompts` 50 ms apart and wait until all of them wait in the router's queue."""
    futures = []
    for prompt in prompts:
        futures.append(handle.generate.remote(prompt=prompt, max_tokens=QUEUED_MAX_TOKENS,
                                              bench_stop_after_tokens=max_tokens))
        time.sleep(0.05)
    wait_until(lambda: status(handle)["scheduler"]["num_waiting"] == len(prompts), 30, "all requests queue")
    return futures


def outcome(future, timeout_s: float = 120):
    """("ok", result) or ("error", exception) of a handle call; a hang fails the test via the timeout."""
    try:
        return "ok", future.result(timeout_s=timeout_s)
    except TimeoutError:
        raise
    except Exception as exc:  # the router's RequestError, wrapped by Ray
        return "error", exc


def test_replicas_on_distinct_nodes_and_ssjf_order_across_them(cluster_app):
    cluster, handle, url = cluster_app
    over_http = requests.get(url + "/v1/scheduler", timeout=30).json()["replicas"]
    nodes = {rid: info["node_id"] for rid, info in over_http.items()}
    assert sorted(Counter(nodes.values()).values()) == [REPLICAS_PER_NODE] * NUM_WORKER_NODES, nodes
    assert set(nodes.values()) <= {node.node_id for node in cluster.worker_nodes}, nodes

    picked = distinct_by_prediction(4)
    blockers = occupy_all_replicas(handle, "order")
    running = status(handle)["scheduler"]["replicas"]
    assert {rid: r["num_running"] for rid, r in running.items()} == {rid: 1 for rid in nodes}, running
    # Longest predicted arrives first, so arrival order is the reverse of the SSJF order.
    futures = queue_requests(handle, [prompt for prompt, _ in reversed(picked)], max_tokens=48)
    for blocker in blockers:  # free every slot at once: the queue then feeds four of the replicas
        blocker.cancel()
    results = [f.result(timeout_s=120) for f in futures]

    by_start = sorted(results, key=lambda r: r["ssjf"]["dispatch_seq"])
    predicted = [r["ssjf"]["predicted_output_tokens"] for r in by_start]
    assert predicted == sorted(predicted) and len(set(predicted)) == len(predicted), by_start
    assert len({r["ssjf"]["replica"] for r in by_start}) == len(by_start), [r["ssjf"] for r in by_start]
    wait_until(lambda: _idle(status(handle)), 30, "the cancelled blockers freed their slots", poll_s=0.2)


def test_removing_a_node_loses_no_queued_request(cluster_app):
    cluster, handle, _ = cluster_app
    nodes = replica_nodes(handle)
    victim_node = next(n for n in cluster.worker_nodes if n.node_id == nodes[sorted(nodes)[0]])
    victims = {rid for rid, node_id in nodes.items() if node_id == victim_node.node_id}
    survivors = set(nodes) - victims

    blockers = occupy_all_replicas(handle, "removal")
    prompts = [prompt for prompt, _ in distinct_by_prediction(4)]
    queued = queue_requests(handle, prompts, max_tokens=8)
    cluster.remove_node(victim_node, allow_graceful=False)

    for kind, result in map(outcome, queued):
        assert kind == "ok", f"a queued request failed after the node removal: {result!r}"
        assert result["finish_reason"] == "stop" and result["usage"]["completion_tokens"] == 8  # bench stop length
        assert result["ssjf"]["replica"] in survivors
    blocker_outcomes = [outcome(b) for b in blockers]
    print("blockers after the node removal:", [r["ssjf"] if k == "ok" else repr(r) for k, r in blocker_outcomes])
    assert any(kind == "ok" and r["ssjf"]["replica"] in survivors for kind, r in blocker_outcomes), blocker_outcomes
    for kind, result in blocker_outcomes:
        if kind == "error":  # the victim's request had streamed tokens: it must end with a clear 503
            cause = getattr(result, "cause", None) or result
            assert getattr(cause, "status", None) == 503, repr(result)
            assert "failed while running the request" in str(cause), repr(result)
        else:  # or it was re-queued once (no token yet) and finished on a survivor
            assert result["usage"]["completion_tokens"] == BLOCKER_TOKENS

    wait_until(lambda: _idle(status(handle)), 30, "the router is idle", poll_s=0.2)
    pending = handle.generate.remote(prompt="still serving?", max_tokens=4, ignore_eos=True)
    try:
        after = pending.result(timeout_s=60)
    except TimeoutError:
        print("DIAG status after hang:", status(handle))
        for log in sorted(glob.glob(TEMP_DIR + "/session_latest/logs/serve/*")):
            print("DIAG ===", log)
            print(subprocess.run(["tail", "-n", "60", log], capture_output=True, text=True).stdout)
        raise
    assert after["ssjf"]["replica"] in survivors and after["usage"]["completion_tokens"] == 4


def _idle(snapshot: dict) -> bool:
    return snapshot["scheduler"]["num_waiting"] == 0 and snapshot["scheduler"]["num_running"] == 0
