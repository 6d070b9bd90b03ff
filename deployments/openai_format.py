"""OpenAI response shapes (completion and chat, whole or streamed) from the router's events.

Invariant: a stream is the token chunks, then one chunk with the `finish_reason`; with
`stream_options.include_usage` one more chunk follows with empty `choices` and the usage (every other
chunk then has `usage: null`, as OpenAI sends it); with `continuous_usage_stats` every chunk carries the
usage so far. The `ssjf` block appears only when `router.include_ssjf_block` is on.
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional

from deployments.protocol import ParsedRequest


def sse_data(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


class ResponseWriter:
    """Builds the response bodies of one request; streaming chunks count its completion tokens."""

    def __init__(self, parsed: ParsedRequest, kind: str, include_ssjf: bool):
        self._parsed = parsed
        self._kind = kind
        self._include_ssjf = include_ssjf
        self._completion_tokens = 0

    def full(self, done: dict) -> dict[str, Any]:
        return {**self._envelope(False), "choices": [self._choice(done["text"], done["finish_reason"], False)],
                "usage": _usage(done["usage"]), **self._extras(done)}

    def chunks(self, event: dict) -> list[dict[str, Any]]:
        """The SSE payloads for one router event (a token or the final `done`)."""
        parsed = self._parsed
        if event["type"] == "token":
            self._completion_tokens += len(event.get("token_ids", ()))
            return [{**self._envelope(True), "choices": [self._choice(event["text"], None, True)],
                     **self._usage_field(None)}]
        final = {**self._envelope(True), "choices": [self._choice("", event["finish_reason"], True)],
                 **self._usage_field(event["usage"]), **self._extras(event)}
        if not parsed.include_usage:
            return [final]
        return [final, {**self._envelope(True), "choices": [], "usage": _usage(event["usage"])}]

    def _usage_field(self, final_usage: Optional[dict]) -> dict[str, Any]:
        parsed = self._parsed
        if parsed.continuous_usage_stats:
            usage = final_usage or {"prompt_tokens": len(parsed.prompt_token_ids),
                                    "completion_tokens": self._completion_tokens}
            return {"usage": _usage(usage)}
        if parsed.include_usage:
            return {"usage": None}
        return {} if final_usage is None else {"usage": _usage(final_usage)}

    def _extras(self, done: dict) -> dict[str, Any]:
        extras = {"timings": done.get("timings")}
        if self._include_ssjf:
            extras["ssjf"] = done.get("ssjf")
        return extras

    def _envelope(self, streaming: bool) -> dict[str, Any]:
        parsed, kind = self._parsed, self._kind
        obj = {"completion": "text_completion", "chat": "chat.completion"}[kind]
        return {"id": f"{'cmpl' if kind == 'completion' else 'chatcmpl'}-{parsed.request_id}",
                "object": obj + (".chunk" if streaming and kind == "chat" else ""),
                "created": int(parsed.created_at_s or time.time()), "model": parsed.model}

    def _choice(self, text: str, finish_reason: Optional[str], streaming: bool) -> dict[str, Any]:
        if self._kind == "completion":
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        key = "delta" if streaming else "message"
        return {"index": 0, key: {"role": "assistant", "content": text}, "finish_reason": finish_reason}


def _usage(usage: dict) -> dict[str, int]:
    prompt_tokens, completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
