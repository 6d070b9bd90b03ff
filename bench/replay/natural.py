"""Natural-length replay (`--natural`): the served model decides when to stop; its own recorded lengths
are only the expectation that the run checks.

Invariant: a natural request is a chat request (`/v1/chat/completions`, one user message, rendered by
the served model's chat template as at labelling time) with temperature 0 and neither
`bench_stop_after_tokens` nor `ignore_eos`. Its `max_tokens` is min(the labels' cap, the client cap C),
its expected length min(label, that cap), and `oracle_output_tokens` is exactly that expected length.

Label rows (JSONL, e.g. `proxy_model.label` output or HF `generate` labels):
`{prompt, output_tokens, finish_reason: "stop" | "length", [prompt_tokens], [max_tokens]}`, the length
excluding the EOS. The labels' cap is the rows' `max_tokens`, else the common length of the "length"
rows (a "length" label is censored: the true length is at least the cap); a row that contradicts the
cap, or is malformed, is a `DataError` naming file:line.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from bench.replay.workload import PromptRow, WorkItem, held_out

FINISH_REASONS = ("stop", "length")
CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class LabelRow(PromptRow):
    finish_reason: str  # the recorded one: "stop" (EOS) or "length" (hit cap_tokens)
    prompt_tokens: Optional[int]  # the recorded prompt length (chat template applied), when given
    cap_tokens: Optional[int]  # the labels' max_tokens; None: unknown (no "length" row, no max_tokens)


def _error(message: str):
    from proxy_model.data import DataError

    return DataError(message)


def _int_field(obj: dict, key: str, where: str, minimum: int, required: bool) -> Optional[int]:
    value = obj.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _error(f"{where}: {key!r} must be an integer >= {minimum} (got {str(value)[:40]!r})")
    return value


def _parse(obj: object, where: str) -> tuple[str, int, str, Optional[int], Optional[int]]:
    if not isinstance(obj, dict):
        raise _error(f"{where}: expected a JSON object")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _error(f"{where}: a natural-length row needs a non-empty 'prompt' string (first-turn rows only)")
    output_tokens = _int_field(obj, "output_tokens", where, 0, required=True)
    finish = obj.get("finish_reason")
    if finish not in FINISH_REASONS:
        raise _error(f"{where}: 'finish_reason' must be one of {FINISH_REASONS} (got {str(finish)[:40]!r})")
    return (prompt, output_tokens, finish, _int_field(obj, "prompt_tokens", where, 1, required=False),
            _int_field(obj, "max_tokens", where, 1, required=False))


def labels_cap(parsed: Sequence[tuple], wheres: Sequence[str]) -> Optional[int]:
    """The one cap the rows agree on (see module doc); a contradicting row raises naming its line."""
    cap, source = None, None
    for (_, output_tokens, finish, _, max_tokens), where in zip(parsed, wheres):
        stated = max_tokens if max_tokens is not None else (output_tokens if finish == "length" else None)
        if stated is None:
            continue
        if cap is None:
            cap, source = stated, where
        elif stated != cap:
            raise _error(f"{where}: the labels' cap would be {stated} here but {cap} at {source}")
    for (_, output_tokens, finish, _, _), where in zip(parsed, wheres):
        if cap is not None and ((finish == "length") != (output_tokens >= cap) or output_tokens > cap):
            raise _error(f"{where}: finish_reason {finish!r} with {output_tokens} tokens contradicts the "
                         f"labels' cap of {cap} (from {source})")
    return cap


def _json_object(line: str, where: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise _error(f"{where}: invalid JSON ({exc.msg})") from None


def read_label_rows(path: str | Path) -> list[LabelRow]:
    """Every row of a label file, in file order, checked (module doc)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(f"{path}: cannot read: {exc}") from None
    lines = [(f"{path}:{n}", line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not lines:
        raise _error(f"{path}: no label rows (empty file)")
    parsed = [_parse(_json_object(line, where), where) for where, line in lines]
    cap = labels_cap(parsed, [where for where, _ in lines])
    return [LabelRow(prompt, n, finish, prompt_tokens, cap) for prompt, n, finish, prompt_tokens, _ in parsed]


def load_label_rows(path: str | Path, split_seed: Optional[int], split: str = "test") -> list[LabelRow]:
    """The rows whose prompt is in the predictor's held-out `split` (never train)."""
    return held_out(read_label_rows(path), split_seed, split)


def natural_item(index: int, arrival_s: float, row: LabelRow, client_max_tokens: int) -> WorkItem:
    cap = min(row.cap_tokens, client_max_tokens) if row.cap_tokens else client_max_tokens
    expected = min(row.true_output_tokens, cap)
    finish = "length" if row.true_output_tokens >= cap else row.finish_reason
    return WorkItem(index, arrival_s, row.prompt, expected, row.true_output_tokens, cap,
                    finish_reason=finish, prompt_tokens=row.prompt_tokens)


def natural_payload(item: WorkItem) -> dict:
    return {"messages": [{"role": "user", "content": item.prompt}], "max_tokens": item.max_tokens,
            "stream": True, "temperature": 0, "oracle_output_tokens": item.output_tokens}


def streamed_tokens(results: Sequence, from_s: float, to_s: float) -> int:
    """Token chunks streamed in [from_s, to_s), finished requests or not: a closed loop of answers
    ~200 tokens long completes few within a short window, so counting completed requests' tokens only
    would miss most of the window's work (and miscount work done before it)."""
    return sum(from_s <= t < to_s for r in results for t in r.token_times_s)


def label_agreement(completed: Sequence) -> dict:
    """Actual vs recorded of completed natural requests (`RequestResult`s with an expected finish)."""
    rows = [r for r in completed if r.expected_finish_reason is not None]
    errors = [abs(r.output_tokens - r.expected_output_tokens) for r in rows]
    with_prompt = [r for r in rows if r.expected_prompt_tokens is not None]
    rate = (lambda k: k / len(rows)) if rows else (lambda k: math.nan)
    return {
        "label_match_rate": rate(sum(e == 0 for e in errors)),
        "mean_abs_label_error_tokens": rate(sum(errors)),
        "finish_reason_match_rate": rate(sum(r.finish_reason == r.expected_finish_reason for r in rows)),
        "num_cap_hits": sum(r.finish_reason == "length" for r in rows),
        "num_recorded_cap_hits": sum(r.expected_finish_reason == "length" for r in rows),
        "num_prompt_token_mismatches": sum(r.prompt_tokens != r.expected_prompt_tokens for r in with_prompt),
    }


def agreement_lines(summaries: dict[str, dict]) -> str:
    """One line per policy: how often the live length equalled the recorded one."""
    return "\n".join(
        f"  {policy}: actual == recorded length {s['label_match_rate']:.0%}, mean |actual - recorded| "
        f"{s['mean_abs_label_error_tokens']:.1f} tokens, cap hits {s['num_cap_hits']:.0f} (recorded "
        f"{s['num_recorded_cap_hits']:.0f}), prompt-token mismatches {s['num_prompt_token_mismatches']:.0f}"
        for policy, s in summaries.items() if "label_match_rate" in s)
