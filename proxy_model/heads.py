"""Prediction heads over pooled encoder features, and their mapping back to output tokens.

Invariant: for every head kind, `Head.tokens(raw)` is strictly monotone in `Head.score(raw)`, so
ranking requests by predicted tokens is ranking by the head's score (SSJF order).
- regression: score = predicted log tokens; tokens = exp(score)
- classification: K quantile buckets of the training labels; score = expected log bucket median;
  tokens = exp(score), which shrinks toward the median
- ranking: pairwise logistic loss; score -> tokens by quantile mapping fitted on training rows
- listmle: listwise (ListMLE) loss over each batch sorted by true length; mapped like ranking
A head whose calibration buffers are non-empty (ranking always; any head after `Head.calibrate`,
e.g. by `python -m proxy_model.calibrate` on val rows) maps score -> log tokens through that strictly
monotone quantile mapping instead, so predicted tokens spread like the labels and the order is kept.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HEAD_KINDS = ("regression", "classification", "ranking", "listmle")
RANKING_KINDS = ("ranking", "listmle")  # scores without a unit: always mapped to tokens by calibration
MIN_TOKENS = 1.0


def head_input(pooled: torch.Tensor, log_len: torch.Tensor, feat: dict, texts: list[str]) -> torch.Tensor:
    """The head's input for a checkpoint's `features` config: `assemble`, then the lexical features of
    the predictor texts when `feat["lexical"]` (so training and `Predictor.features` agree)."""
    x = assemble(pooled, log_len, feat["layers"], feat["poolings"], feat["use_length"])
    if not feat.get("lexical"):
        return x
    from .lexical import lexical_features

    return torch.cat([x, torch.from_numpy(lexical_features(texts)).to(x.device)], dim=1)


def assemble(pooled: torch.Tensor, log_len: torch.Tensor, layers: list[int], poolings: list[int],
             use_length: bool) -> torch.Tensor:
    """[B, D] feature vector: selected (hidden state, pooling) vectors, optionally log length."""
    parts = [pooled[:, layer, pool, :] for layer in layers for pool in poolings]
    if use_length:
        parts.append(log_len[:, None])
    return torch.cat(parts, dim=1)


class Head(nn.Module):
    """Standardize -> [concat model embedding] -> MLP -> raw outputs (1 or K)."""

    def __init__(self, kind: str, in_dim: int, hidden: int = 256, num_buckets: int = 10,
                 model_names: list[str] | None = None, model_dim: int = 8, dropout: float = 0.1):
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"unknown head kind {kind!r}; choose from {HEAD_KINDS}")
        self.kind = kind
        self.model_names = list(model_names or [])
        out_dim = num_buckets if kind == "classification" else 1
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        # classification: log medians of buckets; calibration grid (score, log tokens): ranking
        # always, other kinds once calibrated (empty = none)
        self.register_buffer("bucket_log_medians", torch.zeros(num_buckets if kind == "classification" else 0))
        self.register_buffer("calib_scores", torch.zeros(0))
        self.register_buffer("calib_log_tokens", torch.zeros(0))
        # index 0 = unknown/absent model name (trained by model-name dropout)
        self.model_dim = model_dim if self.model_names else 0
        self.model_embedding = nn.Embedding(len(self.model_names) + 1, model_dim) if self.model_names else None
        layers: list[nn.Module] = [nn.Linear(in_dim + self.model_dim, hidden), nn.GELU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden, out_dim)) if hidden > 0 else nn.Linear(
            in_dim + self.model_dim, out_dim)

    def model_index(self, names: list[str | None] | None, n: int) -> torch.Tensor:
        return model_index(self.model_names, names, n)

    def forward(self, x: torch.Tensor, model_idx: torch.Tensor | None = None) -> torch.Tensor:
        x = (x - self.feature_mean) / self.feature_std
        if self.model_embedding is not None:
            if model_idx is None:
                model_idx = torch.zeros(len(x), dtype=torch.long, device=x.device)
            x = torch.cat([x, self.model_embedding(model_idx.to(x.device))], dim=1)
        return self.mlp(x)

    def loss(self, raw: torch.Tensor, tokens: torch.Tensor, bucket: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "regression":
            return F.smooth_l1_loss(raw[:, 0], log_tokens(tokens))
        if self.kind == "classification":
            return F.cross_entropy(raw, bucket)
        if self.kind == "listmle":
            return list_mle(raw[:, 0], tokens)
        return pairwise_logistic(raw[:, 0], tokens)

    def score(self, raw: torch.Tensor) -> torch.Tensor:
        if self.kind == "classification":
            return F.softmax(raw, dim=1) @ self.bucket_log_medians
        return raw[:, 0]

    def tokens(self, raw: torch.Tensor) -> np.ndarray:
        return self.score_tokens(self.score(raw).detach().double().cpu().numpy())

    def score_tokens(self, s: np.ndarray) -> np.ndarray:
        """Tokens for scores: exp(score), or exp(quantile mapping) when calibration is present."""
        if self.calib_scores.numel() == 0:
            return np.exp(s)
        return np.exp(interp_extrapolate(s, self.calib_scores.double().cpu().numpy(),
                                         self.calib_log_tokens.double().cpu().numpy()))

    def calibrate(self, scores: np.ndarray, tokens: np.ndarray) -> None:
        """Fit and store the score -> log tokens quantile mapping on (scores, label tokens) rows."""
        xs, ys = fit_calibration(scores, tokens)
        self.calib_scores.resize_(len(xs)).copy_(torch.tensor(xs, dtype=torch.float32))
        self.calib_log_tokens.resize_(len(ys)).copy_(torch.tensor(ys, dtype=torch.float32))


def fold_ensemble(heads: list[Head]) -> Head:
    """One head whose raw outputs are the mean of `heads`' raw outputs (logit averaging): their
    hidden layers side by side, output weights divided by K. Members must share kind, input
    standardization and buckets (trained on the same rows), with one hidden layer and no model names."""
    first = heads[0]
    for h in heads:
        if h.model_names or not isinstance(h.mlp, nn.Sequential) or h.kind != first.kind:
            raise ValueError("fold_ensemble needs MLP heads of one kind without model names")
        for name in ("feature_mean", "feature_std", "bucket_log_medians"):
            if not torch.equal(getattr(h, name), getattr(first, name)):
                raise ValueError(f"ensemble members differ in {name}: train them on the same rows")
    in_dim, hidden = first.mlp[0].in_features, first.mlp[0].out_features
    out = Head(first.kind, in_dim, hidden * len(heads), first.mlp[-1].out_features)
    with torch.no_grad():
        out.mlp[0].weight.copy_(torch.cat([h.mlp[0].weight for h in heads], 0))
        out.mlp[0].bias.copy_(torch.cat([h.mlp[0].bias for h in heads], 0))
        out.mlp[3].weight.copy_(torch.cat([h.mlp[3].weight for h in heads], 1) / len(heads))
        out.mlp[3].bias.copy_(torch.stack([h.mlp[3].bias for h in heads]).mean(0))
        for name in ("feature_mean", "feature_std", "bucket_log_medians"):
            getattr(out, name).resize_(getattr(first, name).shape).copy_(getattr(first, name))
    return out.eval()


def model_index(known: list[str], names: list[str | None] | None, n: int) -> torch.Tensor:
    """Embedding index per row: 1 + position in `known`, or 0 for None/unknown names."""
    lookup = {m: i + 1 for i, m in enumerate(known)}
    names = names if names is not None else [None] * n
    return torch.tensor([lookup.get(m, 0) if m is not None else 0 for m in names], dtype=torch.long)


def log_tokens(tokens: torch.Tensor) -> torch.Tensor:
    return torch.log(tokens.clamp(min=MIN_TOKENS))


def pairwise_logistic(score: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean log(1 + exp(-(s_i - s_j))) over pairs with tokens_i > tokens_j (longer ranks higher)."""
    diff = score[:, None] - score[None, :]
    longer = (tokens[:, None] > tokens[None, :]).to(score.dtype)
    return (F.softplus(-diff) * longer).sum() / longer.sum().clamp(min=1.0)


def list_mle(score: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """ListMLE: negative log Plackett-Luce likelihood of the batch ordered longest first (ties keep
    the batch's shuffled order), averaged over positions."""
    s = score[torch.argsort(tokens, descending=True, stable=True)]
    return (torch.logcumsumexp(s.flip(0), dim=0).flip(0) - s).mean()


def quantile_buckets(tokens: np.ndarray, num_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner bucket edges at training-label quantiles, and each of the `num_buckets` buckets' log median.

    Tied quantiles (e.g. most labels at a length cap) leave fewer distinct buckets; the unused top classes
    get the top bucket's median, so the head keeps `num_buckets` outputs and no label ever names them."""
    edges = np.unique(np.quantile(tokens, np.linspace(0, 1, num_buckets + 1)[1:-1]))
    bucket = np.searchsorted(edges, tokens, side="right")
    medians = [np.median(tokens[bucket == k]) if np.any(bucket == k) else edges[min(k, len(edges) - 1)]
               for k in range(len(edges) + 1)]
    medians += [medians[-1]] * (num_buckets - len(medians))
    return edges, np.log(np.maximum(np.array(medians), MIN_TOKENS))


def fit_calibration(scores: np.ndarray, tokens: np.ndarray, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Quantile mapping: the q-quantile of training scores maps to the q-quantile of log tokens.

    Both grids are made strictly increasing, so the mapping is strictly monotone.
    """
    q = np.linspace(0.0, 1.0, points)
    s = np.quantile(scores, q)
    y = np.quantile(np.log(np.maximum(tokens, MIN_TOKENS)), q)
    ramp = np.arange(points) * 1e-6
    return np.maximum.accumulate(s) + ramp * max(1.0, float(np.ptp(s))), np.maximum.accumulate(y) + ramp


def interp_extrapolate(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Piecewise-linear through (xs, ys); beyond the ends y moves on by log1p(end slope * distance),
    which starts with the end slope and stays strictly monotone and finite (exp(y) > 0, no clip)."""
    lo_slope = (ys[1] - ys[0]) / max(xs[1] - xs[0], 1e-12)
    hi_slope = (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-12)
    below = ys[0] - np.log1p(lo_slope * np.maximum(xs[0] - x, 0.0))
    above = ys[-1] + np.log1p(hi_slope * np.maximum(x - xs[-1], 0.0))
    return np.where(x < xs[0], below, np.where(x > xs[-1], above, np.interp(x, xs, ys)))
