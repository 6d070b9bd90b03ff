"""Next-token selection: greedy for temperature 0, else temperature + top-p with a per-sequence generator.

Invariant: a sequence's choice depends only on its own logits row and its own `torch.Generator` (one uniform
draw per token), so a seeded request samples the same tokens whatever batch it shares. Sampling is an inverse
CDF over vocabulary order in float64, so the float noise of a different batch shape moves a decision only
when the draw lands within ~1e-6 of a bucket edge. Logits are shifted by their maximum before the temperature
divides them, so any temperature > 0 (even a denormal) gives a valid distribution, never NaN. Unseeded
generators draw their seed from the OS, so replicas never share a sampling sequence.
"""
from __future__ import annotations

import secrets

import torch


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else secrets.randbits(63))
    return generator


def sample_next_tokens(logits: torch.Tensor, temperatures: list[float], top_ps: list[float],
                       generators: list[torch.Generator | None]) -> list[int]:
    """`logits` is [batch, vocab] for the last position of each row; returns one token id per row."""
    token_ids = logits.argmax(dim=-1).tolist()
    for row, temperature in enumerate(temperatures):
        if temperature > 0:
            token_ids[row] = _sample_row(logits[row], temperature, top_ps[row], generators[row])
    return token_ids


def _sample_row(row_logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    shifted = row_logits.double() - row_logits.double().max()  # <= 0, exactly 0 at the maximum
    probs = torch.softmax(shifted / temperature, dim=-1)  # a tiny temperature -> -inf elsewhere: one-hot
    if top_p < 1.0:
        sorted_probs = probs.sort(descending=True).values
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        min_kept_prob = sorted_probs[mass_before < top_p][-1]
        probs = torch.where(probs >= min_kept_prob, probs, torch.zeros_like(probs))
    cdf = probs.cumsum(dim=-1)
    draw = torch.rand((), generator=generator, dtype=torch.float64, device=probs.device) * cdf[-1]
    return min(int(torch.searchsorted(cdf, draw, right=True)), cdf.shape[0] - 1)
