"""CPU and memory of the processes a capacity run involves, found by their Ray process titles.

Invariant: `ProcessGroup.cpu_s()` counts only processes that exist for the whole interval being measured
(a process that appears later starts from zero), so a delta is never negative.
"""
from __future__ import annotations

import os

import psutil

ROUTER_TITLE = "SSJFRouter"
ENGINE_TITLE = ":Engine"


def find(title_part: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if title_part in cmdline and "ServeReplica" in cmdline:
            found.append(proc)
    return found


class ProcessGroup:
    def __init__(self, processes: list[psutil.Process]) -> None:
        self.processes = processes

    @classmethod
    def named(cls, title_part: str) -> "ProcessGroup":
        return cls(find(title_part))

    @classmethod
    def this_process(cls) -> "ProcessGroup":
        return cls([psutil.Process(os.getpid())])

    def cpu_s(self) -> float:
        total = 0.0
        for proc in self.processes:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def rss_mb(self) -> float:
        return sum(_safe(lambda p=p: p.memory_info().rss) for p in self.processes) / 2**20

    def uss_mb(self) -> float:
        """Memory unique to these processes (not shared libraries): what each one really costs."""
        return sum(_safe(lambda p=p: p.memory_full_info().uss) for p in self.processes) / 2**20


def machine_busy_cores(before: tuple, after: tuple, wall_s: float) -> float:
    """Cores busy on the whole machine between two `psutil.cpu_times()` readings (everyone's work)."""
    busy = sum(getattr(after, f) - getattr(before, f) for f in ("user", "system", "nice", "irq", "softirq"))
    return busy / wall_s if wall_s > 0 else 0.0


def _safe(read) -> float:
    try:
        return float(read())
    except psutil.Error:
        return 0.0
