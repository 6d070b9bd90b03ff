"""README figure blocks generated from the committed benchmark summaries in docs/bench/.

Invariant: every table between `<!-- figures:NAME -->` and `<!-- /figures:NAME -->` in README.md is
exactly what `render(NAME)` makes from `docs/bench/`, so a figure in the README cannot drift from the
run that produced it (tests/test_readme_figures.py checks this; `--write` refreshes the README).

    python -m bench.readme_figures [--write]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Callable

from bench.common import REPO_ROOT

DOCS = REPO_ROOT / "docs" / "bench"
README = REPO_ROOT / "README.md"
BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)
REPLAY_COLUMNS = (("mean_jct_s", "mean JCT s", "{:.2f}"), ("p50_jct_s", "p50", "{:.2f}"),
                  ("p90_jct_s", "p90", "{:.2f}"), ("p99_jct_s", "p99", "{:.2f}"),
                  ("mean_jct_short_s", "short third", "{:.2f}"), ("mean_jct_long_s", "long third", "{:.2f}"),
                  ("mean_ttft_s", "TTFT", "{:.2f}"), ("mean_tpot_s", "TPOT", "{:.3f}"),
                  ("p99_itl_s", "p99 ITL", "{:.3f}"), ("goodput_rps", "goodput req/s", "{:.2f}"),
                  ("max_queue_wait_s", "max wait s", "{:.1f}"), ("num_waits_over_bound", "waits > bound", "{:.0f}"),
                  ("num_errors", "errors", "{:.0f}"))
RATIOS = (("ssjf_over_fcfs_mean_jct_s", "SSJF / FCFS mean JCT"), ("ssjf_over_fcfs_p99_jct_s", "SSJF / FCFS p99 JCT"),
          ("sjf_oracle_over_fcfs_mean_jct_s", "oracle / FCFS mean JCT"),
          ("ssjf_aging_linear_over_fcfs_mean_jct_s", "SSJF with the old linear aging / FCFS mean JCT"),
          ("capture", "capture = (FCFS − SSJF) / (FCFS − oracle)"))


def _load(name: str) -> dict:
    return json.loads((DOCS / name).read_text())


def _fmt(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def replay_table(summary: dict) -> str:
    lines = ["| policy | " + " | ".join(h for _, h, _ in REPLAY_COLUMNS) + " |",
             "|---" * (len(REPLAY_COLUMNS) + 1) + "|"]
    for policy, s in summary["policies"].items():
        lines.append(f"| {policy} | " + " | ".join(_fmt(s.get(k), f) for k, _, f in REPLAY_COLUMNS) + " |")
    return "\n".join(lines)


def ratio_table(comparison: dict) -> str:
    lines = ["| ratio (median over rounds) | value | 95% CI |", "|---|---|---|"]
    for key, label in RATIOS:
        if key in comparison:
            lo, hi = comparison.get(f"{key}_ci95") or (None, None)
            lines.append(f"| {label} | **{_fmt(comparison[key], '{:.3f}')}** | "
                         f"[{_fmt(lo, '{:.3f}')}, {_fmt(hi, '{:.3f}')}] |")
    return "\n".join(lines)


def replay_block(file: str) -> Callable[[], str]:
    def render() -> str:
        summary = _load(file)
        setup, cal = summary["setup"], summary["calibration"]
        primary = summary["loads"][f"{summary['primary_load']:g}"]
        head = (f"`{setup['command']}` — {setup['rounds']} rounds, load {summary['primary_load']:g} "
                f"(calibrated {cal['output_tokens_per_s']:.0f} output tokens/s), "
                f"{primary['workloads'][0]['num_requests']} requests per round, "
                f"{setup['num_replicas']} replicas × {setup['max_batch_size']} slots ({setup['batching']}); "
                f"wall time {summary['setup'].get('wall_s', 0) / 60:.0f} min.")
        return "\n\n".join([head, replay_table(summary), ratio_table(summary["comparison"])]) + "\n"
    return render


def sweep_block(file: str) -> Callable[[], str]:
    def render() -> str:
        summary = _load(file)
        lines = [f"`{summary['setup']['command']}`", "",
                 "| load | FCFS mean JCT s | SSJF s | oracle s | SSJF / FCFS [95% CI] | oracle / FCFS [95% CI] | capture "
                 "| FCFS queued | FCFS mean wait s |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for load, rep in summary["loads"].items():
            p, c = rep["policies"], rep["comparison"]
            cells = [f"{load}", *(f"{p[arm]['mean_jct_s']:.2f}" for arm in ("fcfs", "ssjf", "sjf-oracle"))]
            for key in ("ssjf_over_fcfs_mean_jct_s", "sjf_oracle_over_fcfs_mean_jct_s"):
                lo, hi = c.get(f"{key}_ci95") or (None, None)
                cells.append(f"{_fmt(c.get(key), '{:.3f}')} [{_fmt(lo, '{:.3f}')}, {_fmt(hi, '{:.3f}')}]")
            cells += [_fmt(c.get("capture"), "{:.2f}"), f"{p['fcfs']['frac_queued']:.0%}",
                      _fmt(p["fcfs"].get("mean_queue_wait_s"), "{:.2f}")]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"
    return render


def sim_block(file: str) -> Callable[[], str]:
    """bench.sim's last stdout line (compare mode): one row per front/policy."""
    def render() -> str:
        out = _load(file)
        lines = ["| configuration | mean JCT s | p50 s | p99 s | mean wait s | max wait s |", "|---|---|---|---|---|---|"]
        for name, m in out["results"].items():
            lines.append(f"| {name} | {m['mean_jct_s']:.3f} | {m['p50_jct_s']:.3f} | {m['p99_jct_s']:.2f} | "
                         f"{m['mean_queue_wait_s']:.3f} | {m['max_queue_wait_s']:.2f} |")
        return "\n".join(lines) + "\n"
    return render


def aging_block() -> str:
    """SSJF under relative vs linear aging on the same simulated workload and starvation bound."""
    runs = {"relative (half-life 5 s)": _load("sim_aging_relative.json"), "linear (10 tokens/s)": _load("sim_aging_linear.json")}
    lines = ["| aging | policy | mean JCT s | p99 s | max wait s | / FCFS mean |", "|---|---|---|---|---|---|"]
    for aging, out in runs.items():
        fcfs = out["results"]["cluster/fcfs"]["mean_jct_s"]
        for name in ("cluster/ssjf", "cluster/sjf-oracle"):
            m = out["results"][name]
            lines.append(f"| {aging} | {name.split('/')[1]} | {m['mean_jct_s']:.3f} | {m['p99_jct_s']:.2f} | "
                         f"{m['max_queue_wait_s']:.2f} | {m['mean_jct_s'] / fcfs:.3f} |")
    return "\n".join(lines) + "\n"


def paper_block() -> str:
    out = _load("sim_paper.json")
    lines = ["| batching | FCFS mean JCT s | SSJF s | oracle SJF s | SSJF vs FCFS | oracle vs FCFS | SSJF with our default guard |",
             "|---|---|---|---|---|---|---|"]
    for mode, m in out.items():
        lines.append(f"| {mode} | {m['fcfs_mean_jct_s']:.1f} | {m['ssjf_mean_jct_s']:.1f} | {m['sjf_oracle_mean_jct_s']:.1f} | "
                     f"**{-m['jct_reduction_pct']:+.1f}%** | {-m['oracle_jct_reduction_pct']:+.1f}% | "
                     f"{-m['guarded_jct_reduction_pct']:+.1f}% |")
    return "\n".join(lines) + "\n"


def sim_live_block() -> str:
    """bench.sim.live on the full replay: live vs simulated mean JCT per arm, and the policy ratios."""
    out = _load("sim_live.json")
    fit = out["fit"]
    lines = [f"Fitted from the live rows: {fit['request_overhead_s'] * 1000:.0f} ms per-request overhead, "
             f"{fit['prefill_per_prompt_token_s'] * 1000:.3f} ms per prompt token, decode step "
             f"{fit['per_token_s'] * 1000:.1f} ms + {fit['step_growth_s'] * 1000:.2f} ms per extra sequence.", "",
             "| policy | live mean JCT s | simulated s | sim / live |", "|---|---|---|---|"]
    for policy, a in out["agreement"].items():
        lines.append(f"| {policy} | {a['live']:.2f} | {a['sim']:.2f} | {a['ratio']:.2f} |")
    ratios = out["details"]["by_load"][f"{out['details']['primary_load']:g}"]["policy_ratios"]
    lines += ["", "| ratio of mean JCT | live | simulated |", "|---|---|---|"]
    lines += [f"| {name} | {r['live']:.3f} | {r['sim']:.3f} |" for name, r in ratios.items()]
    return "\n".join(lines) + "\n"


def extrapolation_block() -> str:
    ext = _load("sim_live.json")["extrapolation"]
    labels = list(ext["by_load"][0]["mean_jct_s"])
    lines = [f"{ext['replicas']} replicas, `{ext['cost']}` cost model, {ext['num_requests']} requests per load:", "",
             "| load | " + " | ".join(f"{k} mean JCT s" for k in labels) + " | SSJF / FCFS | oracle / FCFS |",
             "|---" * (len(labels) + 3) + "|"]
    for row in ext["by_load"]:
        lines.append(f"| {row['load']:g} | " + " | ".join(f"{row['mean_jct_s'][k]:.2f}" for k in labels) +
                     f" | {row.get('ssjf/fcfs', float('nan')):.3f} | {row.get('sjf-oracle/fcfs', float('nan')):.3f} |")
    return "\n".join(lines) + "\n"


def tune_block() -> str:
    """bench.sim.tune: every arm's medians over the val-split tuning windows, per load."""
    out = _load("sim_tune.json")
    loads = list(out["by_load"])
    lines = ["| arm | " + " | ".join(f"load {x}: mean / FCFS | load {x}: p99 / FCFS" for x in loads) + " |",
             "|---" * (1 + 2 * len(loads)) + "|"]
    for arm in out["by_load"][loads[0]]:
        cells = [f"{out['by_load'][x][arm]['mean_jct_s_over_fcfs']:.3f} | {out['by_load'][x][arm]['p99_jct_s_over_fcfs']:.2f}"
                 for x in loads]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


BLOCKS: dict[str, Callable[[], str]] = {
    "sim-tune": tune_block,
    "sim-live": sim_live_block,
    "sim-extrapolation": extrapolation_block,
    "sim-fronts": sim_block("sim_fronts.json"),
    "sim-aging": aging_block,
    "sim-paper": paper_block,
    "replay-full": replay_block("replay_full_summary.json"),
    "replay-concurrent": replay_block("replay_concurrent_summary.json"),
    "replay-sweep": sweep_block("replay_sweep_summary.json"),
    "replay-concurrent-sweep": sweep_block("replay_concurrent_sweep_summary.json"),
}


def render_readme(text: str) -> str:
    """README text with every known figures block regenerated (unknown names raise KeyError)."""
    return BLOCK.sub(lambda m: m.group(1) + BLOCKS[m.group("name")]() + m.group(4), text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme_figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md's blocks in place")
    args = parser.parse_args(argv)
    fresh = render_readme(README.read_text())
    if args.write:
        README.write_text(fresh)
    else:
        sys.stdout.write(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
