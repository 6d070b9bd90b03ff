"""Queue-aware autoscaling (deployments/autoscaling.py): the decision rule, the gauge parser, and a live
Serve run with simulated engines in which a burst grows the engine replicas, a quiet period shrinks them
and no request is lost. The live test starts its own Ray (metrics exported every second)."""
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import free_port
from deployments.autoscaling import QueueAwarePolicy, QueueReading, desired_replicas, parse_queue_gauges

APP = "autoscale"
EXPOSITION = """\
# HELP ray_ssjf_queue_length Requests waiting in the router's queue
# TYPE ray_ssjf_queue_length gauge
ray_ssjf_queue_length{application="autoscale",deployment="SSJFRouter",replica="r1"} 12.0
ray_ssjf_queue_length{application="other",deployment="SSJFRouter",replica="r2"} 99.0
ray_ssjf_queue_predicted_tokens{application="autoscale",replica="r1"} 640.0
ray_ssjf_queue_length_bucket{application="autoscale",le="1"} 5.0
"""


def reading(num_waiting: float, tokens=None) -> QueueReading:
    return QueueReading(num_waiting, tokens, time.monotonic())


@pytest.mark.timeout(10)
def test_desired_replicas_covers_running_and_queue():
    assert desired_replicas(0, reading(0), 8, 1.0, None, 10) == 0
    assert desired_replicas(16, reading(0), 8, 1.0, None, 10) == 2  # full replicas, no queue: hold
    assert desired_replicas(16, reading(1), 8, 1.0, None, 10) == 3  # one waiting request adds capacity
    assert desired_replicas(16, reading(0), 8, 0.5, None, 10) == 4  # headroom
    # by predicted work: 2000 tokens at 100 tokens/s per replica, drained within 10 s -> 2 more replicas
    assert desired_replicas(8, reading(3, tokens=2000), 8, 1.0, 100, 10) == 3
    assert desired_replicas(8, reading(3, tokens=2000), 8, 1.0, None, 10) == 2  # no rate: count the queue


@pytest.mark.timeout(10)
def test_gauges_are_summed_for_the_app_only():
    assert parse_queue_gauges(EXPOSITION, APP) == (12.0, 640.0)
    assert parse_queue_gauges(EXPOSITION, "other") == (99.0, None)
    assert parse_queue_gauges("", APP) == (None, None)


@pytest.mark.timeout(10)
def test_policy_rejects_bad_kwargs_and_holds_without_a_reading():
    with pytest.raises(ValueError, match="slots_per_replica"):
        QueueAwarePolicy(slots_per_replica=0)

    class Ctx:  # no app of this name exports gauges in this process: the policy holds the target
        app_name, target_num_replicas, total_num_requests = "no-such-app", 3, 50
        capacity_adjusted_min_replicas, capacity_adjusted_max_replicas = 1, 8

    assert QueueAwarePolicy(slots_per_replica=2, refresh_interval_s=0.05)(Ctx())[0] == 3


SLOTS = 2
OVERRIDES = {
    "engine.model": "sim:decode_step_ms=40,join_ms=5,mean_output_tokens=0",
    "engine.max_batch_size": SLOTS,
    "engine_replicas.ray_actor_options": {"num_cpus": 0.1},
    "engine_replicas.autoscaling_config": {
        "min_replicas": 1, "max_replicas": 4, "initial_replicas": 1,
        "upscale_delay_s": 1.0, "downscale_delay_s": 8.0, "look_back_period_s": 2.0,
        "policy": {"policy_function": "deployments.autoscaling:QueueAwarePolicy",
                   "policy_kwargs": {"slots_per_replica": SLOTS, "target_utilization": 1.0,
                                     "refresh_interval_s": 0.5}}},
    "router.replica_sync_interval_s": 0.2,
}


@pytest.fixture(scope="module")
def autoscaled_app(own_ray):
    import ray
    from ray import serve

    from bench.common import load_app_config
    from deployments.app import app_from_config

    os.environ["RAY_metrics_report_interval_ms"] = "1000"  # the queue gauge reaches the policy within ~1 s
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir="/tmp/ray_ssjf_autoscaling", logging_level="WARNING",
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        config = load_app_config(str(_sim_config()), OVERRIDES)
        yield serve.run(app_from_config(config), name=APP, route_prefix="/autoscale")
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            os.environ.pop("RAY_metrics_report_interval_ms", None)


def _sim_config():
    from bench.common import REPO_ROOT

    return REPO_ROOT / "configs" / "sim.yaml"


def _num_replicas(handle) -> int:
    return len(handle.status.remote().result(timeout_s=30)["replicas"])


def _wait_for(predicate, timeout_s: float, what: str, handle) -> float:
    started_s = time.monotonic()
    while not predicate():
        assert time.monotonic() - started_s < timeout_s, f"{what} within {timeout_s} s: {_num_replicas(handle)}"
        time.sleep(0.5)
    return time.monotonic() - started_s


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_burst_grows_quiet_shrinks_nothing_lost(autoscaled_app):
    handle = autoscaled_app
    _wait_for(lambda: _num_replicas(handle) == 1, 120, "one engine replica registered", handle)
    # 40 requests of 40 tokens (~1.6 s each) on 2 slots per replica: the router's queue holds most of them
    responses = [handle.generate.remote(prompt=f"burst request {i}", max_tokens=40, ignore_eos=True)
                 for i in range(40)]
    with ThreadPoolExecutor(len(responses)) as pool:
        burst = [pool.submit(response.result, timeout_s=240) for response in responses]
        peak = 1
        while not all(f.done() for f in burst):
            peak = max(peak, _num_replicas(handle))
            time.sleep(0.5)
        results = [f.result() for f in burst]  # a lost request raises here
    assert all(r["finish_reason"] == "length" and r["usage"]["completion_tokens"] == 40 for r in results)
    assert peak >= 3, f"the queue never grew the engine deployment beyond {peak} replicas"
    shrink_s = _wait_for(lambda: _num_replicas(handle) == 1, 120, "scaled back to one replica", handle)
    after = handle.generate.remote(prompt="still there?", max_tokens=3, ignore_eos=True).result(timeout_s=60)
    assert after["usage"]["completion_tokens"] == 3
    print(f"peak {peak} replicas; back to 1 after {shrink_s:.1f} s of quiet")



@pytest.mark.timeout(30)
def test_gpu_config_scales_on_the_queue():
    from ray.serve.config import AutoscalingConfig

    from bench.common import REPO_ROOT, load_app_config

    config = load_app_config(str(REPO_ROOT / "configs" / "gpu.yaml"), {})
    autoscaling = AutoscalingConfig(**config.engine_replicas.autoscaling_config)
    assert autoscaling.policy.policy_function == "deployments.autoscaling:QueueAwarePolicy"
    policy = QueueAwarePolicy(**autoscaling.policy.policy_kwargs)
    assert policy.slots_per_replica == config.engine.max_batch_size
