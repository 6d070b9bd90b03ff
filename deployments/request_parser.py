"""Parses request bodies on one worker thread, so tokenizing a huge prompt never stalls the event loop
(and with it every stream the router is relaying).

Invariant: `protocol.parse_request` runs only on this parser's thread (one thread: the tokenizer is
never used concurrently); a `RequestError` it raises reaches the caller unchanged.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deployments.protocol import ParsedRequest, parse_request


class RequestParser:
    def __init__(self, tokenizer: Any, served_model_name: str, allow_benchmark_fields: bool,
                 sampling_defaults: dict[str, float]):
        self._tokenizer = tokenizer
        self._sampling_defaults = sampling_defaults
        self._served_model_name = served_model_name
        self._allow_benchmark_fields = allow_benchmark_fields
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ssjf-parse")

    async def parse(self, body: Any, kind: str, max_context_tokens: int) -> ParsedRequest:
        parse = functools.partial(parse_request, body, kind, self._tokenizer, self._served_model_name,
                                  max_context_tokens, self._allow_benchmark_fields, self._sampling_defaults)
        return await asyncio.get_running_loop().run_in_executor(self._pool, parse)
