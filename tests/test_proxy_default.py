"""The shipped predictors ("default"; "fast": 2 layers; the former defaults "frozen-v1" and "chat-v1")
load offline and predict positive token counts."""
import json
import threading

import pytest

from proxy_model import load_predictor


@pytest.mark.timeout(180)
@pytest.mark.parametrize("checkpoint", [None, "fast", "frozen-v1", "chat-v1"])
def test_shipped_predictor_predicts_positive_tokens(checkpoint):
    p = load_predictor(checkpoint)
    prompts = ["Hi", "Write a 2000-word essay on the history of Rome, with sections and references.",
               "Translate 'cat' to French."]
    out = p.predict(prompts, model_names=["unknown-model", None, "gpt4"])
    assert len(out) == 3 and all(isinstance(t, float) and t > 0 for t in out)
    assert out == p.predict(prompts, model_names=["unknown-model", None, "gpt4"])
    assert isinstance(p.name, str) and p.name
    info = p.info()
    json.dumps(info)
    assert info["split"]["seed"] == 0 and "metrics" in info


@pytest.mark.timeout(180)
def test_default_predictor_from_worker_thread():
    p = load_predictor()
    result = []
    worker = threading.Thread(target=lambda: result.append(p.predict(["hello there"] * 40)))
    worker.start()
    worker.join(30)
    assert len(result) == 1 and len(result[0]) == 40 and len(set(result[0])) == 1


@pytest.mark.timeout(60)
def test_unknown_checkpoint_name_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no proxy_model checkpoint"):
        load_predictor("no-such-checkpoint")
    with pytest.raises(FileNotFoundError, match="no proxy_model checkpoint"):
        load_predictor(tmp_path)
