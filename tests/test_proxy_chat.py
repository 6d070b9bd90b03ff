"""Chat-aware predictor input (proxy_model.chat) and Predictor.predict on OpenAI messages lists."""
import gzip
import json

import pytest

from proxy_model import load_predictor, split_of
from proxy_model.chat import chat_rows, conversation_rows, predictor_text
from proxy_model.data import DataError, read_jsonl, row_split


def fake_tokenizer(texts, add_special_tokens=False):
    return {"input_ids": [t.split() for t in texts]}


@pytest.mark.timeout(10)
def test_plain_prompt_and_single_user_message_stay_themselves():
    assert predictor_text("Write a haiku") == "Write a haiku"
    assert predictor_text([{"role": "user", "content": "Write a haiku"}]) == "Write a haiku"
    parts = [{"role": "user", "content": [{"type": "text", "text": "Write"}, {"type": "text", "text": "a haiku"}]}]
    assert predictor_text(parts) == "Write a haiku"
    with pytest.raises(TypeError):
        predictor_text(42)


@pytest.mark.timeout(10)
def test_later_turn_puts_last_user_message_first_then_context():
    msgs = [{"role": "system", "content": "You are a terse   assistant."},
            {"role": "user", "content": "Tell me about Rome"},
            {"role": "assistant", "content": "x" * 2000},
            {"role": "user", "content": "Shorter please"}]
    text = predictor_text(msgs)
    assert text.startswith("Shorter please [")
    assert "turn 2" in text and "previous answer: long" in text and "system: You are a terse assistant." in text
    assert "Tell me about Rome" not in text
    # a system prompt alone (first turn) is context too
    assert predictor_text(msgs[:2]) == "Tell me about Rome [system: You are a terse assistant.]"


def write_fixtures(tmp_path):
    # held-out prompt: find texts whose split is val/test and one in train (split_of is deterministic)
    texts = [f"question number {i}" for i in range(200)]
    held = next(t for t in texts if split_of(t, 0) == "test")
    train = [t for t in texts if split_of(t, 0) == "train"][:2]
    first = tmp_path / "first.jsonl"
    first.write_text("\n".join(json.dumps({"id": str(i), "prompt": p, "response": "a b c"})
                               for i, p in enumerate([held, *train])) + "\n")
    convs = [
        # a test conversation: all its turns are test rows
        {"id": "c1", "messages": [{"role": "user", "content": held}, {"role": "assistant", "content": "a b"},
                                  {"role": "user", "content": "more"}, {"role": "assistant", "content": "a b c d"}]},
        # a train conversation whose later turn repeats the held-out first-turn prompt: dropped
        {"id": "c2", "messages": [{"role": "user", "content": train[0]}, {"role": "assistant", "content": "a"},
                                  {"role": "user", "content": held}, {"role": "assistant", "content": "a b"}]},
    ]
    conv = tmp_path / "conv.jsonl.gz"
    with gzip.open(conv, "wt") as f:
        f.write("\n".join(json.dumps(c) for c in convs) + "\n")
    return first, conv, held, train


@pytest.mark.timeout(30)
def test_conversation_rows_follow_first_user_message_split_and_train_has_no_leak(tmp_path):
    first, conv, held, train = write_fixtures(tmp_path)
    from proxy_model.chat import read_conversations

    per_turn = conversation_rows(read_conversations(conv), 0)
    assert [(s, t) for s, t, *_ in per_turn[:2]] == [("test", 1), ("test", 2)]
    rows = chat_rows(first, conv, fake_tokenizer, 0)
    test_rows = [r for r in rows if r["split"] == "test"]
    assert {r["turn"] for r in test_rows} == {1, 2}
    assert any(r["prompt"].startswith("more [turn 2") and r["output_tokens"] == 4 for r in test_rows)
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all(not r["prompt"].startswith(held) for r in train_rows)
    # the first turn of c2 equals a first-turn-file prompt with a different label: both kept once
    assert sorted(r["output_tokens"] for r in train_rows if r["prompt"] == train[0]) == [1, 3]


@pytest.mark.timeout(10)
def test_explicit_split_field_overrides_prompt_hash(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "hello", "output_tokens": 3, "split": "test"}) + "\n"
                    + json.dumps({"prompt": "hello", "output_tokens": 3}) + "\n")
    a, b = read_jsonl(path)
    assert row_split(a, 0) == "test" and row_split(b, 0) == split_of("hello", 0)
    path.write_text(json.dumps({"prompt": "hello", "output_tokens": 3, "split": "dev"}) + "\n")
    with pytest.raises(DataError, match="split"):
        read_jsonl(path)


@pytest.mark.timeout(180)
def test_predict_accepts_messages_lists_like_their_text():
    p = load_predictor("fast")
    msgs = [{"role": "user", "content": "Tell me about Rome"}, {"role": "assistant", "content": "Rome is old."},
            {"role": "user", "content": "Write a long essay about it"}]
    mixed = p.predict(["Hi", msgs, msgs[:1]])
    assert mixed == p.predict(["Hi", predictor_text(msgs), "Tell me about Rome"])
    assert all(t > 0 for t in mixed)


@pytest.mark.timeout(180)
def test_shipped_chat_checkpoint_predicts_on_messages():
    p = load_predictor()
    msgs = [{"role": "user", "content": "Write a story"}, {"role": "assistant", "content": "Once upon a time..."},
            {"role": "user", "content": "Make it much longer, with five chapters"}]
    out = p.predict([msgs, "Hi"])
    assert len(out) == 2 and all(t > 0 for t in out)
    assert p.info()["split"]["seed"] == 0 and p.config["encoder"]["finetuned_layers"] == 2
