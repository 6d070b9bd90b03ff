"""Router metrics, exported to Prometheus through Ray's metrics API (names get Ray's `ray_` prefix).

Invariant: every recorded value is also kept in `totals`, which the scheduler status endpoint
returns, so the endpoint and the Prometheus series are fed by the same calls and always agree.
"""

from __future__ import annotations

import time
from collections import Counter as CountMap
from typing import Any

from ray.serve.metrics import Counter, Gauge, Histogram

_SECONDS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
_TOKENS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
_RATIOS = [0.125, 0.25, 0.5, 0.8, 1.0, 1.25, 2, 4, 8]
# re-record an unchanged gauge this often: Ray's agent evicts a series not re-recorded within 2 export
# intervals (2 x max(metrics_report_interval_ms, 1 s); 20 s at Ray's default 10 s interval)
GAUGE_REFRESH_S = 5.0

METRIC_NAMES = {
    "queue_length": "ssjf_queue_length",
    "queue_predicted_tokens": "ssjf_queue_predicted_tokens",
    "queue_wait": "ssjf_queue_wait_seconds",
    "prediction_abs_error": "ssjf_prediction_abs_error_tokens",
    "prediction_ratio": "ssjf_prediction_ratio",
    "jct": "ssjf_jct_seconds",
    "ttft": "ssjf_ttft_seconds",
    "in_flight": "ssjf_replica_in_flight",
    "rejections": "ssjf_rejections_total",
    "completions": "ssjf_requests_completed_total",
}


def metrics_endpoint(node_id: str, nodes: list[dict]) -> dict[str, Any]:
    """Where Prometheus scrapes this process's metrics: its node's metrics export port (`ray.nodes()`)."""
    for node in nodes:
        if node.get("NodeID") == node_id and node.get("MetricsExportPort"):
            host, port = node.get("NodeManagerAddress", "127.0.0.1"), node["MetricsExportPort"]
            return {"url": f"http://{host}:{port}/metrics", "node_ip": host, "port": port,
                    "prefix": "ray_", "note": "ssjf_* series come from the router's node; every node "
                    "exports Ray's and Serve's own series on its metrics export port"}
    return {"url": None, "note": f"node {node_id} has no metrics export port in ray.nodes()"}


def find_metrics_endpoint() -> dict[str, Any]:
    """`metrics_endpoint` for the calling Ray worker; never raises (status must always answer)."""
    try:
        import ray

        return metrics_endpoint(ray.get_runtime_context().get_node_id(), ray.nodes())
    except Exception as exc:  # pragma: no cover - depends on the cluster
        return {"url": None, "note": f"could not ask Ray: {type(exc).__name__}: {exc}"}


class RouterMetrics:
    def __init__(self) -> None:
        n = METRIC_NAMES
        self._queue_length = Gauge(n["queue_length"], "Requests waiting in the router's queue")
        self._queue_predicted_tokens = Gauge(n["queue_predicted_tokens"],
                                             "Predicted output tokens of the requests waiting in the router's queue")
        self._queue_wait = Histogram(n["queue_wait"], "Time from arrival to dispatch", _SECONDS)
        self._prediction_abs_error = Histogram(
            n["prediction_abs_error"], "|predicted - actual| output tokens of finished requests", _TOKENS)
        self._prediction_ratio = Histogram(
            n["prediction_ratio"], "predicted / actual output tokens of finished requests", _RATIOS)
        self._jct = Histogram(n["jct"], "Job completion time: arrival to last token", _SECONDS)
        self._ttft = Histogram(n["ttft"], "Time from arrival to first token", _SECONDS)
        self._in_flight = Gauge(n["in_flight"], "Requests running on an engine replica",
                                tag_keys=("engine_replica",))
        self._rejections = Counter(n["rejections"], "Requests ended with an error, by reason",
                                   tag_keys=("reason",))
        self._completions = Counter(n["completions"], "Requests finished, by finish reason",
                                    tag_keys=("finish_reason",))
        self.rejections: CountMap[str] = CountMap()
        self.completions: CountMap[str] = CountMap()
        self.sums: CountMap[str] = CountMap()
        self._gauge_values: dict[tuple, tuple[float, float]] = {}  # key -> (value, recorded at)

    def observe_queue(self, num_waiting: int, waiting_predicted_tokens: float,
                      in_flight_by_replica: dict[str, int]) -> None:
        """Set the queue gauges; a gauge is recorded when its value changed or every GAUGE_REFRESH_S
        (Ray's metrics agent drops a gauge series not re-recorded within two export intervals), so an
        idle cluster of many replicas costs one call per gauge per GAUGE_REFRESH_S."""
        self._record_gauge(self._queue_length, num_waiting)
        self._record_gauge(self._queue_predicted_tokens, waiting_predicted_tokens)
        for replica_id, num_running in in_flight_by_replica.items():
            self._record_gauge(self._in_flight, num_running, engine_replica=replica_id)

    def _record_gauge(self, gauge: Gauge, value: float, **tags: str) -> None:
        key = (gauge, tuple(tags.items()))
        now_s = time.monotonic()
        last = self._gauge_values.get(key)
        if last is None or last[0] != value or now_s - last[1] >= GAUGE_REFRESH_S:
            self._gauge_values[key] = (value, now_s)
            gauge.set(value, tags=tags or None)

    def observe_dispatch(self, queue_wait_s: float) -> None:
        self._queue_wait.observe(queue_wait_s)
        self.sums["queue_wait_s"] += queue_wait_s
        self.sums["dispatched"] += 1

    def observe_finish(self, finish_reason: str, predicted_tokens: float, completion_tokens: int,
                       jct_s: float, ttft_s: float | None) -> None:
        self._completions.inc(tags={"finish_reason": finish_reason})
        self.completions[finish_reason] += 1
        self._jct.observe(jct_s)
        self.sums["jct_s"] += jct_s
        if ttft_s is not None:
            self._ttft.observe(ttft_s)
        if finish_reason == "length" or finish_reason == "stop":
            error = abs(predicted_tokens - completion_tokens)
            self._prediction_abs_error.observe(error)
            self._prediction_ratio.observe(predicted_tokens / max(completion_tokens, 1))
            self.sums["abs_prediction_error_tokens"] += error
            self.sums["prediction_samples"] += 1

    def observe_cancelled(self) -> None:
        self._completions.inc(tags={"finish_reason": "cancelled"})
        self.completions["cancelled"] += 1

    def observe_request_error(self, exc: Any) -> None:
        """Count a `protocol.RequestError` under its code (400s without one: invalid_request)."""
        self.observe_rejection(exc.code or ("invalid_request" if exc.status == 400 else f"http_{exc.status}"))

    def observe_rejection(self, reason: str) -> None:
        self._rejections.inc(tags={"reason": reason})
        self.rejections[reason] += 1

    def totals(self) -> dict[str, Any]:
        samples = self.sums["prediction_samples"]
        return {
            "completions": dict(self.completions),
            "rejections": dict(self.rejections),
            "dispatched": int(self.sums["dispatched"]),
            "mean_queue_wait_s": self.sums["queue_wait_s"] / max(self.sums["dispatched"], 1),
            "mean_abs_prediction_error_tokens": self.sums["abs_prediction_error_tokens"] / max(samples, 1),
            "names": METRIC_NAMES,
        }
