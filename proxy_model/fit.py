"""Training loops: a head on cached (frozen) features, and a time-boxed backbone fine-tune.

Invariant: runs are seeded (torch generator for init, shuffling and dropout); the epoch kept is the
one with the best validation Kendall tau, never chosen on test rows.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from scipy.stats import kendalltau
from tqdm import tqdm

from .heads import RANKING_KINDS, Head, head_input, quantile_buckets
from .lora import add_lora, merge_lora


def prepare_head(head: Head, x_train: torch.Tensor, y_train: np.ndarray, num_buckets: int) -> torch.Tensor | None:
    """Set standardization (and bucket edges/medians); returns bucket labels for classification."""
    head.feature_mean.copy_(x_train.mean(0))
    head.feature_std.copy_(x_train.std(0).clamp(min=1e-4))
    if head.kind != "classification":
        return None
    edges, log_medians = quantile_buckets(y_train, num_buckets)
    head.bucket_log_medians.resize_(len(log_medians)).copy_(torch.tensor(log_medians, dtype=torch.float32))
    return torch.tensor(np.searchsorted(edges, y_train, side="right"), dtype=torch.long)


def val_tau(head: Head, x: torch.Tensor, m: torch.Tensor, y: np.ndarray) -> float:
    head.eval()
    with torch.inference_mode():
        s = head.score(head(x, m)).numpy()
    tau = kendalltau(s, y).statistic
    return float(tau) if np.isfinite(tau) else 0.0


def drop_models(m: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Model-name dropout: replace some indices by 0 (unknown) so the default embedding is trained."""
    if p <= 0:
        return m
    return torch.where(torch.rand(len(m), generator=gen) < p, torch.zeros_like(m), m)


def fit_head(head: Head, train: tuple, val: tuple, epochs: int, lr: float, batch_size: int,
             weight_decay: float, seed: int, model_dropout: float = 0.1) -> dict:
    """train/val = (features, model_idx, tokens ndarray). Returns history; head keeps best-val weights.

    Runs on one thread: the matrices are small, and a second OpenMP thread on a shared 2-core host
    slowed epochs 20-50x when the other core was busy.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_head(head, train, val, epochs, lr, batch_size, weight_decay, seed, model_dropout)
    finally:
        torch.set_num_threads(threads)


def _fit_head(head: Head, train: tuple, val: tuple, epochs: int, lr: float, batch_size: int,
              weight_decay: float, seed: int, model_dropout: float) -> dict:
    x, m, y = train
    gen = torch.Generator().manual_seed(seed)
    buckets = prepare_head(head, x, y, len(head.bucket_log_medians))
    tokens = torch.tensor(y, dtype=torch.float32)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    best = (-2.0, None, -1)
    history = []
    for epoch in tqdm(range(epochs), desc=f"train {head.kind} head", unit="epoch"):
        head.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            raw = head(x[idx], drop_models(m[idx], model_dropout, gen))
            loss = head.loss(raw, tokens[idx], buckets[idx] if buckets is not None else None)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        tau = val_tau(head, *val)
        history.append({"epoch": epoch, "val_kendall_tau": tau})
        if tau > best[0]:
            best = (tau, copy.deepcopy(head.state_dict()), epoch)
    head.load_state_dict(best[1])
    head.eval()
    calibrate(head, x, m, y)
    return {"best_epoch": best[2], "best_val_kendall_tau": best[0], "history": history}


def calibrate(head: Head, x: torch.Tensor, m: torch.Tensor, y: np.ndarray) -> None:
    """Ranking heads (pairwise, ListMLE): fit the score -> tokens quantile mapping on training rows."""
    if head.kind not in RANKING_KINDS:
        return
    with torch.inference_mode():
        s = head.score(head(x, m)).numpy()
    head.calibrate(s, y)


def finetune(encoder, head: Head, feat_cfg: dict, prompts: list[str], m: torch.Tensor, y: np.ndarray,
             num_layers: int, minutes: float, lr: float, batch_size: int, seed: int, lora_rank: int = 0,
             lora_scale: float = 1.0, val: tuple | None = None, eval_minutes: float = 0.0,
             warmup: float = 0.0) -> dict:
    """Jointly tune the encoder and the head for at most `minutes`: LoRA adapters on every layer
    (lora_rank > 0) or else the last `num_layers` layers' weights.

    warmup > 0: the learning rate rises linearly over that fraction of the time box, then follows a
    cosine to 0 at the deadline (a schedule in wall-clock time, since the run is time-boxed).
    val = (prompts, model_idx, tokens) and eval_minutes > 0: Kendall tau on val is measured at the
    start (the frozen head) and every eval_minutes; the encoder and head weights with the best val
    tau are kept (possibly the start, i.e. no fine-tuning)."""
    if lora_rank > 0:
        names = []
        params = add_lora(encoder.model, lora_rank, lora_scale, seed)
    else:
        names = encoder.unfreeze_last(num_layers)
        params = [p for p in encoder.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": params, "lr": lr}, {"params": head.parameters(), "lr": lr * 10}])
    base_lrs = [g["lr"] for g in opt.param_groups]
    track = set(names) if lora_rank <= 0 else None

    def snapshot():
        enc = {n: p.detach().clone() for n, p in encoder.model.named_parameters() if p.requires_grad}
        return enc, copy.deepcopy(head.state_dict())

    def evaluate_val() -> float:
        encoder.model.eval()
        with torch.inference_mode():
            x_val = []
            for i in range(0, len(val[0]), 256):
                pooled, ll = encoder.encode(val[0][i : i + 256])
                x_val.append(head_input(pooled, ll, feat_cfg, val[0][i : i + 256]))
        tau = val_tau(head, torch.cat(x_val), val[1], val[2])
        encoder.model.train()
        head.train()
        return tau

    history = []
    best = None
    if val is not None and eval_minutes > 0:
        best = (evaluate_val(), snapshot(), 0)
        history.append({"prompts_seen": 0, "val_kendall_tau": best[0]})
        print(f"fine-tune start: val tau {best[0]:.4f}", flush=True)
    gen = torch.Generator().manual_seed(seed)
    ids, log_len = encoder.token_ids(prompts)
    tokens = torch.tensor(y, dtype=torch.float32)
    buckets = None
    if head.kind == "classification":
        edges = np.quantile(y, np.linspace(0, 1, len(head.bucket_log_medians) + 1)[1:-1])
        buckets = torch.tensor(np.searchsorted(np.unique(edges), y, side="right"), dtype=torch.long)
    t0 = time.monotonic()
    deadline = t0 + minutes * 60.0
    next_eval = t0 + eval_minutes * 60.0
    seen, steps = 0, 0
    what = f"LoRA r={lora_rank} on all layers" if lora_rank > 0 else f"last {num_layers} layer(s)"
    bar = tqdm(desc=f"fine-tune {what}", unit="prompt", total=len(ids))
    encoder.model.train()
    head.train()
    while time.monotonic() < deadline:
        order = torch.randperm(len(ids), generator=gen)
        for i in range(0, len(order), batch_size):
            if time.monotonic() >= deadline:
                break
            if warmup > 0:
                frac = (time.monotonic() - t0) / (minutes * 60.0)
                factor = frac / warmup if frac < warmup else 0.5 * (1 + np.cos(np.pi * (frac - warmup) / (1 - warmup)))
                for g, base in zip(opt.param_groups, base_lrs):
                    g["lr"] = base * max(float(factor), 0.0)
            idx = order[i : i + batch_size].tolist()
            width = max(len(ids[j]) for j in idx)
            input_ids = torch.zeros(len(idx), width, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for r, j in enumerate(idx):
                input_ids[r, : len(ids[j])] = torch.tensor(ids[j])
                mask[r, : len(ids[j])] = 1
            pooled = encoder.forward(input_ids.to(encoder.device), mask.to(encoder.device))
            x = head_input(pooled, log_len[idx], feat_cfg, [prompts[j] for j in idx])
            loss = head.loss(head(x, m[idx]), tokens[idx], buckets[idx] if buckets is not None else None)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
            steps += 1
            bar.update(len(idx))
            if best is not None and (time.monotonic() >= next_eval or time.monotonic() >= deadline):
                tau = evaluate_val()
                history.append({"prompts_seen": seen, "val_kendall_tau": tau})
                print(f"fine-tune {seen} prompts, {steps} steps: val tau {tau:.4f} (best {best[0]:.4f})", flush=True)
                if tau > best[0]:
                    best = (tau, snapshot(), seen)
                next_eval = time.monotonic() + eval_minutes * 60.0
    bar.close()
    if best is not None:
        with torch.no_grad():
            live = dict(encoder.model.named_parameters())
            for n, v in best[1][0].items():
                live[n].copy_(v)
        head.load_state_dict(best[1][1])
    encoder.model.eval()
    head.eval()
    for p in params:
        p.requires_grad_(False)
    if lora_rank > 0:
        tuned = {"lora": merge_lora(encoder.model)}
    else:  # stored as float16: round the live weights too so saved == evaluated
        tuned = {}
        with torch.no_grad():
            for n, p in encoder.model.named_parameters():
                if n in set(names):
                    p.copy_(p.to(torch.float16).float())
                    tuned[n] = p.detach().clone()
        tuned = {"weights": tuned}
    report = {"finetune_prompts_seen": seen, "finetune_steps": steps, "finetune_minutes": minutes, "tuned": tuned}
    if best is not None:
        report.update({"finetune_best_val_kendall_tau": best[0], "finetune_best_prompts_seen": best[2],
                       "finetune_history": history})
    return report
