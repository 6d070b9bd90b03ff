"""Lexical features, the ListMLE head, folded head ensembles and heads trained on a shipped
checkpoint's tuned encoder.

The training tests are marked slow (each trains a small head on the committed fixture).
"""
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from proxy_model import load_predictor
from proxy_model.chat import predictor_text
from proxy_model.data import read_jsonl
from proxy_model.heads import Head, fold_ensemble, list_mle
from proxy_model.lexical import LEXICAL_NAMES, lexical_features, split_suffix
from proxy_model.train import main as train_main

FIXTURE = Path(__file__).parent / "fixtures" / "proxy" / "sharegpt_600.jsonl"
CHAT = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a colour"},
        {"role": "assistant", "content": "x" * 500}, {"role": "user", "content": "Why? Answer in one word."}]


def named(text: str) -> dict:
    return dict(zip(LEXICAL_NAMES, lexical_features([text])[0].tolist()))


@pytest.mark.timeout(10)
def test_chat_suffix_is_parsed_and_plain_text_has_none():
    text = predictor_text(CHAT)
    assert split_suffix(text) == ("Why? Answer in one word.", "turn 2; previous answer: medium; system: Be terse.")
    chat, plain = named(text), named("Why? Answer in one word.")
    assert chat["log_turn"] == pytest.approx(math.log(2)) and chat["previous_medium"] == 1 and chat["has_system"] == 1
    assert plain["log_turn"] == plain["has_previous"] == plain["has_system"] == 0
    assert {k: v for k, v in chat.items() if not k.startswith(("log_turn", "has_", "previous"))} == pytest.approx(
        {k: v for k, v in plain.items() if not k.startswith(("log_turn", "has_", "previous"))})
    assert split_suffix("see [turn 3] above")[1] == ""  # brackets inside the message are not the suffix


@pytest.mark.timeout(10)
def test_cues_and_requested_length():
    short, long_ = named("Answer in one word: is it red?"), named("Write a detailed 500 words essay with ```code```")
    assert short["cue_short"] > 0 and short["ends_question"] == 1 and long_["cue_short"] == 0
    assert long_["log_requested_count"] == pytest.approx(math.log1p(500)) and long_["code_fences"] > 0
    assert long_["cue_write"] > 0 and long_["cue_long"] > 0
    assert lexical_features([]).shape == (0, len(LEXICAL_NAMES))


@pytest.mark.timeout(10)
def test_list_mle_prefers_scores_in_length_order():
    tokens = torch.tensor([5.0, 50.0, 500.0, 50.0])
    right, wrong = torch.log(tokens), -torch.log(tokens)
    assert list_mle(right, tokens) < list_mle(wrong, tokens)
    score = torch.zeros(4, requires_grad=True)
    list_mle(score, tokens).backward()
    assert score.grad[2] < 0 < score.grad[0]  # raise the longest, lower the shortest


@pytest.mark.timeout(10)
def test_folded_ensemble_outputs_the_mean_of_its_members_logits():
    torch.manual_seed(0)
    members = [Head("classification", 12, 16, 5) for _ in range(3)]
    for h in members:
        h.feature_mean.fill_(0.5)
        h.bucket_log_medians.resize_(5).copy_(torch.arange(5.0))
        h.eval()
    folded = fold_ensemble(members)
    x = torch.randn(7, 12)
    with torch.no_grad():
        assert torch.allclose(folded(x), torch.stack([h(x) for h in members]).mean(0), atol=1e-5)
    assert folded.mlp[0].out_features == 48 and torch.equal(folded.bucket_log_medians, members[0].bucket_log_medians)
    members[1].feature_mean.fill_(0.0)
    with pytest.raises(ValueError, match="feature_mean"):
        fold_ensemble(members)


@pytest.fixture(scope="module")
def lexical_listmle(tmp_path_factory):
    out = tmp_path_factory.mktemp("lex") / "ckpt"
    assert train_main(["--data", str(FIXTURE), "--head", "listmle", "--lexical", "--ensemble", "2", "--out", str(out), "--epochs", "10",
                       "--max-prompt-tokens", "32", "--num-layers", "2", "--feature-layers", "1,2",
                       "--cache-dir", str(tmp_path_factory.mktemp("cache"))]) == 0
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_lexical_listmle_checkpoint_predicts_as_trained(lexical_listmle, tmp_path):
    p = load_predictor(lexical_listmle)
    assert p.config["features"]["lexical"] and p.head.kind == "listmle"
    assert p.config["head"]["in_dim"] == 2 * 2 * 384 + 1 + len(LEXICAL_NAMES)  # 2 layers x (mean, cls)
    assert p.config["head"]["hidden"] == 2 * 256 and len(p.config["train"]["ensemble_members"]) == 2
    prompts = [r.prompt for r in read_jsonl(FIXTURE)[:20]] + [CHAT]
    before = p.predict(prompts)
    assert all(t > 0 for t in before) and len(set(before)) > 10
    assert p.config["metrics"]["test"]["kendall_tau"] > 0.1
    p.save(tmp_path / "copy")
    assert load_predictor(tmp_path / "copy").predict(prompts) == before


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_head_on_a_shipped_checkpoints_tuned_encoder(tmp_path):
    out, cache = tmp_path / "ckpt", tmp_path / "cache"
    assert train_main(["--data", str(FIXTURE), "--head", "ranking", "--init-encoder", "chat-v1", "--out", str(out),
                       "--epochs", "3", "--feature-layers", "2,3,4", "--poolings", "mean", "--max-rows", "200",
                       "--cache-dir", str(cache)]) == 0
    source = load_predictor("chat-v1")
    tuned = load_predictor(out)
    assert tuned.config["encoder"]["finetuned_layers"] == source.config["encoder"]["finetuned_layers"] == 2
    shipped = load_file(str(source.path / "backbone_delta.safetensors"))
    assert load_file(str(out / "backbone_delta.safetensors")).keys() == shipped.keys()
    prompts = [r.prompt for r in read_jsonl(FIXTURE)[:8]]
    assert torch.equal(tuned.features(prompts), source.features(prompts))
    assert len(list(cache.iterdir())) == 1  # its own cache file, keyed by the tuned weights


def test_classification_head_with_most_labels_at_a_cap_keeps_its_buckets():
    """Labels like SmolLM2's (70% at the 256 cap) collapse most decile edges; fitting must still work."""
    import numpy as np
    import torch

    from proxy_model.fit import fit_head
    from proxy_model.heads import Head, quantile_buckets

    rng = np.random.default_rng(0)
    tokens = np.where(rng.random(300) < 0.7, 256.0, rng.integers(5, 200, 300).astype(float))
    edges, log_medians = quantile_buckets(tokens, 10)
    assert len(edges) < 9 and len(log_medians) == 10 and np.all(np.diff(log_medians) >= 0)
    x = torch.tensor(rng.normal(size=(300, 8)), dtype=torch.float32)
    x[:, 0] = torch.tensor(tokens == 256.0, dtype=torch.float32)  # one feature tells capped from not
    m = torch.zeros(300, dtype=torch.long)
    head = Head("classification", 8, 16, 10, [], 4, 0.0)
    fit_head(head, (x[:200], m[:200], tokens[:200]), (x[200:], m[200:], tokens[200:]), epochs=5, lr=1e-2,
             batch_size=64, weight_decay=0.0, seed=0)
    scores = head.score(head(x[200:], m[200:])).detach().numpy()
    assert scores[tokens[200:] == 256.0].mean() > scores[tokens[200:] < 256.0].mean()
