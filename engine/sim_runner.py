"""A simulated model for scale tests: `engine.model: sim` (or `sim:decode_step_ms=25,join_ms=20,...`) runs
the real engine — slots, step loop, sampler, detokenizer, streaming, cancellation — over `SimRunner`,
which sleeps a configured cost per step instead of running a model and returns placeholder logits.

Invariant: only the model is simulated. A step costs what `SimCosts` says for its batch (bench.sim's
cost model: decode `decode_step_ms + decode_step_growth_ms * (n - 1)` for n rows; a step in which k
sequences join costs `join_ms * k + prefill_ms_per_token * their prompt tokens` more), slept on the engine
thread as a model step would block it. Each row's logits favour one placeholder word (greedy is
deterministic; sampling draws among the words with the request's own generator) and make EOS certain at the
sequence's natural length (a deterministic function of its prompt with mean `mean_output_tokens`; 0 =
never; an ignored EOS is followed by more words), so max_tokens, stop, ignore_eos, stop_after_tokens, seed
and cancellation take the real engine's paths.
No weights are loaded: a replica costs its tokenizer and the step loop.
"""
from __future__ import annotations

import array
import math
import time
import zlib
from dataclasses import dataclass, fields
from typing import Any

import torch

from .config import EngineConfig
from .sequence import Sequence
from .tokenizer import DEMO_MAX_POSITIONS, demo_tokenizer, ensure_pad_token, load_tokenizer_by_name

PLACEHOLDER_WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog")
CHOSEN_WORD_BONUS = 1.0  # greedy picks the row's word; temperature 1 still spreads over all words
EOS_MARGIN = 1e4  # EOS outweighs every word at any temperature the API accepts


@dataclass(frozen=True)
class SimCosts:
    """Per-step costs (defaults: bench.sim.extrapolate.GPU_COST, an 8B model in bf16 on one H100)."""

    decode_step_ms: float = 25.0
    decode_step_growth_ms: float = 0.3
    join_ms: float = 20.0
    prefill_ms_per_token: float = 0.1
    mean_output_tokens: float = 64.0
    max_positions: int = DEMO_MAX_POSITIONS

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"model: sim cost {f.name} must be a finite number >= 0 (got {value!r})")
        if self.max_positions < 2:
            raise ValueError(f"model: sim cost max_positions must be >= 2 (got {self.max_positions})")

    def decode_s(self, num_rows: int) -> float:
        return (self.decode_step_ms + self.decode_step_growth_ms * max(num_rows - 1, 0)) / 1000.0

    def join_s(self, num_prompt_tokens: list[int]) -> float:
        return (self.join_ms * len(num_prompt_tokens) + self.prefill_ms_per_token * sum(num_prompt_tokens)) / 1000.0


def parse_sim_costs(model: str) -> SimCosts:
    """`sim` -> defaults; `sim:decode_step_ms=10,mean_output_tokens=32` -> those fields overridden."""
    _, _, spec = model.partition(":")
    known = {f.name for f in fields(SimCosts)}
    values: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or key not in known:
            raise ValueError(f"model: sim costs are key=value pairs with keys {sorted(known)} (got {item!r})")
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"model: sim cost {key} must be a number (got {raw!r})") from None
        values[key] = int(number) if key == "max_positions" and math.isfinite(number) else number
    return SimCosts(**values)


class SimModel(torch.nn.Module):
    """Stands in for the model object the engine inspects (device, context window, EOS ids)."""

    def __init__(self, costs: SimCosts, tokenizer: Any) -> None:
        from transformers import PreTrainedConfig

        super().__init__()
        self.costs = costs
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)
        self.config = PreTrainedConfig(max_position_embeddings=costs.max_positions,
                                       eos_token_id=tokenizer.eos_token_id)
        self.vocab_size = len(tokenizer)
        self.eos_token_id = tokenizer.eos_token_id
        self.word_ids = _placeholder_ids(tokenizer)


def load_sim_model(config: EngineConfig) -> tuple[SimModel, Any]:
    """The sim "model" and the tokenizer it serves with (`engine.tokenizer`, default: the demo one)."""
    costs = parse_sim_costs(config.model)
    tokenizer = demo_tokenizer() if config.tokenizer in (None, "demo") else load_tokenizer_by_name(config.tokenizer)
    ensure_pad_token(tokenizer)
    return SimModel(costs, tokenizer), tokenizer


class SimRunner:
    """`ModelRunner`'s interface (rows, prefill, decode, drop_finished, reset) over `SimModel`."""

    def __init__(self, model: SimModel) -> None:
        self.model = model
        self.rows: list[Sequence] = []

    def prefill(self, seqs: list[Sequence]) -> torch.Tensor:
        time.sleep(self.model.costs.join_s([len(seq.prompt_token_ids) for seq in seqs]))
        self.rows.extend(seqs)
        return self._logits(seqs)

    def decode(self) -> torch.Tensor:
        time.sleep(self.model.costs.decode_s(len(self.rows)))
        return self._logits(self.rows)

    def drop_finished(self) -> list[Sequence]:
        finished = [seq for seq in self.rows if seq.is_finished]
        self.rows = [seq for seq in self.rows if not seq.is_finished]
        return finished

    def reset(self) -> list[Sequence]:
        rows, self.rows = self.rows, []
        return rows

    def _logits(self, seqs: list[Sequence]) -> torch.Tensor:
        model = self.model
        logits = torch.full((len(seqs), model.vocab_size), -math.inf)
        logits[:, model.word_ids] = 0.0
        for row, seq in enumerate(seqs):
            prompt_hash = _prompt_hash(seq.prompt_token_ids)
            num_done = len(seq.completion_token_ids)
            logits[row, model.word_ids[(prompt_hash + num_done) % len(model.word_ids)]] = CHOSEN_WORD_BONUS
            if num_done == natural_output_tokens(prompt_hash, model.costs.mean_output_tokens):
                logits[row, model.eos_token_id] = EOS_MARGIN
        return logits


def natural_output_tokens(prompt_hash: int, mean_output_tokens: float) -> float:
    """Tokens the sim "model" writes before its EOS: 1 + exponential with the given mean (inf: never stops)."""
    if mean_output_tokens <= 0:
        return math.inf
    uniform = (prompt_hash % 2**20 + 0.5) / 2**20
    return 1 + math.floor(-mean_output_tokens * math.log(uniform))


def _prompt_hash(prompt_token_ids: list[int]) -> int:
    return zlib.crc32(array.array("q", prompt_token_ids).tobytes())


def _placeholder_ids(tokenizer: Any) -> list[int]:
    ids = [tokenizer(" " + word, add_special_tokens=False)["input_ids"][-1] for word in PLACEHOLDER_WORDS]
    return sorted({token_id for token_id in ids if token_id != tokenizer.eos_token_id})
