"""Fit the simulator's CostModel to a live run's rows.

Invariant: the fitted model is the simulator's own (bench.sim.engine: a = stall per joining request,
p = prefill per prompt token, step(n) = b + g * (n - 1) for n sequences on a replica, h = dispatch
latency, c = client latency). c is read first: a queued request is dispatched when a slot is
released, and the client sees the releasing request finish c later, so c is the mode of the gaps
between queued dispatches and same-replica finishes. The rest is solved by non-negative least
squares over two kinds of rows, with n, k and joins read from the rows' replica ids and times:
- first token: engine TTFT (first token - sent - queue wait) - c = h + boundary wait + a * k + p *
  (prompt tokens of the k requests starting in the same step) + step(n)  [none/dynamic: from batch
  start, and h is not told apart from a: both delay the whole batch]
- decode: TPOT = (finished - first token) / (output tokens - 1) = b + g * (mean other sequences over
  its steps) + (a * joins + p * joined prompt tokens) / (output tokens - 1)    [a join stalls all]
Only the decode rows see other requests' joins, so they tell the stall (a, p) apart from the latency
h, which stalls nobody. Each kind is weighted by 1 / its residual spread, and the fit is iterated
because the step clock behind "mean other sequences" discounts the fitted join stalls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from bench.sim.engine import CostModel
from bench.sim.records import Requests, RunError, RunKey, Setup


@dataclass
class _Features:
    """Design rows for theta = (a, p, b, g, h) and their targets."""

    ttft_x: np.ndarray
    ttft_y: np.ndarray
    tpot_x: np.ndarray
    tpot_y: np.ndarray
    tpot_other_seqs: np.ndarray  # mean sequences on the OTHER replicas during each decode (diagnostic)


@dataclass
class Fit:
    cost: CostModel
    quality: dict


def _le(sorted_x: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_x, x, side="right")


def _lt(sorted_x: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_x, x, side="left")


def _mean_concurrency(start_s: np.ndarray, end_s: np.ndarray, lo_s: np.ndarray, hi_s: np.ndarray) -> np.ndarray:
    """Time-average number of intervals [start, end] covering t, over each window [lo, hi]."""
    x = np.concatenate([start_s, end_s])
    order = np.argsort(x, kind="stable")
    x = x[order]
    count = np.cumsum(np.concatenate([np.ones(start_s.size), -np.ones(end_s.size)])[order])
    area = np.concatenate([[0.0], np.cumsum(count[:-1] * np.diff(x))])
    return (np.interp(hi_s, x, area) - np.interp(lo_s, x, area)) / (hi_s - lo_s)


def _tpot_s(req: Requests) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = (req.finished_s - req.first_token_s) / (req.output_tokens - 1)
    return np.where(req.ok & (req.output_tokens >= 2), tpot, np.nan)


def _continuous_ttft(d, f, e, prompt, wait, eps_s, on_release: bool) -> tuple[np.ndarray, np.ndarray]:
    """A request reaches the replica h after its dispatch and joins the running batch at a step
    boundary (half a step away on average when the replica is busy, unless it was queued and
    `on_release`: dispatched at a release, on a boundary, with h within the same-step tolerance) and
    its join step costs a + p * prompt per joiner plus step(n)."""
    order = np.argsort(f)
    fs, cum_prompt = f[order], np.concatenate([[0], np.cumsum(prompt[order])])
    k = _le(fs, f + eps_s) - _lt(fs, f - eps_s)
    k_prompt = cum_prompt[_le(fs, f + eps_s)] - cum_prompt[_lt(fs, f - eps_s)]
    n_join = _le(fs, f + eps_s) - _lt(np.sort(e), f - eps_s)
    busy = ((_lt(np.sort(d), d) - _le(np.sort(e), d)) > 0) & ((wait <= eps_s) | (not on_release))
    half = 0.5 * busy
    x = np.column_stack([k, k_prompt, 1.0 + half, (n_join - 1) + half * np.maximum(n_join - k - 1, 0),
                         np.ones(f.size)])
    return x, f - d


class _Joins:
    """One replica's joins (first tokens) in time order, with prefix sums of their prompt tokens and of
    their stall estimates (a + p * prompt), to sum over joins ending in a window (lo, hi]."""

    def __init__(self, f: np.ndarray, prompt: np.ndarray, stall_s: np.ndarray) -> None:
        order = np.argsort(f)
        self.first_s = f[order]
        self._cum_prompt = np.concatenate([[0.0], np.cumsum(prompt[order])])
        self._cum_stall = np.concatenate([[0.0], np.cumsum(stall_s[order])])

    def _between(self, cum: np.ndarray, lo, hi):
        return cum[_le(self.first_s, hi)] - cum[_le(self.first_s, lo)]

    def count(self, lo, hi):
        return _le(self.first_s, hi) - _le(self.first_s, lo)

    def prompt_tokens(self, lo, hi):
        return self._between(self._cum_prompt, lo, hi)

    def step_time_s(self, lo, hi):
        """Window length minus the join stalls in it: time spent in plain steps."""
        return np.maximum(np.asarray(hi) - lo - self._between(self._cum_stall, lo, hi), 1e-12)


def _mean_other_members(f, e, out, joins: _Joins, eps_s: float) -> np.ndarray:
    """Per request: mean number of OTHER sequences in the batch over its out-1 decode steps. The
    steps shared with each other member are counted on the step clock (time minus join stalls) of
    whichever of the two has more of its own decode in the overlap (exact when one contains the
    other); a member that joined inside the decode adds its join step."""
    order, longest_s = np.argsort(f), float(np.max(e - f))
    life_s = joins.step_time_s(f + eps_s, e + eps_s)
    mean = np.zeros(f.size)
    for i in np.flatnonzero(out >= 2):
        j = order[_lt(f[order], f[i] - longest_s - eps_s):_le(f[order], e[i] + eps_s)]
        j = j[(j != i) & (e[j] > f[i])]
        lo, hi = np.maximum(f[i], f[j]) + eps_s, np.minimum(e[i], e[j]) + eps_s
        shared_s = np.where(hi > lo, joins.step_time_s(lo, np.maximum(hi, lo)), 0.0)
        joined = (f[j] > f[i] + eps_s) & (f[j] <= e[i] + eps_s)
        by_i = (out[i] - 1) * shared_s / life_s[i]
        by_j = (out[j] - 1) * shared_s / life_s[j]
        mean[i] = (np.where(shared_s / life_s[j] >= shared_s / life_s[i], by_j, by_i) + joined).sum() / (out[i] - 1)
    return mean


def _continuous_tpot(f, e, prompt, out, tpot, eps_s, stall) -> tuple[np.ndarray, np.ndarray]:
    """Mean other members over the decode steps, plus the joins whose join step ended inside the
    decode (each stalls every member); `stall` = (a, p) of the previous fit iteration."""
    joins = _Joins(f, prompt, stall[0] + stall[1] * prompt)
    lo, hi, steps = f + eps_s, e + eps_s, np.maximum(out - 1, 1)
    x = np.column_stack([joins.count(lo, hi) / steps, joins.prompt_tokens(lo, hi) / steps, np.ones(f.size),
                         _mean_other_members(f, e, out, joins, eps_s), np.zeros(f.size)])
    return x, tpot


def _batch_rows(d, f, prompt, tpot, eps_s, batch_size, batch_wait_s) -> tuple:
    """Static batches (none = batches of one): members share their first token; a batch starts when
    full or `batch_wait_s` after its first dispatch, and costs a + p * its prompts + step(size)."""
    order = np.argsort(f)
    fo = f[order]
    starts = np.flatnonzero(np.concatenate([[True], np.diff(fo) > eps_s]))
    size = np.diff(np.concatenate([starts, [fo.size]]))
    d_max, d_min = np.maximum.reduceat(d[order], starts), np.minimum.reduceat(d[order], starts)
    batch_start_s = np.where(size >= batch_size, d_max, d_min + batch_wait_s)
    per = lambda values: np.repeat(values, size)[np.argsort(order)]  # noqa: E731 batch value per request
    n, ones = per(size).astype(float), np.ones(f.size)
    ttft_x = np.column_stack([ones, per(np.add.reduceat(prompt[order], starts)), ones, n - 1, 0 * ones])
    tpot_x = np.column_stack([0 * ones, 0 * ones, ones, n - 1, 0 * ones])
    return ttft_x, f - per(batch_start_s), tpot_x, tpot


def _replica_features(req: Requests, mask: np.ndarray, setup: Setup, eps_s: float, prev: np.ndarray) -> tuple:
    """Rows of one replica; `prev` = theta of the previous fit iteration, with c last (known)."""
    d, f, e = req.dispatch_s[mask] + prev[5], req.first_token_s[mask], req.finished_s[mask]
    prompt, out, tpot = req.prompt_tokens[mask], req.output_tokens[mask], _tpot_s(req)[mask]
    if setup.batching == "continuous":
        ttft_x, ttft_y = _continuous_ttft(d, f, e, prompt, req.queue_wait_s[mask], eps_s, prev[4] <= eps_s)
        return (ttft_x, ttft_y) + _continuous_tpot(f, e, prompt, out, tpot, eps_s, prev[:2])
    batch_size = 1 if setup.batching == "none" else setup.max_batch_size
    return _batch_rows(d, f, prompt, tpot, eps_s, batch_size, setup.batch_wait_s)


def _member_intervals(req: Requests, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tpot = _tpot_s(req)
    step_s = np.where(np.isfinite(tpot), tpot, np.nanmedian(tpot) if np.isfinite(tpot).any() else 0.0)
    return (req.first_token_s - step_s)[mask], req.finished_s[mask]


def _has_replica(req: Requests) -> np.ndarray:
    return np.array([r is not None for r in req.replica], dtype=bool)


def _group_features(req: Requests, setup: Setup, eps_s: float, prev: np.ndarray) -> _Features:
    usable = req.ok & np.isfinite(req.first_token_s) & np.isfinite(req.queue_wait_s) & _has_replica(req)
    parts, others = [], []
    all_start, all_end = _member_intervals(req, usable)
    for replica in sorted(set(req.replica[usable])):
        mask = usable & (req.replica == replica)
        ttft_x, ttft_y, tpot_x, tpot_y = _replica_features(req, mask, setup, eps_s, prev)
        keep = np.isfinite(tpot_y)
        lo, hi = req.first_token_s[mask][keep], req.finished_s[mask][keep]
        own = _mean_concurrency(*_member_intervals(req, mask), lo, hi) if keep.any() else np.zeros(0)
        total = _mean_concurrency(all_start, all_end, lo, hi) if keep.any() else np.zeros(0)
        parts.append((ttft_x, ttft_y, tpot_x[keep], tpot_y[keep]))
        others.append(total - own)
    if not parts:
        return _Features(np.zeros((0, 5)), np.zeros(0), np.zeros((0, 5)), np.zeros(0), np.zeros(0))
    return _Features(*(np.concatenate(p) for p in zip(*parts)), np.concatenate(others))


def _nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    return nnls(x / scale, y)[0] / scale


def _quality(y: np.ndarray, y_hat: np.ndarray) -> tuple[float, float, float]:
    """(R², residual mean, residual standard deviation); R² is NaN when y does not vary."""
    if y.size < 2:
        return math.nan, math.nan, math.nan
    resid = y - y_hat
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    varies = np.ptp(y) > 1e-9 * max(float(np.abs(y).max()), 1e-12)
    r2 = 1.0 - float(np.sum(resid ** 2)) / ss_tot if varies else math.nan
    return r2, float(resid.mean()), float(resid.std())


def _contention(resid: np.ndarray, other_seqs: np.ndarray) -> tuple[float, float]:
    """Slope (s per token per sequence) and R² of the decode residual on the other replicas' load."""
    if resid.size < 3 or np.std(other_seqs) == 0 or np.std(resid) == 0:
        return 0.0, 0.0
    return float(np.polyfit(other_seqs, resid, 1)[0]), float(np.corrcoef(other_seqs, resid)[0, 1] ** 2)


FIT_ITERATIONS = 8  # the row weights and (continuous) the decode features depend on the previous fit


def _stacked_features(groups: dict[RunKey, Requests], setup: Setup, eps_s: float, prev) -> _Features:
    feats = [_group_features(r, setup, eps_s, prev) for r in groups.values()]
    return _Features(*(np.concatenate([getattr(x, name) for x in feats]) for name in _Features.__dataclass_fields__))


def _weighted_nnls(f: _Features, weights: tuple[float, float]) -> np.ndarray:
    x = np.vstack([weights[0] * f.ttft_x, weights[1] * f.tpot_x])
    return _nnls(x, np.concatenate([weights[0] * f.ttft_y, weights[1] * f.tpot_y]))


def _solve(groups: dict[RunKey, Requests], setup: Setup, eps_s: float, client_s: float) -> tuple:
    """Fixed point: fit theta = (a, p, b, g, h); weight each kind of row by 1 / its residual spread
    (first-token times carry the unobserved wait for a step boundary, decode times do not); re-derive
    the step clocks with the fitted join stalls; refit, until stable."""
    theta, weights = np.zeros(5), (1.0, 1.0)
    for _ in range(FIT_ITERATIONS):
        f = _stacked_features(groups, setup, eps_s, np.append(theta, client_s))
        if f.ttft_y.size + f.tpot_y.size < 4:
            raise RunError("too few completed rows with first_token_s, queue_wait_s and replica to fit a cost model")
        previous, theta = theta, _weighted_nnls(f, weights)
        spread = [max(float(np.std(y - x @ theta)), 1e-6) if y.size > 1 else 1.0
                  for x, y in ((f.ttft_x, f.ttft_y), (f.tpot_x, f.tpot_y))]
        weights = (1.0 / spread[0], 1.0 / spread[1])
        if np.allclose(theta, previous, rtol=1e-3, atol=1e-9):
            break
    return theta, f


def _release_gaps_s(req: Requests, eps_s: float) -> np.ndarray:
    """Per queued request, the finishes on its replica minus its dispatch, within [-eps, the run's
    median engine TTFT] (every engine TTFT includes the client latency)."""
    ok = req.ok & np.isfinite(req.queue_wait_s) & np.isfinite(req.first_token_s) & _has_replica(req)
    d, gaps = req.dispatch_s, [np.zeros(0)]
    hi_s = float(np.median((req.first_token_s - d)[ok])) if ok.any() else 0.0
    for replica in set(req.replica[ok]):
        e = np.sort(req.finished_s[ok & (req.replica == replica)])
        dq = d[ok & (req.replica == replica) & (req.queue_wait_s > eps_s)]
        lo, n = _lt(e, dq - eps_s), _le(e, dq + hi_s) - _lt(e, dq - eps_s)
        idx = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())
        gaps.append(e[idx] - np.repeat(dq, n))
    return np.concatenate(gaps)


def _client_latency_s(groups: dict[RunKey, Requests], eps_s: float) -> float:
    """c: the mode (Gaussian kernel, bandwidth eps) of the gaps from queued dispatches to the finishes
    on their replica: the releasing finish comes exactly c after the dispatch, the others spread out.
    0 when nothing was queued."""
    gaps = np.concatenate([_release_gaps_s(r, eps_s) for r in groups.values()])
    if not gaps.size:
        return 0.0
    edges = np.arange(-eps_s, gaps.max() + 2 * eps_s, eps_s / 4)
    counts = np.histogram(gaps, edges)[0]
    density = np.convolve(counts, np.exp(-0.5 * (np.arange(-16, 17) / 4) ** 2))[16:16 + counts.size]
    return max(0.0, float(edges[np.argmax(density)] + eps_s / 8))


def fit_cost(groups: dict[RunKey, Requests], setup: Setup) -> Fit:
    """Fit (a, p, b, g, h, c) over every policy run's completed rows (see the module docstring)."""
    tpots = np.concatenate([_tpot_s(r) for r in groups.values()])
    tpots = tpots[np.isfinite(tpots)]
    eps_s = 0.25 * float(np.percentile(tpots, 10)) if tpots.size else 1e-3  # "same step" tolerance
    client_s = _client_latency_s(groups, eps_s)
    theta, f = _solve(groups, setup, eps_s, client_s)
    a, p, b, g, h = (float(x) for x in theta)
    ttft_r2, ttft_mean, ttft_sd = _quality(f.ttft_y, f.ttft_x @ theta)
    tpot_r2, _, tpot_sd = _quality(f.tpot_y, f.tpot_x @ theta)
    slope, slope_r2 = _contention(f.tpot_y - f.tpot_x @ theta, f.tpot_other_seqs)
    cost = CostModel(request_overhead_s=a, per_token_s=b, step_growth_s=g, batch_size=setup.max_batch_size,
                     batch_wait_s=setup.batch_wait_s, prefill_per_prompt_token_s=p, dispatch_latency_s=h,
                     client_latency_s=client_s)
    quality = {"num_ttft_rows": int(f.ttft_y.size), "ttft_r2": ttft_r2, "ttft_resid_mean_s": ttft_mean,
               "ttft_resid_sd_s": ttft_sd,
               "num_tpot_rows": int(f.tpot_y.size), "tpot_r2": tpot_r2, "tpot_resid_sd_s": tpot_sd,
               "tpot_other_replica_slope_s": slope, "tpot_other_replica_r2": slope_r2,
               "same_step_tolerance_s": eps_s}
    return Fit(cost, quality)

