"""Per-rate summaries, the knee, the table and the plot of a capacity run.

Definitions (per request; the driver, router and engines share this machine's clock):
- router_added = end-to-end time minus engine time (engine `finished_at_s - admitted_at_s`): all the
  latency that is not the engine generating — predicting, queueing, dispatching, the hops in and out.
- arrival_to_dispatch = the router's queue_wait_s: from its arrival (before the prediction) to the grant.
- dispatch_to_engine = engine admission - send time - arrival_to_dispatch (handle hop, parse, Ray hop).
- dispatch_to_first_token = first token - send time - arrival_to_dispatch (includes the engine's first
  step: the simulated join + decode cost).
- dispatched_unpredicted_share = the share dispatched at once, before their prediction (nothing waited).
Invariant: the knee is the highest offered rate at which every request sent was admitted and answered (no
errors, no timeouts) and the p99 router_added stayed under the bound.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.capacity.driver import Sample
from bench.common import percentile

P99_BOUND_MS = 50.0
COLUMNS = (("offered_per_s", "offered/s"), ("admitted_per_s", "admitted/s"), ("errors", "errors"),
           ("router_added_p50_ms", "added p50"), ("router_added_p99_ms", "added p99"),
           ("arrival_to_dispatch_p50_ms", "arr->disp p50"), ("arrival_to_dispatch_p99_ms", "arr->disp p99"),
           ("dispatch_to_first_token_p50_ms", "disp->1st p50"), ("dispatch_to_first_token_p99_ms", "disp->1st p99"),
           ("dispatched_unpredicted_share", "unpredicted"), ("predictor_mean_batch", "pred batch"), ("router_cpu_cores", "router cpu"),
           ("router_cpu_ms_per_request", "router cpu ms/req"),
           ("engines_cpu_cores", "engines cpu"), ("driver_cpu_cores", "driver cpu"),
           ("machine_busy_cores", "machine cpu"), ("router_rss_mb", "router MB"), ("send_lag_p99_ms", "lag p99"))


def request_times_ms(sample: Sample) -> dict[str, float]:
    result = sample.result
    timings, ssjf = result["timings"], result["ssjf"]
    engine_s = timings["finished_at_s"] - timings["admitted_at_s"]
    to_dispatch_ms = 1000 * ssjf["queue_wait_s"]
    first_token_s = timings["first_token_at_s"] or timings["finished_at_s"]
    return {"router_added": 1000 * ((sample.done_s - sample.sent_s) - engine_s),
            "arrival_to_dispatch": to_dispatch_ms,
            "dispatch_to_engine": 1000 * (timings["admitted_at_s"] - sample.sent_s) - to_dispatch_ms,
            "dispatch_to_first_token": 1000 * (first_token_s - sample.sent_s) - to_dispatch_ms,
            "predict": ssjf["predict_ms"]}


def summarize_rate(rate_per_s: float, duration_s: float, samples: list[Sample], usage: dict[str, Any]) -> dict:
    ok = [s for s in samples if s.error is None]
    times = [request_times_ms(s) for s in ok]
    row: dict[str, Any] = {"offered_per_s": rate_per_s, "sent": len(samples),
                           "admitted_per_s": round(len(ok) / duration_s, 1), "errors": len(samples) - len(ok),
                           "error_kinds": _count(s.error.split(":")[0] for s in samples if s.error)}
    for name in ("router_added", "arrival_to_dispatch", "dispatch_to_engine", "dispatch_to_first_token", "predict"):
        values = [t[name] for t in times]
        row[f"{name}_p50_ms"] = _round(percentile(values, 50))
        row[f"{name}_p99_ms"] = _round(percentile(values, 99))
    row["dispatched_unpredicted_share"] = round(sum(not s.result["ssjf"].get("predicted_before_dispatch", True)
                                                    for s in ok) / len(ok), 3) if ok else None
    row["send_lag_p99_ms"] = _round(percentile([1000 * s.send_lag_s for s in samples], 99))
    row.update(usage)
    if ok and "router_cpu_cores" in usage:
        row["router_cpu_ms_per_request"] = round(1000 * usage["router_cpu_cores"] * duration_s / len(ok), 2)
    return row


def keeps_up(row: dict) -> bool:
    return row["errors"] == 0 and row["router_added_p99_ms"] is not None and row["router_added_p99_ms"] < P99_BOUND_MS


def knee(rows: list[dict]) -> float:
    """The highest offered rate that keeps up (0 if none)."""
    return max((row["offered_per_s"] for row in rows if keeps_up(row)), default=0.0)


def table(rows: list[dict]) -> str:
    header = "| " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [header, "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [row["offered_per_s"] for row in rows]
    fig, (ax_latency, ax_rate) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("router_added_p50_ms", "router-added p50"), ("router_added_p99_ms", "router-added p99"),
                       ("arrival_to_dispatch_p99_ms", "arrival->dispatch p99")):
        ax_latency.plot(rates, [row[key] for row in rows], marker="o", label=label)
    ax_latency.axhline(P99_BOUND_MS, color="grey", linestyle="--", label=f"{P99_BOUND_MS:g} ms bound")
    ax_latency.set(xlabel="offered requests/s", ylabel="ms", yscale="log", title="latency the router adds")
    ax_latency.legend(fontsize=8)
    ax_rate.plot(rates, [row["admitted_per_s"] for row in rows], marker="o", label="admitted/s")
    ax_rate.plot(rates, rates, color="grey", linestyle="--", label="offered")
    ax_cpu = ax_rate.twinx()
    ax_cpu.plot(rates, [row["router_cpu_cores"] for row in rows], color="tab:red", marker="x", label="router cores")
    ax_cpu.set_ylabel("router CPU (cores)")
    ax_rate.set(xlabel="offered requests/s", ylabel="requests/s", title="admitted rate and router CPU")
    ax_rate.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _count(items) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)
