"""Generation requests and their validation; no torch import.

Invariant: `encode_and_validate` either returns the non-empty prompt token ids of a request that fits the
context window, or raises `ValueError` whose message starts with the offending field name.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Sequence


class EngineFullError(RuntimeError):
    """Raised by `Engine.generate` when no slot is free; the router should retry later."""


@dataclass
class GenerationRequest:
    request_id: str
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = field(default_factory=tuple)
    ignore_eos: bool = False
    # Benchmark-only: end with "stop" after exactly this many tokens (EOS ignored), as if the model had
    # stopped there; lets a trace replay fix output lengths without stating them in max_tokens.
    stop_after_tokens: int | None = None


def encode_and_validate(req: GenerationRequest, tokenizer: Any, max_context_tokens: int) -> list[int]:
    _check_fields(req)
    if req.prompt_token_ids:
        prompt_ids = [int(token_id) for token_id in req.prompt_token_ids]
        vocab_size = len(tokenizer)
        _require(all(0 <= token_id < vocab_size for token_id in prompt_ids), "prompt_token_ids",
                 f"every id must be in [0, {vocab_size})", "out of range")
    else:
        prompt_ids = tokenizer(req.prompt, add_special_tokens=False)["input_ids"]
        _require(len(prompt_ids) > 0, "prompt", "encodes to no tokens", req.prompt)
    num_prompt_tokens = len(prompt_ids)
    _require(num_prompt_tokens < max_context_tokens, "prompt",
             f"too long: {num_prompt_tokens} tokens leave no room in max_context_tokens={max_context_tokens}",
             num_prompt_tokens)
    _require(num_prompt_tokens + req.max_tokens <= max_context_tokens, "max_tokens",
             f"prompt_tokens ({num_prompt_tokens}) + max_tokens must be <= max_context_tokens ({max_context_tokens})",
             req.max_tokens)
    return prompt_ids


def _check_fields(req: GenerationRequest) -> None:
    _require(isinstance(req.request_id, str) and req.request_id != "", "request_id",
             "must be a non-empty string", req.request_id)
    has_prompt = req.prompt is not None and req.prompt != ""
    has_ids = req.prompt_token_ids is not None and len(req.prompt_token_ids) > 0
    _require(has_prompt != has_ids, "prompt", "exactly one of prompt / prompt_token_ids must be non-empty",
             "both" if has_prompt else "neither")
    _require(req.prompt is None or isinstance(req.prompt, str), "prompt", "must be a string", type(req.prompt).__name__)
    _require(req.prompt_token_ids is None or (isinstance(req.prompt_token_ids, (list, tuple))
             and all(_is_int(token_id) for token_id in req.prompt_token_ids)),
             "prompt_token_ids", "must be a list of ints", req.prompt_token_ids)
    _require(_is_int(req.max_tokens) and req.max_tokens > 0, "max_tokens", "must be > 0", req.max_tokens)
    _require(_is_number(req.temperature) and req.temperature >= 0, "temperature", "must be >= 0", req.temperature)
    _require(_is_number(req.top_p) and 0 < req.top_p <= 1, "top_p", "must be in (0, 1]", req.top_p)
    _require(req.seed is None or _is_int(req.seed), "seed", "must be None or an int", req.seed)
    _require(isinstance(req.stop, (list, tuple)) and all(isinstance(s, str) and s != "" for s in req.stop),
             "stop", "must be a list of non-empty strings", req.stop)
    _require(isinstance(req.ignore_eos, bool), "ignore_eos", "must be a bool", req.ignore_eos)
    _require(req.stop_after_tokens is None or (_is_int(req.stop_after_tokens) and req.stop_after_tokens > 0),
             "stop_after_tokens", "must be None or an int > 0", req.stop_after_tokens)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value


def _require(ok: bool, field_name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{field_name}: {rule} (got {value!r})")
