"""Tests for the discrete-event simulator (bench/sim/run.py and helpers)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.sim import run as sim_cli
from bench.sim import workload as wl
from bench.sim.cluster import Workload, build_simulation, simulate
from bench.sim.engine import CostModel
from router import SchedulerConfig

FIXTURE = Path(__file__).parent / "fixtures" / "sim" / "lengths_sample.csv"
PAPER_COST = CostModel()  # 0.1 s + 0.02 s/token, batch 4


def cfg(policy, guard=False):
    """guard: the router's defaults; else no aging and no starvation bound (pure policy order)."""
    if guard:
        return SchedulerConfig(policy=policy)
    return SchedulerConfig(policy=policy, aging="linear", aging_tokens_per_s=0.0, max_wait_s=math.inf,
                           max_queue_len=10**9)


def skewed_workload(num, rate_rps, seed=0):
    rng = np.random.default_rng(seed)
    lengths = wl.synthetic_lengths(num, rng, prediction_noise_sigma=0.5)
    return Workload(wl.poisson_arrivals_s(num, rate_rps, rng), lengths.true_output_tokens,
                    lengths.predicted_output_tokens)


def run_single(tokens, arrivals, batching, cost=PAPER_COST, prompts=None):
    """One replica, FCFS; returns the finished Simulation."""
    w = Workload(np.asarray(arrivals, float), np.asarray(tokens), np.asarray(tokens, float),
                 None if prompts is None else np.asarray(prompts))
    sim = build_simulation(front="cluster", config=cfg("fcfs"), batching=batching, cost=cost, num_replicas=1, seed=0)
    sim.run(w)
    return sim


def single(tokens, arrivals, batching, cost=PAPER_COST):
    sim = run_single(tokens, arrivals, batching, cost)
    return [sim.completion_s[str(i)] for i in range(len(tokens))]


@pytest.mark.timeout(30)
def test_cost_models_single_and_joined_requests():
    assert single([100], [0.0], "none") == pytest.approx([2.1])
    assert single([100], [0.0], "dynamic") == pytest.approx([0.05 + 2.1])
    assert single([100], [0.0], "continuous") == pytest.approx([2.1])
    # none: one at a time
    assert single([100, 10], [0.0, 0.0], "none") == pytest.approx([2.1, 2.1 + 0.3])
    # dynamic: one batch of two; each completes after its own tokens
    assert single([100, 10], [0.0, 0.0], "dynamic") == pytest.approx([0.05 + 2.1, 0.05 + 0.3])
    # dynamic: the third arrives while the batch runs: it waits for the whole batch (ends at 2.15)
    assert single([100, 10, 10], [0.0, 0.0, 1.0], "dynamic")[2] == pytest.approx(2.15 + 0.05 + 0.3)
    # continuous: both prefill together (0.2 s), then 1 step per token
    assert single([100, 10], [0.0, 0.0], "continuous") == pytest.approx([0.2 + 2.0, 0.2 + 0.2])
    # continuous: a join at t=1.01 happens at the next step boundary (1.02) and stalls the batch 0.1 s
    done = single([100, 10], [0.0, 1.01], "continuous")
    assert done == pytest.approx([2.1 + 0.1, 1.02 + 0.1 + 0.2])


@pytest.mark.timeout(30)
def test_prefill_per_prompt_token_and_first_token_times():
    cost = CostModel(prefill_per_prompt_token_s=0.001)  # 0.1 s + 1 ms/prompt token + 0.02 s/token
    sim = run_single([100, 10], [0.0, 0.0], "none", cost, prompts=[50, 200])
    assert [sim.first_token_s["0"], sim.completion_s["0"]] == pytest.approx([0.17, 2.15])
    assert [sim.first_token_s["1"], sim.completion_s["1"]] == pytest.approx([2.15 + 0.32, 2.15 + 0.5])
    # dynamic: one batch, one overhead, both prompts prefilled together
    sim = run_single([100, 10], [0.0, 0.0], "dynamic", cost, prompts=[50, 200])
    assert sim.first_token_s["0"] == sim.first_token_s["1"] == pytest.approx(0.05 + 0.35 + 0.02)
    # continuous: steps end at 0.15 + 0.02 k; a join at t=1.02 waits for 1.03, then stalls the batch
    # by its overhead + its prompt (0.3 s) before the step that yields its first token
    sim = run_single([100, 10], [0.0, 1.02], "continuous", cost, prompts=[50, 200])
    assert sim.first_token_s["1"] == pytest.approx(1.03 + 0.3 + 0.02)
    assert sim.completion_s["0"] == pytest.approx(2.15 + 0.3)
    assert sim.replica_of == {"0": "r0", "1": "r0"}
    assert single([100], [0.0], "none") == [run_single([100], [0.0], "none", cost, prompts=[0]).completion_s["0"]]


@pytest.mark.timeout(30)
def test_dispatch_latency_holds_the_slot_and_client_latency_does_not():
    cost = CostModel(dispatch_latency_s=0.05, client_latency_s=0.2)  # h = 50 ms, c = 200 ms
    # none: r0 runs h + a + 10 b = 0.35 s; r1 gets the slot at the release (0.35), not when the client sees r0
    sim = run_single([10, 10], [0.0, 0.0], "none", cost)
    assert [sim.completion_s["0"], sim.completion_s["1"]] == pytest.approx([0.35 + 0.2, 0.7 + 0.2])
    assert sim.wait_s["1"] == pytest.approx(0.35)
    # continuous: r0 reaches the engine at 0.05 and its steps end at 0.15 + 0.02 k; r1 (dispatched at
    # 1.005) reaches it at 1.055, joins at 1.07 and stalls r0 by a = 0.1 s; the h before it stalls nobody
    sim = run_single([100, 10], [0.0, 1.005], "continuous", cost)
    assert sim.first_token_s["0"] == pytest.approx(0.17 + 0.2)
    assert sim.first_token_s["1"] == pytest.approx(1.07 + 0.1 + 0.02 + 0.2)
    assert sim.completion_s["1"] == pytest.approx(1.07 + 0.1 + 0.2 + 0.2)
    assert sim.completion_s["0"] == pytest.approx(2.15 + 0.1 + 0.2)

@pytest.mark.timeout(60)
def test_skewed_workload_ssjf_beats_fcfs_and_oracle_beats_ssjf():
    w = skewed_workload(3000, rate_rps=4 * 0.95 / (0.1 + 0.02 * 150))
    run = lambda p: simulate(w, front="cluster", config=cfg(p), batching="none", cost=PAPER_COST,  # noqa: E731
                             num_replicas=4, seed=0)
    fcfs, ssjf, oracle = run("fcfs"), run("ssjf"), run("sjf-oracle")
    assert fcfs["num_completed"] == ssjf["num_completed"] == oracle["num_completed"] == 3000
    assert ssjf["mean_jct_s"] < 0.9 * fcfs["mean_jct_s"]
    assert oracle["mean_jct_s"] <= ssjf["mean_jct_s"]
    assert run("ssjf") == ssjf  # deterministic


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batching", ["none", "continuous"])
def test_cluster_queue_beats_per_replica_queues_at_64_replicas(batching):
    w = skewed_workload(6000, rate_rps=64 * 0.9 / (0.1 + 0.02 * 150) * (1 if batching == "none" else 2.5))
    run = lambda front: simulate(w, front=front, config=cfg("ssjf", guard=True), batching=batching,  # noqa: E731
                                 cost=PAPER_COST, num_replicas=64, seed=1)
    cluster, p2c = run("cluster"), run("p2c")
    assert cluster["num_completed"] == p2c["num_completed"] == 6000
    assert cluster["mean_jct_s"] <= p2c["mean_jct_s"]


@pytest.mark.timeout(60)
def test_guard_bounds_queue_wait_in_cluster_queue():
    w = skewed_workload(3000, rate_rps=4 * 1.05 / (0.1 + 0.02 * 150))
    m = simulate(w, front="cluster", config=SchedulerConfig(max_wait_s=20.0, max_queue_len=10**9),
                 batching="none", cost=PAPER_COST, num_replicas=4, seed=0)
    unguarded = simulate(w, front="cluster", config=cfg("ssjf"), batching="none", cost=PAPER_COST,
                         num_replicas=4, seed=0)
    assert m["max_queue_wait_s"] < unguarded["max_queue_wait_s"]


@pytest.mark.timeout(60)
def test_reproduce_paper_emits_json_line(capsys):
    assert sim_cli.main(["--reproduce-paper", str(FIXTURE), "--paper-num-requests", "400"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    out = json.loads(last)
    assert set(out) == {"no_batching", "dynamic", "continuous"}
    for mode in out.values():
        for key in ("fcfs_mean_jct_s", "ssjf_mean_jct_s", "sjf_oracle_mean_jct_s", "jct_reduction_pct"):
            assert isinstance(mode[key], float)
        assert mode["ssjf_mean_jct_s"] < mode["fcfs_mean_jct_s"]


@pytest.mark.timeout(60)
def test_compare_cli_small_run(capsys):
    args = ["--num-requests", "500", "--replicas", "8", "--batching", "dynamic", "--preset", "live"]
    assert sim_cli.main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["results"]) == {"cluster/ssjf", "p2c/ssjf", "cluster/fcfs", "p2c/fcfs", "cluster/sjf-oracle"}
    assert all(r["num_completed"] == 500 for r in out["results"].values())


@pytest.mark.timeout(30)
def test_fixture_is_small_and_parses():
    assert FIXTURE.stat().st_size < 100_000
    lengths = wl.load_lengths_csv(str(FIXTURE))
    assert lengths.true_output_tokens.size == 2000
    assert set(np.unique(lengths.predicted_output_tokens)) <= set(wl.PAPER_CLASS_PREDICTED_TOKENS)
