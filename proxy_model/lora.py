"""Low-rank adapters (LoRA) for fine-tuning every encoder layer with a tiny checkpoint.

Invariant: after `merge_lora`, the model is plain `nn.Linear`s with W' = W + scale * B @ A, and
`apply_lora_deltas(model, factors, scale)` on a fresh backbone reproduces exactly those weights.
"""
from __future__ import annotations

import torch
from torch import nn

DEFAULT_TARGETS = ("attention.self.query", "attention.self.value", "attention.output.dense",
                   "intermediate.dense", "output.dense")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, scale: float, gen: torch.Generator):
        super().__init__()
        self.base = base
        self.scale = scale
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features, generator=gen) / base.in_features**0.5)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale


def _targets(model: nn.Module, targets: tuple[str, ...]):
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("encoder.") and name.endswith(targets):
            yield name, module


def add_lora(model: nn.Module, rank: int, scale: float, seed: int,
             targets: tuple[str, ...] = DEFAULT_TARGETS) -> list[nn.Parameter]:
    """Wrap target Linears of every encoder layer; returns the new trainable parameters."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for name, module in list(_targets(model, targets)):
        parent_name, _, child = name.rpartition(".")
        wrapped = LoRALinear(module, rank, scale, gen)
        setattr(model.get_submodule(parent_name), child, wrapped)
        params += [wrapped.lora_A, wrapped.lora_B]
    if not params:
        raise ValueError("no LoRA target modules found in the backbone")
    return params


def merge_lora(model: nn.Module) -> dict[str, torch.Tensor]:
    """Fold adapters into their base weights; returns the factors {name.lora_A/B} to save."""
    factors = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            factors[f"{name}.lora_A"] = module.lora_A.detach().clone()
            factors[f"{name}.lora_B"] = module.lora_B.detach().clone()
            with torch.no_grad():
                module.base.weight += module.scale * module.lora_B @ module.lora_A
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.base)
    return factors


def apply_lora_deltas(model: nn.Module, factors: dict[str, torch.Tensor], scale: float) -> None:
    """W += scale * B @ A for each saved adapter (inverse of `merge_lora`'s output)."""
    for key, a in factors.items():
        if not key.endswith(".lora_A"):
            continue
        name = key[: -len(".lora_A")]
        b = factors[f"{name}.lora_B"]
        linear = model.get_submodule(name)
        with torch.no_grad():
            linear.weight += scale * b.to(linear.weight.dtype) @ a.to(linear.weight.dtype)
