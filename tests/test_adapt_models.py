"""bench.adapt.models: per-model mismatch with the shipped predictor, on bench.adapt's exact requests
(fixture: tests/fixtures/adapt/alpacaeval_2_models.jsonl, 36 AlpacaEval prompts x 2 models)."""
import json
from pathlib import Path

import pytest

from bench.adapt import models

FIXTURE = Path(__file__).parent / "fixtures" / "adapt" / "alpacaeval_2_models.jsonl"


@pytest.mark.timeout(120)
def test_rows_are_bench_adapts_requests_and_headroom_is_best_offline_minus_shipped(capsys):
    models.main(["--prompts", str(FIXTURE), "--num-requests", "30", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert out[0].startswith("| model |") and len(out) == 2 + 2 + 1
    rows = {r["model"]: r for r in report["models"]}
    assert set(rows) == {"Meta-Llama-3-8B-Instruct", "claude-2"}
    for r in rows.values():
        assert r["num_train"] == 20 and r["num_eval"] == 10
        best = max(r["tau_offline_warm_start"], r["tau_offline_fresh"])
        assert r["headroom"] == pytest.approx(best - r["tau_current_head"])
    # the same seed picks the same prompts for every model; lengths differ by model
    args = models.parse_args(["--prompts", str(FIXTURE), "--num-requests", "30"])
    from bench.replay.workload import demo_tokenizer

    a, b = (models.requests_for(args, m, demo_tokenizer()) for m in sorted(rows))
    assert [x.prompt for x in a] == [x.prompt for x in b]
    assert [x.output_tokens for x in a] != [x.output_tokens for x in b]


@pytest.mark.timeout(60)
def test_models_with_other_prompts_are_refused(tmp_path):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    for r in rows:
        if r["model"] == "claude-2":
            r["prompt"] = "other " + r["prompt"]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(SystemExit, match="other prompts"):
        models.main(["--prompts", str(path), "--num-requests", "30"])
