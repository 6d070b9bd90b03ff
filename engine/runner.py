"""Runs the model over the running batch: batched prefill of newcomers, one batched decode step for all.

Invariant: `rows[i]` is the sequence whose KV lives in row i of `kv`; every live row's pending input is exactly
its last sampled token (fed at position `num_tokens - 1`), so batched greedy decoding matches running alone.
Finished rows kept by a static batch ("dynamic" mode) are still computed, and their logits ignored.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import DynamicCache

from .kv_batch import PaddedKVBatch
from .sequence import Sequence

PREFILL_TOKEN_BUDGET = 4096


class ModelRunner:
    def __init__(self, model: Any, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.rows: list[Sequence] = []
        self.kv = PaddedKVBatch()
        self._accepts_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters

    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence]) -> torch.Tensor:
        """Prefill `seqs` (in token-budgeted groups), append them as rows; return their last-position logits."""
        logits = [self._prefill_group(group) for group in _budgeted_groups(seqs, PREFILL_TOKEN_BUDGET)]
        return torch.cat(logits)

    @torch.inference_mode()
    def decode(self) -> torch.Tensor:
        input_ids = torch.tensor([[seq.last_token_id] for seq in self.rows], device=self.device)
        position_ids = torch.tensor([[seq.num_tokens - 1] for seq in self.rows], device=self.device)
        attention_mask = self.kv.extend_mask()
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=self.kv.cache, use_cache=True)
        return out.logits[:, -1, :]

    def drop_finished(self) -> list[Sequence]:
        finished = [seq for seq in self.rows if seq.is_finished]
        if finished:
            keep = [row for row, seq in enumerate(self.rows) if not seq.is_finished]
            self.kv.keep_rows(keep)
            self.rows = [self.rows[row] for row in keep]
        return finished

    def reset(self) -> list[Sequence]:
        rows, self.rows, self.kv = self.rows, [], PaddedKVBatch()
        return rows

    def _prefill_group(self, seqs: list[Sequence]) -> torch.Tensor:
        num_columns = max(len(seq.prompt_token_ids) for seq in seqs)
        input_ids = torch.zeros((len(seqs), num_columns), dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), num_columns), dtype=torch.long)
        for row, seq in enumerate(seqs):
            num_prompt_tokens = len(seq.prompt_token_ids)
            input_ids[row, num_columns - num_prompt_tokens:] = torch.tensor(seq.prompt_token_ids)
            attention_mask[row, num_columns - num_prompt_tokens:] = 1
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": 1} if self._accepts_logits_to_keep else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=DynamicCache(), use_cache=True, **extra)
        self.kv.append_rows(out.past_key_values, attention_mask)
        self.rows.extend(seqs)
        return out.logits[:, -1, :]


def _budgeted_groups(seqs: list[Sequence], token_budget: int) -> list[list[Sequence]]:
    groups: list[list[Sequence]] = []
    for seq in seqs:
        if groups and _num_padded_tokens(groups[-1] + [seq]) <= token_budget:
            groups[-1].append(seq)
        else:
            groups.append([seq])
    return groups


def _num_padded_tokens(group: list[Sequence]) -> int:
    return len(group) * max(len(seq.prompt_token_ids) for seq in group)
