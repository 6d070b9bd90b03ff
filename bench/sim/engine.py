"""Event loop and engine-replica cost models for the discrete-event simulator.

Invariant: replicas only execute what the router dispatched to them; they never reorder or hold a
private queue of requests beyond the batch being formed. A replica reports finished requests (and
capacity changes) to its `host`, which calls the router and hands new leases back. Replicas report
engine times; the host adds the client latency to what the client observes.

Cost models (times in seconds, `a` = per-request stall, `b` = per-token cost, `p` = prefill cost per
prompt token, `h` = dispatch latency (router -> engine), `c` = client latency; p, h, c default 0; a
request's first token comes at the end of its first step):
- none:       one request at a time, job time h + a + p * prompt + b * tokens.
- dynamic:    a static batch is formed from requests dispatched to an idle replica within
              `batch_wait_s` (or until `batch_size` are there); it runs h + a + p * sum(prompts) +
              step * max(tokens) with step cost b + growth_s * (n - 1). Each member *completes*
              (JCT) after the startup and its own tokens' steps, but all slots free only when the
              whole batch finishes; while it runs the replica reports capacity = batch members, so it
              receives nothing new.
- continuous: iteration-level. Each step costs step_s(n) = b + growth_s * (n - 1) for n running
              sequences; a dispatched request reaches the replica h later (holding its slot, stalling
              nobody) and joins at the next step boundary; a step in which k sequences join costs an
              extra a * k + p * (their prompt tokens) (their prefill stalls the batch). A sequence
              leaves after its `tokens`-th step (the join step included). Between membership changes
              the steps are skipped analytically.
The client sees first tokens and completions c later (HTTP in, streaming back); c holds no slot.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Callable, Protocol

from router import Lease


class EventLoop:
    """Minimal event heap: (time_s, seq) ordering makes same-time events FIFO and deterministic."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable, tuple]] = []
        self._seq = 0
        self.now_s = 0.0

    def at(self, time_s: float, fn: Callable, *args) -> None:
        heapq.heappush(self._heap, (time_s, self._seq, fn, args))
        self._seq += 1

    def run(self) -> None:
        heap = self._heap
        while heap:
            time_s, _, fn, args = heapq.heappop(heap)
            self.now_s = time_s
            fn(time_s, *args)


@dataclass(frozen=True)
class CostModel:
    request_overhead_s: float = 0.1  # a, stalls the batch; the paper's job model: 0.1 s + 0.02 s/token
    per_token_s: float = 0.02
    step_growth_s: float = 0.0  # extra cost per step per additional sequence in the batch
    batch_size: int = 4
    batch_wait_s: float = 0.05  # dynamic batching's formation window
    prefill_per_prompt_token_s: float = 0.0  # charged with the overhead when a request starts (p)
    dispatch_latency_s: float = 0.0  # router -> engine (h): holds the slot, stalls no other sequence
    client_latency_s: float = 0.0  # outside the router's slots (c): adds to client-observed times only

    def step_s(self, num_seqs: int) -> float:
        return self.per_token_s + self.step_growth_s * max(0, num_seqs - 1)

    def prefill_s(self, leases: list[Lease]) -> float:
        """Prefill of the prompts of requests starting together (overhead not included)."""
        return self.prefill_per_prompt_token_s * sum(d.record.prompt_tokens for d in leases)


class Host(Protocol):
    loop: EventLoop

    def first_token(self, lease: Lease, time_s: float) -> None: ...
    def completed(self, lease: Lease, time_s: float) -> None: ...
    def release(self, replica_id: str, leases: list[Lease], now_s: float, num_slots: int | None = None) -> None: ...
    def set_capacity(self, replica_id: str, num_slots: int, now_s: float) -> None: ...


class BatchReplica:
    """`none` (batch_size 1) and `dynamic` batching."""

    def __init__(self, replica_id: str, cost: CostModel, host: Host, batch_size: int) -> None:
        self.replica_id, self.cost, self.host, self.batch_size = replica_id, cost, host, batch_size
        self.num_slots = batch_size
        self._forming: list[Lease] = []
        self._running = False
        self._window_open = False
        self._formation = 0

    def deliver(self, lease: Lease, now_s: float) -> None:
        assert not self._running, "dispatch to a busy static batch"
        self._forming.append(lease)
        if len(self._forming) >= self.batch_size:
            self._start(now_s)
        elif not self._window_open:
            self._window_open = True
            wait_s = self.cost.batch_wait_s if self.batch_size > 1 else 0.0
            self.host.loop.at(now_s + wait_s, self._on_window_closed, self._formation)

    def _on_window_closed(self, now_s: float, formation: int) -> None:
        if formation == self._formation and self._window_open and self._forming:
            self._start(now_s)

    def _start(self, now_s: float) -> None:
        members, self._forming = self._forming, []
        self._window_open, self._running = False, True
        self._formation += 1
        step_s = self.cost.step_s(len(members))
        startup_s = self.cost.dispatch_latency_s + self.cost.request_overhead_s + self.cost.prefill_s(members)
        for d in members:
            self.host.first_token(d, now_s + startup_s + step_s)
            self.host.completed(d, now_s + startup_s + step_s * max(1, d.record.true_output_tokens))
        end_s = now_s + startup_s + step_s * max(max(1, d.record.true_output_tokens) for d in members)
        if len(members) < self.batch_size:
            self.host.set_capacity(self.replica_id, len(members), now_s)
        self.host.loop.at(end_s, self._on_batch_end, members)

    def _on_batch_end(self, now_s: float, members: list[Lease]) -> None:
        self._running = False
        restore = self.batch_size if len(members) < self.batch_size else None
        self.host.release(self.replica_id, members, now_s, restore)


class ContinuousReplica:
    """Iteration-level batching with analytic step skipping between membership changes."""

    def __init__(self, replica_id: str, cost: CostModel, host: Host, batch_size: int) -> None:
        self.replica_id, self.cost, self.host = replica_id, cost, host
        self.num_slots = batch_size
        self._members: dict[str, list] = {}  # request_id -> [lease, steps_left at segment start]
        self._joining: list[Lease] = []
        self._seg_start_s = 0.0  # first step of the segment ends at start + prefill + step
        self._seg_prefill_s = 0.0
        self._seg_step_s = 0.0
        self._next_steps = 0  # the boundary event now scheduled is after this many steps
        self._version = 0
        self._busy = False
        self._at_boundary = False

    def deliver(self, lease: Lease, now_s: float) -> None:
        if self.cost.dispatch_latency_s > 0:
            self.host.loop.at(now_s + self.cost.dispatch_latency_s, self._arrive, lease)
        else:
            self._arrive(now_s, lease)

    def _arrive(self, now_s: float, lease: Lease) -> None:
        self._joining.append(lease)
        if self._at_boundary or (self._busy and self._next_steps == 0):
            return  # joins at the boundary being processed / the start already scheduled
        if not self._busy:
            self._busy = True
            self._schedule(now_s, 0)
            return
        elapsed_s = now_s - self._seg_start_s - self._seg_prefill_s
        steps = max(1, math.ceil(elapsed_s / self._seg_step_s - 1e-9))
        if steps < self._next_steps:
            self._schedule(self._boundary_s(steps), steps)

    def _boundary_s(self, steps: int) -> float:
        return self._seg_start_s + self._seg_prefill_s + steps * self._seg_step_s

    def _schedule(self, time_s: float, steps: int) -> None:
        self._version += 1
        self._next_steps = steps
        self.host.loop.at(time_s, self._on_boundary, self._version, steps)

    def _on_boundary(self, now_s: float, version: int, steps: int) -> None:
        if version != self._version:
            return
        finished = []
        for request_id, member in self._members.items():
            member[1] -= steps
            if member[1] <= 0:
                finished.append(member[0])
        for lease in finished:
            del self._members[lease.request_id]
            self.host.completed(lease, now_s)
        self._at_boundary = True
        if finished:
            self.host.release(self.replica_id, finished, now_s)
        self._at_boundary = False
        self._start_segment(now_s)

    def _start_segment(self, now_s: float) -> None:
        for d in self._joining:
            self._members[d.request_id] = [d, max(1, d.record.true_output_tokens)]
        joined, self._joining = self._joining, []
        self._seg_prefill_s = self.cost.request_overhead_s * len(joined) + self.cost.prefill_s(joined)
        if not self._members:
            self._busy = False
            return
        self._seg_start_s = now_s
        self._seg_step_s = self.cost.step_s(len(self._members))
        for d in joined:
            self.host.first_token(d, self._boundary_s(1))
        steps = min(m[1] for m in self._members.values())
        self._schedule(self._boundary_s(steps), steps)


def make_replica(batching: str, replica_id: str, cost: CostModel, host: Host):
    if batching == "none":
        return BatchReplica(replica_id, cost, host, 1)
    if batching == "dynamic":
        return BatchReplica(replica_id, cost, host, cost.batch_size)
    if batching == "continuous":
        return ContinuousReplica(replica_id, cost, host, cost.batch_size)
    raise ValueError(f"unknown batching {batching!r}; valid: none, dynamic, continuous")


def nominal_capacity_rps(batching: str, cost: CostModel, mean_tokens: float, mean_max_tokens: float,
                         mean_prompt_tokens: float = 0.0) -> float:
    """Rough requests/s one replica sustains; used to turn a target load into an arrival rate."""
    a = cost.request_overhead_s + cost.prefill_per_prompt_token_s * mean_prompt_tokens
    b, h = cost.per_token_s, cost.dispatch_latency_s
    if batching == "none":
        return 1.0 / (h + a + b * mean_tokens)
    n = cost.batch_size
    if batching == "dynamic":
        return n / (h + a + cost.step_s(n) * mean_max_tokens)
    return 1.0 / (a + (h + cost.step_s(n) * mean_tokens) / n)
