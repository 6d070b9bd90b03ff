"""bench.adapt's arrivals: every third of the run replays the same arrival pattern at the same load.

Invariant: request i keeps its prompt, its replayed length and its place in the arrival order; only
the gaps change. Every third (by arrival order, as bench.adapt reports) replays the trace window's
first gaps — the same bursts, in the same order — scaled by one factor so that the third's offered work
(arrival rate x its own mean replayed length) is `load` x the calibrated output tokens/s. Without this,
a bursty window puts most of its queueing into one third (equal mean rates alone were not enough: the
last third of a run at load 0.7 hardly queued while the first waited 10 s on average), and comparing
the first third with the last compares two arrival processes instead of what the learner learned.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from bench.replay.trace import mean_rate_rps


def thirds(n: int) -> dict[str, range]:
    return {"first_third": range(0, n // 3), "middle_third": range(n // 3, 2 * n // 3),
            "last_third": range(2 * n // 3, n)}


def even_load_thirds(items: list, output_tokens_per_s: float, load: float) -> tuple[list, dict]:
    """`items` (arrival_s ascending) re-timed: each third gets the window's first gaps (the gap before
    a third's first request belongs to that third; the run's first request has none), scaled to the
    third's target rate load x output_tokens_per_s / its mean output tokens; and per third: target and
    offered req/s, mean tokens, span; the whole run's span and offered req/s (they replace the ones
    timed_workload reported for the arrivals before re-timing)."""
    if output_tokens_per_s <= 0 or load <= 0:
        raise ValueError(f"output_tokens_per_s and load must be > 0 (got {output_tokens_per_s}, {load})")
    arrival_s = np.array([it.arrival_s for it in items], dtype=float)
    pattern_s = np.diff(arrival_s)  # the window's gaps, earliest first
    out_gaps_s = np.zeros_like(arrival_s)  # out_gaps_s[0] = 0: the first request starts the run
    per_third = {}
    for name, idx in thirds(len(items)).items():
        tokens = float(np.mean([items[i].output_tokens for i in idx]))
        target_rps = load * output_tokens_per_s / tokens
        lo = max(idx.start, 1)
        num_gaps = idx.stop - lo
        gaps_s = pattern_s[:num_gaps]
        trace_span_s = float(gaps_s.sum())
        if trace_span_s > 0:
            out_gaps_s[lo:idx.stop] = gaps_s * (num_gaps / target_rps) / trace_span_s
        else:  # every arrival of the third at one instant in the trace: spread them evenly
            out_gaps_s[lo:idx.stop] = 1.0 / target_rps
        span_s = float(out_gaps_s[lo:idx.stop].sum())
        per_third[name] = {"target_rps": target_rps, "mean_output_tokens": tokens, "span_s": span_s,
                           "offered_rps": num_gaps / max(span_s, 1e-12)}
    new_arrival_s = np.cumsum(out_gaps_s)
    return ([replace(it, arrival_s=float(t)) for it, t in zip(items, new_arrival_s)],
            {"per_third": per_third, "arrival_span_s": float(new_arrival_s[-1]),
             "offered_rps": mean_rate_rps(new_arrival_s)})
