"""Output-length labels from the served model itself: run the project's engine (continuous batching) over
prompts and record how many tokens it generates.

    python -m proxy_model.label --model smollm2-135m-instruct --data PROMPTS.jsonl --out LABELS.jsonl

Input rows: `{id, prompt}` (a first turn) or `{id, messages}` (a whole history, OpenAI roles); other fields are
ignored. Each prompt goes through the model's chat template (plain text for a model without one). Output rows:
`{id, prompt | messages, prompt_tokens, response, output_tokens, finish_reason, model, max_tokens, temperature}`.
Invariant: `output_tokens` excludes the EOS; finish_reason "length" means the answer hit `--max-tokens` — a
censored label (the true length is at least the cap), kept as such. Rows already in --out (by id) are skipped,
so an interrupted run resumes; every finished row is appended and flushed at once. Greedy unless
--temperature > 0. Rows whose prompt does not fit --max-prompt-tokens are skipped and counted, never dropped
silently. `--agreement REF.jsonl` compares --out with labels made elsewhere (same ids) instead of labelling.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .cli import HelpFormatter, run_cli
from .data import DataError


def read_rows(path: Path, limit: int | None) -> list[dict]:
    rows, seen = [], set()
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), (str, int)):
                raise DataError(f"{path}:{number}: a row needs an 'id' (string or int)")
            if not isinstance(row.get("prompt"), str) and not _is_messages(row.get("messages")):
                raise DataError(f"{path}:{number}: a row needs 'prompt' (string) or 'messages' (role/content list)")
            if row["id"] in seen:
                raise DataError(f"{path}:{number}: duplicate id {row['id']!r}")
            seen.add(row["id"])
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


def done_ids(path: Path) -> set:
    if not path.exists():
        return set()
    return {row["id"] for row in _jsonl(path)}


def chat_text(row: dict, tokenizer: Any) -> str:
    messages = row["messages"] if "messages" in row else [{"role": "user", "content": row["prompt"]}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in messages)


async def label_all(engine: Any, rows: list[dict], args: argparse.Namespace, out: TextIO) -> dict:
    from engine import GenerationRequest
    from tqdm import tqdm

    slots = asyncio.Semaphore(engine.capacity)
    counts = {"labelled": 0, "skipped_too_long": 0, "stop": 0, "length": 0, "error": 0}
    bar = tqdm(total=len(rows), desc="labels", unit="row", file=sys.stderr, mininterval=5.0)

    async def label_one(row: dict) -> None:
        prompt_ids = engine.tokenizer(chat_text(row, engine.tokenizer), add_special_tokens=False)["input_ids"]
        if len(prompt_ids) > args.max_prompt_tokens:
            counts["skipped_too_long"] += 1
            bar.update()
            return
        request = GenerationRequest(str(row["id"]), prompt_token_ids=prompt_ids, max_tokens=args.max_tokens,
                                    temperature=args.temperature, seed=args.seed)
        async with slots:
            async for event in engine.generate(request):
                if event["type"] == "done":
                    out.write(json.dumps(_label_row(row, event, args)) + "\n")
                    out.flush()
                    reason = event["finish_reason"]
                    counts["labelled"] += reason != "error"
                    counts[reason if reason in counts else "error"] += 1
        bar.update()
        bar.set_postfix(stop=counts["stop"], length=counts["length"], refresh=False)

    await asyncio.gather(*(label_one(row) for row in rows))
    bar.close()
    return counts


def _label_row(row: dict, event: dict, args: argparse.Namespace) -> dict:
    source = {"messages": row["messages"]} if "messages" in row else {"prompt": row["prompt"]}
    return {"id": row["id"], **source, "prompt_tokens": event["usage"]["prompt_tokens"],
            "response": event["text"], "output_tokens": event["usage"]["completion_tokens"],
            "finish_reason": event["finish_reason"], "model": args.model, "max_tokens": args.max_tokens,
            "temperature": args.temperature, **({"error": event["error"]} if event.get("error") else {})}


def agreement(out_path: Path, reference_path: Path) -> dict:
    """Rows of both files with the same id: exact length match, finish_reason match, Kendall tau-b of lengths."""
    from scipy.stats import kendalltau

    ours = {row["id"]: row for row in _jsonl(out_path)}
    theirs = {row["id"]: row for row in _jsonl(reference_path)}
    pairs = [(ours[i], theirs[i]) for i in ours if i in theirs]
    if len(pairs) < 2:
        raise DataError(f"{out_path} and {reference_path} share {len(pairs)} ids; need at least 2")
    tau = kendalltau([a["output_tokens"] for a, _ in pairs], [b["output_tokens"] for _, b in pairs]).statistic
    return {"n": len(pairs),
            "exact_length_match": round(sum(a["output_tokens"] == b["output_tokens"] for a, b in pairs) / len(pairs), 3),
            "finish_reason_match": round(sum(a["finish_reason"] == b["finish_reason"] for a, b in pairs) / len(pairs), 3),
            "kendall_tau_b": round(float(tau), 3)}


def _jsonl(path: Path) -> list[dict]:
    with path.open() as f:  # not splitlines(): answers may hold U+2028
        return [json.loads(line) for line in f if line.strip()]


def _is_messages(value: object) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m proxy_model.label", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=HelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="engine.model: a named model, HF id or path")
    parser.add_argument("--data", type=Path, help="JSONL rows {id, prompt} or {id, messages} (required unless "
                                                   "--agreement)")
    parser.add_argument("--out", type=Path, required=True, help="JSONL labels (appended; ids already there skipped)")
    parser.add_argument("--max-tokens", type=int, default=256, help="cap per answer (finish_reason 'length')")
    parser.add_argument("--max-prompt-tokens", type=int, default=512, help="longer chat-template prompts are skipped")
    parser.add_argument("--limit", type=int, default=None, help="first N rows of --data only")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed per request (temperature > 0)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="engine slots (continuous batching)")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--agreement", type=Path, default=None, metavar="REF",
                        help="print how --out agrees with the labels in REF (same ids) and exit")
    args = parser.parse_args(argv)
    if args.data is None and args.agreement is None:
        parser.error("--data is required (unless --agreement)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.agreement is not None:
        print(json.dumps(agreement(args.out, args.agreement)))
        return 0
    rows = read_rows(args.data, args.limit)
    finished = done_ids(args.out)
    todo = [row for row in rows if row["id"] not in finished]
    print(f"{len(rows)} rows in {args.data}; {len(rows) - len(todo)} already in {args.out}; labelling {len(todo)}",
          file=sys.stderr, flush=True)
    if not todo:
        return 0
    import torch

    from engine import Engine, EngineConfig

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    engine = Engine(EngineConfig(model=args.model, batching="continuous", max_batch_size=args.max_batch_size))
    start_s = time.time()
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as out:
            counts = asyncio.run(label_all(engine, todo, args, out))
    finally:
        engine.close()
    print(json.dumps({**counts, "seconds": round(time.time() - start_s, 1)}), flush=True)
    return 1 if counts["error"] else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
