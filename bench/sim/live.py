"""Calibrate the simulator against a live replay, replay the same workload, and extrapolate it.

Invariant: the simulator is fed only what the live run recorded (arrival = `sent_s`, true lengths,
predictions, prompt sizes, replica count, slots, batching, scheduler config) plus a CostModel fitted
from those same rows; every ordering decision is still router.Scheduler's. Times are seconds on the
client clock from the start of each policy run. Simulated runs are emitted in the live row format,
so one set of statistics (and the fit itself) applies to both.

    python -m bench.sim.live --run DIR [--json]
    python -m bench.sim.live --run DIR --replicas 64 --loads 0.5,0.75,1.0,1.25,1.5 [--cost fitted|gpu]

The fit is the simulator's own cost model (bench.sim.engine: a = overhead per request, p = prefill
per prompt token, step(n) = b + g * (n - 1) for n sequences on a replica), solved by non-negative
least squares over two kinds of rows, with n, k and joins read from the rows' replica ids and times:
- first token: engine TTFT (first token - sent - queue wait) = boundary wait + a * k + p * (prompt
  tokens of the k requests starting in the same step) + step(n)    [none/dynamic: from batch start]
- decode: TPOT = (finished - first token) / (output tokens - 1) = b + g * (mean other sequences over
  its steps) + (a * joins + p * joined prompt tokens) / (output tokens - 1)    [a join stalls all]
Each kind is weighted by 1 / its residual spread, and the fit is iterated because the step clock
behind "mean other sequences" discounts the fitted join stalls. The replay compares live and
simulated JCT on the requests the live run completed (failed live requests are still simulated).
The last stdout line is one JSON object: fit, agreement, details, extrapolation (when asked).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from bench.sim import workload as wl
from bench.sim.cluster import Workload, build_simulation, simulate
from bench.sim.engine import CostModel, nominal_capacity_rps
from router import POLICIES, SchedulerConfig

REQUIRED_KEYS = ("policy", "index", "sent_s", "expected_output_tokens")
NUMERIC_KEYS = ("sent_s", "first_token_s", "finished_s", "queue_wait_s", "output_tokens", "prompt_tokens",
                "expected_output_tokens", "predicted_output_tokens", "round", "load")
RECORD_FIELDS = ("max_tokens", "ignore_eos", "priority")  # optional RequestRecord keywords a row may carry
BATCHING_MODES = ("none", "dynamic", "continuous")
ENGINE_BATCH_WAIT_S = 0.010  # engine.batch_wait_ms default, used when summary.json's setup has none
AGREEMENT_TOLERANCE = 0.15
DEFAULT_LOADS = "0.5,0.75,1.0,1.25,1.5"
# A GPU-like engine: an 8B model in bf16 on one H100 under Hugging Face generate-style batching
# (this project's engine): ~25 ms per decode step at small batch, +0.3 ms per extra sequence,
# prefill ~0.1 ms per prompt token (~10k tokens/s), ~20 ms per-request overhead (HTTP, prediction,
# tokenization, scheduling), 16 slots per replica as in configs/gpu.yaml.
GPU_COST = CostModel(request_overhead_s=0.020, per_token_s=0.025, step_growth_s=0.0003, batch_size=16,
                     batch_wait_s=ENGINE_BATCH_WAIT_S, prefill_per_prompt_token_s=0.0001)


class RunError(ValueError):
    """A live run directory that cannot be read; the message names the file (and line)."""


# ---- reading a run ---------------------------------------------------------------------------------
RunKey = tuple[float, int, str]  # (load, round, arm label) of one policy run; rows without a load: 0


def policy_of(label: str) -> str:
    """An arm label is POLICY[@KEY=VALUE...] (bench.replay); a plain policy name is its own label."""
    return label.split("@", 1)[0]


@dataclass(frozen=True)
class Setup:
    batching: str
    num_replicas: int
    max_batch_size: int
    batch_wait_s: float
    scheduler: dict
    arms: dict = field(default_factory=dict)  # label -> {"scheduler.KEY": value} overrides
    client_max_tokens: int | None = None  # the max_tokens cap every replayed request carried
    primary_load: float | None = None

    def config(self, label: str) -> SchedulerConfig:
        overrides = {k.split(".", 1)[1]: v for k, v in self.arms.get(label, {}).items() if k.startswith("scheduler.")}
        return SchedulerConfig.from_dict({**self.scheduler, **overrides, "policy": policy_of(label)})


@dataclass
class Requests:
    """One policy run (RunKey) as aligned arrays sorted by `sent_s`; NaN where a row had null."""

    load: float
    round: int
    label: str
    index: np.ndarray
    sent_s: np.ndarray
    first_token_s: np.ndarray
    finished_s: np.ndarray
    queue_wait_s: np.ndarray
    output_tokens: np.ndarray
    prompt_tokens: np.ndarray
    expected_output_tokens: np.ndarray
    predicted_output_tokens: np.ndarray
    replica: np.ndarray  # object: str or None
    ok: np.ndarray  # completed without error
    extras: list[dict]  # RECORD_FIELDS present in the row

    @property
    def dispatch_s(self) -> np.ndarray:
        return self.sent_s + self.queue_wait_s

    @property
    def jct_s(self) -> np.ndarray:
        return self.finished_s - self.sent_s


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_row(row, where: str) -> None:
    if not isinstance(row, dict):
        raise RunError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in REQUIRED_KEYS:
        if row.get(key) is None:
            raise RunError(f"{where}: row has no {key!r} (required in every row: {', '.join(REQUIRED_KEYS)})")
    if not isinstance(row["policy"], str) or policy_of(row["policy"]) not in POLICIES:
        raise RunError(f"{where}: unknown policy {row['policy']!r}; valid: {', '.join(POLICIES)}, "
                       f"optionally followed by @KEY=VALUE")
    for key in NUMERIC_KEYS:
        if row.get(key) is not None and not _is_number(row[key]):
            raise RunError(f"{where}: {key!r} must be a number or null, got {row[key]!r}")


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise RunError(f"{path}: no such file (expected the live replay's per-request rows)")
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            _check_row(row, f"{path}:{lineno}")
            rows.append(row)
    if not rows:
        raise RunError(f"{path}: no rows")
    return rows


def read_setup(path: Path) -> Setup:
    if not path.is_file():
        raise RunError(f"{path}: no such file (expected the live replay's summary.json)")
    try:
        summary = json.loads(path.read_text())
        setup = summary.get("setup")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise RunError(f"{path}: not a JSON object ({exc})") from None
    if not isinstance(setup, dict):
        raise RunError(f"{path}: no 'setup' object")
    missing = [k for k in ("batching", "num_replicas", "max_batch_size", "scheduler") if setup.get(k) is None]
    if missing:
        raise RunError(f"{path}: setup lacks {missing}")
    if setup["batching"] not in BATCHING_MODES:
        raise RunError(f"{path}: setup.batching {setup['batching']!r} is not one of {BATCHING_MODES}")
    wait_ms = setup.get("batch_wait_ms")
    out = Setup(setup["batching"], int(setup["num_replicas"]), int(setup["max_batch_size"]),
                float(setup.get("batch_wait_s", ENGINE_BATCH_WAIT_S if wait_ms is None else wait_ms / 1000.0)),
                {k: v for k, v in setup["scheduler"].items() if k != "policy"}, dict(setup.get("arms") or {}),
                setup.get("client_max_tokens"), summary.get("primary_load", setup.get("load")))
    for label in ["fcfs", *out.arms]:
        try:
            out.config(label)
        except (TypeError, ValueError) as exc:
            raise RunError(f"{path}: setup.scheduler (arm {label!r}) is not a valid SchedulerConfig: {exc}") from None
    return out


def _column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], dtype=float)


def _requests(key: RunKey, rows: list[dict]) -> Requests:
    rows = sorted(rows, key=lambda r: r["sent_s"])
    ints = lambda name: np.array([int(r.get(name) or 0) for r in rows], dtype=np.int64)  # noqa: E731
    finished_s = _column(rows, "finished_s")
    return Requests(
        *key, index=np.array([r["index"] for r in rows]), sent_s=_column(rows, "sent_s"),
        first_token_s=_column(rows, "first_token_s"), finished_s=finished_s,
        queue_wait_s=_column(rows, "queue_wait_s"), output_tokens=ints("output_tokens"),
        prompt_tokens=ints("prompt_tokens"), expected_output_tokens=ints("expected_output_tokens"),
        predicted_output_tokens=_column(rows, "predicted_output_tokens"),
        replica=np.array([r.get("replica") for r in rows], dtype=object),
        ok=np.array([r.get("error") is None for r in rows]) & np.isfinite(finished_s),
        extras=[{k: r[k] for k in RECORD_FIELDS if r.get(k) is not None} for r in rows])


def _run_order(key: RunKey) -> tuple:
    load, round_, label = key
    return load, round_, POLICIES.index(policy_of(label)), label


def to_requests(rows: list[dict]) -> dict[RunKey, Requests]:
    """Rows -> one Requests per (load, round, arm label); a missing round or load counts as 0."""
    groups: dict[RunKey, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(float(row.get("load") or 0.0), int(row.get("round") or 0), row["policy"])].append(row)
    return {key: _requests(key, groups[key]) for key in sorted(groups, key=_run_order)}


def write_run(out_dir: Path, rows: list[dict], setup: dict, **summary) -> None:
    """Write rows + setup (+ top-level summary keys) in the live replay's layout."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out_dir / "summary.json").write_text(json.dumps({"setup": setup, **summary}, indent=2) + "\n")


# ---- the fit ---------------------------------------------------------------------------------------
@dataclass
class _Features:
    """Design rows for theta = (a, p, b, g) and their targets."""

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


def _continuous_ttft(d, f, e, prompt, wait, eps_s) -> tuple[np.ndarray, np.ndarray]:
    """A request joins the running batch at a step boundary (half a step away on average when it was
    dispatched without queueing to a busy replica; a queued one is dispatched at a release, on a
    boundary) and its join step costs a + p * prompt per joiner plus step(n)."""
    order = np.argsort(f)
    fs, cum_prompt = f[order], np.concatenate([[0], np.cumsum(prompt[order])])
    k = _le(fs, f + eps_s) - _lt(fs, f - eps_s)
    k_prompt = cum_prompt[_le(fs, f + eps_s)] - cum_prompt[_lt(fs, f - eps_s)]
    n_join = _le(fs, f + eps_s) - _lt(np.sort(e), f - eps_s)
    busy = ((_lt(np.sort(d), d) - _le(np.sort(e), d)) > 0) & (wait <= eps_s)
    half = 0.5 * busy
    x = np.column_stack([k, k_prompt, 1.0 + half, (n_join - 1) + half * np.maximum(n_join - k - 1, 0)])
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
                         _mean_other_members(f, e, out, joins, eps_s)])
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
    ttft_x = np.column_stack([ones, per(np.add.reduceat(prompt[order], starts)), ones, n - 1])
    tpot_x = np.column_stack([0 * ones, 0 * ones, ones, n - 1])
    return ttft_x, f - per(batch_start_s), tpot_x, tpot


def _replica_features(req: Requests, mask: np.ndarray, setup: Setup, eps_s: float, stall) -> tuple:
    d, f, e = req.dispatch_s[mask], req.first_token_s[mask], req.finished_s[mask]
    prompt, out, tpot = req.prompt_tokens[mask], req.output_tokens[mask], _tpot_s(req)[mask]
    if setup.batching == "continuous":
        ttft_x, ttft_y = _continuous_ttft(d, f, e, prompt, req.queue_wait_s[mask], eps_s)
        return (ttft_x, ttft_y) + _continuous_tpot(f, e, prompt, out, tpot, eps_s, stall)
    batch_size = 1 if setup.batching == "none" else setup.max_batch_size
    return _batch_rows(d, f, prompt, tpot, eps_s, batch_size, setup.batch_wait_s)


def _member_intervals(req: Requests, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tpot = _tpot_s(req)
    step_s = np.where(np.isfinite(tpot), tpot, np.nanmedian(tpot) if np.isfinite(tpot).any() else 0.0)
    return (req.first_token_s - step_s)[mask], req.finished_s[mask]


def _group_features(req: Requests, setup: Setup, eps_s: float, stall: tuple[float, float]) -> _Features:
    has_replica = np.array([r is not None for r in req.replica], dtype=bool)
    usable = req.ok & np.isfinite(req.first_token_s) & np.isfinite(req.queue_wait_s) & has_replica
    parts, others = [], []
    all_start, all_end = _member_intervals(req, usable)
    for replica in sorted(set(req.replica[usable])):
        mask = usable & (req.replica == replica)
        ttft_x, ttft_y, tpot_x, tpot_y = _replica_features(req, mask, setup, eps_s, stall)
        keep = np.isfinite(tpot_y)
        lo, hi = req.first_token_s[mask][keep], req.finished_s[mask][keep]
        own = _mean_concurrency(*_member_intervals(req, mask), lo, hi) if keep.any() else np.zeros(0)
        total = _mean_concurrency(all_start, all_end, lo, hi) if keep.any() else np.zeros(0)
        parts.append((ttft_x, ttft_y, tpot_x[keep], tpot_y[keep]))
        others.append(total - own)
    if not parts:
        return _Features(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4)), np.zeros(0), np.zeros(0))
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


def _stacked_features(groups: dict[RunKey, Requests], setup: Setup, eps_s: float, stall) -> _Features:
    feats = [_group_features(r, setup, eps_s, stall) for r in groups.values()]
    return _Features(*(np.concatenate([getattr(x, name) for x in feats]) for name in _Features.__dataclass_fields__))


def _weighted_nnls(f: _Features, weights: tuple[float, float]) -> np.ndarray:
    x = np.vstack([weights[0] * f.ttft_x, weights[1] * f.tpot_x])
    return _nnls(x, np.concatenate([weights[0] * f.ttft_y, weights[1] * f.tpot_y]))


def _solve(groups: dict[RunKey, Requests], setup: Setup, eps_s: float) -> tuple[np.ndarray, _Features]:
    """Fixed point: fit; weight each kind of row by 1 / its residual spread (first-token times carry
    the unobserved wait for a step boundary, decode times do not); re-derive the step clocks with the
    fitted join stalls; refit, until stable."""
    theta, weights = np.zeros(4), (1.0, 1.0)
    for _ in range(FIT_ITERATIONS):
        f = _stacked_features(groups, setup, eps_s, (theta[0], theta[1]))
        if f.ttft_y.size + f.tpot_y.size < 4:
            raise RunError("too few completed rows with first_token_s, queue_wait_s and replica to fit a cost model")
        previous, theta = theta, _weighted_nnls(f, weights)
        spread = [max(float(np.std(y - x @ theta)), 1e-6) if y.size > 1 else 1.0
                  for x, y in ((f.ttft_x, f.ttft_y), (f.tpot_x, f.tpot_y))]
        weights = (1.0 / spread[0], 1.0 / spread[1])
        if np.allclose(theta, previous, rtol=1e-3, atol=1e-9):
            break
    return theta, f


def fit_cost(groups: dict[RunKey, Requests], setup: Setup) -> Fit:
    """Fit (a, p, b, g) over every policy run's completed rows (see the module docstring)."""
    tpots = np.concatenate([_tpot_s(r) for r in groups.values()])
    tpots = tpots[np.isfinite(tpots)]
    eps_s = 0.25 * float(np.percentile(tpots, 10)) if tpots.size else 1e-3  # "same step" tolerance
    theta, f = _solve(groups, setup, eps_s)
    a, p, b, g = (float(x) for x in theta)
    ttft_r2, ttft_mean, ttft_sd = _quality(f.ttft_y, f.ttft_x @ theta)
    tpot_r2, _, tpot_sd = _quality(f.tpot_y, f.tpot_x @ theta)
    slope, slope_r2 = _contention(f.tpot_y - f.tpot_x @ theta, f.tpot_other_seqs)
    cost = CostModel(request_overhead_s=a, per_token_s=b, step_growth_s=g, batch_size=setup.max_batch_size,
                     batch_wait_s=setup.batch_wait_s, prefill_per_prompt_token_s=p)
    quality = {"num_ttft_rows": int(f.ttft_y.size), "ttft_r2": ttft_r2, "ttft_resid_mean_s": ttft_mean,
               "ttft_resid_sd_s": ttft_sd,
               "num_tpot_rows": int(f.tpot_y.size), "tpot_r2": tpot_r2, "tpot_resid_sd_s": tpot_sd,
               "tpot_other_replica_slope_s": slope, "tpot_other_replica_r2": slope_r2,
               "same_step_tolerance_s": eps_s}
    return Fit(cost, quality)


def describe_fit(fit: Fit) -> list[str]:
    c, q = fit.cost, fit.quality
    ms = lambda seconds: 1e3 * seconds  # noqa: E731
    return [
        f"fit: overhead a = {ms(c.request_overhead_s):.2f} ms/request, prefill p = "
        f"{ms(c.prefill_per_prompt_token_s):.4f} ms/prompt token, decode step b = {ms(c.per_token_s):.2f} ms"
        f" + g = {ms(c.step_growth_s):.3f} ms per extra sequence (slots {c.batch_size})",
        f"  first-token rows: {q['num_ttft_rows']}, R² {q['ttft_r2']:.3f}, residual mean "
        f"{ms(q['ttft_resid_mean_s']):+.1f} ms, sd {ms(q['ttft_resid_sd_s']):.1f} ms",
        f"  decode rows (TPOT): {q['num_tpot_rows']}, R² {q['tpot_r2']:.3f}, residual sd "
        f"{ms(q['tpot_resid_sd_s']):.2f} ms/token",
        f"  not modelled: TPOT residual vs sequences on OTHER replicas: {ms(q['tpot_other_replica_slope_s']):+.3f}"
        f" ms/token per sequence (R² {q['tpot_other_replica_r2']:.3f})",
    ]


# ---- replaying the live workload -------------------------------------------------------------------
def replay_workload(req: Requests, setup: Setup) -> Workload:
    """The live arrivals, true lengths (generated when completed, else the replayed length),
    predictions (a missing one: the run's median), prompt sizes and the record fields the router saw
    (the row's own, else the run's client max_tokens cap)."""
    true = np.where(req.ok & (req.output_tokens > 0), req.output_tokens, req.expected_output_tokens)
    pred = req.predicted_output_tokens
    fill = float(np.nanmedian(pred)) if np.isfinite(pred).any() else 0.0
    fields = req.extras
    if setup.client_max_tokens is not None:
        fields = [{"max_tokens": max(int(t), setup.client_max_tokens), **extra}
                  for t, extra in zip(req.expected_output_tokens.tolist(), req.extras)]
    return Workload(req.sent_s, np.maximum(true, 1), np.where(np.isfinite(pred), pred, fill), req.prompt_tokens,
                    fields)


def simulated_rows(workload: Workload, index: np.ndarray, key: RunKey, *, setup: Setup, cost: CostModel,
                   seed: int) -> list[dict]:
    """Simulate one policy run and emit it in the live row format (request i is row `index[i]`)."""
    load, round_, label = key
    sim = build_simulation(front="cluster", config=setup.config(label), batching=setup.batching, cost=cost,
                           num_replicas=setup.num_replicas, seed=seed)
    sim.run(workload)
    rows = []
    for i, arrival_s in enumerate(workload.arrival_s.tolist()):
        rid, true = str(i), int(workload.true_output_tokens[i])
        done = rid in sim.completion_s
        rows.append({
            "policy": label, "round": round_, "load": load, "index": index[i].item(), "scheduled_s": arrival_s,
            "sent_s": arrival_s, "first_token_s": sim.first_token_s.get(rid),
            "finished_s": sim.completion_s.get(rid), "output_tokens": true if done else 0,
            "prompt_tokens": 0 if workload.prompt_tokens is None else int(workload.prompt_tokens[i]),
            "expected_output_tokens": true, "predicted_output_tokens": float(workload.predicted_output_tokens[i]),
            "queue_wait_s": sim.wait_s.get(rid), "replica": sim.replica_of.get(rid),
            "error": None if done else "rejected"})
    return rows


def _nan_stat(values: np.ndarray, q: float | None = None) -> float:
    """Mean (q None) or q-th percentile of the finite values; NaN when there are none."""
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan
    return float(values.mean() if q is None else np.percentile(values, q))


def run_stats(req: Requests, only_index: np.ndarray | None = None) -> dict[str, float]:
    """JCT and its parts over completed requests (restricted to `only_index` when given)."""
    mask = req.ok if only_index is None else req.ok & np.isin(req.index, only_index)
    jct_s, wait_s = req.jct_s[mask], req.queue_wait_s[mask]
    return {"num_requests": int(req.ok.size), "num_completed": int(mask.sum()),
            "mean_jct_s": _nan_stat(jct_s), "p50_jct_s": _nan_stat(jct_s, 50), "p99_jct_s": _nan_stat(jct_s, 99),
            "mean_queue_wait_s": _nan_stat(wait_s), "p99_queue_wait_s": _nan_stat(wait_s, 99),
            "mean_engine_ttft_s": _nan_stat((req.first_token_s - req.dispatch_s)[mask]),
            "mean_decode_s": _nan_stat((req.finished_s - req.first_token_s)[mask])}


def _median_over_rounds(stats: list[dict]) -> dict[str, float]:
    return {k: float(np.median([s[k] for s in stats])) for k in stats[0]}


def replay(groups: dict[RunKey, Requests], setup: Setup, cost: CostModel, seed: int) -> dict[float, dict]:
    """load -> arm label -> live and simulated statistics (each the median over rounds), on the
    requests the live run completed."""
    live: dict[tuple[float, str], list] = defaultdict(list)
    sim: dict[tuple[float, str], list] = defaultdict(list)
    for key, req in groups.items():
        rows = simulated_rows(replay_workload(req, setup), req.index, key, setup=setup, cost=cost, seed=seed)
        live[key[0], key[2]].append(run_stats(req))
        sim[key[0], key[2]].append(run_stats(to_requests(rows)[key], req.index[req.ok]))
    by_load: dict[float, dict] = defaultdict(dict)
    for load, label in live:  # insertion order: loads, then policies as in _run_order
        by_load[load][label] = {"live": _median_over_rounds(live[load, label]),
                                "sim": _median_over_rounds(sim[load, label]), "num_rounds": len(live[load, label])}
    return dict(by_load)


def agreement(details: dict) -> dict[str, dict[str, float]]:
    """Per arm label (one load): mean JCT live and simulated, and sim / live."""
    out = {}
    for label, d in details.items():
        live, sim = d["live"]["mean_jct_s"], d["sim"]["mean_jct_s"]
        out[label] = {"live": live, "sim": sim, "ratio": sim / live if live > 0 else math.nan}
    return out


def policy_ratios(details: dict) -> dict[str, dict[str, float]]:
    """Mean-JCT ratio of every other arm to FCFS (one load), live and simulated."""
    if "fcfs" not in details:
        return {}
    return {f"{label}/fcfs": {side: details[label][side]["mean_jct_s"] / details["fcfs"][side]["mean_jct_s"]
                              for side in ("live", "sim")} for label in details if label != "fcfs"}


GAP_PARTS = {"queue wait": "mean_queue_wait_s", "engine TTFT": "mean_engine_ttft_s", "decode": "mean_decode_s"}


def explain_gaps(by_load: dict[float, dict], fit: Fit) -> list[str]:
    """For each (load, arm) outside the tolerance: which part of the JCT (queue wait, first token in
    the engine, decode) carries the gap; then hints from the fit about what the model misses."""
    lines = []
    for load, details in by_load.items():
        for label, a in agreement(details).items():
            if not abs(a["ratio"] - 1.0) > AGREEMENT_TOLERANCE:
                continue
            live, sim = details[label]["live"], details[label]["sim"]
            deltas = {name: sim[key] - live[key] for name, key in GAP_PARTS.items()}
            worst = max(deltas, key=lambda name: abs(deltas[name]) if math.isfinite(deltas[name]) else -1.0)
            parts = ", ".join(f"{n} {_fmt(live[k])} -> {_fmt(sim[k])} s" for n, k in GAP_PARTS.items())
            lines.append(f"gap at load {load:g}, {label}: sim/live {a['ratio']:.2f} (over "
                         f"{AGREEMENT_TOLERANCE:.0%}); live -> sim means: {parts}; mostly {worst} "
                         f"({deltas[worst]:+.2f} s/request)")
    if lines:
        lines += ["hint: " + h for h in _gap_hints(by_load, fit)]
    return lines


def _gap_hints(by_load: dict[float, dict], fit: Fit) -> list[str]:
    q, ms = fit.quality, (lambda seconds: 1e3 * seconds)  # noqa: E731
    hints = []
    failed = {f"{load:g}/{label}": int(d["live"]["num_requests"] - d["live"]["num_completed"])
              for load, details in by_load.items() for label, d in details.items()}
    if any(failed.values()):
        hints.append(f"live requests that failed ({failed}, e.g. client timeouts) are served in full by the sim "
                     f"at their replayed length: load the live run shed")
    if q["tpot_other_replica_r2"] > 0.1:
        hints.append(f"decode slows with sequences on OTHER replicas ({ms(q['tpot_other_replica_slope_s']):+.2f} "
                     f"ms/token each, R² {q['tpot_other_replica_r2']:.2f}): replicas share CPU/GPU/memory "
                     f"bandwidth, the model prices each replica alone")
    if q["tpot_r2"] < 0.5:
        hints.append(f"decode cost is poorly explained by same-replica concurrency and joins (R² {q['tpot_r2']:.2f})")
    if abs(q["ttft_resid_mean_s"]) > max(0.01, 0.5 * fit.cost.request_overhead_s):
        hints.append(f"first tokens come {ms(q['ttft_resid_mean_s']):+.0f} ms off the fitted stall model on "
                     f"average: latency outside the engine (HTTP, prediction batching, streaming) the sim lacks")
    hints.append("near saturation a small service-time error is amplified in the queue wait")
    return hints


# ---- extrapolation ---------------------------------------------------------------------------------
def _take(w: Workload, idx: np.ndarray) -> Workload:
    return Workload(w.arrival_s[idx], w.true_output_tokens[idx], w.predicted_output_tokens[idx],
                    w.prompt_tokens[idx], [w.record_fields[i] for i in idx.tolist()])


def request_pool(groups: dict[RunKey, Requests], setup: Setup) -> Workload:
    """One entry per request of the live run (load, round, index), as replayed; arrivals unused."""
    seen: set = set()
    parts = []
    for (load, round_, _), req in groups.items():
        keep = [i for i, index in enumerate(req.index.tolist()) if (load, round_, index) not in seen]
        seen.update((load, round_, index) for index in req.index[keep].tolist())
        parts.append(_take(replay_workload(req, setup), np.asarray(keep, dtype=np.int64)))
    return Workload(*(np.concatenate([getattr(w, k) for w in parts]) for k in
                      ("arrival_s", "true_output_tokens", "predicted_output_tokens", "prompt_tokens")),
                    [f for w in parts for f in w.record_fields])


def capacity_rps(batching: str, cost: CostModel, workload: Workload) -> float:
    """bench.sim.engine.nominal_capacity_rps of one replica for this request mix."""
    true = workload.true_output_tokens
    groups = true[: (true.size // cost.batch_size) * cost.batch_size].reshape(-1, cost.batch_size)
    mean_max = float(groups.max(axis=1).mean()) if groups.size else float(true.mean())
    mean_prompt = 0.0 if workload.prompt_tokens is None else float(workload.prompt_tokens.mean())
    return nominal_capacity_rps(batching, cost, float(true.mean()), mean_max, mean_prompt)


def extrapolate(pool: Workload, setup: Setup, cost: CostModel, labels: list[str], *, num_replicas: int,
                loads: list[float], num_requests: int, seed: int) -> dict:
    """The live request mix (resampled with `seed`) at `num_replicas` replicas, Poisson arrivals at
    load x nominal capacity; the same mix and the same unit arrival gaps at every load."""
    mix = _take(pool, wl.sample_indices(pool.true_output_tokens.size, num_requests, np.random.default_rng(seed)))
    replica_rps = capacity_rps(setup.batching, cost, mix)
    by_load = []
    for load in loads:
        rate_rps = load * num_replicas * replica_rps
        unit_gaps_rng = np.random.default_rng(seed + 1)  # same draws at every load, scaled by the rate
        workload = replace(mix, arrival_s=wl.poisson_arrivals_s(num_requests, rate_rps, unit_gaps_rng))
        runs = {label: simulate(workload, front="cluster", config=setup.config(label), batching=setup.batching,
                                cost=cost, num_replicas=num_replicas, seed=seed) for label in labels}
        row = {"load": load, "rate_rps": rate_rps, "mean_jct_s": {k: m["mean_jct_s"] for k, m in runs.items()},
               "num_rejected": {k: m["num_rejected"] for k, m in runs.items()}}
        for label in (k for k in runs if k != "fcfs" and "fcfs" in runs):
            row[f"{label}/fcfs"] = runs[label]["mean_jct_s"] / runs["fcfs"]["mean_jct_s"]
        by_load.append(row)
    return {"replicas": num_replicas, "num_requests": num_requests, "batching": setup.batching,
            "cost_model": asdict(cost), "replica_capacity_rps": replica_rps, "by_load": by_load}


# ---- CLI -------------------------------------------------------------------------------------------
def _loads(text: str) -> list[float]:
    try:
        loads = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--loads must be a comma list of numbers, got {text!r}") from None
    if not all(x > 0 for x in loads):
        raise argparse.ArgumentTypeError(f"--loads must be > 0, got {text!r}")
    return loads


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sim.live", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, metavar="DIR", help="live replay output (requests.jsonl, summary.json)")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("extrapolation (runs when --replicas or --loads is given)")
    g.add_argument("--replicas", type=int, help="replicas to extrapolate to (default 64)")
    g.add_argument("--loads", type=_loads, help=f"comma list, x nominal capacity (default {DEFAULT_LOADS})")
    g.add_argument("--cost", choices=("fitted", "gpu"), default="fitted",
                   help="fitted: the live run's fitted model; gpu: an 8B model on an H100 (see GPU_COST)")
    g.add_argument("--batch-size", type=int, help="slots per replica (default: the live run's; gpu: 16)")
    g.add_argument("--num-requests", type=int, default=20_000, help="requests per load")
    return p.parse_args(argv)


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return format(value, spec) if isinstance(value, float) and math.isfinite(value) else "-"


def _jsonable(value):
    """NaN / inf -> null, so the JSON line is strict JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def agreement_table(details: dict) -> list[str]:
    """One load: per arm, mean / p50 / p99 JCT and mean queue wait, live vs simulated."""
    columns = [("p50_jct_s", "p50"), ("p99_jct_s", "p99"), ("mean_queue_wait_s", "wait")]
    width = max(12, *(len(label) + 2 for label in details))
    lines = [f"{'policy':<{width}}{'live mean':>10}{'sim mean':>10}{'sim/live':>9}"
             + "".join(f"{'live ' + name:>10}{'sim ' + name:>10}" for _, name in columns)]
    for label, a in agreement(details).items():
        live, sim = details[label]["live"], details[label]["sim"]
        lines.append(f"{label:<{width}}{_fmt(a['live']):>10}{_fmt(a['sim']):>10}{_fmt(a['ratio']):>9}"
                     + "".join(f"{_fmt(live[k]):>10}{_fmt(sim[k]):>10}" for k, _ in columns))
    for name, r in policy_ratios(details).items():
        lines.append(f"{name} mean JCT: live {_fmt(r['live'], '.3f')}, sim {_fmt(r['sim'], '.3f')}")
    return lines


def extrapolation_table(ext: dict, labels: list[str]) -> list[str]:
    ratios = [k for k in ext["by_load"][0] if k.endswith("/fcfs")]
    lines = [f"extrapolation ({ext['cost']} cost): {ext['replicas']} replicas x {ext['cost_model']['batch_size']} "
             f"slots, {ext['batching']} batching, {ext['num_requests']} requests per load, "
             f"{ext['replica_capacity_rps']:.3f} req/s nominal per replica; mean JCT in s",
             f"{'load':>6}{'rate_rps':>10}" + "".join(f"{k:>{max(12, len(k) + 2)}}" for k in labels + ratios)]
    for r in ext["by_load"]:
        values = [r["mean_jct_s"][k] for k in labels] + [r[k] for k in ratios]
        lines.append(f"{r['load']:>6.2f}{r['rate_rps']:>10.2f}"
                     + "".join(f"{v:>{max(12, len(k) + 2)}.3f}" for k, v in zip(labels + ratios, values)))
    for r in (r for r in ext["by_load"] if any(r["num_rejected"].values())):
        lines.append(f"  load {r['load']:g}: requests rejected by a full wait queue (max_queue_len; not in the "
                     f"mean JCT): {', '.join(f'{k} {n}' for k, n in r['num_rejected'].items())}")
    return lines


def _extrapolation_cost(args, fit: Fit) -> CostModel:
    base = GPU_COST if args.cost == "gpu" else fit.cost
    return replace(base, batch_size=args.batch_size) if args.batch_size else base


def compare(groups: dict[RunKey, Requests], setup: Setup, fit: Fit, seed: int, say) -> dict:
    """Replay every policy run in the simulator; print a table per load, then any gaps. `agreement`
    is for the run's primary load (else its highest); `details` holds every load."""
    by_load = replay(groups, setup, fit.cost, seed)
    for load, details in by_load.items():
        rounds = max(d["num_rounds"] for d in details.values())
        say(f"load {load:g} (JCT and mean queue wait in s; medians over {rounds} round(s); sim on the "
            f"requests live completed)")
        for line in agreement_table(details):
            say(line)
    for line in explain_gaps(by_load, fit):
        say(line)
    primary = setup.primary_load if setup.primary_load in by_load else max(by_load)
    return {"agreement": agreement(by_load[primary]),
            "details": {"primary_load": primary, "by_load": {
                f"{load:g}": {"agreement": agreement(d), "policy_ratios": policy_ratios(d), "per_policy": d}
                for load, d in by_load.items()}}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = (lambda *_: None) if args.json else print
    run_dir = Path(args.run)
    try:
        setup = read_setup(run_dir / "summary.json")
        groups = to_requests(read_rows(run_dir / "requests.jsonl"))
        fit = fit_cost(groups, setup)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    say(f"# {run_dir}: {setup.batching} batching, {setup.num_replicas} replicas x {setup.max_batch_size} slots, "
        f"{len(groups)} policy runs")
    for line in describe_fit(fit):
        say(line)
    out = {"fit": {**asdict(fit.cost), **fit.quality}, **compare(groups, setup, fit, args.seed, say)}
    if args.replicas or args.loads:
        labels = list(out["agreement"])
        ext = extrapolate(request_pool(groups, setup), setup, _extrapolation_cost(args, fit), labels,
                          num_replicas=args.replicas or 64, loads=args.loads or _loads(DEFAULT_LOADS),
                          num_requests=args.num_requests, seed=args.seed)
        out["extrapolation"] = ext = {"cost": args.cost, **ext}
        for line in extrapolation_table(ext, labels):
            say(line)
    print(json.dumps(_jsonable(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
