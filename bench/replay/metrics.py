"""Per-request results of a live replay and the metrics computed from them.

Invariant: every metric is a pure function of the `RequestResult` list (client-side clocks, seconds
since the replay's start) plus the SLO; failed requests count as errors and never as completions.

Definitions (all documented in the summary too):
- JCT (= E2E): client-observed end-to-end latency, from sending the request to receiving its last chunk.
- TTFT: from sending to the first streamed token; TPOT: (JCT - TTFT) / (output tokens - 1);
  ITL: gaps between consecutive streamed token chunks, pooled over requests (as vLLM bench serve).
  Each is reported as mean / p50 / p90 / p99.
- JCT by true-length tercile: requests split at the 1/3 and 2/3 quantiles of the replayed length.
- throughput: completed requests (or output tokens) / (last completion - first send).
- goodput: completed requests meeting the SLO `JCT <= jct_base_s + jct_per_token_s * output_tokens`,
  per second over the same span.
- paper-style 25%-completion rate (the SSJF paper's "throughput"): k = max(1, N // 4) of the N
  requests, divided by the time from the first send to the k-th completion.
- Kendall tau-b between the predictor's `predicted_output_tokens` and the replayed output length.
- percentiles: numpy's linear interpolation.
- natural-length replays only: actual vs recorded length and finish reason (`natural.label_agreement`).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy.stats import kendalltau

from bench.common import percentile
from bench.replay.natural import label_agreement


QUEUED_S = 0.05  # a request "queued" when it waited longer than this for a slot (frac_queued)


@dataclass
class RequestResult:
    index: int
    scheduled_s: float  # trace arrival offset
    sent_s: Optional[float] = None
    first_token_s: Optional[float] = None
    finished_s: Optional[float] = None
    output_tokens: int = 0  # usage.completion_tokens from the server
    prompt_tokens: int = 0  # usage.prompt_tokens from the server
    expected_output_tokens: int = 0  # the replayed length (bench_stop_after_tokens)
    predicted_output_tokens: Optional[float] = None
    queue_wait_s: Optional[float] = None
    replica: Optional[str] = None
    status: int = 0  # HTTP status; 200 when the stream finished cleanly
    error: Optional[str] = None  # "http_429", "timeout", "stream_error", ...
    detail: Optional[str] = None  # the server's error message, truncated
    finish_reason: Optional[str] = None  # the server's: "stop", "length", ...
    expected_finish_reason: Optional[str] = None  # natural replay only: the recorded label's
    expected_prompt_tokens: Optional[int] = None  # natural replay only: the recorded prompt length
    token_times_s: list = field(default_factory=list, repr=False)  # arrival of each token chunk (not saved)

    @property
    def ok(self) -> bool:
        return self.error is None and self.finished_s is not None and self.sent_s is not None

    @property
    def jct_s(self) -> float:
        return self.finished_s - self.sent_s

    @property
    def ttft_s(self) -> Optional[float]:
        return None if self.first_token_s is None else self.first_token_s - self.sent_s


@dataclass(frozen=True)
class Slo:
    jct_base_s: float = 5.0
    jct_per_token_s: float = 0.05

    def met(self, r: RequestResult) -> bool:
        return r.ok and r.jct_s <= self.jct_base_s + self.jct_per_token_s * r.output_tokens

    def describe(self) -> str:
        return f"JCT <= {self.jct_base_s:g} s + {self.jct_per_token_s:g} s x output tokens"


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def first25pct_rps(sent_s: Sequence[float], finished_s: Sequence[float], num_requests: int) -> float:
    """Paper-style: k = max(1, N // 4) completions over the time from the first send to the k-th."""
    k = max(1, num_requests // 4)
    if len(finished_s) < k or not len(sent_s):
        return math.nan
    elapsed_s = sorted(finished_s)[k - 1] - min(sent_s)
    return k / max(elapsed_s, 1e-9)


def kendall_tau_b(predicted: Sequence[float], actual: Sequence[float]) -> float:
    if len(predicted) < 2:
        return math.nan
    tau = kendalltau(predicted, actual, variant="b").statistic
    return float(tau) if tau is not None else math.nan


def distribution(values: Sequence[float], name: str) -> dict:
    """`mean_<name>`, `p50_<name>`, `p90_<name>`, `p99_<name>`."""
    out = {f"mean_{name}": mean(values)}
    out.update({f"p{q}_{name}": percentile(values, q) for q in (50, 90, 99)})
    return out


def jct_by_tercile(results: Sequence[RequestResult]) -> dict:
    """Mean JCT of completed requests in the short / medium / long third of replayed lengths."""
    lengths = np.array([r.expected_output_tokens for r in results], dtype=np.float64)
    if not len(lengths):
        return {}
    edges = np.quantile(lengths, [1 / 3, 2 / 3])
    tercile = np.searchsorted(edges, lengths, side="right")
    return {f"mean_jct_{name}_s": mean([r.jct_s for r, t in zip(results, tercile) if t == k and r.ok])
            for k, name in enumerate(("short", "medium", "long"))}


def summarize(results: Sequence[RequestResult], slo: Slo = Slo(), max_wait_s: float = 30.0) -> dict:
    """Metrics of one policy's replay (JSON-ready; NaN where undefined)."""
    ok = [r for r in results if r.ok]
    sent = [r.sent_s for r in results if r.sent_s is not None]
    done = [r.finished_s for r in ok]
    span_s = (max(done) - min(sent)) if done and sent else math.nan
    jct = [r.jct_s for r in ok]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot = [(r.jct_s - r.ttft_s) / (r.output_tokens - 1) for r in ok
            if r.ttft_s is not None and r.output_tokens > 1]
    itl = [b - a for r in ok for a, b in zip(r.token_times_s, r.token_times_s[1:])]
    waits = [r.queue_wait_s for r in ok if r.queue_wait_s is not None]
    tokens = sum(r.output_tokens for r in ok)
    pairs = [(r.predicted_output_tokens, r.expected_output_tokens) for r in ok
             if r.predicted_output_tokens is not None]
    per_s = (lambda n: n / span_s) if span_s and span_s > 0 else (lambda n: math.nan)
    num_met = sum(slo.met(r) for r in ok)
    return {
        "num_requests": len(results), "num_completed": len(ok), "num_errors": len(results) - len(ok),
        "errors": dict(Counter(r.error or "incomplete" for r in results if not r.ok)),
        **distribution(jct, "jct_s"), "max_jct_s": max(jct) if jct else math.nan,
        **distribution(ttft, "ttft_s"), **distribution(tpot, "tpot_s"), **distribution(itl, "itl_s"),
        **jct_by_tercile(results),
        "throughput_rps": per_s(len(ok)), "output_tokens_per_s": per_s(tokens),
        "goodput_rps": per_s(num_met), "slo_attainment": num_met / len(results) if results else math.nan,
        "mean_queue_wait_s": mean(waits), "max_queue_wait_s": max(waits) if waits else math.nan,
        "num_waits_over_bound": sum(w > max_wait_s for w in waits),
        "frac_queued": sum(w > QUEUED_S for w in waits) / len(waits) if waits else math.nan,
        "paper_first25pct_rps": first25pct_rps(sent, done, len(results)),
        "kendall_tau_b": kendall_tau_b([p for p, _ in pairs], [a for _, a in pairs]),
        "num_length_mismatches": sum(r.output_tokens != r.expected_output_tokens for r in ok),
        "max_send_lag_s": max((r.sent_s - r.scheduled_s for r in results if r.sent_s is not None), default=math.nan),
        "span_s": span_s,
        **(label_agreement(ok) if any(r.expected_finish_reason for r in results) else {}),
    }
