"""Cheap lexical features of a predictor text (`proxy_model.chat.predictor_text`): size, question
form, length cues ("list", "explain", "one word", "briefly", "500 words"), code, script, and the
chat suffix (turn number, previous answer's length bucket, system prompt).

Invariant: a pure function of the text (no tokenizer, no model), computed identically for training
rows and at serving time; `LEXICAL_NAMES[i]` names column i of `lexical_features`.
"""
from __future__ import annotations

import math
import re

import numpy as np

from .chat import PREV_BUCKETS

SUFFIX = re.compile(r" \[((?:turn \d+|previous answer: [a-z ]+|system: .*?)(?:; (?:previous answer: [a-z ]+|system: .*))*)\]$",
                    re.DOTALL)
PREV_NAMES = [name for _, name in PREV_BUCKETS] + ["very long"]
QUESTION_WORDS = ("what", "why", "how", "who", "when", "where", "which", "is", "are", "can", "could",
                  "do", "does", "should", "would", "will")
CUES = {
    "list": r"\b(list|bullet|points?|steps?|ideas|ways|tips|examples?)\b",
    "explain": r"\b(explain|describe|why|elaborate|discuss|detail(ed|s)?)\b",
    "write": r"\b(write|draft|compose|create|generate|story|essay|article|blog|poem|letter|email|script)\b",
    "code": r"\b(code|function|python|javascript|java|sql|class|implement|program|script|bug|error)\b",
    "short": r"\b(one word|one sentence|briefly|brief|short|concise|shorter|summari[sz]e|tl;?dr|yes or no)\b",
    "long": r"\b(in detail|detailed|comprehensive|long|thorough|step by step|full|complete|expand)\b",
    "rewrite": r"\b(rewrite|rephrase|paraphrase|translate|correct|proofread|improve|edit)\b",
    "continue": r"\b(continue|go on|more|next|again)\b",
    "table": r"\b(table|outline|plan|schedule|itinerary|chart)\b",
}
CUE_PATTERNS = {k: re.compile(v) for k, v in CUES.items()}  # matched on lower-cased text
WORD_COUNT = re.compile(r"\b(\d{2,5})\s*(words|word|characters|sentences|paragraphs|lines)\b", re.IGNORECASE)
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
DIGIT, ASCII_LETTER, UPPER = re.compile(r"\d"), re.compile(r"[A-Za-z]"), re.compile(r"[A-Z]")
CODE_CHAR = re.compile(r"[{}();=<>\[\]_/\\]")
HEAD_CHARS, TAIL_CHARS = 1500, 500  # cues and character shares: a long message's head and tail only
LEXICAL_NAMES = (
    ["log_chars", "log_words", "log_lines", "questions", "ends_question", "starts_question_word", "imperative_please"]
    + [f"cue_{k}" for k in CUES]
    + ["log_requested_count", "code_fences", "code_chars", "digits", "ascii_letters", "cjk", "upper"]
    + ["log_turn", "has_previous"] + [f"previous_{n.replace(' ', '_')}" for n in PREV_NAMES] + ["has_system"]
)


def split_suffix(text: str) -> tuple[str, str]:
    """(the last user message, the chat suffix's inner text or '')."""
    m = SUFFIX.search(text)
    return (text[: m.start()], m.group(1)) if m else (text, "")


def _suffix_features(suffix: str) -> list[float]:
    turn = re.search(r"turn (\d+)", suffix)
    prev = re.search(r"previous answer: ([a-z ]+?)(?:;|$)", suffix)
    onehot = [float(prev is not None and prev.group(1) == n) for n in PREV_NAMES]
    return [math.log(int(turn.group(1))) if turn else 0.0, float(prev is not None), *onehot,
            float("system: " in suffix)]


def text_features(text: str) -> list[float]:
    message, suffix = split_suffix(text)
    stripped = message.strip()
    words = stripped.split()
    first = words[0].lower().strip(",.:!?") if words else ""
    counts = [int(m.group(1)) for m in WORD_COUNT.finditer(message)]
    sample = message if len(message) <= HEAD_CHARS + TAIL_CHARS else f"{message[:HEAD_CHARS]} {message[-TAIL_CHARS:]}"
    lower = sample.lower()
    share = [len(p.findall(sample)) / max(len(sample), 1) for p in (CODE_CHAR, DIGIT, ASCII_LETTER, CJK, UPPER)]
    out = [math.log1p(len(message)), math.log1p(len(words)), math.log1p(message.count("\n")),
           math.log1p(message.count("?")), float(stripped.endswith("?")), float(first in QUESTION_WORDS),
           float("please" in lower)]
    out += [math.log1p(len(p.findall(lower))) for p in CUE_PATTERNS.values()]
    out += [math.log1p(max(counts)) if counts else 0.0, math.log1p(message.count("```")), *share]
    return out + _suffix_features(suffix)


def lexical_features(texts: list[str]) -> np.ndarray:
    """[N, len(LEXICAL_NAMES)] float32 features of predictor texts."""
    return np.asarray([text_features(t) for t in texts], dtype=np.float32).reshape(len(texts), len(LEXICAL_NAMES))
