"""Typed stream events on the router side: what an engine replica yields, parsed once.

Invariant: engine replicas speak plain dicts (`{"type": "token" | "done", ...}`, see engine.sequence);
`parse_event` turns each into a `TokenEvent` or `DoneEvent` exactly once, and `to_dict` gives back the
public dict shape (handle API and HTTP layer), so nothing on the router side compares `event["type"]`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FINISHED_NORMALLY = ("stop", "length")  # the output is complete: usable as a length label


@dataclass(frozen=True)
class TokenEvent:
    token_ids: list[int]
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "token", "token_ids": self.token_ids, "text": self.text}


@dataclass(frozen=True)
class DoneEvent:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, Any]
    error: str | None = None
    ssjf: dict[str, Any] = field(default_factory=dict)

    @property
    def finished_normally(self) -> bool:
        return self.finish_reason in FINISHED_NORMALLY

    def to_dict(self) -> dict[str, Any]:
        return {"type": "done", "text": self.text, "finish_reason": self.finish_reason,
                "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
                "timings": self.timings, "error": self.error, "ssjf": self.ssjf}


StreamEvent = TokenEvent | DoneEvent


def parse_event(event: dict[str, Any]) -> StreamEvent:
    """An engine event dict -> its typed form; an unknown type raises ValueError naming it."""
    kind = event.get("type")
    if kind == "token":
        return TokenEvent(list(event["token_ids"]), event["text"])
    if kind == "done":
        usage = event["usage"]
        return DoneEvent(event["text"], event["finish_reason"], usage["prompt_tokens"],
                         usage["completion_tokens"], dict(event.get("timings") or {}), event.get("error"))
    raise ValueError(f"unknown engine event type {kind!r}")
