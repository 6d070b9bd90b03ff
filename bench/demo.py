"""A one-minute demo of what SSJF changes: who starts when, FCFS vs SSJF, on one engine slot.

    python -m bench.demo [--plot runs/demo.png] [--no-plot]      (or: make demo)

Starts local Ray + Serve with the built-in demo model on **one engine replica with one slot** (so the
start order is a total order), then, once per policy, sends the same burst over HTTP: four long
prompts first, then four short ones, `--gap-s` apart. Output lengths are fixed with the benchmark-only
field `bench_stop_after_tokens` (long: 96 tokens, short: 4), which the scheduler never reads: SSJF
ranks requests by the predictor's guess from the prompt text alone. It prints, per policy, the order in
which requests started, when each was sent and started and how long it waited; under FCFS the order is
the send order, under SSJF the short requests overtake the earlier long ones. Then it stops everything.

Invariant: the Ray + Serve lifecycle is `bench.common.serve_session` / `deployed_app` (nothing else
starts or stops Ray here), and nothing is left running when it returns or fails.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from bench.common import REPO_ROOT, cpus_needed, deployed_app, load_app_config, serve_session

LONG_PROMPTS = (
    "Write a detailed, multi-chapter fantasy story about a young dragon who learns to fly, with dialogue.",
    "Write a comprehensive 2000-word essay on the causes and consequences of the French Revolution.",
    "Explain in detail how a transformer neural network works, step by step, with examples and code.",
    "Write a long blog post about the history of jazz, covering its origins, key musicians and styles.",
)
SHORT_PROMPTS = (
    "What is 2 + 2?",
    'Translate "hello" into French.',
    "What is the capital of France?",
    "Give me one synonym for happy.",
)
POLICIES = ("fcfs", "ssjf")
DEFAULT_PLOT = REPO_ROOT / "runs" / "demo.png"


@dataclass(frozen=True)
class DemoRequest:
    name: str  # L1.. / S1..
    prompt: str
    tokens: int  # the answer's fixed length (bench_stop_after_tokens)

    @property
    def is_long(self) -> bool:
        return self.name.startswith("L")


def burst(long_tokens: int = 96, short_tokens: int = 4) -> list[DemoRequest]:
    """Long prompts first, then short ones: the order FCFS serves them in."""
    return ([DemoRequest(f"L{i + 1}", p, long_tokens) for i, p in enumerate(LONG_PROMPTS)]
            + [DemoRequest(f"S{i + 1}", p, short_tokens) for i, p in enumerate(SHORT_PROMPTS)])


def demo_overrides(policy: str) -> dict[str, Any]:
    from deployments.config import DEMO_OVERRIDES

    return {
        **DEMO_OVERRIDES,
        "scheduler.policy": policy,
        "engine.batching": "none",  # one slot: requests run one at a time, so start order is total
        "engine_replicas.num_replicas": 1,
        "router.allow_benchmark_fields": True,  # bench_stop_after_tokens
    }


async def _send_burst(url: str, requests: Sequence[DemoRequest], gap_s: float, max_tokens: int) -> list[dict]:
    import aiohttp

    t0 = time.time()

    async def one(i: int, req: DemoRequest, session: aiohttp.ClientSession) -> dict:
        await asyncio.sleep(i * gap_s)
        sent_s = time.time() - t0
        body = {"prompt": req.prompt, "max_tokens": max_tokens, "temperature": 0,
                "bench_stop_after_tokens": req.tokens, "request_id": f"demo-{req.name}-{int(t0)}"}
        async with session.post(f"{url}/v1/completions", json=body) as response:
            answer = await response.json()
        if response.status != 200:
            raise RuntimeError(f"{req.name}: HTTP {response.status}: {answer}")
        timings, ssjf = answer["timings"], answer["ssjf"]
        return {"name": req.name, "long": req.is_long, "sent_s": sent_s,
                "started_s": timings["admitted_at_s"] - t0, "finished_s": timings["finished_at_s"] - t0,
                "waited_s": ssjf["queue_wait_s"], "predicted_tokens": ssjf["predicted_output_tokens"],
                "tokens": answer["usage"]["completion_tokens"], "dispatch_seq": ssjf["dispatch_seq"]}

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        rows = await asyncio.gather(*(one(i, r, session) for i, r in enumerate(requests)))
    return sorted(rows, key=lambda r: r["started_s"])


def run_demo(policies: Sequence[str] = POLICIES, gap_s: float = 0.1, long_tokens: int = 96,
             short_tokens: int = 4, max_tokens: int = 512, log=print) -> dict[str, list[dict]]:
    """Deploy the app once per policy and send the same burst; rows per policy in start order."""
    requests = burst(long_tokens, short_tokens)
    configs = {p: load_app_config(None, demo_overrides(p)) for p in policies}
    results: dict[str, list[dict]] = {}
    with serve_session(num_cpus=max(cpus_needed(c) for c in configs.values())) as url:
        for policy, config in configs.items():
            log(f"[{policy}] deploying (demo model, 1 engine replica x 1 slot) ...")
            with deployed_app(config):
                asyncio.run(_send_burst(url, requests[:1], 0, max_tokens))  # warm-up, not measured
                results[policy] = asyncio.run(_send_burst(url, requests, gap_s, max_tokens))
    return results


def overtakes(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """(short, long) pairs where a short request started before a long one that was sent earlier."""
    return [(s["name"], l["name"]) for s in rows if not s["long"] for l in rows
            if l["long"] and l["sent_s"] < s["sent_s"] and s["started_s"] < l["started_s"]]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def report(results: dict[str, list[dict]]) -> str:
    lines = []
    for policy, rows in results.items():
        lines.append(f"\n{policy.upper()}: start order on the one engine slot (long L* sent first, then short S*)")
        lines.append(f"{'#':>2}  {'req':<4} {'kind':<5} {'sent s':>7} {'started s':>9} {'waited s':>8} "
                     f"{'finished s':>10} {'predicted':>9} {'tokens':>6}")
        for i, r in enumerate(rows, 1):
            lines.append(f"{i:>2}  {r['name']:<4} {'long' if r['long'] else 'short':<5} {r['sent_s']:>7.2f} "
                         f"{r['started_s']:>9.2f} {r['waited_s']:>8.2f} {r['finished_s']:>10.2f} "
                         f"{r['predicted_tokens']:>9.0f} {r['tokens']:>6}")
        lines.append(f"    order: {' '.join(r['name'] for r in rows)}")
    lines.append("")
    for policy, rows in results.items():
        short = [r["waited_s"] for r in rows if not r["long"]]
        long_ = [r["waited_s"] for r in rows if r["long"]]
        passed = overtakes(rows)
        lines.append(f"{policy.upper():>5}: mean wait short {_mean(short):.2f} s, long {_mean(long_):.2f} s, "
                     f"all {_mean(short + long_):.2f} s; short requests that started before an earlier long one: "
                     f"{len({s for s, _ in passed})} of {len(short)}")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 2.2 + 1.6 * len(results)), sharex=True, squeeze=False)
    for ax, (policy, rows) in zip(axes[:, 0], results.items()):
        by_name = sorted(rows, key=lambda r: r["sent_s"])
        for y, r in enumerate(by_name):
            color = "tab:red" if r["long"] else "tab:blue"
            ax.barh(y, r["started_s"] - r["sent_s"], left=r["sent_s"], color=color, alpha=0.25)
            ax.barh(y, r["finished_s"] - r["started_s"], left=r["started_s"], color=color)
        ax.set_yticks(range(len(by_name)), [r["name"] for r in by_name])
        ax.invert_yaxis()
        ax.set_title(f"{policy.upper()}: waiting (light) and running (dark) on one engine slot", fontsize=10)
    axes[-1, 0].set_xlabel("seconds since the first request was sent")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.demo", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated, run in this order")
    ap.add_argument("--gap-s", type=float, default=0.1, help="seconds between consecutive requests of the burst")
    ap.add_argument("--long-tokens", type=int, default=96, help="output tokens of each long request")
    ap.add_argument("--short-tokens", type=int, default=4, help="output tokens of each short request")
    ap.add_argument("--plot", default=str(DEFAULT_PLOT), help="where to save the timeline plot (PNG)")
    ap.add_argument("--no-plot", action="store_true", help="do not save a plot")
    ap.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    results = run_demo([p for p in args.policies.split(",") if p], args.gap_s, args.long_tokens,
                       args.short_tokens, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(report(results))
    if not args.no_plot:
        print(f"plot: {plot(results, Path(args.plot))}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"done in {time.monotonic() - started:.0f} s; Ray and Serve stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
