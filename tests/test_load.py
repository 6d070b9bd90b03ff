"""bench.load at small scale against a live app: mixed traffic with disconnects and invalid bodies loses
no request, every rejection is a clear OpenAI error, and the system is idle and serving afterwards."""
import asyncio
import time

import pytest

from bench.load.run import OVERLOAD_OVERRIDES, run_load
from bench.load.traffic import KIND_SHARES

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NUM_REQUESTS = 150
CONCURRENCY = 40
# One replica (quicker to deploy) and a queue shorter than the valid requests in flight, so the
# router sheds load at this scale too.
OVERRIDES = {**OVERLOAD_OVERRIDES, "engine_replicas.num_replicas": 1, "scheduler.max_queue_len": 16}


@pytest.mark.timeout(300)
def test_mixed_overload_loses_nothing_and_ends_idle(deploy_app, serve_instance):
    deploy_app(OVERRIDES)
    started_s = time.monotonic()
    summary = asyncio.run(run_load(serve_instance, NUM_REQUESTS, CONCURRENCY, seed=1, timeout_s=120,
                                   request_timeout_s=60,
                                   max_request_bytes=OVERRIDES["router.max_request_bytes"]))

    assert summary["lost"] == 0, summary["lost_details"]
    assert summary["sent"] == NUM_REQUESTS and summary["not_sent"] == 0
    assert summary["completed"] + summary["rejected"] + summary["disconnected"] == NUM_REQUESTS
    assert set(summary["by_kind"]) == set(KIND_SHARES), summary["by_kind"]
    assert summary["completed"] > 0
    assert summary["by_kind"]["disconnect_stream"].get("disconnected", 0) > 0, summary["by_kind"]
    # Clear rejections only: expected statuses, Retry-After on 429/503, every invalid request refused.
    assert summary["rejection_flags"].keys() <= {"in_stream:queue_full"}, summary["rejection_flags"]
    assert set(summary["rejected_by_status"]) <= {"200", "400", "404", "413", "429", "503"}, summary
    shed = summary["rejected_by_status"].get("429", 0) + summary["rejection_flags"].get("in_stream:queue_full", 0)
    assert shed > 0, "the short queue never shed load"
    assert summary["by_kind"]["invalid"] == {"rejected": summary["by_kind"]["invalid"]["rejected"]}
    assert summary["idle_after_load"], summary["end_scheduler"]
    assert summary["end_router_rss_mb"] < summary["start_router_rss_mb"] + 300
    print(f"load phase {time.monotonic() - started_s:.1f} s:", summary)
