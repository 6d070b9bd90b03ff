"""Baseline for `bench.engine`: Hugging Face `generate` on static, left-padded batches of the same requests.

Invariant: every request gets exactly its `max_tokens` (EOS suppressed by `min_new_tokens`, as `ignore_eos`
does in the engine); a batch runs until its longest member is done, so only `sum(max_tokens)` counts as
useful output — the tokens a padded static batch computes past a member's length are its cost, not output.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from engine import GenerationRequest


def bench_hf_generate(model: Any, tokenizer: Any, requests: list[GenerationRequest], max_batch_size: int) -> dict:
    """Closed loop: batches of `max_batch_size` in request order, each started when the previous ends."""
    bench_batch(model, tokenizer, requests[:max_batch_size], max_new_tokens=4)  # warm-up
    start_s, start_cpu_s = time.time(), time.process_time()
    finished_s = []
    for first in range(0, len(requests), max_batch_size):
        batch = requests[first:first + max_batch_size]
        bench_batch(model, tokenizer, batch, max(req.max_tokens for req in batch))
        finished_s += [time.time() - start_s] * len(batch)
    seconds, cpu_s = time.time() - start_s, time.process_time() - start_cpu_s
    num_tokens = sum(req.max_tokens for req in requests)
    return {"tokens_per_s": round(num_tokens / seconds, 1), "tokens_per_cpu_s": round(num_tokens / cpu_s, 1),
            "requests": len(requests), "output_tokens": num_tokens, "seconds": round(seconds, 2),
            "mean_jct_s": round(sum(finished_s) / len(finished_s), 2), "mean_ttft_s": None,
            "finish_reasons": ["length"]}


@torch.inference_mode()
def bench_batch(model: Any, tokenizer: Any, batch: list[GenerationRequest], max_new_tokens: int) -> None:
    num_columns = max(len(req.prompt_token_ids) for req in batch)
    input_ids = torch.full((len(batch), num_columns), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), num_columns), dtype=torch.long)
    for row, req in enumerate(batch):
        input_ids[row, num_columns - len(req.prompt_token_ids):] = torch.tensor(req.prompt_token_ids)
        attention_mask[row, num_columns - len(req.prompt_token_ids):] = 1
    device = next(model.parameters()).device
    model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), do_sample=False,
                   max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
