"""Offline references for online learning (`python -m bench.adapt`): how well heads trained offline
on the same model's labels rank the rows that online learning is judged on.

Invariant: the evaluated rows are never trained on, and the taus are measured against the same labels
(Kendall tau-b of head scores vs true tokens) as the live rolling tau.
"""
from __future__ import annotations

import numpy as np
import torch

from .fit import fit_head
from .heads import Head
from .online import fit_candidate, head_tau
from .predictor import Predictor

VAL_EVERY = 10  # every 10th training row picks the fresh head's epoch


def reference_taus(predictor: Predictor, features: np.ndarray, tokens: np.ndarray, censored: np.ndarray,
                   train_idx: np.ndarray, eval_idx: np.ndarray, seed: int = 0) -> dict:
    """Kendall tau on `eval_idx` rows of: the predictor's current head; the online refit recipe run
    once offline on all `train_idx` rows (warm start); a fresh single head of the checkpoint's kind and
    width trained with `fit_head` (30 epochs, `proxy_model.train`'s defaults, epoch picked on every 10th
    train row)."""
    y = np.asarray(tokens, dtype=np.float64)
    x_eval, y_eval = features[eval_idx], y[eval_idx]
    warm = fit_candidate(predictor.head, features[train_idx], y[train_idx], censored[train_idx], seed)
    return {"num_train": int(len(train_idx)), "num_eval": int(len(eval_idx)),
            "tau_current_head": head_tau(predictor.head, x_eval, y_eval),
            "tau_offline_warm_start": head_tau(warm, x_eval, y_eval),
            "tau_offline_fresh": fresh_head_tau(predictor, features, y, train_idx, eval_idx, seed)}


def fresh_head_tau(predictor: Predictor, features: np.ndarray, y: np.ndarray, train_idx: np.ndarray,
                   eval_idx: np.ndarray, seed: int) -> float:
    cfg = predictor.config["head"]
    head = Head(cfg["kind"], features.shape[1], cfg["hidden"], cfg["num_buckets"], [], cfg["model_dim"], 0.1)
    is_val = np.arange(len(train_idx)) % VAL_EVERY == 0
    fit_idx, val_idx = train_idx[~is_val], train_idx[is_val]

    def part(idx):
        return torch.from_numpy(features[idx]), torch.zeros(len(idx), dtype=torch.long), y[idx]

    fit_head(head, part(fit_idx), part(val_idx), epochs=30, lr=1e-3, batch_size=256, weight_decay=0.01,
             seed=seed, model_dropout=0.0)
    return head_tau(head, features[eval_idx], y[eval_idx])
