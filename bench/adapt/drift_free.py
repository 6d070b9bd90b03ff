"""The adapt run's JCT per third with the machine's drift removed: both live arms replayed in the simulator.

Invariant: the simulator gets only what the live arms recorded (bench.sim.records: arrivals, true lengths,
each request's live prediction — for SSJF the online learner's prediction at that moment — prompt sizes)
and one cost model fitted from both arms together (bench.sim.fit), so FCFS and SSJF are served at the same
machine speed; every ordering decision is still router.Scheduler's. The frozen arm is the SSJF arm's
workload with each prediction replaced by the shipped head's for the same request: the same arrivals and
lengths, so SSJF-online / SSJF-frozen is what the learning changed; the oracle arm is the same workload
with each prediction replaced by the true length, the most any ranking can get. Thirds are by arrival order (`index`),
as in the live figures.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from bench.sim.fit import fit_cost
from bench.sim.live import simulated_rows
from bench.sim.records import RunKey, Setup, replay_workload, to_requests


def _thirds_mean_jct_s(rows: list[dict], num_requests: int) -> dict[str, float]:
    bounds = {"first_third": (0, num_requests // 3), "middle_third": (num_requests // 3, 2 * num_requests // 3),
              "last_third": (2 * num_requests // 3, num_requests)}
    out = {}
    for name, (lo, hi) in bounds.items():
        jct_s = [r["finished_s"] - r["sent_s"] for r in rows
                 if lo <= r["index"] < hi and r["error"] is None and r["finished_s"] is not None]
        out[name] = float(np.mean(jct_s)) if jct_s else math.nan
    return out


def simulated_thirds(rows: list[dict], setup: Setup, seed: int = 0,
                     frozen_predicted_tokens: np.ndarray | None = None) -> dict:
    """Live rows of the fcfs and ssjf arms -> fitted cost, simulated mean JCT per third and arm, and
    the SSJF/FCFS and oracle/FCFS ratios of the first and last third; with `frozen_predicted_tokens` (per
    request index, router units) also the arm `ssjf_frozen` and the ratios SSJF-online / SSJF-frozen."""
    groups: dict[RunKey, object] = to_requests(rows)
    fit = fit_cost(groups, setup)
    num_requests = 1 + max(int(r["index"]) for r in rows)
    runs = {key[2]: (key, req) for key, req in groups.items()}
    if frozen_predicted_tokens is not None:
        key, req = runs["ssjf"]
        frozen = np.asarray(frozen_predicted_tokens, dtype=float)[req.index.astype(int)]
        runs["ssjf_frozen"] = (key, replace(req, predicted_output_tokens=frozen))
    key, req = runs["ssjf"]
    runs["oracle"] = (key, replace(req, predicted_output_tokens=np.asarray(req.expected_output_tokens, dtype=float)))
    by_arm = {}
    for name, (key, req) in runs.items():
        sim_rows = simulated_rows(replay_workload(req, setup), req.index, key, setup=setup, cost=fit.cost, seed=seed)
        by_arm[name] = _thirds_mean_jct_s(sim_rows, num_requests)
    out = {"cost": {k: getattr(fit.cost, k) for k in ("request_overhead_s", "per_token_s", "step_growth_s",
                                                     "prefill_per_prompt_token_s")}, "mean_jct_s": by_arm}
    for third in ("first_third", "last_third"):
        out[f"jct_ssjf_over_fcfs_{third}"] = by_arm["ssjf"][third] / by_arm["fcfs"][third]
        out[f"jct_oracle_over_fcfs_{third}"] = by_arm["oracle"][third] / by_arm["fcfs"][third]
        if "ssjf_frozen" in by_arm:
            out[f"jct_frozen_over_fcfs_{third}"] = by_arm["ssjf_frozen"][third] / by_arm["fcfs"][third]
            out[f"jct_online_over_frozen_{third}"] = by_arm["ssjf"][third] / by_arm["ssjf_frozen"][third]
    return out
