"""Incremental detokenization: deltas concatenate to the text, stop strings are trimmed and never streamed."""
import pytest

from engine import demo_tokenizer
from engine.detokenizer import IncrementalDetokenizer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def tokenizer():
    return demo_tokenizer()


def _stream(tokenizer, text, stop=()):
    detok = IncrementalDetokenizer(tokenizer, stop)
    deltas = []
    for token_id in tokenizer(text, add_special_tokens=False)["input_ids"]:
        deltas.append(detok.add(token_id))
        if detok.hit_stop:
            break
    deltas.append(detok.flush())
    return detok, deltas


def test_deltas_concatenate_to_decoded_text(tokenizer):
    text = "tokenizing unbelievably long words, with punctuation! and 123 numbers"
    detok, deltas = _stream(tokenizer, text)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "".join(deltas) == detok.text == tokenizer.decode(ids, clean_up_tokenization_spaces=False)


def test_stop_string_is_trimmed_and_never_streamed(tokenizer):
    detok, deltas = _stream(tokenizer, "the cat sat on the mat and slept", stop=["on the", "zzz"])
    assert detok.hit_stop
    assert detok.text == "the cat sat "
    assert "".join(deltas) == detok.text


def test_stop_string_inside_a_word(tokenizer):
    detok, deltas = _stream(tokenizer, "unbelievable things", stop=["lie"])
    assert detok.text == "unbe" and "".join(deltas) == "unbe"


def test_special_tokens_are_skipped(tokenizer):
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.add(token_id) for token_id in (7592, tokenizer.sep_token_id, 2088)] + [detok.flush()]
    assert "".join(deltas) == detok.text == "hello world"
