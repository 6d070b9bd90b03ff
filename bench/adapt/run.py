"""Online-learning benchmark: the router learns a mismatched model's output lengths from its traffic.

    python -m bench.adapt [--quick] [--prompts FILE --model-name NAME] [--out DIR]

Invariant: FCFS and SSJF replay the identical requests (prompts, replayed lengths, arrival times), each
on a freshly deployed app with `predictor.online` on. By default both arms are served side by side, at
the same time, each on its own app with half the machine, and calibrate together on a generic prompt;
with `--sequential` FCFS runs first and measures the service rate. Either way no calibration or warm-up
request ever teaches a predictor a replayed prompt. Every prompt is replayed once, so each prediction
is for a prompt whose label the learner has not seen. Thirds are by arrival order, and each third
carries the same offered load (bench/adapt/arrivals.py). The offline references are trained on the
rows outside the last third and measured on the last third. Sequential arms may see different machine
speeds; `drift_free` replays both in the simulator at one fitted speed (bench/adapt/drift_free.py),
plus SSJF with the shipped head frozen (its predictions for the same requests), which isolates what
the learning changed. The last stdout line is JSON (`tau_first_third`, `tau_last_third`, `num_refits`,
`jct_ssjf_over_fcfs_first_third`, `jct_ssjf_over_fcfs_last_third`, offline taus, `drift_free`,
done-when checks).
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from bench.adapt.arrivals import even_load_thirds, thirds
from bench.adapt.cli import parse_args
from bench.adapt.drift_free import simulated_thirds
from bench.common import cpus_needed, deployed_app, load_app_config, serve_session
from bench.replay.cli import config_overrides
from bench.replay.report import dumps
from bench.replay.run import calibrate_output_rate, run_policy, slots_of, timed_workload, wait_idle, warm_up
from bench.replay.trace import TraceError, read_trace, window
from bench.replay.workload import PromptRow, count_tokens, demo_tokenizer
from bench.sim.records import Setup

ARMS = ("fcfs", "ssjf")
# warm-up requests teach the learner too: one generic prompt, never a replayed one
WARM_UP_POOL = [PromptRow("Say hello.", 8)]


def log(msg: str) -> None:
    print(f"[adapt] {msg}", file=sys.stderr, flush=True)


def load_pool(args, tokenizer) -> list[PromptRow]:
    """One row per prompt of the chosen model; responses counted with the served tokenizer. Every
    row is used (AlpacaEval prompts were never in the shipped predictor's ShareGPT training rows)."""
    from proxy_model.data import read_jsonl

    rows = [r for r in read_jsonl(args.prompts) if r.prompt.strip()
            and (not args.model_name or r.model in (None, args.model_name))]
    if len(rows) < args.num_requests:
        raise SystemExit(f"{args.prompts}: {len(rows)} rows for model {args.model_name!r}, "
                         f"--num-requests {args.num_requests} needs that many")
    missing = [r.response for r in rows if r.output_tokens is None]
    counts = iter(count_tokens(missing, tokenizer) if missing else [])
    return [PromptRow(r.prompt, r.output_tokens if r.output_tokens is not None else next(counts)) for r in rows]


def scheduler_status(base_url: str) -> dict:
    with urllib.request.urlopen(f"{base_url}/v1/scheduler", timeout=30) as resp:
        return json.loads(resp.read())


def run_arm(base_url: str, args, policy: str, state: dict) -> dict:
    """Deploy, warm up, (calibrate and build the workload once), replay, read the router's status."""
    config = load_app_config(None, {**config_overrides(args), "scheduler.policy": policy})
    with deployed_app(config):
        warm_up(base_url, WARM_UP_POOL, slots_of(config), args.seed)
        if state["rate"] is None:
            state["rate"] = {"output_tokens_per_s": calibrate_output_rate(base_url, args, state, slots_of(config))}
        if state["items"] is None:
            build_items(args, state)
        asyncio.run(wait_idle(base_url))
        results, _, summary = run_policy(base_url, policy, state["items"], args, config.scheduler.max_wait_s)
        status = scheduler_status(base_url)
    return arm_record(policy, config, results, summary, status)


def build_items(args, state: dict) -> None:
    """The replayed requests, once the service rate is known: timed to `load`, equal load per third."""
    items, timing = timed_workload(args, state["pool"], state["offsets_s"], state["tokenizer"], state["rate"],
                                   args.load, args.seed)
    state["items"], per_third = even_load_thirds(items, state["rate"]["output_tokens_per_s"], args.load)
    state["timing"] = {**timing, **per_third}


def arm_record(policy: str, config, results: list, summary: dict, status: dict) -> dict:
    log(f"{policy}: mean JCT {summary['mean_jct_s']:.2f} s, errors {summary['num_errors']}")
    return {"results": results, "summary": summary, "predictor": status.get("predictor", {}),
            "checkpoint": config.predictor.checkpoint}


def run_side_by_side(base_url: str, args, state: dict) -> dict:
    """Both arms at once, each on its own app (bench.replay.concurrent): deploy, warm up, calibrate
    together, build the workload once from the per-arm rate, replay the same requests into both."""
    from bench.replay.concurrent import arm_configs, calibrate_side_by_side, deployed_arms, replay_all
    from bench.replay.metrics import Slo, summarize

    configs = arm_configs(args, args.arms)
    slots = slots_of(configs[0])
    with deployed_arms(base_url, configs) as urls:
        for url in urls:
            warm_up(url, WARM_UP_POOL, slots, args.seed)
        # calibration requests teach both learners: the generic prompt with the pool's lengths, so no
        # replayed prompt is ever labelled before it is predicted (its short prompt makes prefill ~2% cheaper)
        generic_pool = [PromptRow(WARM_UP_POOL[0].prompt, r.true_output_tokens) for r in state["pool"]]
        generic = {**state, "pool": generic_pool}
        state["rate"] = {"output_tokens_per_s": calibrate_side_by_side(urls, args, generic, slots)}
        state["calibration"] = generic["calibration"]
        build_items(args, state)
        for url in urls:
            asyncio.run(wait_idle(url))
        deadline_s = state["items"][-1].arrival_s + args.drain_timeout_s
        outs = asyncio.run(replay_all(urls, state["items"], deadline_s, args.poll_interval_s))
        statuses = [scheduler_status(url) for url in urls]
    slo = Slo(args.slo_jct_base_s, args.slo_jct_per_token_s)
    return {arm.label: arm_record(arm.label, config, results, summarize(results, slo, config.scheduler.max_wait_s),
                                  status)
            for arm, config, (results, _), status in zip(args.arms, configs, outs, statuses)}


def third_metrics(results: list) -> dict:
    """Per third: Kendall tau-b of live predictions vs replayed lengths, mean JCT, completions."""
    out = {}
    for name, idx in thirds(len(results)).items():
        ok = [results[i] for i in idx if results[i].ok]
        pairs = np.array([(r.predicted_output_tokens, r.output_tokens) for r in ok
                          if r.predicted_output_tokens is not None], dtype=float).reshape(-1, 2)
        tau = kendalltau(pairs[:, 0], pairs[:, 1]).statistic if len(pairs) > 1 else float("nan")
        out[name] = {"tau": float(tau), "mean_jct_s": float(np.mean([r.jct_s for r in ok])) if ok else float("nan"),
                     "completed": len(ok), "requests": len(idx)}
    return out


def offline_reference(items: list, checkpoint, length_scale: float, seed: int) -> tuple[dict, np.ndarray]:
    """Heads trained offline on the rows outside the last third, tau on the last third; and the shipped
    head's predictions for every item, in the router's units (x length_scale), as a frozen router would
    have queued them."""
    from proxy_model import load_predictor
    from proxy_model.online_reference import reference_taus

    predictor = load_predictor(checkpoint)
    predicted, features = predictor.predict_with_features([it.prompt for it in items])
    tokens = np.array([it.output_tokens for it in items], dtype=float)
    censored = np.array([it.output_tokens >= it.max_tokens for it in items])
    last = thirds(len(items))["last_third"]
    taus = reference_taus(predictor, features.numpy(), tokens, censored, np.arange(last.start),
                          np.arange(last.start, last.stop), seed)
    return taus, length_scale * np.asarray(predicted, dtype=float)


def run_setup(args, config) -> dict:
    """The layout bench.sim.records reads (as bench.replay's summary `setup`)."""
    scheduler = {k: v for k, v in asdict(config.scheduler).items() if k != "policy"}
    return {"batching": args.batching, "num_replicas": args.num_replicas, "max_batch_size": args.max_batch_size,
            "scheduler": scheduler, "client_max_tokens": args.client_max_tokens, "load": args.load,
            "side_by_side": not args.sequential}


def drift_free(arms: dict, setup: dict, frozen_predicted_tokens: np.ndarray, seed: int) -> dict:
    rows = [{"policy": arm, **asdict(r)} for arm in ARMS for r in arms[arm]["results"]]
    scheduler = setup["scheduler"]
    return simulated_thirds(rows, Setup(setup["batching"], setup["num_replicas"], setup["max_batch_size"],
                                        0.01, scheduler, {}, setup["client_max_tokens"], setup["load"]),
                            seed, frozen_predicted_tokens)


def headline(arms: dict, reference: dict, sim: dict) -> dict:
    ssjf, fcfs = arms["ssjf"]["thirds"], arms["fcfs"]["thirds"]
    online = arms["ssjf"]["predictor"].get("online") or {}
    first, last = ssjf["first_third"]["tau"], ssjf["last_third"]["tau"]
    ratio = {t: ssjf[t]["mean_jct_s"] / fcfs[t]["mean_jct_s"] for t in ("first_third", "last_third")}
    best_offline = max(reference["tau_offline_fresh"], reference["tau_offline_warm_start"])
    return {"tau_first_third": first, "tau_last_third": last, "tau_gain": last - first,
            "num_refits": online.get("num_refits"), "predictor_version": online.get("version"),
            "labels_collected": online.get("labels_collected"), "last_refit": online.get("last_refit"),
            "jct_ssjf_over_fcfs_first_third": ratio["first_third"],
            "jct_ssjf_over_fcfs_last_third": ratio["last_third"],
            "tau_offline_fresh": reference["tau_offline_fresh"],
            "tau_offline_warm_start": reference["tau_offline_warm_start"],
            "tau_shipped_head_last_third": reference["tau_current_head"],
            "drift_free": sim,
            "done_when": {"tau_gain_ge_0.15": last - first >= 0.15,
                          "tau_last_within_0.03_of_offline": last >= best_offline - 0.03,
                          "jct_ratio_last_lt_first": ratio["last_third"] < ratio["first_third"],
                          "jct_ratio_last_lt_first_drift_free":
                              sim["jct_ssjf_over_fcfs_last_third"] < sim["jct_ssjf_over_fcfs_first_third"],
                          "online_beats_frozen_last_third_drift_free": sim["jct_online_over_frozen_last_third"] < 1},
            "errors": {arm: arms[arm]["summary"]["num_errors"] for arm in ARMS}}


def write_outputs(out_dir: Path, args, state: dict, arms: dict, report: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "requests.jsonl", "w") as f:
        for arm in ARMS:
            for r in arms[arm]["results"]:
                row = {k: v for k, v in asdict(r).items() if k != "token_times_s"}
                f.write(dumps({"policy": arm, **row}) + "\n")
    summary = {"command": " ".join(["python -m bench.adapt"] + sys.argv[1:]), "setup": state["setup"], "prompts": args.prompts,
               "model_name": args.model_name, "calibration": state["calibration"], "workload": state["timing"],
               "arms": {arm: {k: v for k, v in arms[arm].items() if k != "results"} for arm in ARMS}, **report}
    (out_dir / "summary.json").write_text(dumps(summary, indent=2) + "\n")


def main(argv=None) -> None:
    from proxy_model.data import DataError

    args = parse_args(argv)
    started = time.monotonic()
    tokenizer = demo_tokenizer()
    try:
        state = {"pool": load_pool(args, tokenizer), "tokenizer": tokenizer, "rate": None, "items": None,
                 "offsets_s": window(read_trace(args.trace), args.num_requests, 0), "calibration": None}
    except (TraceError, DataError, ValueError) as exc:  # bad input files: one clear line
        raise SystemExit(f"error: {exc}") from None
    log(f"{len(state['pool'])} prompts of {args.model_name or 'all models'} from {args.prompts}; "
        f"{args.num_requests} requests at load {args.load:g}")
    config = load_app_config(None, config_overrides(args))
    state["setup"] = run_setup(args, config)
    arms = {}
    with serve_session(cpus_needed(config) * (1 if args.sequential else len(ARMS))) as base_url:
        if args.sequential:
            for policy in ARMS:
                arms[policy] = run_arm(base_url, args, policy, state)
        else:
            arms = run_side_by_side(base_url, args, state)
    for policy in ARMS:
        arms[policy]["thirds"] = third_metrics(arms[policy]["results"])
    log("offline references (features of the replayed prompts, heads trained outside the last third)")
    reference, frozen = offline_reference(state["items"], arms["ssjf"]["checkpoint"], args.output_scale, args.seed)
    log("drift-free JCT: both arms, and SSJF with the shipped head frozen, in the simulator at one fitted speed")
    sim = drift_free(arms, state["setup"], frozen, args.seed)
    report = {**headline(arms, reference, sim), "offline_reference": reference, "wall_s": time.monotonic() - started}
    write_outputs(Path(args.out), args, state, arms, report)
    for arm in ARMS:
        print(f"{arm}: " + ", ".join(f"{t}: tau {m['tau']:.3f}, mean JCT {m['mean_jct_s']:.2f} s"
                                     for t, m in arms[arm]["thirds"].items()))
    print(dumps(report), flush=True)


if __name__ == "__main__":
    main()
