"""Workloads for the simulator: output lengths with predictions, and arrival times.

Invariant: everything is drawn from a numpy Generator seeded by the caller, so a (seed, options)
pair always yields the same requests. Predictions never look at a request's own true length beyond
the documented noise model (synthetic) or the file's predicted class (CSV).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

# The SSJF paper's 5 classes have upper bounds 42, 141, 294, 503, inf (outputs are < 512 tokens).
PAPER_CLASS_UPPER_TOKENS = (42, 141, 294, 503, 512)
# Class -> predicted length: the bucket midpoint (0-42 -> 21, ..., 503-512 -> 507.5). Midpoints use
# no true length from the file, and with aging off only their order matters.
PAPER_CLASS_PREDICTED_TOKENS = tuple(
    (lo + hi) / 2 for lo, hi in zip((0,) + PAPER_CLASS_UPPER_TOKENS[:-1], PAPER_CLASS_UPPER_TOKENS)
)


@dataclass
class Lengths:
    true_output_tokens: np.ndarray  # int, >= 1
    predicted_output_tokens: np.ndarray  # float


def synthetic_lengths(num: int, rng: np.random.Generator, prediction_noise_sigma: float = 0.5) -> Lengths:
    """Skewed chat-like lengths: lognormal (median 100 tokens) clipped to 2..511; predictions are
    the true length times lognormal noise exp(N(0, sigma)) — an imperfect ranker."""
    true = np.clip(np.round(rng.lognormal(np.log(100.0), 1.0, num)), 2, 511).astype(np.int64)
    noise = rng.lognormal(0.0, prediction_noise_sigma, num) if prediction_noise_sigma > 0 else 1.0
    return Lengths(true, true * noise)


def load_lengths_csv(path: str) -> Lengths:
    """Read `,output_token_length,predicted_length,...` (the SSJF paper's prediction file format);
    predicted_length is a class 0-4 mapped to PAPER_CLASS_PREDICTED_TOKENS."""
    true, classes = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            true.append(int(float(row["output_token_length"])))
            classes.append(int(float(row["predicted_length"])))
    cls = np.asarray(classes, dtype=np.int64)
    if cls.size and (cls.min() < 0 or cls.max() >= len(PAPER_CLASS_PREDICTED_TOKENS)):
        raise ValueError(f"{path}: predicted_length must be a class 0-4, got {cls.min()}..{cls.max()}")
    mapping = np.asarray(PAPER_CLASS_PREDICTED_TOKENS)
    return Lengths(np.maximum(np.asarray(true, dtype=np.int64), 1), mapping[cls])


def sample_indices(size: int, num: int, rng: np.random.Generator) -> np.ndarray:
    """`num` row indices into `size` rows, without replacement when there are enough rows."""
    return rng.choice(size, size=num, replace=num > size)


def sample(lengths: Lengths, num: int, rng: np.random.Generator) -> Lengths:
    idx = sample_indices(lengths.true_output_tokens.size, num, rng)
    return Lengths(lengths.true_output_tokens[idx], lengths.predicted_output_tokens[idx])


def poisson_arrivals_s(num: int, rate_rps: float, rng: np.random.Generator) -> np.ndarray:
    return np.cumsum(rng.exponential(1.0 / rate_rps, num))


def burst_arrivals_s(num: int, burst_size: int, burst_interval_s: float) -> np.ndarray:
    """`burst_size` requests arrive together every `burst_interval_s` (the paper: 50-request bursts)."""
    return (np.arange(num) // burst_size) * float(burst_interval_s)
