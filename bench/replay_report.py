"""Reporting for the live replay: the comparison ratios, the text table, JSON-safe output.

Invariant: formatting only; every number shown comes from the per-policy summaries unchanged.
"""
from __future__ import annotations

import json
import math
from typing import Any

COLUMNS = (  # (summary key, header, format)
    ("mean_jct_s", "mean JCT", "{:.2f}"), ("p50_jct_s", "p50", "{:.2f}"), ("p90_jct_s", "p90", "{:.2f}"),
    ("p99_jct_s", "p99", "{:.2f}"), ("mean_ttft_s", "TTFT", "{:.2f}"), ("p99_ttft_s", "p99 TTFT", "{:.2f}"),
    ("mean_tpot_s", "TPOT", "{:.3f}"), ("throughput_rps", "req/s", "{:.2f}"),
    ("output_tokens_per_s", "tok/s", "{:.0f}"), ("goodput_rps", "goodput", "{:.2f}"),
    ("max_queue_wait_s", "max wait", "{:.1f}"), ("frac_queued", "queued", "{:.0%}"), ("paper_first25pct_rps", "25%-rate*", "{:.2f}"),
    ("kendall_tau_b", "tau-b", "{:.2f}"), ("num_errors", "errors", "{:d}"),
)


def ratio(a: Any, b: Any) -> float:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def comparison(summaries: dict[str, dict]) -> dict[str, float]:
    """SSJF relative to FCFS and to the oracle (x < 1 means SSJF is lower)."""
    out: dict[str, float] = {}
    ssjf = summaries.get("ssjf")
    if not ssjf:
        return out
    for base in ("fcfs", "sjf-oracle"):
        if base in summaries:
            tag = base.replace("-", "_")
            for key in ("mean_jct_s", "p99_jct_s", "throughput_rps", "paper_first25pct_rps"):
                out[f"ssjf_over_{tag}_{key}"] = ratio(ssjf[key], summaries[base][key])
    return out


def table(summaries: dict[str, dict]) -> str:
    headers = ["policy"] + [h for _, h, _ in COLUMNS]
    rows = [headers]
    for policy, s in summaries.items():
        cells = [policy]
        for key, _, fmt in COLUMNS:
            value = s.get(key)
            cells.append("nan" if value is None or (isinstance(value, float) and math.isnan(value))
                         else fmt.format(value))
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
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
