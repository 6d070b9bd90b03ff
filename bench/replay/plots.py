"""PNG plots of a live replay: JCT CDF per policy, mean/p99 JCT bars, queue length over time.

Invariant: plots only read what the replay recorded (per-request JCTs, summaries, queue samples);
nothing here recomputes a metric differently from `replay_metrics`.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"fcfs": "tab:gray", "ssjf": "tab:blue", "sjf-oracle": "tab:green"}
EXTRA_COLORS = ("tab:orange", "tab:purple", "tab:red", "tab:brown", "tab:pink")


def color(arm: str, arms: list[str] | None = None) -> str:
    """A fixed color per policy; other arms (e.g. ssjf@aging=linear) get the next spare one."""
    if arm in COLORS:
        return COLORS[arm]
    extras = [a for a in (arms or [arm]) if a not in COLORS]
    return EXTRA_COLORS[extras.index(arm) % len(EXTRA_COLORS)] if arm in extras else EXTRA_COLORS[0]


def _finish(fig, ax, title: str, path: Path) -> None:
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_jct_cdf(jcts_by_policy: dict[str, list[float]], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, jcts in jcts_by_policy.items():
        xs = np.sort(np.asarray(jcts))
        if xs.size:
            ax.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post", label=policy, color=color(policy, list(jcts_by_policy)))
    ax.set_xlabel("JCT, client-observed (s)")
    ax.set_ylabel("fraction of requests")
    _finish(fig, ax, title, path)


def plot_jct_bars(summaries: dict[str, dict], path: Path, title: str) -> None:
    policies = list(summaries)
    x = np.arange(len(policies))
    fig, ax = plt.subplots(figsize=(6, 4))
    for offset, key, label in ((-0.2, "mean_jct_s", "mean"), (0.2, "p99_jct_s", "p99")):
        values = [summaries[p][key] for p in policies]
        bars = ax.bar(x + offset, values, width=0.4, label=label, alpha=0.6 if label == "mean" else 1.0,
                      color=[color(p, policies) for p in policies], edgecolor="black")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, policies)
    ax.set_ylabel("JCT (s)")
    ax.set_title(title + "\nleft bar: mean, right bar: p99", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_queue(samples_by_policy: dict[str, list], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for policy, samples in samples_by_policy.items():
        if samples:
            t, waiting, _ = zip(*samples)
            ax.plot(t, waiting, label=policy, color=color(policy, list(samples_by_policy)), lw=1.2)
    ax.set_xlabel("time since replay start (s)")
    ax.set_ylabel("requests waiting in the router queue")
    _finish(fig, ax, title, path)


def plot_jct_vs_load(summaries_by_load: dict[str, dict[str, dict]], path: Path, title: str) -> None:
    """Median-over-rounds mean JCT per arm at each load (one line per arm)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    loads = sorted(summaries_by_load, key=float)
    for policy in summaries_by_load[loads[0]]:
        ys = [summaries_by_load[load][policy]["mean_jct_s"] for load in loads]
        ax.plot([float(x) for x in loads], ys, marker="o", label=policy,
                color=color(policy, list(summaries_by_load[loads[0]])))
    ax.set_xlabel("load (mean arrival rate / calibrated service rate)")
    ax.set_ylabel("mean JCT (s), median over rounds")
    _finish(fig, ax, title, path)


def write_plots(out_dir: Path, jcts_by_policy: dict, summaries: dict, samples_by_policy: dict,
                title: str, summaries_by_load: dict | None = None) -> list[str]:
    out_dir = Path(out_dir)
    paths = [out_dir / "jct_cdf.png", out_dir / "jct_bars.png", out_dir / "queue_length.png"]
    plot_jct_cdf(jcts_by_policy, paths[0], title)
    plot_jct_bars(summaries, paths[1], title)
    plot_queue(samples_by_policy, paths[2], title)
    if summaries_by_load and len(summaries_by_load) > 1:
        paths.append(out_dir / "jct_vs_load.png")
        plot_jct_vs_load({f"{k:g}" if isinstance(k, float) else k: v for k, v in summaries_by_load.items()},
                         paths[-1], title.split(", load")[0])
    return [str(p) for p in paths]
