"""The router's queue gauges: recorded on change, and re-recorded when unchanged for GAUGE_REFRESH_S, because
Ray's metrics agent evicts a gauge series that is not re-recorded (an idle queue would vanish from /metrics)."""
import pytest

from deployments import metrics


class RecordingGauge:
    def __init__(self):
        self.values = []

    def set(self, value, tags=None):
        self.values.append((value, tags))


@pytest.mark.timeout(60)
def test_unchanged_gauge_is_re_recorded_only_after_the_refresh_interval(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(metrics.time, "monotonic", lambda: clock[0])
    router_metrics = metrics.RouterMetrics.__new__(metrics.RouterMetrics)  # no Ray metric objects needed
    router_metrics._gauge_values = {}
    gauge = RecordingGauge()
    for _ in range(3):
        router_metrics._record_gauge(gauge, 0.0)
    assert gauge.values == [(0.0, None)]  # repeated unchanged values cost nothing
    router_metrics._record_gauge(gauge, 2.0, engine_replica="r0")
    router_metrics._record_gauge(gauge, 2.0, engine_replica="r0")
    assert gauge.values[-1] == (2.0, {"engine_replica": "r0"}) and len(gauge.values) == 2
    clock[0] += metrics.GAUGE_REFRESH_S
    router_metrics._record_gauge(gauge, 0.0)
    assert gauge.values[-1] == (0.0, None) and len(gauge.values) == 3
