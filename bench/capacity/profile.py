"""Where the router spends its CPU at the knee: py-spy samples the router replica while the driver offers
the knee rate again; the top frames (by samples that include them, and by own samples) are returned.

Invariant: profiling is opt-in and never fails the run: without py-spy or ptrace permission the result
says why instead.
"""
from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from bench.capacity.procs import ROUTER_TITLE, find

SAMPLE_RATE_HZ = 200
TOP_FRAMES = 15


async def profile_router(handle, usage, rate_per_s: float, args, measure: Callable) -> dict[str, Any]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    routers = find(ROUTER_TITLE)
    if not Path(py_spy).exists() or len(routers) != 1:
        return {"error": f"py-spy at {py_spy} exists: {Path(py_spy).exists()}; router processes: {len(routers)}"}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "router.txt"
        spy = await asyncio.create_subprocess_exec(
            py_spy, "record", "--pid", str(routers[0].pid), "--rate", str(SAMPLE_RATE_HZ), "--duration",
            str(int(args.duration_s)), "--format", "raw", "--output", str(raw), "--nonblocking",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        row = await measure(handle, usage, rate_per_s, args, seed=7)
        output = (await spy.communicate())[0].decode(errors="replace")
        if spy.returncode != 0 or not raw.exists():
            return {"error": f"py-spy exited {spy.returncode}: {output[-400:]}", "row": row}
        return {"rate_per_s": rate_per_s, "row": row, **top_frames(raw.read_text())}


def top_frames(collapsed: str) -> dict[str, Any]:
    """Aggregate py-spy's collapsed stacks ("f1;f2;f3 count" lines) into inclusive and self sample shares."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    share = lambda counter: [(frame, round(n / max(total, 1), 3)) for frame, n in counter.most_common(TOP_FRAMES)]
    return {"samples": total, "inclusive": share(inclusive), "self": share(own)}


def _short(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`; line numbers split one function into many."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0]})" if where else name
