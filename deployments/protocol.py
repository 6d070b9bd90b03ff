"""Request parsing and validation shared by the HTTP API and the Python handle API.

Invariant: `parse_request` either returns a complete `ParsedRequest` whose prompt fits the context
together with `max_tokens`, or raises `RequestError` carrying an HTTP status and an OpenAI-style
error body naming the offending field. Every field is bounded in type and size, and a prompt too long
to fit the context at `MAX_PROMPT_CHARS_PER_TOKEN` characters per token is refused before it is
tokenized. Nothing is queued before parsing succeeds.
Benchmark-only fields (`BENCHMARK_FIELDS`) are accepted only when the caller allows them
(`router.allow_benchmark_fields`); the scheduler's ssjf key never reads them.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from deployments.chat_messages import (PLAIN_CHAT_SUFFIX, PLAIN_CHAT_TEMPLATE, chat_prompt_text,
                                       normalize_messages, require_utf8)
from deployments.request_error import RequestError
from router import MAX_PRIORITY, MIN_PRIORITY, RequestRecord

__all__ = ["BENCHMARK_FIELDS", "PLAIN_CHAT_SUFFIX", "PLAIN_CHAT_TEMPLATE", "ParsedRequest", "RequestError",
           "parse_request"]

DEFAULT_MAX_TOKENS = 16
MAX_SEED = 2**63  # torch generators take 64-bit seeds
MAX_USER_CHARS = 256
# Real text runs 3-6 characters per token. A prompt over this many characters per context token is refused
# as too long without spending tokenizer time (~0.8 s CPU per MB) on it, even if exotic text (characters
# the tokenizer's normalizer drops) would have fit.
MAX_PROMPT_CHARS_PER_TOKEN = 32
STREAM_OPTIONS = ("include_usage", "continuous_usage_stats")

# OpenAI features we do not implement: accepted only when absent, null or at their no-op value.
_NO_OP_VALUES = {"frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "logit_bias": ({},),
                 "logprobs": (False, 0), "top_logprobs": (0,), "echo": (False,), "best_of": (1,),
                 "suffix": ("",)}
# oracle_output_tokens: the true length, read only by the sjf-oracle policy; bench_stop_after_tokens:
# the engine ends the answer ("stop") after exactly this many tokens, as if the model had stopped.
BENCHMARK_FIELDS = {"oracle_output_tokens", "bench_stop_after_tokens"}
_COMMON_FIELDS = {"model", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "stream_options",
                  "n", "user", "ignore_eos", "request_id", "priority"} | BENCHMARK_FIELDS | set(_NO_OP_VALUES)
COMPLETION_FIELDS = _COMMON_FIELDS | {"prompt"}
CHAT_FIELDS = _COMMON_FIELDS | {"messages", "max_completion_tokens"}


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
    include_usage: bool = False  # stream_options: a last chunk with the usage
    continuous_usage_stats: bool = False  # stream_options: the usage so far on every chunk

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
                  max_context_tokens: int, allow_benchmark_fields: bool = False,
                  sampling_defaults: Optional[dict[str, float]] = None) -> ParsedRequest:
    """Validate an OpenAI completion (`kind="completion"`) or chat (`kind="chat"`) body; an omitted
    `temperature`/`top_p` takes the served model's `sampling_defaults` (else OpenAI's 1.0)."""
    defaults = sampling_defaults or {}
    _check_field_names(body, kind, allow_benchmark_fields)
    model = body.get("model", served_model)
    if model != served_model:
        raise RequestError(404, f"model {str(model)[:200]!r} is not served here (serving {served_model!r})",
                           param="model", code="model_not_found")
    if _int(body, "n", 1, minimum=1) != 1:
        raise RequestError(400, "n: only n=1 is supported", param="n")
    _user(body)
    stream = _bool(body, "stream", False)
    stream_options = _stream_options(body, stream)
    messages = normalize_messages(body.get("messages")) if kind == "chat" else None
    if kind == "completion":
        prompt_text, token_ids = _completion_prompt(body, tokenizer, max_context_tokens)
        prompt_field = "prompt"
    else:
        prompt_text, token_ids = _chat_prompt(messages, tokenizer, max_context_tokens)
        prompt_field = "messages"
    max_tokens = _max_tokens(body, kind)
    _check_context(len(token_ids), max_tokens, max_context_tokens, prompt_field)
    return ParsedRequest(
        request_id=_request_id(body), prompt_text=prompt_text, prompt_token_ids=token_ids,
        max_tokens=max_tokens, temperature=_float(body, "temperature", defaults.get("temperature", 1.0), 0.0, 2.0),
        top_p=_top_p(body, defaults.get("top_p", 1.0)), seed=_seed(body), stop=_stop(body),
        ignore_eos=_bool(body, "ignore_eos", False), stream=stream, model=model,
        priority=_priority(body),
        oracle_output_tokens=_optional_int(body, "oracle_output_tokens", minimum=0),
        bench_stop_after_tokens=_optional_int(body, "bench_stop_after_tokens", minimum=1),
        messages=messages, **stream_options,
    )


def _check_field_names(body: Any, kind: str, allow_benchmark_fields: bool) -> None:
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    allowed = COMPLETION_FIELDS if kind == "completion" else CHAT_FIELDS
    for name in body:
        if name not in allowed:
            raise RequestError(400, f"unknown field {str(name)[:100]!r}", param=str(name)[:100])
        if name in BENCHMARK_FIELDS and not allow_benchmark_fields and body[name] is not None:
            raise RequestError(400, f"{name} is a benchmark-only field; this server does not accept it "
                                    f"(router.allow_benchmark_fields is off)", param=name)
    for name, no_ops in _NO_OP_VALUES.items():
        value = body.get(name)
        if value is not None and not any(type(value) is type(v) and value == v for v in no_ops):
            raise RequestError(400, f"{name}: {str(value)[:50]} is not supported", param=name)


def _check_context(prompt_tokens: int, max_tokens: int, max_context_tokens: int, prompt_field: str) -> None:
    if prompt_tokens >= max_context_tokens:
        raise RequestError(400, f"{prompt_field}: the prompt is {prompt_tokens} tokens; the context is "
                                f"{max_context_tokens} tokens", param=prompt_field,
                           code="context_length_exceeded")
    if prompt_tokens + max_tokens > max_context_tokens:
        raise RequestError(400, f"max_tokens: prompt ({prompt_tokens}) + max_tokens ({max_tokens}) exceeds "
                                f"the context of {max_context_tokens} tokens", param="max_tokens",
                           code="context_length_exceeded")


def _check_prompt_chars(num_chars: int, max_context_tokens: int, name: str) -> None:
    limit = max_context_tokens * MAX_PROMPT_CHARS_PER_TOKEN
    if num_chars > limit:
        raise RequestError(400, f"{name}: {num_chars} characters cannot fit the context of {max_context_tokens} "
                                f"tokens (at most {limit} characters are accepted)", param=name,
                           code="context_length_exceeded")


def _completion_prompt(body: dict, tokenizer: Any, max_context_tokens: int) -> tuple[str, list[int]]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise RequestError(400, "prompt: must not be empty", param="prompt")
        _check_prompt_chars(len(prompt), max_context_tokens, "prompt")
        return prompt, _encode(tokenizer, require_utf8(prompt, "prompt"), "prompt")
    if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
        _check_context(len(prompt), 0, max_context_tokens, "prompt")
        vocab = len(tokenizer)
        if any(t < 0 or t >= vocab for t in prompt):
            raise RequestError(400, f"prompt: token ids must be in [0, {vocab})", param="prompt")
        return tokenizer.decode(prompt), list(prompt)
    if prompt is None:
        raise RequestError(400, "prompt: required", param="prompt")
    raise RequestError(400, "prompt: must be a non-empty string or a list of token ids "
                            "(batched prompts are not supported)", param="prompt")


def _chat_prompt(messages: list[dict[str, str]], tokenizer: Any, max_context_tokens: int) -> tuple[str, list[int]]:
    if not "".join(m["content"] for m in messages).strip():
        raise RequestError(400, "messages: all contents are empty", param="messages")
    _check_prompt_chars(sum(len(m["content"]) for m in messages), max_context_tokens, "messages")
    text = chat_prompt_text(messages, tokenizer)
    _check_prompt_chars(len(text), max_context_tokens, "messages")
    return text, _encode(tokenizer, require_utf8(text, "messages"), "messages")


def _user(body: dict) -> None:
    user = body.get("user")
    if user is not None and not (isinstance(user, str) and len(user) <= MAX_USER_CHARS):
        raise RequestError(400, f"user: must be a string of at most {MAX_USER_CHARS} characters", param="user")


def _stream_options(body: dict, stream: bool) -> dict[str, bool]:
    options = body.get("stream_options")
    if options is None:
        return {}
    if not stream:
        raise RequestError(400, "stream_options: only allowed when stream is true", param="stream_options")
    if not isinstance(options, dict) or set(options) - set(STREAM_OPTIONS):
        raise RequestError(400, f"stream_options: must be an object with only {' / '.join(STREAM_OPTIONS)}",
                           param="stream_options")
    return {name: _bool(options, name, False, where=f"stream_options.{name}") for name in options}


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


def _top_p(body: dict, default: float) -> float:
    value = _float(body, "top_p", default, 0.0, 1.0)
    if value <= 0.0:
        raise RequestError(400, "top_p: must be in (0, 1]", param="top_p")
    return value


def _bool(body: dict, name: str, default: bool, where: Optional[str] = None) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(400, f"{where or name}: must be a boolean", param=where or name)
    return value


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise RequestError(400, "stop: must be a non-empty string or a list of up to 4 of them", param="stop")
    return [require_utf8(s, "stop") for s in stops]


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
