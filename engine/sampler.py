"""Next-token selection: greedy for temperature 0, else temperature + top-p with a per-sequence generator.

Invariant: a sequence's choice depends only on its own logits row and its own `torch.Generator`, so a seeded
request samples the same tokens whatever batch it shares.
"""
from __future__ import annotations

import random

import torch


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else random.getrandbits(63))
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
    probs = torch.softmax(row_logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, sorted_ids = probs.sort(descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(sorted_ids[choice])
    return int(torch.multinomial(probs, 1, generator=generator))
