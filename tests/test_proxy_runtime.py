"""The encoder on ONNX Runtime (issue 10, item 4): fp32 matches torch, int8 is close but its own
feature space (own cache file, head trained on it), and the runtime round-trips through a checkpoint."""
import json
from pathlib import Path

import pytest
import torch

from proxy_model import load_predictor
from proxy_model.cache import cache_file
from proxy_model.encoder import Encoder
from proxy_model.train import main as train_main
from proxy_model.train import parse_args

PROMPTS = ["Hi", "Write a 2000-word essay on the history of Rome, with sections and references.",
           "Translate 'cat' to French. " * 40, "def f(x):\n    return x ** 2\n# explain this code"]


@pytest.fixture(scope="module")
def torch_states():
    encoder = Encoder(max_prompt_tokens=48, num_layers=2)
    return encoder, encoder.encode(PROMPTS)[0]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("runtime, min_cosine, max_abs", [("onnx", 0.99999, 1e-4), ("onnx-int8", 0.98, None)])
def test_onnx_runtime_states_match_torch(torch_states, runtime, min_cosine, max_abs):
    encoder, reference = torch_states
    encoder.use_runtime(runtime)
    try:
        states, _ = encoder.encode(PROMPTS)
    finally:
        encoder.use_runtime("torch")
    assert states.shape == reference.shape
    cosine = torch.nn.functional.cosine_similarity(states[:, :, 0], reference[:, :, 0], dim=-1)
    assert float(cosine.min()) > min_cosine
    diff = float((states - reference).abs().max())
    if max_abs is not None:
        assert diff < max_abs
    else:  # int8 weights: not the fp32 features, so heads must be trained on them
        assert diff > 1e-3


@pytest.mark.timeout(60)
def test_each_runtime_has_its_own_feature_cache(torch_states, tmp_path):
    encoder, _ = torch_states
    torch_file = cache_file(tmp_path, encoder)
    encoder.runtime = "onnx-int8"
    try:
        assert cache_file(tmp_path, encoder) != torch_file
    finally:
        encoder.runtime = "torch"
    with pytest.raises(ValueError, match="unknown encoder runtime"):
        encoder.use_runtime("tensorrt")


@pytest.mark.timeout(60)
def test_finetune_needs_the_torch_runtime(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--data", "x", "--out", "y", "--finetune", "--runtime", "onnx-int8"])
    assert "--finetune needs --runtime torch" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_int8_head_trains_and_round_trips(tmp_path):
    fixture = str(Path(__file__).parent / "fixtures" / "proxy" / "sharegpt_600.jsonl")
    out = tmp_path / "ckpt"
    assert train_main(["--data", fixture, "--out", str(out), "--runtime", "onnx-int8", "--epochs", "5",
                       "--max-prompt-tokens", "32", "--num-layers", "2", "--feature-layers", "1,2",
                       "--cache-dir", str(tmp_path / "cache"), "--seed", "0"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["runtime"] == "onnx-int8" and "onnx-int8" in config["name"]
    predictor = load_predictor(out)
    assert predictor.encoder.runtime == "onnx-int8" and predictor.encoder.session is not None
    first = predictor.predict(PROMPTS)
    assert all(t > 0 for t in first) and first == load_predictor(out).predict(PROMPTS)
