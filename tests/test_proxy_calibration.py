"""Score -> tokens calibration of a classification head: keeps the order, spreads predictions like
the labels, and leaves uncalibrated heads/checkpoints exactly as before.

Labels are the committed fixture's `output_tokens` (ShareGPT first turns, see fixtures/proxy/README.md);
scores come from a small untrained head on synthetic features, which shrink toward the median.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from proxy_model import load_predictor
from proxy_model.calibrate import main as calibrate_main
from proxy_model.calibrate import parse_args
from proxy_model.data import read_jsonl
from proxy_model.heads import Head, quantile_buckets
from proxy_model.predictor import SHIPPED_CHECKPOINTS

FIXTURE = Path(__file__).parent / "fixtures" / "proxy" / "sharegpt_600.jsonl"
QUANTILES = [5, 25, 50, 75, 95]


def labels() -> np.ndarray:
    return np.array([r.output_tokens for r in read_jsonl(FIXTURE)], dtype=float)


def classification_head(y: np.ndarray) -> Head:
    torch.manual_seed(0)
    head = Head("classification", in_dim=8, hidden=16, num_buckets=10)
    _, log_medians = quantile_buckets(y, 10)
    head.bucket_log_medians.copy_(torch.tensor(log_medians, dtype=torch.float32))
    return head.eval()


def features(y: np.ndarray, seed: int) -> torch.Tensor:
    """Features weakly tied to the label, so the head's scores correlate with it."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(y), 8, generator=gen)
    return noise + 0.5 * torch.tensor(np.log1p(y), dtype=torch.float32)[:, None]


def scores(head: Head, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return head.score(head(x)).double().numpy()


@pytest.mark.timeout(10)
def test_calibration_keeps_order_strictly():
    y = labels()
    head = classification_head(y)
    head.calibrate(scores(head, features(y, 0)), y)
    s = scores(head, features(y, 1))  # other rows than the fit rows
    uncalibrated, calibrated = np.exp(s), head.score_tokens(s)
    assert kendalltau(calibrated, y).statistic == kendalltau(uncalibrated, y).statistic
    order = np.argsort(s, kind="stable")
    assert np.all(np.diff(calibrated[order]) > 0)
    wide = np.linspace(s.min() - 1.0, s.max() + 1.0, 500)  # also beyond the fitted grid
    assert np.all(np.diff(head.score_tokens(wide)) > 0)


@pytest.mark.timeout(10)
def test_calibration_spreads_predictions_like_the_labels():
    y = labels()
    head = classification_head(y)
    s = scores(head, features(y, 0))
    head.calibrate(s, y)
    want = np.percentile(y, QUANTILES)
    shrunk = np.percentile(np.exp(s), QUANTILES)
    spread = np.percentile(head.score_tokens(s), QUANTILES)
    assert shrunk[-1] / shrunk[0] < 0.5 * want[-1] / want[0]
    np.testing.assert_allclose(spread, want, rtol=0.05)


@pytest.mark.timeout(10)
def test_head_without_calibration_is_exp_of_score():
    y = labels()
    head = classification_head(y)
    assert head.calib_scores.numel() == 0 and head.calib_log_tokens.numel() == 0
    x = features(y, 0)
    with torch.inference_mode():
        raw = head(x)
    expected = np.exp((torch.softmax(raw, dim=1) @ head.bucket_log_medians).double().numpy())
    np.testing.assert_array_equal(head.tokens(raw), expected)


def uncalibrated_copy(name: str, out: Path) -> Path:
    """A shipped checkpoint as it was before calibration: empty grid, no `calibration` note."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(SHIPPED_CHECKPOINTS / name, out)
    state = load_file(str(out / "head.safetensors"))
    state["calib_scores"] = state["calib_log_tokens"] = torch.zeros(0)
    save_file(state, str(out / "head.safetensors"))
    config = json.loads((out / "config.json").read_text())
    config.pop("calibration", None)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_old_checkpoint_loads_unchanged_and_calibrate_cli_only_changes_the_spread(tmp_path):
    old = load_predictor(uncalibrated_copy("fast", tmp_path / "old"))
    prompts = [r.prompt for r in read_jsonl(FIXTURE)][:40]
    before = old.predict(prompts)
    assert before == [float(t) for t in np.exp(old.scores(prompts))]

    out = tmp_path / "calibrated"
    assert calibrate_main(["--checkpoint", str(tmp_path / "old"), "--data", str(FIXTURE), "--out", str(out)]) == 0
    new = load_predictor(out)
    note = new.config["calibration"]
    assert note["split"] == "val" and note["data"] == [FIXTURE.name] and note["rows"] > 10
    assert new.head.calib_scores.numel() > 0
    after = new.predict(prompts)
    assert np.array_equal(np.argsort(before, kind="stable"), np.argsort(after, kind="stable"))
    assert np.ptp(np.log(after)) > np.ptp(np.log(before))
    assert load_predictor(tmp_path / "old").predict(prompts) == before  # --out left the source alone


@pytest.mark.timeout(10)
def test_calibrate_cli_help_shows_defaults_and_never_offers_test(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "(default: val)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parse_args(["--checkpoint", "fast", "--data", str(FIXTURE), "--split", "test"])
