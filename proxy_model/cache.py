"""Disk cache of frozen-backbone features, keyed by (backbone, truncation, layers) and prompt hash.

Invariant: the cached tensor for a prompt is exactly `Encoder.encode([prompt])` (float32), so heads
trained on the cache match inference; an encoder with tuned layers loaded (`Encoder.delta_id`) has
its own cache file, and so does each ONNX Runtime (`Encoder.runtime`). Caches are local build
outputs; never commit them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from tqdm import tqdm

from .encoder import Encoder

CACHE_VERSION = 2  # bump when Encoder tokenization/pooling changes


def prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:32]


def cache_file(cache_dir: str | Path, encoder: Encoder) -> Path:
    ident = f"{CACHE_VERSION}|{encoder.backbone}|{encoder.max_prompt_tokens}|{encoder.num_layers}"
    if encoder.delta_id:  # tuned layers (`--init-encoder`): their own cache
        ident += f"|delta={encoder.delta_id}"
    if encoder.runtime != "torch":  # ONNX Runtime (int8) features: their own cache
        ident += f"|runtime={encoder.runtime}"
    return Path(cache_dir) / f"features-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.pt"


def encode_cached(encoder: Encoder, prompts: list[str], cache_dir: str | Path | None,
                  chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled [N, L+1, 2, H], log_len [N]) for `prompts`, computing only uncached unique prompts."""
    path = cache_file(cache_dir, encoder) if cache_dir else None
    store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if path is not None and path.exists():
        saved = torch.load(path, weights_only=True)
        store = {k: (saved["pooled"][i], saved["log_len"][i]) for i, k in enumerate(saved["keys"])}
    keys = [prompt_key(p) for p in prompts]
    todo = list({k: p for k, p in zip(keys, prompts) if k not in store}.items())
    if todo:
        bar = tqdm(total=len(todo), desc="embedding prompts", unit="prompt")
        for i in range(0, len(todo), chunk):
            part = todo[i : i + chunk]
            pooled, log_len = encoder.encode([p for _, p in part])
            for j, (k, _) in enumerate(part):
                store[k] = (pooled[j].clone(), log_len[j].clone())
            bar.update(len(part))
        bar.close()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            all_keys = list(store)
            torch.save({"keys": all_keys,
                        "pooled": torch.stack([store[k][0] for k in all_keys]),
                        "log_len": torch.stack([store[k][1] for k in all_keys])}, path)
    pooled = torch.stack([store[k][0] for k in keys])
    log_len = torch.stack([store[k][1] for k in keys])
    return pooled, log_len
