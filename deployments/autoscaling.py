"""Queue-aware autoscaling of the engine deployment through Serve's custom policy API
(`autoscaling_config.policy.policy_function: deployments.autoscaling:QueueAwarePolicy`).

Serve's default policy sees only the engines' ongoing requests, which never exceed their slots: the waiting
requests live in the router's queue. This policy adds them. It reads the router's exported gauges —
`ray_ssjf_queue_length` (waiting requests) and, when the router exports it, `ray_ssjf_queue_predicted_tokens`
(their predicted output tokens) — from every node's Ray metrics endpoint, on a background thread in the
Serve controller, so a decision never waits on the network. Running requests come from Serve's own
`total_num_requests`.

Invariant: the desired count covers the running requests at `target_utilization` plus the queue (by count,
or by predicted work drained within `queue_drain_s` when both the gauge and `replica_tokens_per_s` are
there); with no fresh reading it holds the current target. Serve applies the delays and the min/max
bounds; a scale-down stops routing to the replica and waits for its requests (the router re-queues what it
had not begun), so nothing is lost.
"""
from __future__ import annotations

import math
import re
import threading
import time
import urllib.request
import weakref
from dataclasses import dataclass
from typing import Any, Optional

import ray

QUEUE_LENGTH_METRIC = "ray_ssjf_queue_length"
QUEUE_TOKENS_METRIC = "ray_ssjf_queue_predicted_tokens"
SCRAPE_TIMEOUT_S = 2.0
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class QueueReading:
    num_waiting: float
    waiting_predicted_tokens: Optional[float]
    read_at_s: float  # time.monotonic()


def desired_replicas(num_running: float, reading: QueueReading, slots_per_replica: int,
                     target_utilization: float, replica_tokens_per_s: Optional[float],
                     queue_drain_s: float) -> int:
    """Replicas that serve the running requests at the target utilization and absorb the queue."""
    slots = slots_per_replica * target_utilization
    for_running = num_running / slots
    if replica_tokens_per_s and reading.waiting_predicted_tokens is not None:
        for_queue = reading.waiting_predicted_tokens / (replica_tokens_per_s * queue_drain_s)
    else:
        for_queue = reading.num_waiting / slots
    return math.ceil(for_running + for_queue - 1e-9)


def parse_queue_gauges(exposition: str, app_name: str) -> tuple[Optional[float], Optional[float]]:
    """(waiting requests, their predicted tokens) of `app_name` from Prometheus text; None when absent."""
    totals: dict[str, Optional[float]] = {QUEUE_LENGTH_METRIC: None, QUEUE_TOKENS_METRIC: None}
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] not in totals:
            continue
        labels = dict(_LABEL.findall(match["labels"] or ""))
        if labels.get("application", app_name) != app_name:
            continue
        totals[match["name"]] = (totals[match["name"]] or 0.0) + float(match["value"])
    return totals[QUEUE_LENGTH_METRIC], totals[QUEUE_TOKENS_METRIC]


def metrics_urls() -> list[str]:
    return [f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            for node in ray.nodes() if node.get("Alive") and node.get("MetricsExportPort")]


def read_queue(app_name: str) -> Optional[QueueReading]:
    """Sum the queue gauges over every node (the router runs on one of them); None if no node has them."""
    waiting = tokens = None
    for url in metrics_urls():
        try:
            with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
                node_waiting, node_tokens = parse_queue_gauges(response.read().decode(), app_name)
        except OSError:
            continue
        if node_waiting is not None:
            waiting = (waiting or 0.0) + node_waiting
        if node_tokens is not None:
            tokens = (tokens or 0.0) + node_tokens
    return None if waiting is None else QueueReading(waiting, tokens, time.monotonic())


class _Latest:
    """The newest reading, shared with the refresh thread (which never references the policy)."""

    def __init__(self) -> None:
        self.reading: Optional[QueueReading] = None
        self.stop = threading.Event()


def _refresh_forever(latest: _Latest, app_name: str, interval_s: float) -> None:
    while not latest.stop.is_set():
        try:
            reading = read_queue(app_name)
            if reading is not None:
                latest.reading = reading
        except Exception:  # the controller must keep running; a stale reading makes the policy hold
            pass
        latest.stop.wait(interval_s)


class QueueAwarePolicy:
    """Serve custom autoscaling policy (a class: Serve passes `policy_kwargs` to its constructor)."""

    def __init__(self, slots_per_replica: int, target_utilization: float = 0.8,
                 replica_tokens_per_s: Optional[float] = None, queue_drain_s: float = 10.0,
                 refresh_interval_s: float = 1.0, stale_after_s: float = 30.0) -> None:
        if slots_per_replica < 1 or not 0 < target_utilization <= 1 or queue_drain_s <= 0:
            raise ValueError("QueueAwarePolicy: slots_per_replica >= 1, 0 < target_utilization <= 1 and "
                             f"queue_drain_s > 0 (got {slots_per_replica}, {target_utilization}, {queue_drain_s})")
        self.slots_per_replica, self.target_utilization = slots_per_replica, target_utilization
        self.replica_tokens_per_s, self.queue_drain_s = replica_tokens_per_s, queue_drain_s
        self.refresh_interval_s, self.stale_after_s = refresh_interval_s, stale_after_s
        self._latest: Optional[_Latest] = None

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        reading = self._reading(ctx.app_name or "default")
        if reading is None:
            return ctx.target_num_replicas, {"queue_reading": "none"}
        desired = desired_replicas(ctx.total_num_requests, reading, self.slots_per_replica,
                                   self.target_utilization, self.replica_tokens_per_s, self.queue_drain_s)
        bounded = min(max(desired, ctx.capacity_adjusted_min_replicas), ctx.capacity_adjusted_max_replicas)
        return bounded, {"queue_waiting": reading.num_waiting, "running": ctx.total_num_requests}

    def _reading(self, app_name: str) -> Optional[QueueReading]:
        if self._latest is None:
            self._latest = _Latest()
            threading.Thread(target=_refresh_forever, args=(self._latest, app_name, self.refresh_interval_s),
                             name="ssjf-queue-autoscaling", daemon=True).start()
            weakref.finalize(self, self._latest.stop.set)
        reading = self._latest.reading
        if reading is None or time.monotonic() - reading.read_at_s > self.stale_after_s:
            return None
        return reading
