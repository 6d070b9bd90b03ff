"""The replay workload: trace arrivals paired with held-out (prompt, true output length) rows.

Invariant: `build_workload` is a pure function of its inputs and seed, so every policy of a run (and
every run with the same seed and options) replays the identical requests. Only prompts whose text is
in the predictor's held-out split are ever chosen: a prompt the predictor trained on never reaches it.

Output lengths: `true` is the row's `output_tokens`, or its `response` counted with the demo model's
tokenizer. The replayed length is `clip(round(true * output_scale), 1, max_output_tokens)`. It is sent
only in benchmark-only fields the ssjf key never reads (`bench_stop_after_tokens`: the engine stops
there as if the model had; `oracle_output_tokens`: for sjf-oracle), under a realistic client
`max_tokens` cap, so the replayed length never leaks into SSJF. With `natural`, the model's own stop
decides instead (bench/replay/natural.py).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

HELD_OUT_SPLITS = {"test": ("test",), "val": ("val",), "heldout": ("val", "test")}


@dataclass(frozen=True)
class PromptRow:
    prompt: str
    true_output_tokens: int


@dataclass(frozen=True)
class WorkItem:
    index: int
    arrival_s: float  # offset from the start of the replay
    prompt: str
    output_tokens: int  # replayed length: where the engine stops (bench_stop_after_tokens)
    true_output_tokens: int  # the row's length before scaling/capping
    max_tokens: int  # the client's cap, as a real client would send it (>= output_tokens)
    finish_reason: Optional[str] = None  # natural mode only (bench.replay.natural): the expected one
    prompt_tokens: Optional[int] = None  # natural mode only: the recorded prompt length, when known


def demo_tokenizer():
    """The served demo model's tokenizer (BERT WordPiece); output lengths are counted with it."""
    try:
        from engine import demo_tokenizer as engine_tokenizer
    except ImportError:  # engine not importable here: the same tokenizer, loaded by proxy_model
        from proxy_model.data import demo_tokenizer as engine_tokenizer
    return engine_tokenizer()


def load_prompt_rows(path: str | Path, tokenizer=None, split_seed: Optional[int] = None,
                     split: str = "test") -> list[PromptRow]:
    """Rows of a `{prompt, response}` / `{prompt, output_tokens}` JSONL file, in file order, keeping
    only prompts in `split` ("test", "val" or "heldout" = both) of the predictor's split with
    `split_seed`; responses are counted only for the rows kept."""
    from proxy_model.data import read_jsonl

    rows = held_out(read_jsonl(path), split_seed, split)
    missing = [r.response for r in rows if r.output_tokens is None]
    counts = iter(count_tokens(missing, tokenizer or demo_tokenizer()) if missing else [])
    out = [PromptRow(r.prompt, r.output_tokens if r.output_tokens is not None else next(counts))
           for r in rows]
    return [r for r in out if r.prompt.strip()]


def held_out(rows: Sequence, split_seed: Optional[int], split: str = "test") -> list:
    """Rows (anything with `.prompt`) whose prompt is in the held-out `split`; never "train"."""
    from proxy_model.data import DEFAULT_SPLIT_SEED, split_of

    if split not in HELD_OUT_SPLITS:
        raise ValueError(f"split must be one of {sorted(HELD_OUT_SPLITS)} (got {split!r})")
    seed = DEFAULT_SPLIT_SEED if split_seed is None else split_seed
    keep = HELD_OUT_SPLITS[split]
    return [r for r in rows if split_of(r.prompt, seed) in keep]


def count_tokens(texts: Sequence[str], tokenizer) -> list[int]:
    counts: list[int] = []
    for i in range(0, len(texts), 256):
        counts.extend(len(ids) for ids in tokenizer(list(texts[i:i + 256]), add_special_tokens=False)["input_ids"])
    return counts


def truncate_prompt(prompt: str, tokenizer, max_prompt_tokens: Optional[int]) -> str:
    """The longest prefix of `prompt` that ends on a token boundary within `max_prompt_tokens`."""
    if not max_prompt_tokens:
        return prompt
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= max_prompt_tokens:
        return prompt
    return prompt[:enc["offset_mapping"][max_prompt_tokens - 1][1]]


def replayed_length(true_tokens: int, output_scale: float, max_output_tokens: Optional[int]) -> int:
    n = max(1, int(round(true_tokens * output_scale)))
    return min(n, max_output_tokens) if max_output_tokens else n


def build_workload(arrivals_s: np.ndarray, pool: Sequence[PromptRow], seed: int, output_scale: float = 1.0,
                   max_output_tokens: Optional[int] = None, tokenizer=None,
                   max_prompt_tokens: Optional[int] = None, client_max_tokens: int = 1024,
                   natural: bool = False) -> list[WorkItem]:
    """One request per arrival; rows drawn from `pool` with a seeded generator (without replacement
    when the pool is large enough). Prompts are cut to `max_prompt_tokens` when a tokenizer is given.
    Every request carries the same client cap `max(client_max_tokens, its replayed length)`.
    `natural`: `pool` holds `natural.LabelRow`s, replayed uncut and unscaled (`natural.natural_item`)."""
    if not pool:
        raise ValueError("the prompt pool is empty (no held-out prompts in the prompt file?)")
    if not output_scale > 0:
        raise ValueError(f"output_scale must be > 0 (got {output_scale})")
    rng = np.random.default_rng(seed)
    num = len(arrivals_s)
    picks = rng.choice(len(pool), size=num, replace=num > len(pool))
    items = []
    if natural:
        from bench.replay.natural import natural_item

        return [natural_item(i, float(t), pool[int(pick)], client_max_tokens) for i, (t, pick) in
                enumerate(zip(arrivals_s, picks))]
    for i, (arrival_s, pick) in enumerate(zip(arrivals_s, picks)):
        row = pool[int(pick)]
        prompt = truncate_prompt(row.prompt, tokenizer, max_prompt_tokens) if tokenizer else row.prompt
        out = replayed_length(row.true_output_tokens, output_scale, max_output_tokens)
        items.append(WorkItem(i, float(arrival_s), prompt, out, row.true_output_tokens, max(out, client_max_tokens)))
    return items


def fingerprint(items: Sequence[WorkItem]) -> str:
    """Short hash of the whole workload: equal fingerprints mean identical replays."""
    blob = json.dumps([asdict(it) for it in items], sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
