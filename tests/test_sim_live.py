"""Tests for bench/sim/live.py, records.py, fit.py and extrapolate.py: the cost fit recovers a known
simulator, the replay agrees with it, extrapolation runs, and bad input fails naming the file (and line)."""
import json
from dataclasses import asdict, replace

import numpy as np
import pytest

from bench.sim import extrapolate as sim_extrapolate
from bench.sim import fit as sim_fit
from bench.sim import live as sim_live
from bench.sim import records
from bench.sim import workload as wl
from bench.sim.cluster import Workload
from bench.sim.engine import CostModel
from router import POLICIES, SchedulerConfig

KNOWN_COST = CostModel(request_overhead_s=0.05, per_token_s=0.02, step_growth_s=0.004, batch_size=4,
                       batch_wait_s=0.01, prefill_per_prompt_token_s=0.0002)
SCHEDULER = {k: v for k, v in asdict(SchedulerConfig()).items() if k != "policy"}


def synthetic_run(run_dir, batching, cost=KNOWN_COST, num=600, loads=(0.9,), rounds=1, replicas=2, arms=None):
    """A 'live' run produced by the simulator itself with a known cost model: chat-like output lengths
    (median 30, <= 128 tokens), noisy predictions, 10-255 prompt tokens, Poisson arrivals; one
    workload per (load, round), replayed by every arm."""
    labels = list(arms) if arms else list(POLICIES)
    setup = records.Setup(batching, replicas, cost.batch_size, cost.batch_wait_s, SCHEDULER, arms or {})
    rows = []
    for load in loads:
        for round_ in range(rounds):
            rng = np.random.default_rng([round_, int(100 * load)])
            true = np.clip(np.round(rng.lognormal(np.log(30.0), 0.9, num)), 1, 128).astype(np.int64)
            mix = Workload(np.zeros(num), true, true * rng.lognormal(0.0, 0.5, num), rng.integers(10, 256, num))
            rate_rps = load * replicas * sim_extrapolate.capacity_rps(batching, cost, mix)
            workload = replace(mix, arrival_s=wl.poisson_arrivals_s(num, rate_rps, rng))
            for label in labels:
                rows += sim_live.simulated_rows(workload, np.arange(num), (load, round_, label), setup=setup,
                                                cost=cost, seed=0)
    records.write_run(run_dir, rows, {"batching": batching, "num_replicas": replicas,
                                      "max_batch_size": cost.batch_size, "batch_wait_s": cost.batch_wait_s,
                                      "scheduler": SCHEDULER, "arms": arms or {}, "loads": list(loads)},
                      primary_load=loads[-1])
    return run_dir


def run_cli(capsys, *args):
    assert sim_live.main(["--json", *map(str, args)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # --json: only the JSON line
    return json.loads(lines[-1])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batching", ["continuous", "dynamic", "none"])
def test_fit_recovers_known_costs_and_replay_matches(tmp_path, capsys, batching):
    out = run_cli(capsys, "--run", synthetic_run(tmp_path, batching))
    fit = out["fit"]
    terms = ["request_overhead_s", "prefill_per_prompt_token_s", "per_token_s"]
    terms += [] if batching == "none" else ["step_growth_s"]  # one sequence per replica: g is not observable
    for term in terms:
        assert fit[term] == pytest.approx(getattr(KNOWN_COST, term), rel=0.10), term
    assert fit["tpot_r2"] is None or fit["tpot_r2"] > 0.9
    assert set(out["agreement"]) == set(POLICIES)
    for policy, a in out["agreement"].items():
        assert a["ratio"] == pytest.approx(1.0, abs=0.03), policy
        assert a["sim"] == pytest.approx(a["live"], rel=0.03)
    ratios = out["details"]["by_load"]["0.9"]["policy_ratios"]["ssjf/fcfs"]
    assert ratios["sim"] == pytest.approx(ratios["live"], abs=0.03)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batching, dispatch_s", [("continuous", 0.08), ("dynamic", 0.0)])
def test_fit_separates_latencies_from_join_stalls(tmp_path, capsys, batching, dispatch_s):
    """A known dispatch latency h (holds the slot, stalls nobody; continuous only: a static batch waits
    for it like for a) and client latency c (outside the slots) are recovered apart from the stall a."""
    cost = replace(KNOWN_COST, dispatch_latency_s=dispatch_s, client_latency_s=0.1)
    out = run_cli(capsys, "--run", synthetic_run(tmp_path, batching, cost=cost, arms={"fcfs": {}, "ssjf": {}}))
    fit = out["fit"]
    for term in ["request_overhead_s", "prefill_per_prompt_token_s", "per_token_s", "step_growth_s",
                 "client_latency_s"] + (["dispatch_latency_s"] if dispatch_s else []):
        assert fit[term] == pytest.approx(getattr(cost, term), rel=0.10), term
    for policy, a in out["agreement"].items():
        assert a["ratio"] == pytest.approx(1.0, abs=0.03), policy

@pytest.mark.timeout(60)
def test_fit_is_deterministic_and_weights_decode_rows(tmp_path):
    run_dir = synthetic_run(tmp_path, "continuous", loads=(1.2,), num=400)
    setup = records.read_setup(run_dir / "summary.json")
    groups = records.to_requests(records.read_rows(run_dir / "requests.jsonl"))
    first, second = sim_fit.fit_cost(groups, setup), sim_fit.fit_cost(groups, setup)
    assert first == second
    assert first.quality["tpot_resid_sd_s"] < 0.1 * first.quality["ttft_resid_sd_s"]
    assert abs(first.quality["tpot_other_replica_slope_s"]) < 1e-4  # replicas are independent in the sim


@pytest.mark.timeout(60)
def test_replay_passes_record_fields_to_the_router(tmp_path, capsys):
    """Rows stating their length (ignore_eos + max_tokens) make ssjf rank exactly like the oracle."""
    run_dir = synthetic_run(tmp_path, "continuous", num=300, loads=(1.2,))
    rows = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]
    (run_dir / "requests.jsonl").write_text("".join(
        json.dumps({**row, "max_tokens": row["expected_output_tokens"], "ignore_eos": True}) + "\n" for row in rows))
    sim = run_cli(capsys, "--run", run_dir)["agreement"]
    assert sim["ssjf"]["sim"] == pytest.approx(sim["sjf-oracle"]["sim"])
    # a run-wide client cap reaches the router as max_tokens unless the row states its own
    req = next(iter(records.to_requests(rows).values()))
    setup = replace(records.read_setup(run_dir / "summary.json"), client_max_tokens=64)
    fields = records.replay_workload(req, setup).record_fields
    assert fields == [{"max_tokens": max(int(t), 64)} for t in req.expected_output_tokens]


@pytest.mark.timeout(60)
def test_load_sweep_rounds_and_arms(tmp_path, capsys):
    """bench.replay layout: several loads and rounds, arms POLICY@KEY=VALUE with scheduler overrides."""
    arms = {"fcfs": {"scheduler.policy": "fcfs"}, "ssjf": {"scheduler.policy": "ssjf"},
            "ssjf@aging=linear": {"scheduler.policy": "ssjf", "scheduler.aging": "linear"}}
    run_dir = synthetic_run(tmp_path, "continuous", num=250, loads=(0.6, 1.2), rounds=2, arms=arms)
    assert records.read_setup(run_dir / "summary.json").config("ssjf@aging=linear") == \
        SchedulerConfig.from_dict({**SCHEDULER, "policy": "ssjf", "aging": "linear"})
    out = run_cli(capsys, "--run", run_dir)
    assert list(out["agreement"]) == list(arms) and out["details"]["primary_load"] == 1.2
    assert set(out["details"]["by_load"]) == {"0.6", "1.2"}
    for load in out["details"]["by_load"].values():
        assert set(load["policy_ratios"]) == {"ssjf/fcfs", "ssjf@aging=linear/fcfs"}
        for label, a in load["agreement"].items():
            assert a["ratio"] == pytest.approx(1.0, abs=0.05), label
            assert load["per_policy"][label]["num_rounds"] == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cost", ["fitted", "gpu"])
def test_extrapolation_reports_each_load(tmp_path, capsys, cost):
    run_dir = synthetic_run(tmp_path, "continuous", num=300)
    out = run_cli(capsys, "--run", run_dir, "--replicas", 8, "--loads", "0.5,1.3", "--num-requests", 1500,
                  "--cost", cost)
    ext = out["extrapolation"]
    assert ext["replicas"] == 8 and ext["cost"] == cost
    assert ext["cost_model"]["batch_size"] == (16 if cost == "gpu" else KNOWN_COST.batch_size)
    assert [row["load"] for row in ext["by_load"]] == [0.5, 1.3]
    low, high = ext["by_load"]
    assert high["rate_rps"] == pytest.approx(2.6 * low["rate_rps"])
    assert set(low["mean_jct_s"]) == set(POLICIES)
    assert high["mean_jct_s"]["fcfs"] > low["mean_jct_s"]["fcfs"]
    assert high["ssjf/fcfs"] < 1.0 and high["sjf-oracle/fcfs"] <= high["ssjf/fcfs"] + 0.02


@pytest.mark.timeout(60)
def test_missing_files_are_named(tmp_path, capsys):
    assert sim_live.main(["--run", str(tmp_path)]) == 2
    assert f"{tmp_path / 'summary.json'}: no such file" in capsys.readouterr().err
    with pytest.raises(records.RunError, match="requests.jsonl: no such file"):
        records.read_rows(tmp_path / "requests.jsonl")


@pytest.mark.timeout(60)
def test_malformed_rows_name_file_and_line(tmp_path):
    path = tmp_path / "requests.jsonl"
    good = {"policy": "fcfs", "index": 0, "sent_s": 0.0, "expected_output_tokens": 5}
    cases = [({k: v for k, v in good.items() if k != "sent_s"}, "row has no 'sent_s'"),
             ({**good, "sent_s": None}, "row has no 'sent_s'"),
             ({**good, "sent_s": "soon"}, "'sent_s' must be a number"),
             ({**good, "policy": "lifo"}, "unknown policy 'lifo'")]
    for bad, message in cases:
        path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
        with pytest.raises(records.RunError, match=f"^{path}:3: {message}"):
            records.read_rows(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(records.RunError, match=f"^{path}:2: not JSON"):
        records.read_rows(path)


@pytest.mark.timeout(60)
def test_bad_setup_is_named(tmp_path):
    path = tmp_path / "summary.json"
    setup = {"batching": "continuous", "num_replicas": 2, "max_batch_size": 4, "scheduler": {}}
    path.write_text(json.dumps({"setup": {k: v for k, v in setup.items() if k != "scheduler"}}))
    with pytest.raises(records.RunError, match=r"summary.json: setup lacks \['scheduler'\]"):
        records.read_setup(path)
    path.write_text(json.dumps({"setup": {**setup, "scheduler": {"max_wait": 3}}}))
    with pytest.raises(records.RunError, match=r"summary.json: setup.scheduler \(arm 'fcfs'\) is not a valid"):
        records.read_setup(path)
    path.write_text(json.dumps({"setup": {**setup, "arms": {"ssjf@aging=slow": {"scheduler.aging": "slow"}}}}))
    with pytest.raises(records.RunError, match=r"\(arm 'ssjf@aging=slow'\) is not a valid SchedulerConfig"):
        records.read_setup(path)
    path.write_text(json.dumps({"setup": {**setup, "scheduler": {"policy": "fcfs", "max_wait_s": 3.0}}}))
    assert records.read_setup(path).config("ssjf") == SchedulerConfig(policy="ssjf", max_wait_s=3.0)


@pytest.mark.timeout(120)
def test_tuning_pool_holds_only_val_prompts():
    """bench.sim.tune chooses settings on val-split prompts only: the replay evaluates on test ones."""
    from types import SimpleNamespace

    from bench.common import FIXTURES
    from bench.sim.tune import tuning_pool
    from proxy_model import split_of

    args = SimpleNamespace(prompts=str(FIXTURES / "proxy" / "sharegpt_600.jsonl"), predictor=None)
    rows, _, predictor = tuning_pool(args)
    seed = predictor.info()["split"]["seed"]
    assert rows and all(split_of(r.prompt, seed) == "val" for r in rows)
