"""Prometheus gauges of the predictor's online learning (Ray's metrics API adds the `ray_` prefix).

Invariant: the gauges are set from `OnlineLearner.stats()`, the same dict the router's status returns
under `predictor.online`, so /v1/scheduler and Prometheus always agree.
"""

from __future__ import annotations

from ray.serve.metrics import Gauge

PREDICTOR_METRIC_NAMES = {
    "version": "ssjf_predictor_version",
    "labels": "ssjf_predictor_labels_collected",
    "rolling_tau": "ssjf_predictor_rolling_kendall_tau",
    "refits": "ssjf_predictor_refits",
    "refit_tau": "ssjf_predictor_last_refit_kendall_tau",
}


class PredictorMetrics:
    def __init__(self) -> None:
        n = PREDICTOR_METRIC_NAMES
        self._version = Gauge(n["version"], "Predictor head version: +1 per head swapped in by online learning")
        self._labels = Gauge(n["labels"], "Finished requests (stop or length) recorded as labels since start")
        self._rolling_tau = Gauge(n["rolling_tau"], "Kendall tau of predicted vs true output tokens, recent requests")
        self._refits = Gauge(n["refits"], "Online refits run (swapped in or not)")
        self._refit_tau = Gauge(n["refit_tau"], "Last refit's Kendall tau on its held-back labels, current "
                                                "head (before) and candidate (after)", tag_keys=("head",))

    def observe(self, stats: dict) -> None:
        self._version.set(stats["version"])
        self._labels.set(stats["labels_collected"])
        self._refits.set(stats["num_refits"])
        if stats["rolling_tau"] is not None:
            self._rolling_tau.set(stats["rolling_tau"])
        refit = stats["last_refit"] or {}
        for head in ("before", "after"):
            if f"tau_{head}" in refit:
                self._refit_tau.set(refit[f"tau_{head}"], tags={"head": head})
