"""Arrival traces for the live replay: read, take a window, time-scale to a target rate.

Invariant: the offsets returned by `window` and `scale_to_rate` are seconds since the window's first
arrival, start at 0 and never decrease. Scaling multiplies every gap by one factor, so the trace's
burst structure is kept and only its mean rate changes.

Formats:
- Azure LLM inference trace CSV, header `TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps are
  wall-clock strings with up to 7 fractional digits (`2023-11-16 18:15:46.6805900`, read as UTC);
- JSONL, one object per line with `timestamp` in milliseconds (other fields ignored).
"""
from __future__ import annotations

import calendar
import csv
import json
import time
from pathlib import Path

import numpy as np


class TraceError(ValueError):
    """A trace file that cannot be used; the message names the file (and line)."""


def parse_azure_timestamp(text: str) -> float:
    """`YYYY-MM-DD HH:MM:SS[.fffffff]` (UTC) -> unix seconds; keeps all fractional digits."""
    base, _, frac = text.strip().partition(".")
    parsed = time.strptime(base, "%Y-%m-%d %H:%M:%S")
    if frac and not frac.isdigit():
        raise ValueError(f"bad fractional seconds in {text!r}")
    return calendar.timegm(parsed) + (float("0." + frac) if frac else 0.0)


def read_azure_csv(path: str | Path) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "TIMESTAMP" not in reader.fieldnames:
            raise TraceError(f"{path}: expected a CSV header with TIMESTAMP (Azure LLM trace format)")
        times = []
        for lineno, row in enumerate(reader, start=2):
            try:
                times.append(parse_azure_timestamp(row["TIMESTAMP"] or ""))
            except ValueError as exc:
                raise TraceError(f"{path}:{lineno}: {exc}") from None
    return np.asarray(times, dtype=np.float64)


def read_jsonl_ms(path: str | Path) -> np.ndarray:
    times = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)["timestamp"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise TraceError(f"{path}:{lineno}: expected a JSON object with 'timestamp' (ms)") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise TraceError(f"{path}:{lineno}: 'timestamp' must be a number of milliseconds")
            times.append(value / 1000.0)
    return np.asarray(times, dtype=np.float64)


def read_trace(path: str | Path) -> np.ndarray:
    """Arrival times (unix seconds), sorted; the format is chosen by the file extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        times = read_azure_csv(path)
    elif suffix in (".jsonl", ".json"):
        times = read_jsonl_ms(path)
    else:
        raise TraceError(f"{path}: unknown trace format (use .csv for Azure traces or .jsonl with ms)")
    if times.size < 2:
        raise TraceError(f"{path}: needs at least 2 arrivals, found {times.size}")
    return np.sort(times)


def window(times_s: np.ndarray, num: int, start: int = 0) -> np.ndarray:
    """Offsets (s) of arrivals start..start+num-1 relative to the first of them."""
    if num < 1 or start < 0:
        raise ValueError(f"need num >= 1 and start >= 0 (got num={num}, start={start})")
    if start + num > times_s.size:
        raise ValueError(f"window [{start}, {start + num}) exceeds the trace's {times_s.size} arrivals")
    chosen = np.sort(times_s[start:start + num])
    return chosen - chosen[0]


def mean_rate_rps(offsets_s: np.ndarray) -> float:
    """Mean arrival rate of a window: (n - 1) gaps over its span."""
    span_s = float(offsets_s[-1] - offsets_s[0]) if offsets_s.size else 0.0
    if offsets_s.size < 2 or span_s <= 0:
        raise ValueError("a window needs >= 2 arrivals spread over a positive time span")
    return (offsets_s.size - 1) / span_s


def scale_to_rate(offsets_s: np.ndarray, target_rps: float) -> np.ndarray:
    """Multiply all gaps by one factor so that the window's mean rate becomes `target_rps`."""
    if not target_rps > 0:
        raise ValueError(f"target rate must be > 0 (got {target_rps})")
    return offsets_s * (mean_rate_rps(offsets_s) / target_rps)
