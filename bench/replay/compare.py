"""Policy comparisons over repeated rounds: medians of per-round ratios with paired bootstrap CIs.

Invariant: a ratio is only ever formed within one round (same workload, adjacent in time, so
machine drift between rounds cancels); across rounds we take the median. The 95% CI resamples
requests with replacement inside each round, paired across policies by request index (every policy
of a round replays the same requests), recomputes each round's ratio and takes the median over
rounds, `BOOTSTRAP_SAMPLES` times. Incomplete requests count as missing (their policy's error count
says how many).
"""
from __future__ import annotations

import math
import re
from typing import Callable, Sequence

import numpy as np

from bench.replay.metrics import RequestResult

BOOTSTRAP_SAMPLES = 2000
Stat = Callable[[np.ndarray], np.ndarray]  # [B, N] JCTs (NaN = incomplete) -> [B]


def _mean(x: np.ndarray) -> np.ndarray:
    return np.nanmean(x, axis=-1)


def _p99(x: np.ndarray) -> np.ndarray:
    return np.nanpercentile(x, 99, axis=-1)


def jct_matrix(results: Sequence[RequestResult]) -> np.ndarray:
    """JCT by request index (NaN where the request did not complete)."""
    out = np.full(len(results), np.nan)
    for r in results:
        if r.ok:
            out[r.index] = r.jct_s
    return out


def _per_round(rounds: list[dict[str, np.ndarray]], stat: Stat, combine, idx: list[np.ndarray] | None):
    """combine({policy: stat}) per round; with `idx`, on resampled requests ([B] per round)."""
    values = []
    for k, jct in enumerate(rounds):
        picked = {p: (v[idx[k]] if idx is not None else v[None, :]) for p, v in jct.items()}
        values.append(combine({p: stat(v) for p, v in picked.items()}))
    return np.stack(values)  # [rounds, B]


def median_with_ci(rounds: list[dict[str, np.ndarray]], stat: Stat, combine, seed: int = 0) -> dict:
    """Point value (median over rounds) and its 95% paired-bootstrap interval."""
    with np.errstate(all="ignore"):
        point = float(np.median(_per_round(rounds, stat, combine, None)[:, 0]))
        rng = np.random.default_rng(seed)
        idx = [rng.integers(0, len(next(iter(r.values()))), size=(BOOTSTRAP_SAMPLES, len(next(iter(r.values())))))
               for r in rounds]
        boot = np.median(_per_round(rounds, stat, combine, idx), axis=0)
    boot = boot[np.isfinite(boot)]
    ci = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot.size else [math.nan] * 2
    return {"median": point, "ci95": ci}


def ratio_of(a: str, b: str):
    return lambda s: s[a] / s[b]


def capture(s: dict) -> np.ndarray:
    """(FCFS - SSJF) / (FCFS - oracle): the share of the oracle's gain SSJF keeps."""
    return (s["fcfs"] - s["ssjf"]) / (s["fcfs"] - s["sjf-oracle"])


def compare_rounds(rounds: list[dict[str, Sequence[RequestResult]]], seed: int = 0) -> dict:
    """`comparison` keys: `<arm>_over_fcfs_<stat>` for every other arm and `ssjf_over_sjf_oracle_<stat>`
    (median over rounds; arm labels with non-word characters as `_`), the same with `_ci95`, and
    `capture` / `capture_ci95` when fcfs, ssjf and sjf-oracle all ran."""
    jct = [{p: jct_matrix(res) for p, res in r.items()} for r in rounds]
    policies = set(jct[0]) if jct else set()
    out: dict = {}
    pairs = [(a, "fcfs") for a in sorted(policies - {"fcfs"})] + [("ssjf", "sjf-oracle")]
    for a, b in [(a, b) for a, b in pairs if {a, b} <= policies]:
        tag = re.sub(r"\W", "_", f"{a}_over_{b}")
        for name, stat in (("mean_jct_s", _mean), ("p99_jct_s", _p99)):
            res = median_with_ci(jct, stat, ratio_of(a, b), seed)
            out[f"{tag}_{name}"], out[f"{tag}_{name}_ci95"] = res["median"], res["ci95"]
    if {"fcfs", "ssjf", "sjf-oracle"} <= policies:
        res = median_with_ci(jct, _mean, capture, seed)
        out["capture"], out["capture_ci95"] = res["median"], res["ci95"]
    return out


def median_summaries(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """Per policy: the median over rounds of every numeric summary value (others from round 0)."""
    out: dict[str, dict] = {}
    for policy in rounds[0]:
        first = rounds[0][policy]
        merged = {}
        for key, value in first.items():
            values = [r[policy].get(key) for r in rounds if policy in r]
            numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            merged[key] = float(np.nanmedian(numeric)) if len(numeric) == len(values) and numeric else value
        merged["num_rounds"] = len(rounds)
        out[policy] = merged
    return out


SUMMARY_RATIO_KEYS = ("throughput_rps", "goodput_rps", "paper_first25pct_rps")


def summary_ratios(rounds: list[dict[str, dict]]) -> dict[str, float]:
    """`ssjf_over_<base>_<key>` for rate metrics: the median over rounds of per-round ratios (no CI:
    these are not per-request quantities)."""
    out = {}
    for base in ("fcfs", "sjf-oracle"):
        for key in SUMMARY_RATIO_KEYS:
            ratios = [r["ssjf"][key] / r[base][key] for r in rounds
                      if "ssjf" in r and base in r and r[base].get(key) and r["ssjf"].get(key) is not None
                      and np.isfinite(r["ssjf"][key]) and np.isfinite(r[base][key])]
            if ratios:
                out[f"ssjf_over_{base.replace('-', '_')}_{key}"] = float(np.median(ratios))
    return out
