"""Request parsing and validation shared by the HTTP API and the Python handle API.

Invariant: `parse_request` either returns a complete `ParsedRequest` whose prompt fits the context
together with `max_tokens`, or raises `RequestError` carrying an HTTP status and an OpenAI-style
error body naming the offending field. Nothing is queued before parsing succeeds.
Benchmark-only fields (`BENCHMARK_FIELDS`) are accepted only when the caller allows them
(`router.allow_benchmark_fields`); the scheduler's ssjf key never reads them.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from router import MAX_PRIORITY, MIN_PRIORITY, RequestRecord

DEFAULT_MAX_TOKENS = 16
MAX_SEED = 2**63  # torch generators take 64-bit seeds
PLAIN_CHAT_TEMPLATE = "{role}: {content}\n"  # used when the tokenizer has no chat template
PLAIN_CHAT_SUFFIX = "assistant:"

# OpenAI fields accepted with any value but not acted on.
_ACCEPTED_FIELDS = {"user", "stream_options"}
# OpenAI features we do not implement: accepted only when absent, null or at their no-op value.
_NO_OP_VALUES = {"frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "logit_bias": ({},),
                 "logprobs": (False, 0), "echo": (False,), "best_of": (1,), "suffix": ("",)}
# oracle_output_tokens: the true length, read only by the sjf-oracle policy; bench_stop_after_tokens:
# the engine ends the answer ("stop") after exactly this many tokens, as if the model had stopped.
BENCHMARK_FIELDS = {"oracle_output_tokens", "bench_stop_after_tokens"}
_COMMON_FIELDS = {"model", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "n",
                  "ignore_eos", "request_id", "priority"} | BENCHMARK_FIELDS
COMPLETION_FIELDS = _COMMON_FIELDS | {"prompt"} | _ACCEPTED_FIELDS | set(_NO_OP_VALUES)
CHAT_FIELDS = _COMMON_FIELDS | {"messages", "max_completion_tokens"} | _ACCEPTED_FIELDS | set(_NO_OP_VALUES)


class RequestError(Exception):
    """A client error (4xx) or server error (5xx) with an OpenAI error body."""

    def __init__(self, status: int, message: str, param: Optional[str] = None,
                 type_: str = "invalid_request_error", code: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type_
        self.code = code
        self.headers = headers or {}

    def __reduce__(self):  # crosses Ray process boundaries intact (handle API callers)
        return (RequestError, (self.status, self.message, self.param, self.type, self.code, self.headers))

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


@dataclass
class ParsedRequest:
    request_id: str
    prompt_text: str
    prompt_token_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: Optional[int]
    stop: list[str]
    ignore_eos: bool
    stream: bool
    model: str
    priority: int = 0
    oracle_output_tokens: Optional[int] = None  # only the sjf-oracle policy reads it
    bench_stop_after_tokens: Optional[int] = None  # only the engine reads it
    messages: Optional[list[dict]] = None  # chat requests: the validated messages
    created_at_s: float = 0.0

    @property
    def predictor_input(self) -> str | list[dict]:
        """What the length predictor reads: the messages of a chat (so it can put the last user
        message first), else the prompt text."""
        return self.messages if self.messages is not None else self.prompt_text

    def record(self, arrival_time_s: float, predicted_output_tokens: float) -> RequestRecord:
        """The scheduler's view: what the request states, the prediction and (oracle only) its true length."""
        return RequestRecord(self.request_id, arrival_time_s, predicted_output_tokens, self.oracle_output_tokens,
                             len(self.prompt_token_ids), max_tokens=self.max_tokens, ignore_eos=self.ignore_eos,
                             priority=self.priority)

    def engine_request(self) -> dict[str, Any]:
        """Keyword arguments of `engine.GenerationRequest` for this request."""
        return {"request_id": self.request_id, "prompt_token_ids": self.prompt_token_ids,
                "max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": self.seed, "stop": tuple(self.stop), "ignore_eos": self.ignore_eos,
                "stop_after_tokens": self.bench_stop_after_tokens}


def parse_request(body: Any, kind: str, tokenizer: Any, served_model: str,
                  max_context_tokens: int, allow_benchmark_fields: bool = False) -> ParsedRequest:
    """Validate an OpenAI completion (`kind="completion"`) or chat (`kind="chat"`) body."""
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    allowed = COMPLETION_FIELDS if kind == "completion" else CHAT_FIELDS
    for name in body:
        if name not in allowed:
            raise RequestError(400, f"unknown field {name!r}", param=str(name)[:100])
        if name in BENCHMARK_FIELDS and not allow_benchmark_fields and body[name] is not None:
            raise RequestError(400, f"{name} is a benchmark-only field; this server does not accept it "
                                    f"(router.allow_benchmark_fields is off)", param=name)
    for name, no_ops in _NO_OP_VALUES.items():
        value = body.get(name)
        if value is not None and not any(type(value) is type(v) and value == v for v in no_ops):
            raise RequestError(400, f"{name}: {str(value)[:50]} is not supported", param=name)
    model = body.get("model", served_model)
    if model != served_model:
        raise RequestError(404, f"model {str(model)[:200]!r} is not served here (serving {served_model!r})",
                           param="model", code="model_not_found")
    if _int(body, "n", 1, minimum=1) != 1:
        raise RequestError(400, "n: only n=1 is supported", param="n")
    if kind == "completion":
        prompt_text, token_ids = _completion_prompt(body, tokenizer)
        prompt_field = "prompt"
    else:
        prompt_text, token_ids = _chat_prompt(body, tokenizer)
        prompt_field = "messages"
    max_tokens = _max_tokens(body, kind)
    if len(token_ids) >= max_context_tokens:
        raise RequestError(400, f"{prompt_field}: the prompt is {len(token_ids)} tokens; the context is "
                                f"{max_context_tokens} tokens", param=prompt_field,
                           code="context_length_exceeded")
    if len(token_ids) + max_tokens > max_context_tokens:
        raise RequestError(400, f"max_tokens: prompt ({len(token_ids)}) + max_tokens ({max_tokens}) exceeds "
                                f"the context of {max_context_tokens} tokens", param="max_tokens",
                           code="context_length_exceeded")
    return ParsedRequest(
        request_id=_request_id(body), prompt_text=prompt_text, prompt_token_ids=token_ids,
        max_tokens=max_tokens, temperature=_float(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_top_p(body), seed=_seed(body), stop=_stop(body),
        ignore_eos=_bool(body, "ignore_eos", False), stream=_bool(body, "stream", False), model=model,
        priority=_priority(body),
        oracle_output_tokens=_optional_int(body, "oracle_output_tokens", minimum=0),
        bench_stop_after_tokens=_optional_int(body, "bench_stop_after_tokens", minimum=1),
        messages=[{"role": m["role"], "content": m["content"]} for m in body["messages"]] if kind == "chat" else None,
    )


def _completion_prompt(body: dict, tokenizer: Any) -> tuple[str, list[int]]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise RequestError(400, "prompt: must not be empty", param="prompt")
        return prompt, _encode(tokenizer, _utf8(prompt, "prompt"), "prompt")
    if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
        vocab = len(tokenizer)
        if any(t < 0 or t >= vocab for t in prompt):
            raise RequestError(400, f"prompt: token ids must be in [0, {vocab})", param="prompt")
        return tokenizer.decode(prompt), list(prompt)
    if prompt is None:
        raise RequestError(400, "prompt: required", param="prompt")
    raise RequestError(400, "prompt: must be a non-empty string or a list of token ids "
                            "(batched prompts are not supported)", param="prompt")


def _chat_prompt(body: dict, tokenizer: Any) -> tuple[str, list[int]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages: required, a non-empty list", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content", "name"}:
            raise RequestError(400, f"messages[{i}]: must be an object with role and content",
                               param=f"messages[{i}]")
        if message.get("role") not in ("system", "user", "assistant", "developer", "tool"):
            raise RequestError(400, f"messages[{i}].role: invalid role {str(message.get('role'))[:50]!r}",
                               param=f"messages[{i}].role")
        if not isinstance(message.get("content"), str):
            raise RequestError(400, f"messages[{i}].content: must be a string", param=f"messages[{i}].content")
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "".join(PLAIN_CHAT_TEMPLATE.format(**m) for m in messages) + PLAIN_CHAT_SUFFIX
    if not "".join(m["content"] for m in messages).strip():
        raise RequestError(400, "messages: all contents are empty", param="messages")
    return text, _encode(tokenizer, _utf8(text, "messages"), "messages")


def _max_tokens(body: dict, kind: str) -> int:
    name = "max_completion_tokens" if kind == "chat" and "max_completion_tokens" in body else "max_tokens"
    value = body.get(name, DEFAULT_MAX_TOKENS)
    if value is None:
        return DEFAULT_MAX_TOKENS
    return _int(body, name, DEFAULT_MAX_TOKENS, minimum=1)


def _request_id(body: dict) -> str:
    value = body.get("request_id")
    if value is None:
        return uuid.uuid4().hex
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        raise RequestError(400, "request_id: must be a string of 1-128 characters", param="request_id")
    return value


def _int(body: dict, name: str, default: int, minimum: Optional[int] = None) -> int:
    value = body.get(name, default)
    if type(value) is not int:
        raise RequestError(400, f"{name}: must be an integer", param=name)
    if minimum is not None and value < minimum:
        raise RequestError(400, f"{name}: must be >= {minimum} (got {value})", param=name)
    return value


def _priority(body: dict) -> int:
    value = _optional_int(body, "priority", minimum=MIN_PRIORITY) or 0
    if value > MAX_PRIORITY:
        raise RequestError(400, f"priority: must be <= {MAX_PRIORITY} (got {value})", param="priority")
    return value


def _optional_int(body: dict, name: str, minimum: Optional[int] = None) -> Optional[int]:
    return None if body.get(name) is None else _int(body, name, 0, minimum)


def _float(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if type(value) not in (int, float) or not math.isfinite(value):
        raise RequestError(400, f"{name}: must be a number", param=name)
    if not low <= value <= high:
        raise RequestError(400, f"{name}: must be in [{low}, {high}] (got {value})", param=name)
    return float(value)


def _top_p(body: dict) -> float:
    value = _float(body, "top_p", 1.0, 0.0, 1.0)
    if value <= 0.0:
        raise RequestError(400, "top_p: must be in (0, 1]", param="top_p")
    return value


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(400, f"{name}: must be a boolean", param=name)
    return value


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise RequestError(400, "stop: must be a non-empty string or a list of up to 4 of them", param="stop")
    return [_utf8(s, "stop") for s in stops]


def _utf8(text: str, name: str) -> str:
    """JSON allows lone surrogates (\\ud800) that no tokenizer can encode: a 400, not a 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(400, f"{name}: contains an unpaired UTF-16 surrogate", param=name) from None
    return text


def _encode(tokenizer: Any, text: str, name: str) -> list[int]:
    token_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not token_ids:  # e.g. only zero-width characters
        raise RequestError(400, f"{name}: encodes to no tokens", param=name)
    return token_ids


def _seed(body: dict) -> Optional[int]:
    seed = _optional_int(body, "seed", minimum=0)
    if seed is not None and seed >= MAX_SEED:
        raise RequestError(400, f"seed: must be < 2**63 (got {seed})", param="seed")
    return seed
