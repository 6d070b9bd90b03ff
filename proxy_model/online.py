"""Online learning: the predictor learns the served model's output lengths from finished requests.

Invariant: the prediction path never waits on a refit. Features are kept when a request is
predicted (`remember`), turned into a label when it finishes with "stop" or "length" (`observe`;
"length" = censored: the true length is at least that), and dropped on any other ending (`forget`).
Every `refit_every` new labels (once `min_labels` are held) one worker thread fits a candidate head,
warm-started from a copy of the current one, on all but the newest `holdout_fraction` of the buffer,
fits its score -> tokens mapping on that newest slice (scores out of sample), and publishes it with
`Predictor.swap_head` only if its Kendall tau on that slice is strictly higher than the current
head's. Published heads are never modified in place.

The worker runs torch on 1 thread: `torch.set_num_threads` is called in the worker thread only,
which with torch's OpenMP backend sets that thread's own count (the prediction thread keeps its own;
`tests/test_online.py` checks it), so a refit takes at most one core from the router.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau
from torch.nn import functional as F

from .heads import Head
from .online_store import LabelBuffer, PendingFeatures
from .predictor import Predictor

logger = logging.getLogger(__name__)
HEAD_FILE = "head.safetensors"
STATE_FILE = "online.json"
ROLLING_WINDOW = 200  # finished requests in the rolling tau
MIN_HOLDOUT = 10
EPOCHS, BATCH_SIZE, LEARNING_RATE, WEIGHT_DECAY = 8, 64, 3e-4, 0.01
LABEL_REASONS = {"stop": False, "length": True}  # finish_reason -> censored


def censored_pairwise_loss(score: torch.Tensor, tokens: torch.Tensor, censored: torch.Tensor) -> torch.Tensor:
    """Pairwise logistic loss over the pairs whose order is known: i ran longer than j when
    tokens_i > tokens_j and j was not cut off (a censored j may really be longer than i)."""
    diff = score[:, None] - score[None, :]
    known = ((tokens[:, None] > tokens[None, :]) & ~censored[None, :]).to(score.dtype)
    return (F.softplus(-diff) * known).sum() / known.sum().clamp(min=1.0)


def head_tau(head: Head, x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-b of the head's scores against the labels (0 when undefined)."""
    with torch.inference_mode():
        s = head.score(head(torch.from_numpy(x))).double().numpy()
    tau = kendalltau(s, y).statistic if len(y) > 1 else math.nan
    return float(tau) if np.isfinite(tau) else 0.0


def fit_candidate(current: Head, x: np.ndarray, y: np.ndarray, censored: np.ndarray, seed: int) -> Head:
    """A copy of `current` trained with the censoring-aware ranking loss. Its score -> tokens mapping is
    still the copied one: fit it with `calibrate_out_of_sample` before the head predicts tokens (its
    scores, and so every tau, do not depend on it)."""
    head = copy.deepcopy(current).train()
    gen = torch.Generator().manual_seed(seed)
    xt, yt, ct = torch.from_numpy(x), torch.from_numpy(y).float(), torch.from_numpy(censored)
    opt = torch.optim.AdamW(head.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    for _ in range(EPOCHS):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(order), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            loss = censored_pairwise_loss(head.score(head(xt[idx])), yt[idx], ct[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def calibrate_out_of_sample(head: Head, x: np.ndarray, y: np.ndarray) -> None:
    """Fit `head`'s score -> tokens quantile mapping on rows it was not trained on (censored labels count
    at their cap). Calibrated on its own training rows, a refit head's scores there are more extreme
    than on new prompts, so its live predictions shrank toward the middle (bench.adapt, 8B lengths: sd
    of log predicted tokens 0.62 vs 0.83 true, p10 177 vs 103 tokens; on held-out rows 0.95). Tau is
    unchanged: the map is monotone."""
    with torch.inference_mode():
        head.calibrate(head.score(head(torch.from_numpy(x))).double().numpy(), np.asarray(y, dtype=np.float64))


class OnlineLearner:
    """Collects labels for one `Predictor`, refits its head in one worker thread, reports stats."""

    def __init__(self, predictor: Predictor, config, max_pending: int = 8192):
        """`config`: `deployments.config.OnlineLearningConfig` (or any object with its fields)."""
        self.predictor, self.config = predictor, config
        self.pending = PendingFeatures(max_pending)
        self.buffer = LabelBuffer(config.buffer_size)
        self.recent: deque[tuple[float, float]] = deque(maxlen=ROLLING_WINDOW)  # (predicted, true)
        self.num_refits, self.last_refit = 0, None
        self._labels_at_last_refit = self._labels_at_last_save = 0
        self._refit: Future | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="ssjf-online-refit",
                                          initializer=torch.set_num_threads, initargs=(1,))
        if config.save_dir:
            self._resume(Path(config.save_dir))

    # ---- request path (event loop thread) ------------------------------------------------------

    def remember(self, request_id: str, features: np.ndarray | torch.Tensor, predicted_tokens: float) -> None:
        row = features.numpy() if isinstance(features, torch.Tensor) else features
        self.pending.put(request_id, row, predicted_tokens)

    def forget(self, request_id: str) -> None:
        self.pending.pop(request_id)

    def observe(self, request_id: str, label_tokens: float, finish_reason: str) -> bool:
        """Record a finished request's label — its output length in the predictor's own units (the
        caller undoes any scaling it applied to predictions) — True if it was one (known request,
        stop/length, positive length)."""
        entry = self.pending.pop(request_id)
        if entry is None or finish_reason not in LABEL_REASONS or not label_tokens > 0:
            return False
        self.buffer.add(entry.features, label_tokens, LABEL_REASONS[finish_reason])
        self.recent.append((entry.predicted_tokens, float(label_tokens)))
        if self._refit_due():
            self.refit_now()
        elif self.config.save_dir and self.buffer.num_added - self._labels_at_last_save >= self.config.refit_every:
            self._labels_at_last_save = self.buffer.num_added
            self._worker.submit(self._save_labels)
        return True

    def _refit_due(self) -> bool:
        running = self._refit is not None and not self._refit.done()
        return (not running and len(self.buffer) >= self.config.min_labels
                and self.buffer.num_added - self._labels_at_last_refit >= self.config.refit_every)

    def stats(self) -> dict:
        pairs = np.array(self.recent, dtype=float).reshape(-1, 2)
        tau = kendalltau(pairs[:, 0], pairs[:, 1]).statistic if len(pairs) > 1 else math.nan
        return {"enabled": True, "version": self.predictor.head_version, "labels_collected": self.buffer.num_added,
                "labels_in_buffer": len(self.buffer), "pending": len(self.pending),
                "pending_evicted": self.pending.num_evicted,
                "rolling_tau": round(float(tau), 4) if np.isfinite(tau) else None, "rolling_window": len(pairs),
                "num_refits": self.num_refits, "refit_running": self._refit is not None and not self._refit.done(),
                "last_refit": self.last_refit}

    # ---- worker thread ---------------------------------------------------------------------------

    def refit_now(self) -> Future:
        """Queue a refit on the worker (it also saves to save_dir); returns its future."""
        self._labels_at_last_refit = self._labels_at_last_save = self.buffer.num_added
        self._refit = self._worker.submit(self._refit_guarded)
        return self._refit

    def _refit_guarded(self) -> dict:
        try:
            return self._refit_once()
        except Exception as exc:  # keep serving with the current head; say why in stats
            logger.exception("online refit failed")
            self.last_refit = {"error": f"{type(exc).__name__}: {exc}"[:300], "finished_at_s": time.time()}
            return self.last_refit

    def _refit_once(self) -> dict:
        started_s = time.perf_counter()
        x, y, censored = self.buffer.arrays()
        num_holdout = max(MIN_HOLDOUT, int(round(len(y) * self.config.holdout_fraction)))
        if len(y) - num_holdout < 2:
            self.last_refit = {"skipped": f"{len(y)} labels: too few to hold {num_holdout} back and train",
                               "finished_at_s": time.time()}
            return self.last_refit
        current = self.predictor.head
        candidate = fit_candidate(current, x[:-num_holdout], y[:-num_holdout], censored[:-num_holdout],
                                  seed=self.num_refits)
        calibrate_out_of_sample(candidate, x[-num_holdout:], y[-num_holdout:])
        before = head_tau(current, x[-num_holdout:], y[-num_holdout:])
        after = head_tau(candidate, x[-num_holdout:], y[-num_holdout:])
        swapped = after > before
        if swapped:
            self.predictor.swap_head(candidate)
        self.num_refits += 1
        report = {"labels": int(len(y)), "holdout": num_holdout, "tau_before": round(before, 4),
                  "tau_after": round(after, 4), "swapped": swapped, "version": self.predictor.head_version,
                  "seconds": round(time.perf_counter() - started_s, 3), "finished_at_s": time.time()}
        self.last_refit = report
        if self.config.save_dir:
            self._save(Path(self.config.save_dir), candidate if swapped else None)
        return report

    def _save_labels(self) -> None:
        try:
            self._save(Path(self.config.save_dir), None)
        except Exception:  # keep learning; the next save retries
            logger.exception("saving online labels to %s failed", self.config.save_dir)

    def _save(self, directory: Path, head: Head | None) -> None:
        """Labels, state and (when given) the head just published; each file replaced atomically."""
        from safetensors.torch import save_file

        self.buffer.save(directory)
        if head is not None:
            tmp = directory / f".{HEAD_FILE}.tmp"
            save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()}, str(tmp))
            os.replace(tmp, directory / HEAD_FILE)
        state = {"version": self.predictor.head_version, "num_refits": self.num_refits, "last_refit": self.last_refit,
                 "predictor": self.predictor.name}
        (directory / f".{STATE_FILE}.tmp").write_text(json.dumps(state, indent=2) + "\n")
        os.replace(directory / f".{STATE_FILE}.tmp", directory / STATE_FILE)

    def _resume(self, directory: Path) -> None:
        """Load the labels, and the last published head with its version, saved in `directory`."""
        from safetensors.torch import load_file

        state = json.loads((directory / STATE_FILE).read_text()) if (directory / STATE_FILE).exists() else None
        if state is not None and state["predictor"] != self.predictor.name:
            raise ValueError(f"{directory / STATE_FILE}: saved for predictor {state['predictor']!r}, "
                             f"this router loads {self.predictor.name!r}; use another save_dir")
        self.buffer.load(directory, self.predictor.head.feature_mean.numel())
        self._labels_at_last_refit = self._labels_at_last_save = self.buffer.num_added
        if state is not None:
            self.num_refits, self.last_refit = state["num_refits"], state["last_refit"]
            if (directory / HEAD_FILE).exists():
                head = copy.deepcopy(self.predictor.head)
                weights = load_file(str(directory / HEAD_FILE))
                for name in ("bucket_log_medians", "calib_scores", "calib_log_tokens"):
                    getattr(head, name).resize_(weights[name].shape)
                head.load_state_dict(weights)
                self.predictor.swap_head(head)
                self.predictor.head_version = int(state["version"])

    def close(self, wait: bool = False) -> None:
        """Stop the worker: wait=True lets queued refits and saves finish, else they are dropped."""
        self._worker.shutdown(wait=wait, cancel_futures=not wait)
