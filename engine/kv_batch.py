"""A left-padded, batched KV cache that sequences can join and leave between decode steps.

Invariant: row i of `cache` and `attention_mask` belongs to the i-th running sequence; each row's real tokens
are contiguous and right-aligned (all rows end at the last column); padding is zeros with mask 0, and leading
columns that are padding in every row are trimmed, so memory is bounded by rows x longest live sequence.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache


class PaddedKVBatch:
    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.attention_mask: torch.Tensor | None = None

    @property
    def num_rows(self) -> int:
        return 0 if self.attention_mask is None else self.attention_mask.shape[0]

    @property
    def num_columns(self) -> int:
        return 0 if self.attention_mask is None else self.attention_mask.shape[1]

    def append_rows(self, cache: DynamicCache, attention_mask: torch.Tensor) -> None:
        """Add freshly prefilled rows below the running ones, left-padding whichever side is shorter."""
        if self.cache is None:
            self.cache, self.attention_mask = cache, attention_mask
            return
        num_columns = max(self.num_columns, attention_mask.shape[1])
        layers = [
            (torch.cat([_left_pad(old_k, num_columns), _left_pad(new_k, num_columns)]),
             torch.cat([_left_pad(old_v, num_columns), _left_pad(new_v, num_columns)]))
            for (old_k, old_v), (new_k, new_v) in zip(_layer_kv(self.cache), _layer_kv(cache), strict=True)
        ]
        self.cache = DynamicCache(ddp_cache_data=layers)
        self.attention_mask = torch.cat(
            [_left_pad_mask(self.attention_mask, num_columns), _left_pad_mask(attention_mask, num_columns)]
        )

    def keep_rows(self, row_indices: list[int]) -> None:
        if len(row_indices) == self.num_rows:
            return
        if not row_indices:
            self.cache = self.attention_mask = None
            return
        mask = self.attention_mask[row_indices]
        first_live_column = int(mask.any(dim=0).int().argmax())
        index = torch.tensor(row_indices, device=mask.device)
        for layer in self.cache.layers:
            if layer.keys is not None and layer.keys.numel() > 0:
                layer.keys = layer.keys.index_select(0, index)[..., first_live_column:, :]
                layer.values = layer.values.index_select(0, index)[..., first_live_column:, :]
        self.attention_mask = mask[:, first_live_column:]

    def extend_mask(self) -> torch.Tensor:
        """Add one live column for the token about to be decoded; return the mask to pass to the model."""
        ones = torch.ones_like(self.attention_mask[:, :1])
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        return self.attention_mask


def _layer_kv(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _left_pad(states: torch.Tensor, num_columns: int) -> torch.Tensor:
    return F.pad(states, (0, 0, num_columns - states.shape[-2], 0))


def _left_pad_mask(mask: torch.Tensor, num_columns: int) -> torch.Tensor:
    return F.pad(mask, (num_columns - mask.shape[1], 0))
