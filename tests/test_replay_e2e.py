"""End to end: the live replay against a real Serve app (tiny workload; one policy, ssjf, so that one
deployment keeps the test under 90 s on a busy 2-core box; the others share every code path)."""
import json

import pytest

from bench.replay.run import run_rounds, write_outputs
from bench.replay.cli import FIXTURE_PROMPTS, FIXTURE_TRACE, parse_args
from bench.replay.trace import read_trace, window
from bench.replay.workload import demo_tokenizer, load_prompt_rows


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(90, func_only=True)  # the shared Ray session start is not counted
def test_tiny_replay_ssjf(serve_instance, tmp_path):
    args = parse_args(["--trace", str(FIXTURE_TRACE), "--prompts", str(FIXTURE_PROMPTS), "--out", str(tmp_path),
                       "--num-requests", "12", "--policies", "ssjf", "--num-replicas", "1", "--max-batch-size", "2",
                       "--output-scale", "0.02", "--max-output-tokens", "6", "--max-prompt-tokens", "32",
                       "--service-rate-rps", "4", "--load", "1.0", "--drain-timeout-s", "30", "--rounds", "1",
                       "--client-max-tokens", "64"])
    tokenizer = demo_tokenizer()
    pool = load_prompt_rows(args.prompts, tokenizer, split_seed=0, split="test")
    offsets = window(read_trace(args.trace), args.num_requests)
    report = write_outputs(tmp_path, args, {**run_rounds(serve_instance, args, pool, offsets, tokenizer), "wall_s": 0.0})

    assert set(report["policies"]) == {"ssjf"}
    for policy, s in report["policies"].items():
        assert s["num_requests"] == 12 and s["num_errors"] == 0, (policy, s["errors"])
        assert s["num_length_mismatches"] == 0  # the hidden stop length: exactly the replayed length
        assert s["mean_jct_s"] > 0 and s["throughput_rps"] > 0 and s["mean_ttft_s"] <= s["mean_jct_s"]
    rows = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert {r["policy"] for r in rows} == {"ssjf"} and len(rows) == 12 and {r["round"] for r in rows} == {0}
    assert all(r["predicted_output_tokens"] is not None and r["queue_wait_s"] is not None for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["loads"]["1"]["workloads"][0]["num_requests"] == 12
    for name in ("jct_cdf.png", "jct_bars.png", "queue_length.png"):
        assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(150, func_only=True)
def test_tiny_replay_arms_side_by_side(serve_instance, tmp_path):
    """--concurrent: both arms on their own apps at once, identical requests, apps deleted afterwards."""
    from ray import serve

    args = parse_args(["--trace", str(FIXTURE_TRACE), "--prompts", str(FIXTURE_PROMPTS), "--out", str(tmp_path),
                       "--num-requests", "10", "--policies", "fcfs,ssjf", "--concurrent", "--num-replicas", "1",
                       "--max-batch-size", "2", "--output-scale", "0.02", "--max-output-tokens", "6",
                       "--max-prompt-tokens", "32", "--service-rate-rps", "4", "--load", "1.0",
                       "--drain-timeout-s", "30", "--rounds", "1", "--client-max-tokens", "64"])
    tokenizer = demo_tokenizer()
    pool = load_prompt_rows(args.prompts, tokenizer, split_seed=0, split="test")
    offsets = window(read_trace(args.trace), args.num_requests)
    report = write_outputs(tmp_path, args, {**run_rounds(serve_instance, args, pool, offsets, tokenizer), "wall_s": 0.0})

    assert set(report["policies"]) == {"fcfs", "ssjf"} and report["setup"]["concurrent"] is True
    for policy, s in report["policies"].items():
        assert s["num_requests"] == 10 and s["num_errors"] == 0, (policy, s["errors"])
        assert s["num_length_mismatches"] == 0
    rows = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    by_arm = {p: sorted((r["index"], r["expected_output_tokens"]) for r in rows if r["policy"] == p)
              for p in ("fcfs", "ssjf")}
    assert by_arm["fcfs"] == by_arm["ssjf"] and len(by_arm["fcfs"]) == 10
    assert not any(name.startswith("arm") for name in serve.status().applications)
