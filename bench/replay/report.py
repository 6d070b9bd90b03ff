"""Reporting for the live replay: the one-screen text table and JSON-safe output.

Invariant: formatting only; every number shown comes from the summaries and comparisons unchanged.
"""
from __future__ import annotations

import json
import math
from typing import Any

COLUMNS = (  # (summary key, header, format)
    ("mean_jct_s", "mean JCT", "{:.2f}"), ("p50_jct_s", "p50", "{:.2f}"), ("p90_jct_s", "p90", "{:.2f}"),
    ("p99_jct_s", "p99", "{:.2f}"), ("mean_jct_short_s", "short", "{:.2f}"), ("mean_jct_long_s", "long", "{:.2f}"),
    ("mean_ttft_s", "TTFT", "{:.2f}"), ("p99_ttft_s", "p99 TTFT", "{:.2f}"), ("mean_tpot_s", "TPOT", "{:.3f}"),
    ("p99_itl_s", "p99 ITL", "{:.3f}"), ("throughput_rps", "req/s", "{:.2f}"),
    ("output_tokens_per_s", "tok/s", "{:.0f}"), ("goodput_rps", "goodput", "{:.2f}"),
    ("max_queue_wait_s", "max wait", "{:.1f}"), ("num_waits_over_bound", ">bound", "{:.0f}"),
    ("frac_queued", "queued", "{:.0%}"), ("kendall_tau_b", "tau-b", "{:.2f}"), ("num_errors", "errors", "{:.0f}"),
)


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return fmt.format(value)


def table(summaries: dict[str, dict]) -> str:
    headers = ["policy"] + [h for _, h, _ in COLUMNS]
    rows = [headers] + [[policy] + [_cell(s.get(key), fmt) for key, _, fmt in COLUMNS]
                        for policy, s in summaries.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def comparison_lines(comparison: dict) -> str:
    """`name: median [lo, hi]` for every ratio that has a CI."""
    lines = []
    for key, value in comparison.items():
        ci = comparison.get(f"{key}_ci95")
        if ci is not None and not key.endswith("_ci95"):
            lines.append(f"  {key}: {_cell(value, '{:.3f}')} [95% CI {_cell(ci[0], '{:.3f}')}, "
                         f"{_cell(ci[1], '{:.3f}')}]")
    return "\n".join(lines)


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None, tuples -> lists, numpy scalars -> Python numbers (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float):
        return round(obj, 6) if math.isfinite(obj) else None
    return obj


def dumps(obj: Any, **kwargs) -> str:
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)
