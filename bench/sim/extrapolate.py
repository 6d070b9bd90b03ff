"""Extrapolate a live run's request mix to more replicas and other loads in the simulator.

Invariant: every load gets the same resampled mix and the same unit arrival gaps (Poisson, scaled by
the rate load x nominal capacity), so the loads differ only in rate; each arm is simulated on it.
"""
from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np

from bench.sim import workload as wl
from bench.sim.cluster import Workload, simulate
from bench.sim.engine import CostModel, nominal_capacity_rps
from bench.sim.records import ENGINE_BATCH_WAIT_S, Requests, RunKey, Setup, replay_workload

# A GPU-like engine: an 8B model in bf16 on one H100 under Hugging Face generate-style batching
# (this project's engine): ~25 ms per decode step at small batch, +0.3 ms per extra sequence,
# prefill ~0.1 ms per prompt token (~10k tokens/s), ~20 ms per-request overhead (HTTP, prediction,
# tokenization, scheduling), 16 slots per replica as in configs/gpu.yaml.
GPU_COST = CostModel(request_overhead_s=0.020, per_token_s=0.025, step_growth_s=0.0003, batch_size=16,
                     batch_wait_s=ENGINE_BATCH_WAIT_S, prefill_per_prompt_token_s=0.0001)


def _take(w: Workload, idx: np.ndarray) -> Workload:
    return Workload(w.arrival_s[idx], w.true_output_tokens[idx], w.predicted_output_tokens[idx],
                    w.prompt_tokens[idx], [w.record_fields[i] for i in idx.tolist()])


def request_pool(groups: dict[RunKey, Requests], setup: Setup) -> Workload:
    """One entry per request of the live run (load, round, index), as replayed; arrivals unused."""
    seen: set = set()
    parts = []
    for (load, round_, _), req in groups.items():
        keep = [i for i, index in enumerate(req.index.tolist()) if (load, round_, index) not in seen]
        seen.update((load, round_, index) for index in req.index[keep].tolist())
        parts.append(_take(replay_workload(req, setup), np.asarray(keep, dtype=np.int64)))
    return Workload(*(np.concatenate([getattr(w, k) for w in parts]) for k in
                      ("arrival_s", "true_output_tokens", "predicted_output_tokens", "prompt_tokens")),
                    [f for w in parts for f in w.record_fields])


def capacity_rps(batching: str, cost: CostModel, workload: Workload) -> float:
    """bench.sim.engine.nominal_capacity_rps of one replica for this request mix."""
    true = workload.true_output_tokens
    groups = true[: (true.size // cost.batch_size) * cost.batch_size].reshape(-1, cost.batch_size)
    mean_max = float(groups.max(axis=1).mean()) if groups.size else float(true.mean())
    mean_prompt = 0.0 if workload.prompt_tokens is None else float(workload.prompt_tokens.mean())
    return nominal_capacity_rps(batching, cost, float(true.mean()), mean_max, mean_prompt)


def extrapolate(pool: Workload, setup: Setup, cost: CostModel, labels: list[str], *, num_replicas: int,
                loads: list[float], num_requests: int, seed: int) -> dict:
    """The live request mix (resampled with `seed`) at `num_replicas` replicas, Poisson arrivals at
    load x nominal capacity; the same mix and the same unit arrival gaps at every load."""
    mix = _take(pool, wl.sample_indices(pool.true_output_tokens.size, num_requests, np.random.default_rng(seed)))
    replica_rps = capacity_rps(setup.batching, cost, mix)
    by_load = []
    for load in loads:
        rate_rps = load * num_replicas * replica_rps
        unit_gaps_rng = np.random.default_rng(seed + 1)  # same draws at every load, scaled by the rate
        workload = replace(mix, arrival_s=wl.poisson_arrivals_s(num_requests, rate_rps, unit_gaps_rng))
        runs = {label: simulate(workload, front="cluster", config=setup.config(label), batching=setup.batching,
                                cost=cost, num_replicas=num_replicas, seed=seed) for label in labels}
        row = {"load": load, "rate_rps": rate_rps, "mean_jct_s": {k: m["mean_jct_s"] for k, m in runs.items()},
               "num_rejected": {k: m["num_rejected"] for k, m in runs.items()}}
        for label in (k for k in runs if k != "fcfs" and "fcfs" in runs):
            row[f"{label}/fcfs"] = runs[label]["mean_jct_s"] / runs["fcfs"]["mean_jct_s"]
        by_load.append(row)
    return {"replicas": num_replicas, "num_requests": num_requests, "batching": setup.batching,
            "cost_model": asdict(cost), "replica_capacity_rps": replica_rps, "by_load": by_load}


def extrapolation_table(ext: dict, labels: list[str]) -> list[str]:
    ratios = [k for k in ext["by_load"][0] if k.endswith("/fcfs")]
    lines = [f"extrapolation ({ext['cost']} cost): {ext['replicas']} replicas x {ext['cost_model']['batch_size']} "
             f"slots, {ext['batching']} batching, {ext['num_requests']} requests per load, "
             f"{ext['replica_capacity_rps']:.3f} req/s nominal per replica; mean JCT in s",
             f"{'load':>6}{'rate_rps':>10}" + "".join(f"{k:>{max(12, len(k) + 2)}}" for k in labels + ratios)]
    for r in ext["by_load"]:
        values = [r["mean_jct_s"][k] for k in labels] + [r[k] for k in ratios]
        lines.append(f"{r['load']:>6.2f}{r['rate_rps']:>10.2f}"
                     + "".join(f"{v:>{max(12, len(k) + 2)}.3f}" for k, v in zip(labels + ratios, values)))
    for r in (r for r in ext["by_load"] if any(r["num_rejected"].values())):
        lines.append(f"  load {r['load']:g}: requests rejected by a full wait queue (max_queue_len; not in the "
                     f"mean JCT): {', '.join(f'{k} {n}' for k, n in r['num_rejected'].items())}")
    return lines
