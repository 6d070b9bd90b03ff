"""A live run's rows and setup, read and validated, and the workload they replay as.

Invariant: a Requests holds only what the live run recorded (every row checked on reading, a bad one
named by file and line), and replay_workload feeds the simulator nothing else: arrival = `sent_s`,
true lengths, predictions, prompt sizes and the record fields the router saw. Times are seconds on the
client clock from the start of each policy run. Simulated runs are written in this same row format
(write_run), so one reader, one set of statistics and the fit apply to both.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.sim.cluster import Workload
from router import POLICIES, SchedulerConfig

REQUIRED_KEYS = ("policy", "index", "sent_s", "expected_output_tokens")
NUMERIC_KEYS = ("sent_s", "first_token_s", "finished_s", "queue_wait_s", "output_tokens", "prompt_tokens",
                "expected_output_tokens", "predicted_output_tokens", "round", "load")
RECORD_FIELDS = ("max_tokens", "ignore_eos", "priority")  # optional RequestRecord keywords a row may carry
BATCHING_MODES = ("none", "dynamic", "continuous")
ENGINE_BATCH_WAIT_S = 0.010  # engine.batch_wait_ms default, used when summary.json's setup has none


class RunError(ValueError):
    """A live run directory that cannot be read; the message names the file (and line)."""


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
