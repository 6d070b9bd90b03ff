"""Chat-aware predictor input, and training/evaluation rows built from whole conversations.

`predictor_text(messages)` is the one place where an OpenAI messages list becomes the text the
encoder sees; `Predictor.predict` applies it to list items and training rows built here use it, so
serving and training see the same text. A plain prompt string stays itself, and so does a messages
list holding only one user message (so first turns of conversations equal first-turn prompts).

Layout: the last user message first, then a short context suffix
`" [turn N; previous answer: BUCKET; system: ...]"`. The encoder keeps the first 3/4 and the last
1/4 of its token budget, so a long last message keeps its opening and the suffix survives at the
tail (at the cost of the message's own last few words).

Split (conversation rows): every row of a conversation lands in `split_of(first user message, seed)`,
the split the first-turn file gives that prompt, so the benchmark's test prompts and their later
turns never reach training. `chat_rows` also drops train rows whose last user message or predictor
text equals a val/test prompt of the first-turn rows, or whose text equals a val/test row's text.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from .data import DEFAULT_SPLIT_SEED, Row, count_tokens, read_jsonl, split_of

# previous answer length in characters -> words the encoder knows (characters: no tokenizer needed
# at serving time; ~4 characters per token for English)
PREV_BUCKETS = ((400, "short"), (1600, "medium"), (4000, "long"))
SYSTEM_CHARS = 80


def prev_bucket(chars: int) -> str:
    return next((name for bound, name in PREV_BUCKETS if chars < bound), "very long")


def _content(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def predictor_text(messages) -> str:
    """The predictor's input text for a prompt string (itself) or an OpenAI messages list."""
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, (list, tuple)):
        raise TypeError(f"expected a prompt string or a messages list, got {type(messages).__name__}")
    msgs = [m for m in messages if isinstance(m, dict)]
    last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=None)
    if last_user is None:
        return _content(msgs[-1]) if msgs else ""
    text = _content(msgs[last_user])
    earlier_users = sum(1 for m in msgs[:last_user] if m.get("role") == "user")
    prev = next((m for m in reversed(msgs[:last_user]) if m.get("role") == "assistant"), None)
    system = " ".join(_content(m) for m in msgs if m.get("role") in ("system", "developer")).strip()
    parts = []
    if earlier_users:
        parts.append(f"turn {earlier_users + 1}")
    if prev is not None:
        parts.append(f"previous answer: {prev_bucket(len(_content(prev)))}")
    if system:
        parts.append("system: " + " ".join(system.split())[:SYSTEM_CHARS])
    return f"{text} [{'; '.join(parts)}]" if parts else text


def read_conversations(path: str | Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def conversation_rows(conversations: list[dict], seed: int = DEFAULT_SPLIT_SEED):
    """(split, turn, last user message, predictor text, response) per user->assistant pair."""
    out = []
    for conv in conversations:
        msgs = conv["messages"]
        users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
        if not users:
            continue
        split = split_of(_content(msgs[users[0]]), seed)
        for turn, i in enumerate(users, start=1):
            if i + 1 < len(msgs) and msgs[i + 1]["role"] == "assistant":
                out.append((split, turn, _content(msgs[i]), predictor_text(msgs[: i + 1]), _content(msgs[i + 1])))
    return out


def chat_rows(first_turn_path: str | Path, conversations_path: str | Path, tokenizer,
              seed: int = DEFAULT_SPLIT_SEED) -> list[dict]:
    """JSONL-ready dicts {prompt, output_tokens, split, turn, source} from both files (see module doc)."""
    first = read_jsonl(first_turn_path)
    conv = conversation_rows(read_conversations(conversations_path), seed)
    rows = [{"prompt": r.prompt, "response": r.response, "split": split_of(r.prompt, seed), "turn": 1,
             "source": "first_turn", "user": r.prompt} for r in first]
    rows += [{"prompt": text, "response": resp, "split": split, "turn": turn, "source": "conversations",
              "user": user} for split, turn, user, text, resp in conv]
    held_prompts = {r.prompt for r in first if split_of(r.prompt, seed) != "train"}
    held_texts = {r["prompt"] for r in rows if r["split"] != "train"}
    counts = count_tokens([r["response"] for r in rows], tokenizer)
    out, seen = [], set()
    for r, n in zip(rows, counts):
        if r["split"] == "train" and (r["user"] in held_prompts or r["prompt"] in held_prompts
                                      or r["prompt"] in held_texts):
            continue
        key = (r["split"], r["prompt"], n)
        if key in seen:  # first turns appear in both files
            continue
        seen.add(key)
        out.append({"prompt": r["prompt"], "output_tokens": n, "split": r["split"], "turn": r["turn"],
                    "source": r["source"]})
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m proxy_model.chat --first-turn F --conversations C --out DIR`: write
    DIR/chat_rows.jsonl (all splits, `split` field set) and the evaluation subsets."""
    import argparse

    from .data import demo_tokenizer

    ap = argparse.ArgumentParser(prog="python -m proxy_model.chat", description=main.__doc__)
    ap.add_argument("--first-turn", required=True)
    ap.add_argument("--conversations", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED)
    args = ap.parse_args(argv)
    rows = chat_rows(args.first_turn, args.conversations, demo_tokenizer(args.tokenizer), args.split_seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    subsets = {"chat_rows.jsonl": rows,
               "later_turns.jsonl": [r for r in rows if r["turn"] >= 2 and r["split"] != "train"]}
    for name, part in subsets.items():
        with open(out / name, "w", encoding="utf-8") as f:
            for r in part:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    summary = {}
    for r in rows:
        k = f"{r['split']}/{'turn1' if r['turn'] == 1 else 'turn2+'}"
        summary[k] = summary.get(k, 0) + 1
    print(json.dumps(dict(sorted(summary.items()))))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
