"""proxy_model training on the committed fixture: beats a constant, round-trips, evaluate CLI JSON.

Marked slow: the module trains a small predictor (~20 s on an idle 2-core host; the timeouts are
generous because the shared host is often oversubscribed).
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxy_model import load_predictor, split_of
from proxy_model.data import read_jsonl
from proxy_model.metrics import accuracy
from proxy_model.train import main as train_main

FIXTURE = Path(__file__).parent / "fixtures" / "proxy" / "sharegpt_600.jsonl"
REQUIRED_KEYS = {"n", "kendall_tau", "spearman", "mae_tokens", "bucket_accuracy",
                 "latency_ms_per_prompt_batch1", "latency_ms_per_prompt_batch32"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("proxy") / "ckpt"
    cache = tmp_path_factory.mktemp("cache")
    assert train_main(["--data", str(FIXTURE), "--head", "ranking", "--out", str(out), "--epochs", "30",
                       "--max-prompt-tokens", "32", "--num-layers", "3", "--feature-layers", "2,3", "--cache-dir", str(cache), "--seed", "0"]) == 0
    return out


def held_out_rows():
    return [r for r in read_jsonl(FIXTURE) if split_of(r.prompt, 0) == "test"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_training_beats_constant_on_held_out_rows(checkpoint):
    rows = held_out_rows()
    predictor = load_predictor(checkpoint)
    truth = [r.output_tokens for r in rows]
    model = accuracy(predictor.predict([r.prompt for r in rows]), truth)
    constant = accuracy([float(sorted(truth)[len(truth) // 2])] * len(rows), truth)
    assert model["kendall_tau"] > 0.1
    assert model["kendall_tau"] > constant["kendall_tau"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_checkpoint_round_trip_gives_identical_predictions(checkpoint, tmp_path):
    prompts = [r.prompt for r in held_out_rows()][:16]
    first = load_predictor(checkpoint)
    before = first.predict(prompts)
    first.save(tmp_path / "copy")
    after = load_predictor(tmp_path / "copy").predict(prompts)
    assert before == after
    assert all(t > 0 for t in before)
    json.dumps(first.info())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_evaluate_cli_prints_json_last(checkpoint):
    proc = subprocess.run([sys.executable, "-m", "proxy_model.evaluate", "--data", str(FIXTURE), "--checkpoint",
                           str(checkpoint), "--json", "--latency-prompts", "32"],
                          capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert REQUIRED_KEYS <= set(result)
    assert result["n"] == len(held_out_rows()) and result["kendall_tau"] > 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_finetune_with_warmup_and_val_checks_keeps_best_and_round_trips(tmp_path):
    out = tmp_path / "ft"
    assert train_main(["--data", str(FIXTURE), "--head", "classification", "--out", str(out), "--epochs", "3",
                       "--max-prompt-tokens", "32", "--num-layers", "2", "--feature-layers", "1,2",
                       "--cache-dir", str(tmp_path / "cache"), "--finetune", "--finetune-layers", "1",
                       "--finetune-minutes", "0.1", "--finetune-warmup", "0.2", "--finetune-eval-minutes", "0.03",
                       "--finetune-val-rows", "40", "--seed", "0"]) == 0
    train = json.loads((out / "config.json").read_text())["train"]
    history = train["finetune_history"]
    assert history[0]["prompts_seen"] == 0 and len(history) >= 2
    assert train["finetune_best_val_kendall_tau"] == max(h["val_kendall_tau"] for h in history)
    assert (out / "backbone_delta.safetensors").exists()
    prompts = [r.prompt for r in held_out_rows()][:8]
    assert load_predictor(out).predict(prompts) == load_predictor(out).predict(prompts)
