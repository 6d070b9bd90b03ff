"""Replay inputs: trace parsing (Azure CSV, JSONL ms), windowing, time scaling, workload determinism
and the held-out filter. Fast, no Ray."""
import json

import numpy as np
import pytest

from bench.replay.cli import FIXTURE_PROMPTS, FIXTURE_TRACE, parse_args
from bench.replay.trace import (TraceError, mean_rate_rps, parse_azure_timestamp, read_trace, scale_to_rate,
                                window)
from bench.replay.workload import (PromptRow, build_workload, fingerprint, held_out, load_prompt_rows,
                                   replayed_length, truncate_prompt)
from proxy_model.data import split_of

AZURE_CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.0000000,879,91
"""


@pytest.mark.timeout(10)
def test_azure_timestamp_with_seven_fractional_digits():
    a = parse_azure_timestamp("2023-11-16 18:15:46.6805900")
    b = parse_azure_timestamp("2023-11-16 18:15:46.6805950")  # float64 resolves ~0.24 us at 1.7e9 s
    assert a == pytest.approx(1700158546.68059, abs=1e-6)
    assert b - a == pytest.approx(5e-6, abs=5e-7)
    assert parse_azure_timestamp("2023-11-16 18:15:47") == 1700158547.0


@pytest.mark.timeout(10)
def test_read_azure_csv(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text(AZURE_CSV)
    offsets = window(read_trace(path), 3)
    assert offsets == pytest.approx([0.0, 4.314579, 4.31941], abs=1e-6)


@pytest.mark.timeout(10)
def test_read_jsonl_ms_sorts_and_ignores_other_fields(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text('{"timestamp": 2500, "x": 1}\n\n{"timestamp": 1000}\n{"timestamp": 1500.5}\n')
    assert window(read_trace(path), 3) == pytest.approx([0.0, 0.5005, 1.5])


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text,suffix", [("TIME,x\n1,2\n3,4\n", ".csv"), ('{"t": 1}\n{"t": 2}\n', ".jsonl"),
                                         ('{"timestamp": "a"}\n{"timestamp": 1}\n', ".jsonl"),
                                         ("TIMESTAMP\n2023-11-16 18:15:46.5\n", ".csv"), ("", ".txt")])
def test_bad_traces_raise_trace_error(tmp_path, text, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(TraceError, match=str(path.name)):
        read_trace(path)


@pytest.mark.timeout(10)
def test_window_and_scale_to_rate():
    times = np.array([100.0, 101.0, 103.0, 106.0, 110.0])
    offsets = window(times, 4, start=1)
    assert offsets == pytest.approx([0.0, 2.0, 5.0, 9.0])
    assert mean_rate_rps(offsets) == pytest.approx(3 / 9)
    scaled = scale_to_rate(offsets, target_rps=3.0)
    assert mean_rate_rps(scaled) == pytest.approx(3.0)
    assert scaled == pytest.approx(offsets / 9.0)  # one factor: gap ratios (burstiness) are kept
    with pytest.raises(ValueError):
        window(times, 5, start=1)
    with pytest.raises(ValueError):
        scale_to_rate(np.zeros(3), 1.0)


@pytest.mark.timeout(10)
def test_fixture_trace_is_the_azure_conv_trace():
    offsets = window(read_trace(FIXTURE_TRACE), 300)
    assert offsets[1] == pytest.approx(4.314579, abs=1e-4)  # 18:15:46.6805900 -> 18:15:50.9951690
    assert np.all(np.diff(offsets) >= 0)


def _pool(n=50):
    return [PromptRow(f"prompt number {i}", 10 * i + 1) for i in range(n)]


@pytest.mark.timeout(10)
def test_same_seed_same_workload_other_seed_differs():
    arrivals = np.linspace(0, 10, 20)
    a = build_workload(arrivals, _pool(), seed=7, output_scale=0.5, max_output_tokens=100)
    b = build_workload(arrivals, _pool(), seed=7, output_scale=0.5, max_output_tokens=100)
    c = build_workload(arrivals, _pool(), seed=8, output_scale=0.5, max_output_tokens=100)
    assert a == b and fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(c)
    assert len({it.prompt for it in a}) == 20  # without replacement when the pool is large enough
    assert [it.arrival_s for it in a] == pytest.approx(list(arrivals))


@pytest.mark.timeout(10)
def test_replayed_length_scale_cap_and_client_cap():
    assert replayed_length(0, 1.0, None) == 1
    assert replayed_length(801, 0.125, None) == 100
    assert replayed_length(2000, 0.125, 128) == 128
    items = build_workload(np.zeros(50), _pool(), seed=0, output_scale=0.125, max_output_tokens=32)
    for it in items:
        assert it.output_tokens == replayed_length(it.true_output_tokens, 0.125, 32)
        assert it.max_tokens == 1024  # a client default, not the replayed length (no oracle leak)


@pytest.mark.timeout(60)
def test_truncate_prompt_to_token_budget():
    from bench.replay.workload import demo_tokenizer

    tok = demo_tokenizer()
    text = "the quick brown fox jumps over the lazy dog " * 20
    cut = truncate_prompt(text, tok, 10)
    assert text.startswith(cut)
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) == 10
    assert truncate_prompt("short prompt", tok, 10) == "short prompt"


def _find(split, seed=0):
    return next(f"prompt {i}" for i in range(10_000) if split_of(f"prompt {i}", seed) == split)


@pytest.mark.timeout(10)
def test_held_out_filter_never_keeps_train_prompts(tmp_path):
    train, test, val = _find("train"), _find("test"), _find("val")
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"prompt {i}", "output_tokens": i + 1} for i in range(300)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pool = load_prompt_rows(path, tokenizer=object(), split_seed=0, split="test")
    prompts = {r.prompt for r in pool}
    assert test in prompts and train not in prompts and val not in prompts
    assert all(split_of(p, 0) == "test" for p in prompts)
    items = build_workload(np.zeros(500), pool, seed=1)  # with replacement: still only held-out rows
    assert {it.prompt for it in items} <= prompts
    both = {r.prompt for r in load_prompt_rows(path, object(), 0, "heldout")}
    assert val in both and train not in both
    with pytest.raises(ValueError):
        held_out(pool, 0, "train")


@pytest.mark.timeout(10)
def test_split_seed_changes_the_split(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"p{i}", "output_tokens": 5}) for i in range(200)))
    a = {r.prompt for r in load_prompt_rows(path, object(), 0)}
    b = {r.prompt for r in load_prompt_rows(path, object(), 1)}
    assert a != b


@pytest.mark.timeout(60)
def test_fixture_prompts_are_held_out_and_small():
    pool = load_prompt_rows(FIXTURE_PROMPTS, tokenizer=object(), split_seed=0, split="test")
    assert len(pool) == 200  # every fixture row passes the filter
    assert all(len(r.prompt) <= 300 and r.true_output_tokens >= 0 for r in pool)
    assert FIXTURE_PROMPTS.stat().st_size + FIXTURE_TRACE.stat().st_size < 150_000


@pytest.mark.timeout(10)
def test_quick_preset_and_explicit_options_win():
    quick = parse_args(["--quick"])
    assert quick.num_requests == 200 and quick.policies == ["fcfs", "ssjf", "sjf-oracle"]
    explicit = parse_args(["--quick", "--num-requests", "12", "--policies", "ssjf"])
    assert explicit.num_requests == 12 and explicit.policies == ["ssjf"]
    with pytest.raises(SystemExit):
        parse_args(["--policies", "lifo"])


@pytest.mark.timeout(60)
def test_cli_names_file_and_line_of_a_bad_row(tmp_path, capsys):
    from bench.replay.run import main

    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"timestamp": 0}\n{"timestamp": "soon"}\n')
    with pytest.raises(SystemExit, match=rf"error: {trace}:2: 'timestamp' must be a number"):
        main(["--trace", str(trace), "--prompts", str(FIXTURE_PROMPTS), "--out", str(tmp_path / "out")])
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi", "output_tokens": 3}\n{"prompt": 5}\n')
    with pytest.raises(SystemExit, match=rf"error: {prompts}:2: "):
        main(["--trace", str(FIXTURE_TRACE), "--prompts", str(prompts), "--out", str(tmp_path / "out")])
