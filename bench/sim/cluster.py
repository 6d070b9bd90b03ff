"""A simulated cluster: router front(s) + engine replicas on one event loop, and its metrics.

Invariant: every ordering decision comes from router.Scheduler (the same code the live router runs);
this module only moves simulated time, routes (power-of-two-choices front) and counts.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from router import Lease, QueueFullError, RequestRecord, Scheduler, SchedulerConfig
from bench.sim.engine import CostModel, EventLoop, make_replica


class ClusterFront:
    """One cluster-wide wait queue: a single Scheduler owns every replica."""

    def __init__(self, config: SchedulerConfig, replica_ids: list[str], num_slots: int, seed: int) -> None:
        self.scheduler = Scheduler(config)
        for rid in replica_ids:
            self.scheduler.add_replica(rid, num_slots, 0.0)

    def arrive(self, rec: RequestRecord, now_s: float) -> list[Lease]:
        return self.scheduler.on_arrival(rec, now_s)

    def finish(self, lease: Lease, now_s: float) -> list[Lease]:
        return self.scheduler.release(lease, now_s)

    def set_capacity(self, replica_id: str, num_slots: int, now_s: float) -> list[Lease]:
        return self.scheduler.set_capacity(replica_id, num_slots, now_s)


class PowerOfTwoFront:
    """Per-replica queues: one Scheduler per replica; each arrival samples two distinct replicas
    (seeded) and joins the one with fewer waiting + running requests (ties: the first sampled)."""

    def __init__(self, config: SchedulerConfig, replica_ids: list[str], num_slots: int, seed: int) -> None:
        self.schedulers: dict[str, Scheduler] = {}
        for rid in replica_ids:
            self.schedulers[rid] = Scheduler(config)
            self.schedulers[rid].add_replica(rid, num_slots, 0.0)
        self._ids = list(replica_ids)
        self._rng = random.Random(seed)

    def arrive(self, rec: RequestRecord, now_s: float) -> list[Lease]:
        if len(self._ids) == 1:
            return self.schedulers[self._ids[0]].on_arrival(rec, now_s)
        first, second = (self.schedulers[r] for r in self._rng.sample(self._ids, 2))
        load = lambda s: s.num_waiting + s.num_running  # noqa: E731
        return (second if load(second) < load(first) else first).on_arrival(rec, now_s)

    def finish(self, lease: Lease, now_s: float) -> list[Lease]:
        return self.schedulers[lease.replica_id].release(lease, now_s)

    def set_capacity(self, replica_id: str, num_slots: int, now_s: float) -> list[Lease]:
        return self.schedulers[replica_id].set_capacity(replica_id, num_slots, now_s)


FRONTS = {"cluster": ClusterFront, "p2c": PowerOfTwoFront}


@dataclass
class Workload:
    arrival_s: np.ndarray  # non-decreasing
    true_output_tokens: np.ndarray
    predicted_output_tokens: np.ndarray
    prompt_tokens: np.ndarray | None = None  # None: 0 for every request
    record_fields: list[dict] | None = None  # per request: extra RequestRecord keywords (max_tokens, ...)

    def records(self):
        """RequestRecords in arrival order; request ids are the workload indices as strings."""
        arrivals = self.arrival_s.tolist()
        true = self.true_output_tokens.tolist()
        pred = self.predicted_output_tokens.tolist()
        prompt = [0] * len(arrivals) if self.prompt_tokens is None else self.prompt_tokens.tolist()
        extra = self.record_fields or [{}] * len(arrivals)
        return (RequestRecord(request_id=str(i), arrival_time_s=arrivals[i], predicted_output_tokens=pred[i],
                              true_output_tokens=true[i], prompt_tokens=prompt[i], **extra[i])
                for i in range(len(arrivals)))


class Simulation:
    """Host for the replicas (see bench.sim.engine.Host)."""

    def __init__(self, front, batching: str, cost: CostModel, num_replicas: int) -> None:
        self.loop = EventLoop()
        self.front = front
        self.client_latency_s = cost.client_latency_s
        self.replicas = {f"r{i}": make_replica(batching, f"r{i}", cost, self) for i in range(num_replicas)}
        self.completion_s: dict[str, float] = {}
        self.first_token_s: dict[str, float] = {}
        self.wait_s: dict[str, float] = {}
        self.replica_of: dict[str, str] = {}
        self.num_rejected = 0

    def run(self, workload: Workload) -> None:
        self._next_arrival(workload.records())
        self.loop.run()

    def _next_arrival(self, records) -> None:
        rec = next(records, None)
        if rec is not None:
            self.loop.at(rec.arrival_time_s, self._on_arrival, rec, records)

    def _on_arrival(self, now_s: float, rec: RequestRecord, records) -> None:
        self._next_arrival(records)
        try:
            self._deliver(self.front.arrive(rec, now_s), now_s)
        except QueueFullError:
            self.num_rejected += 1

    def _deliver(self, leases: list[Lease], now_s: float) -> None:
        for d in leases:
            self.wait_s[d.request_id] = d.queue_wait_s
            self.replica_of[d.request_id] = d.replica_id
            self.replicas[d.replica_id].deliver(d, now_s)

    # Host protocol
    def first_token(self, lease: Lease, time_s: float) -> None:
        self.first_token_s[lease.request_id] = time_s + self.client_latency_s

    def completed(self, lease: Lease, time_s: float) -> None:
        self.completion_s[lease.request_id] = time_s + self.client_latency_s

    def release(self, replica_id: str, leases: list[Lease], now_s: float, num_slots: int | None = None) -> None:
        granted = []
        for lease in leases:
            granted += self.front.finish(lease, now_s)
        if num_slots is not None:
            granted += self.front.set_capacity(replica_id, num_slots, now_s)
        self._deliver(granted, now_s)

    def set_capacity(self, replica_id: str, num_slots: int, now_s: float) -> None:
        self._deliver(self.front.set_capacity(replica_id, num_slots, now_s), now_s)


def burst_first25pct_rps(sim: Simulation, workload: Workload, burst_size: int) -> float:
    """The paper's "throughput" per burst: a quarter of the burst divided by the time from the burst's
    arrival to its quarter-th completion, averaged over complete bursts."""
    num = (len(workload.arrival_s) // burst_size) * burst_size
    done_s = np.array([sim.completion_s.get(str(i), np.nan) for i in range(num)]).reshape(-1, burst_size)
    quarter = max(1, burst_size // 4)
    elapsed_s = np.sort(done_s, axis=1)[:, quarter - 1] - workload.arrival_s[:num:burst_size]
    return float(np.nanmean(quarter / np.maximum(elapsed_s, 1e-9)))


def metrics(sim: Simulation, workload: Workload) -> dict[str, float]:
    """JCT = completion - arrival. Throughput = completed / (last completion - first arrival);
    `first25pct_rps`: completion rate of the first 25% of all jobs."""
    ids = list(sim.completion_s)
    idx = np.fromiter((int(i) for i in ids), dtype=np.int64, count=len(ids))
    done_s = np.fromiter(sim.completion_s.values(), dtype=float, count=len(ids))
    jct_s = done_s - workload.arrival_s[idx]
    wait_s = np.fromiter((sim.wait_s[i] for i in ids), dtype=float, count=len(ids))
    start_s = float(workload.arrival_s[0])
    quarter_s = np.sort(done_s)[max(0, len(ids) // 4 - 1)] - start_s
    return {
        "num_completed": len(ids),
        "num_rejected": sim.num_rejected,
        "mean_jct_s": float(jct_s.mean()),
        "p50_jct_s": float(np.percentile(jct_s, 50)),
        "p99_jct_s": float(np.percentile(jct_s, 99)),
        "mean_queue_wait_s": float(wait_s.mean()),
        "max_queue_wait_s": float(wait_s.max()),
        "throughput_rps": len(ids) / max(1e-9, float(done_s.max()) - start_s),
        "first25pct_rps": (len(ids) // 4) / max(1e-9, float(quarter_s)),
    }


def build_simulation(*, front: str, config: SchedulerConfig, batching: str, cost: CostModel, num_replicas: int,
                     seed: int) -> Simulation:
    """Replicas r0..r{n-1} with 1 slot (no batching) or `cost.batch_size` slots each."""
    slots = 1 if batching == "none" else cost.batch_size
    return Simulation(FRONTS[front](config, [f"r{i}" for i in range(num_replicas)], slots, seed),
                      batching, cost, num_replicas)


def simulate(workload: Workload, *, front: str, config: SchedulerConfig, batching: str, cost: CostModel,
             num_replicas: int, seed: int, burst_size: int = 0) -> dict[str, float]:
    sim = build_simulation(front=front, config=config, batching=batching, cost=cost, num_replicas=num_replicas,
                           seed=seed)
    sim.run(workload)
    out = metrics(sim, workload)
    if burst_size:
        out["burst_first25pct_rps"] = burst_first25pct_rps(sim, workload, burst_size)
    return out
