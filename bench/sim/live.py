"""Calibrate the simulator against a live replay, replay the same workload, and extrapolate it.

Invariant: the simulator is fed only what the live run recorded (bench.sim.records: arrivals, true
lengths, predictions, prompt sizes, replica count, slots, batching, scheduler config) plus a CostModel
fitted from those same rows (bench.sim.fit); every ordering decision is still router.Scheduler's.
Simulated runs are emitted in the live row format, so one set of statistics applies to both.

    python -m bench.sim.live --run DIR [--json]
    python -m bench.sim.live --run DIR --replicas 64 --loads 0.5,0.75,1.0,1.25,1.5 [--cost fitted|gpu]

The replay compares live and simulated JCT on the requests the live run completed (failed live
requests are still simulated); extrapolation is bench.sim.extrapolate.
The last stdout line is one JSON object: fit, agreement, details, extrapolation (when asked).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from bench.common import HelpFormatter
from bench.sim.cluster import Workload, build_simulation
from bench.sim.engine import CostModel
from bench.sim.extrapolate import GPU_COST, extrapolate, extrapolation_table, request_pool
from bench.sim.fit import Fit, fit_cost
from bench.sim.records import Requests, RunError, RunKey, Setup, read_rows, read_setup, replay_workload, to_requests

AGREEMENT_TOLERANCE = 0.15
DEFAULT_LOADS = "0.5,0.75,1.0,1.25,1.5"


# ---- replaying the live workload -------------------------------------------------------------------
def simulated_rows(workload: Workload, index: np.ndarray, key: RunKey, *, setup: Setup, cost: CostModel,
                   seed: int) -> list[dict]:
    """Simulate one policy run and emit it in the live row format (request i is row `index[i]`)."""
    load, round_, label = key
    sim = build_simulation(front="cluster", config=setup.config(label), batching=setup.batching, cost=cost,
                           num_replicas=setup.num_replicas, seed=seed)
    sim.run(workload)
    rows = []
    for i, arrival_s in enumerate(workload.arrival_s.tolist()):
        rid, true = str(i), int(workload.true_output_tokens[i])
        done = rid in sim.completion_s
        rows.append({
            "policy": label, "round": round_, "load": load, "index": index[i].item(), "scheduled_s": arrival_s,
            "sent_s": arrival_s, "first_token_s": sim.first_token_s.get(rid),
            "finished_s": sim.completion_s.get(rid), "output_tokens": true if done else 0,
            "prompt_tokens": 0 if workload.prompt_tokens is None else int(workload.prompt_tokens[i]),
            "expected_output_tokens": true, "predicted_output_tokens": float(workload.predicted_output_tokens[i]),
            "queue_wait_s": sim.wait_s.get(rid), "replica": sim.replica_of.get(rid),
            "error": None if done else "rejected"})
    return rows


def _nan_stat(values: np.ndarray, q: float | None = None) -> float:
    """Mean (q None) or q-th percentile of the finite values; NaN when there are none."""
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan
    return float(values.mean() if q is None else np.percentile(values, q))


def run_stats(req: Requests, only_index: np.ndarray | None = None) -> dict[str, float]:
    """JCT and its parts over completed requests (restricted to `only_index` when given)."""
    mask = req.ok if only_index is None else req.ok & np.isin(req.index, only_index)
    jct_s, wait_s = req.jct_s[mask], req.queue_wait_s[mask]
    return {"num_requests": int(req.ok.size), "num_completed": int(mask.sum()),
            "mean_jct_s": _nan_stat(jct_s), "p50_jct_s": _nan_stat(jct_s, 50), "p99_jct_s": _nan_stat(jct_s, 99),
            "mean_queue_wait_s": _nan_stat(wait_s), "p99_queue_wait_s": _nan_stat(wait_s, 99),
            "mean_engine_ttft_s": _nan_stat((req.first_token_s - req.dispatch_s)[mask]),
            "mean_decode_s": _nan_stat((req.finished_s - req.first_token_s)[mask])}


def _median_over_rounds(stats: list[dict]) -> dict[str, float]:
    return {k: float(np.median([s[k] for s in stats])) for k in stats[0]}


def replay(groups: dict[RunKey, Requests], setup: Setup, cost: CostModel, seed: int) -> dict[float, dict]:
    """load -> arm label -> live and simulated statistics (each the median over rounds), on the
    requests the live run completed."""
    live: dict[tuple[float, str], list] = defaultdict(list)
    sim: dict[tuple[float, str], list] = defaultdict(list)
    for key, req in groups.items():
        rows = simulated_rows(replay_workload(req, setup), req.index, key, setup=setup, cost=cost, seed=seed)
        live[key[0], key[2]].append(run_stats(req))
        sim[key[0], key[2]].append(run_stats(to_requests(rows)[key], req.index[req.ok]))
    by_load: dict[float, dict] = defaultdict(dict)
    for load, label in live:  # insertion order: loads, then policies as in _run_order
        by_load[load][label] = {"live": _median_over_rounds(live[load, label]),
                                "sim": _median_over_rounds(sim[load, label]), "num_rounds": len(live[load, label])}
    return dict(by_load)


def agreement(details: dict) -> dict[str, dict[str, float]]:
    """Per arm label (one load): mean JCT live and simulated, and sim / live."""
    out = {}
    for label, d in details.items():
        live, sim = d["live"]["mean_jct_s"], d["sim"]["mean_jct_s"]
        out[label] = {"live": live, "sim": sim, "ratio": sim / live if live > 0 else math.nan}
    return out


def policy_ratios(details: dict) -> dict[str, dict[str, float]]:
    """Mean-JCT ratio of every other arm to FCFS (one load), live and simulated."""
    if "fcfs" not in details:
        return {}
    return {f"{label}/fcfs": {side: details[label][side]["mean_jct_s"] / details["fcfs"][side]["mean_jct_s"]
                              for side in ("live", "sim")} for label in details if label != "fcfs"}


GAP_PARTS = {"queue wait": "mean_queue_wait_s", "engine TTFT": "mean_engine_ttft_s", "decode": "mean_decode_s"}


def explain_gaps(by_load: dict[float, dict], fit: Fit) -> list[str]:
    """For each (load, arm) outside the tolerance: which part of the JCT (queue wait, first token in
    the engine, decode) carries the gap; then hints from the fit about what the model misses."""
    lines = []
    for load, details in by_load.items():
        for label, a in agreement(details).items():
            if not abs(a["ratio"] - 1.0) > AGREEMENT_TOLERANCE:
                continue
            live, sim = details[label]["live"], details[label]["sim"]
            deltas = {name: sim[key] - live[key] for name, key in GAP_PARTS.items()}
            worst = max(deltas, key=lambda name: abs(deltas[name]) if math.isfinite(deltas[name]) else -1.0)
            parts = ", ".join(f"{n} {_fmt(live[k])} -> {_fmt(sim[k])} s" for n, k in GAP_PARTS.items())
            lines.append(f"gap at load {load:g}, {label}: sim/live {a['ratio']:.2f} (over "
                         f"{AGREEMENT_TOLERANCE:.0%}); live -> sim means: {parts}; mostly {worst} "
                         f"({deltas[worst]:+.2f} s/request)")
    if lines:
        lines += ["hint: " + h for h in _gap_hints(by_load, fit)]
    return lines


def _gap_hints(by_load: dict[float, dict], fit: Fit) -> list[str]:
    q, ms = fit.quality, (lambda seconds: 1e3 * seconds)  # noqa: E731
    hints = []
    failed = {f"{load:g}/{label}": int(d["live"]["num_requests"] - d["live"]["num_completed"])
              for load, details in by_load.items() for label, d in details.items()}
    if any(failed.values()):
        hints.append(f"live requests that failed ({failed}, e.g. client timeouts) are served in full by the sim "
                     f"at their replayed length: load the live run shed")
    if q["tpot_other_replica_r2"] > 0.1:
        hints.append(f"decode slows with sequences on OTHER replicas ({ms(q['tpot_other_replica_slope_s']):+.2f} "
                     f"ms/token each, R² {q['tpot_other_replica_r2']:.2f}): replicas share CPU/GPU/memory "
                     f"bandwidth, the model prices each replica alone")
    if q["tpot_r2"] < 0.5:
        hints.append(f"decode cost is poorly explained by same-replica concurrency and joins (R² {q['tpot_r2']:.2f})")
    if abs(q["ttft_resid_mean_s"]) > max(0.01, 0.5 * fit.cost.request_overhead_s):
        hints.append(f"first tokens come {ms(q['ttft_resid_mean_s']):+.0f} ms off the fitted model on average "
                     f"(stalls a, p and latencies h, c)")
    hints.append("near saturation a small service-time error is amplified in the queue wait")
    return hints


def describe_fit(fit: Fit) -> list[str]:
    c, q = fit.cost, fit.quality
    ms = lambda seconds: 1e3 * seconds  # noqa: E731
    return [
        f"fit: stall a = {ms(c.request_overhead_s):.2f} ms/request, prefill p = "
        f"{ms(c.prefill_per_prompt_token_s):.4f} ms/prompt token, decode step b = {ms(c.per_token_s):.2f} ms"
        f" + g = {ms(c.step_growth_s):.3f} ms per extra sequence (slots {c.batch_size})",
        f"  latency (stalls nobody): dispatch h = {ms(c.dispatch_latency_s):.1f} ms (holds the slot), "
        f"client c = {ms(c.client_latency_s):.1f} ms (outside the slots)",
        f"  first-token rows: {q['num_ttft_rows']}, R² {q['ttft_r2']:.3f}, residual mean "
        f"{ms(q['ttft_resid_mean_s']):+.1f} ms, sd {ms(q['ttft_resid_sd_s']):.1f} ms",
        f"  decode rows (TPOT): {q['num_tpot_rows']}, R² {q['tpot_r2']:.3f}, residual sd "
        f"{ms(q['tpot_resid_sd_s']):.2f} ms/token",
        f"  not modelled: TPOT residual vs sequences on OTHER replicas: {ms(q['tpot_other_replica_slope_s']):+.3f}"
        f" ms/token per sequence (R² {q['tpot_other_replica_r2']:.3f})",
    ]


# ---- CLI -------------------------------------------------------------------------------------------
def _loads(text: str) -> list[float]:
    try:
        loads = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--loads must be a comma list of numbers, got {text!r}") from None
    if not all(x > 0 for x in loads):
        raise argparse.ArgumentTypeError(f"--loads must be > 0, got {text!r}")
    return loads


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sim.live", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--run", required=True, metavar="DIR", help="live replay output (requests.jsonl, summary.json)")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("extrapolation (runs when --replicas or --loads is given)")
    g.add_argument("--replicas", type=int, help="replicas to extrapolate to (default 64)")
    g.add_argument("--loads", type=_loads, help=f"comma list, x nominal capacity (default {DEFAULT_LOADS})")
    g.add_argument("--cost", choices=("fitted", "gpu"), default="fitted",
                   help="fitted: the live run's fitted model; gpu: an 8B model on an H100 (see GPU_COST)")
    g.add_argument("--batch-size", type=int, help="slots per replica (default: the live run's; gpu: 16)")
    g.add_argument("--num-requests", type=int, default=20_000, help="requests per load")
    return p.parse_args(argv)


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return format(value, spec) if isinstance(value, float) and math.isfinite(value) else "-"


def _jsonable(value):
    """NaN / inf -> null, so the JSON line is strict JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def agreement_table(details: dict) -> list[str]:
    """One load: per arm, mean / p50 / p99 JCT and mean queue wait, live vs simulated."""
    columns = [("p50_jct_s", "p50"), ("p99_jct_s", "p99"), ("mean_queue_wait_s", "wait")]
    width = max(12, *(len(label) + 2 for label in details))
    lines = [f"{'policy':<{width}}{'live mean':>10}{'sim mean':>10}{'sim/live':>9}"
             + "".join(f"{'live ' + name:>10}{'sim ' + name:>10}" for _, name in columns)]
    for label, a in agreement(details).items():
        live, sim = details[label]["live"], details[label]["sim"]
        lines.append(f"{label:<{width}}{_fmt(a['live']):>10}{_fmt(a['sim']):>10}{_fmt(a['ratio']):>9}"
                     + "".join(f"{_fmt(live[k]):>10}{_fmt(sim[k]):>10}" for k, _ in columns))
    for name, r in policy_ratios(details).items():
        lines.append(f"{name} mean JCT: live {_fmt(r['live'], '.3f')}, sim {_fmt(r['sim'], '.3f')}")
    return lines


def _extrapolation_cost(args, fit: Fit) -> CostModel:
    base = GPU_COST if args.cost == "gpu" else fit.cost
    return replace(base, batch_size=args.batch_size) if args.batch_size else base


def compare(groups: dict[RunKey, Requests], setup: Setup, fit: Fit, seed: int, say) -> dict:
    """Replay every policy run in the simulator; print a table per load, then any gaps. `agreement`
    is for the run's primary load (else its highest); `details` holds every load."""
    by_load = replay(groups, setup, fit.cost, seed)
    for load, details in by_load.items():
        rounds = max(d["num_rounds"] for d in details.values())
        say(f"load {load:g} (JCT and mean queue wait in s; medians over {rounds} round(s); sim on the "
            f"requests live completed)")
        for line in agreement_table(details):
            say(line)
    for line in explain_gaps(by_load, fit):
        say(line)
    primary = setup.primary_load if setup.primary_load in by_load else max(by_load)
    return {"agreement": agreement(by_load[primary]),
            "details": {"primary_load": primary, "by_load": {
                f"{load:g}": {"agreement": agreement(d), "policy_ratios": policy_ratios(d), "per_policy": d}
                for load, d in by_load.items()}}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = (lambda *_: None) if args.json else print
    run_dir = Path(args.run)
    try:
        setup = read_setup(run_dir / "summary.json")
        groups = to_requests(read_rows(run_dir / "requests.jsonl"))
        fit = fit_cost(groups, setup)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say(f"# {run_dir}: {setup.batching} batching, {setup.num_replicas} replicas x {setup.max_batch_size} slots, "
        f"{len(groups)} policy runs")
    for line in describe_fit(fit):
        say(line)
    out = {"fit": {**asdict(fit.cost), **fit.quality}, **compare(groups, setup, fit, args.seed, say)}
    if args.replicas or args.loads:
        labels = list(out["agreement"])
        ext = extrapolate(request_pool(groups, setup), setup, _extrapolation_cost(args, fit), labels,
                          num_replicas=args.replicas or 64, loads=args.loads or _loads(DEFAULT_LOADS),
                          num_requests=args.num_requests, seed=args.seed)
        out["extrapolation"] = ext = {"cost": args.cost, **ext}
        for line in extrapolation_table(ext, labels):
            say(line)
    print(json.dumps(_jsonable(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
