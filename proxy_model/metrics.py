"""Accuracy and latency metrics reported by evaluate/compare (test split only)."""
from __future__ import annotations

import statistics
import time

import numpy as np
from scipy.stats import kendalltau, spearmanr

from .data import paper_bucket


def accuracy(predicted: list[float] | np.ndarray, true: list[float] | np.ndarray) -> dict:
    """n, Kendall tau-b, Spearman rho, MAE in tokens, accuracy on the paper's 5 length buckets."""
    pred = np.asarray(predicted, dtype=float)
    y = np.asarray(true, dtype=float)
    if len(pred) != len(y) or len(y) < 2:
        raise ValueError(f"need >= 2 paired values, got {len(pred)} predictions for {len(y)} labels")
    constant = np.all(pred == pred[0]) or np.all(y == y[0])
    tau = 0.0 if constant else kendalltau(pred, y, variant="b").statistic
    rho = 0.0 if constant else spearmanr(pred, y).statistic
    buckets = np.mean([paper_bucket(p) == paper_bucket(t) for p, t in zip(pred, y)])
    return {
        "n": int(len(y)),
        "kendall_tau": _finite(tau),
        "spearman": _finite(rho),
        "mae_tokens": float(np.mean(np.abs(pred - y))),
        "bucket_accuracy": float(buckets),
    }


def _finite(x: float) -> float:
    """A constant predictor has undefined correlation; report it as 0."""
    return 0.0 if x is None or not np.isfinite(x) else float(x)


def latency_ms_per_prompt(predict, prompts: list[str], batch_size: int, repeats: int = 3,
                          max_batches: int = 8) -> float:
    """Median over `repeats` of wall time per prompt for `predict` on consecutive batches."""
    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    batches = [b for b in batches if len(b) == batch_size][:max_batches] or [prompts[:batch_size]]
    predict(batches[0])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            predict(b)
        times.append((time.perf_counter() - start) * 1000.0 / sum(len(b) for b in batches))
    return float(statistics.median(times))


def latency(predict, prompts: list[str]) -> dict:
    return {
        "latency_ms_per_prompt_batch1": latency_ms_per_prompt(predict, prompts, 1, max_batches=32),
        "latency_ms_per_prompt_batch32": latency_ms_per_prompt(predict, prompts, 32, max_batches=4),
    }
