"""Model + tokenizer loading: the seeded demo Llama, a named model (`engine.models`: a verified GGUF from a pip
package), or any causal LM by HF id / local path.

Invariant: the demo model's weights depend only on `DEMO_MODEL_SEED` and `DEMO_MODEL_SHAPE` (built on CPU in
float32 under a forked RNG, then moved), so every machine gets the same model; a named model loads only from its
sha256-verified GGUF, or from the float32 weights dequantised from that file and cached under its hash;
loading never leaves the tokenizer without a pad token.
"""
from __future__ import annotations

from typing import Any

import torch

from .config import EngineConfig
from .models import is_named, model_cache_dir, require_gguf_support, verified_gguf
from .tokenizer import (DEMO_MAX_POSITIONS, DEMO_MODEL_NAME, demo_tokenizer, ensure_pad_token, load_named_tokenizer,
                        load_tokenizer_by_name, save_atomically)

DEMO_MODEL_SEED = 1234
DEMO_MODEL_SHAPE = dict(
    num_hidden_layers=4,
    hidden_size=256,
    num_attention_heads=4,
    num_key_value_heads=4,
    intermediate_size=688,
    max_position_embeddings=DEMO_MAX_POSITIONS,
    initializer_range=0.1,
    tie_word_embeddings=True,
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device_and_dtype(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    has_cuda = torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    if device.startswith("cuda") and not has_cuda:
        raise ValueError(f"device: CUDA is not available on this machine (got {device!r})")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return torch.device(device), _DTYPES[dtype]


def load_model_and_tokenizer(config: EngineConfig | str = DEMO_MODEL_NAME, tokenizer: str | None = None,
                             device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """Return `(model, tokenizer)`; accepts an `EngineConfig` or the same fields as arguments."""
    cache_weights = True
    if isinstance(config, EngineConfig):
        model_name, tokenizer, device, dtype = config.model, config.tokenizer, config.device, config.dtype
        cache_weights = config.cache_weights
    else:
        model_name = config
    torch_device, torch_dtype = resolve_device_and_dtype(device, dtype)
    if model_name == DEMO_MODEL_NAME:
        tok = demo_tokenizer() if tokenizer is None else load_tokenizer_by_name(tokenizer)
        model = build_demo_model(tok)
    elif is_named(model_name):
        tok = load_named_tokenizer(model_name, cache_weights) if tokenizer is None else load_tokenizer_by_name(tokenizer)
        model = load_named_model(model_name, cache_weights)
    else:
        from transformers import AutoModelForCausalLM

        tok = load_tokenizer_by_name(tokenizer or model_name)
        model = AutoModelForCausalLM.from_pretrained(model_name, dtype=torch_dtype)
    ensure_pad_token(tok)
    return model.to(device=torch_device, dtype=torch_dtype).eval(), tok


def load_named_model(name: str, cache_weights: bool = True) -> Any:
    """float32 weights of a named model: from the cache when present, else dequantised from its GGUF
    (and cached when `cache_weights`)."""
    from transformers import AutoModelForCausalLM

    gguf = verified_gguf(name)
    cached = model_cache_dir(name) / "weights"
    if cache_weights and (cached / "model.safetensors").is_file():
        return AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
    require_gguf_support(name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if cache_weights:
        # A GGUF-loaded model refuses save_pretrained; a plain copy of its (already dequantised) weights saves.
        plain = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        plain.generation_config = model.generation_config
        save_atomically(plain, cached)
    return model


def build_demo_model(tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **DEMO_MODEL_SHAPE,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEMO_MODEL_SEED)
        return LlamaForCausalLM(model_config)


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        ids.update([value] if isinstance(value, int) else list(value or []))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def model_max_positions(model: Any) -> int | None:
    text_config = model.config.get_text_config(decoder=True)
    for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
