"""Chat messages: validation, text content parts and templating.

Invariant: `normalize_messages` returns `[{"role", "content"}]` with every content plain text (a string,
or text parts joined by newlines) or raises a 400 `RequestError` naming the message and part;
`chat_prompt_text` templates only contents free of the tokenizer's special-token strings, so a client's
text can never open or close a turn of its own after templating (role injection).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Optional

from deployments.request_error import RequestError

ROLES = ("system", "user", "assistant", "developer", "tool")
MAX_MESSAGES = 1024
MAX_CONTENT_PARTS = 256
MAX_NAME_CHARS = 64
PLAIN_CHAT_TEMPLATE = "{role}: {content}\n"  # used when the tokenizer has no chat template
PLAIN_CHAT_SUFFIX = "assistant:"
_NON_TEXT_PARTS = {"image_url", "input_audio", "file", "video_url", "audio_url", "image", "refusal"}


def normalize_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages: required, a non-empty list", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise RequestError(400, f"messages: at most {MAX_MESSAGES} messages (got {len(messages)})",
                           param="messages")
    return [_normalize_message(message, f"messages[{i}]") for i, message in enumerate(messages)]


def _normalize_message(message: Any, where: str) -> dict[str, str]:
    if not isinstance(message, dict) or set(message) - {"role", "content", "name"}:
        raise RequestError(400, f"{where}: must be an object with role, content and optionally name",
                           param=where)
    if message.get("role") not in ROLES:
        raise RequestError(400, f"{where}.role: invalid role {str(message.get('role'))[:50]!r}",
                           param=f"{where}.role")
    name = message.get("name")
    if name is not None and not (isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS):
        raise RequestError(400, f"{where}.name: must be a string of 1-{MAX_NAME_CHARS} characters",
                           param=f"{where}.name")
    content = _content_text(message.get("content"), f"{where}.content")
    return {"role": message["role"], "content": require_utf8(content, f"{where}.content")}


def require_utf8(text: str, name: str) -> str:
    """JSON allows lone surrogates (\\ud800) that no tokenizer can encode: a 400, not a 500."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(400, f"{name}: contains an unpaired UTF-16 surrogate", param=name) from None
    return text


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise RequestError(400, f"{where}: must be a string or a non-empty list of text parts", param=where)
    if len(content) > MAX_CONTENT_PARTS:
        raise RequestError(400, f"{where}: at most {MAX_CONTENT_PARTS} parts (got {len(content)})", param=where)
    return "\n".join(_part_text(part, f"{where}[{j}]") for j, part in enumerate(content))


def _part_text(part: Any, where: str) -> str:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in _NON_TEXT_PARTS:
        raise RequestError(400, f"{where}: {kind!r} parts are not supported (this server reads text only)",
                           param=where, code="unsupported_content_type")
    if kind != "text" or set(part) != {"type", "text"} or not isinstance(part["text"], str):
        raise RequestError(400, f"{where}: must be a text part {{\"type\": \"text\", \"text\": \"...\"}}",
                           param=where)
    return part["text"]


def chat_prompt_text(messages: list[dict[str, str]], tokenizer: Any) -> str:
    """The prompt text of validated messages: the tokenizer's chat template, else the plain one."""
    pattern = special_token_pattern(tokenizer)
    for i, message in enumerate(messages):
        found = _special_token_in(message["content"], pattern, tokenizer)
        if found is not None:
            raise RequestError(400, f"messages[{i}].content: contains the special token {found!r}, which "
                                    f"would act as chat markup; remove it", param=f"messages[{i}].content",
                               code="special_token_in_content")
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(PLAIN_CHAT_TEMPLATE.format(**m) for m in messages) + PLAIN_CHAT_SUFFIX


@functools.lru_cache(maxsize=8)
def special_token_pattern(tokenizer: Any) -> Optional[re.Pattern]:
    """A case-insensitive pattern of every special-token string the tokenizer knows."""
    names = set(getattr(tokenizer, "all_special_tokens", ()))
    names |= {added.content for added in getattr(tokenizer, "added_tokens_decoder", {}).values()
              if getattr(added, "special", False)}
    names = sorted((n for n in names if n), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, names)), re.IGNORECASE) if names else None


def _special_token_in(text: str, pattern: Optional[re.Pattern], tokenizer: Any) -> Optional[str]:
    """The first special-token string in `text`, as sent or after the tokenizer's normalizer."""
    if pattern is None:
        return None
    match = pattern.search(text)
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    if match is None and normalizer is not None:
        match = pattern.search(normalizer.normalize_str(text))
    return None if match is None else match.group(0)
