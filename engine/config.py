"""Engine configuration: one validated dataclass, no torch import.

Invariant: an `EngineConfig` that constructs is internally consistent; every bad field raises
`ValueError` whose message starts with the field name.
"""
from __future__ import annotations

from dataclasses import dataclass

BATCHING_MODES = ("none", "dynamic", "continuous")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class EngineConfig:
    model: str = "demo"
    tokenizer: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batching: str = "continuous"
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    max_context_tokens: int | None = None
    seed: int = 0
    # Named models (engine/models.py): keep the weights dequantised from the GGUF (and its tokenizer) under
    # $SSJF_CACHE_DIR or ~/.cache/ssjf-serve, so the next replica starts in seconds instead of ~1 minute.
    cache_weights: bool = True

    def __post_init__(self) -> None:
        _require(isinstance(self.model, str) and self.model != "", "model", "must be a non-empty string", self.model)
        _require(self.tokenizer is None or (isinstance(self.tokenizer, str) and self.tokenizer != ""),
                 "tokenizer", "must be None or a non-empty string", self.tokenizer)
        _require(_is_device(self.device), "device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'", self.device)
        _require(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}", self.dtype)
        _require(self.batching in BATCHING_MODES, "batching", f"must be one of {BATCHING_MODES}", self.batching)
        _require(_is_int(self.max_batch_size) and self.max_batch_size > 0, "max_batch_size",
                 "must be an int > 0", self.max_batch_size)
        _require(isinstance(self.batch_wait_ms, (int, float)) and not isinstance(self.batch_wait_ms, bool)
                 and self.batch_wait_ms >= 0, "batch_wait_ms", "must be a number >= 0", self.batch_wait_ms)
        _require(self.max_context_tokens is None or (_is_int(self.max_context_tokens) and self.max_context_tokens > 1),
                 "max_context_tokens", "must be None or an int > 1", self.max_context_tokens)
        _require(_is_int(self.seed), "seed", "must be an int", self.seed)
        _require(isinstance(self.cache_weights, bool), "cache_weights", "must be a bool", self.cache_weights)

    @property
    def capacity(self) -> int:
        return 1 if self.batching == "none" else self.max_batch_size


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_device(device: object) -> bool:
    if not isinstance(device, str):
        return False
    if device in ("auto", "cpu", "cuda", "mps"):
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def _require(ok: bool, field: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{field}: {rule} (got {value!r})")
