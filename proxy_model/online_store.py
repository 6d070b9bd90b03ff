"""What online learning keeps: features of requests in flight, and finished requests' labels.

Invariant: both stores are bounded. `PendingFeatures` holds at most `max_pending` requests (the
oldest is evicted first, so a request that never reports its end cannot leak memory); `LabelBuffer`
holds the newest `capacity` labels. Only feature vectors and lengths are kept, never prompt text.
`save`/`load` write and read one `.npz` file, replaced atomically (a crash leaves the old file).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS_FILE = "labels.npz"


@dataclass(frozen=True)
class Pending:
    features: np.ndarray  # float32 [in_dim]
    predicted_tokens: float


class PendingFeatures:
    """request id -> the features and prediction it was queued with, until it finishes."""

    def __init__(self, max_pending: int):
        self.max_pending = max_pending
        self._items: OrderedDict[str, Pending] = OrderedDict()
        self.num_evicted = 0

    def put(self, request_id: str, features: np.ndarray, predicted_tokens: float) -> None:
        self._items[request_id] = Pending(np.array(features, dtype=np.float32), float(predicted_tokens))
        self._items.move_to_end(request_id)
        while len(self._items) > self.max_pending:
            self._items.popitem(last=False)
            self.num_evicted += 1

    def pop(self, request_id: str) -> Pending | None:
        return self._items.pop(request_id, None)

    def __len__(self) -> int:
        return len(self._items)


class LabelBuffer:
    """The newest `capacity` (features, output tokens, censored) rows, oldest first. Safe to add
    from one thread while another reads `arrays` (the lock covers only the append and a list copy)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._rows: deque[tuple[np.ndarray, float, bool]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.num_added = 0  # ever, including rows since dropped and rows loaded from disk

    def add(self, features: np.ndarray, output_tokens: float, censored: bool) -> None:
        row = (np.asarray(features, dtype=np.float32), float(output_tokens), bool(censored))
        with self._lock:
            self._rows.append(row)
            self.num_added += 1

    def __len__(self) -> int:
        return len(self._rows)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features [N, D] float32, output tokens [N] float64, censored [N] bool), oldest first."""
        with self._lock:
            rows = list(self._rows)
        if not rows:
            return np.zeros((0, 0), np.float32), np.zeros(0), np.zeros(0, bool)
        return (np.stack([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=np.float64),
                np.array([r[2] for r in rows], dtype=bool))

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        x, y, censored = self.arrays()
        tmp = directory / f".{LABELS_FILE}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, features=x, output_tokens=y, censored=censored, num_added=np.int64(self.num_added))
        os.replace(tmp, directory / LABELS_FILE)
        return directory / LABELS_FILE

    def load(self, directory: str | Path, in_dim: int) -> bool:
        """Append the rows saved in `directory` (False when there is no file). Rows of another
        feature width (another predictor) are refused with a ValueError naming the file."""
        path = Path(directory) / LABELS_FILE
        if not path.exists():
            return False
        with np.load(path) as data:
            x, y, censored = data["features"], data["output_tokens"], data["censored"]
            num_added = int(data["num_added"])
        if len(x) and x.shape[1] != in_dim:
            raise ValueError(f"{path}: features are {x.shape[1]}-d, the predictor's head takes {in_dim}")
        for row, tokens, cut in zip(x, y, censored):
            self.add(row, float(tokens), bool(cut))
        self.num_added = max(self.num_added, num_added)
        return True
