"""Incremental detokenization with stop strings.

Invariant: the concatenation of every delta returned by `add` and `flush` equals `text`, and no stop string
ever appears in `text`: the last `len(longest stop) - 1` characters are held back until they cannot start one.
"""
from __future__ import annotations

from typing import Any, Sequence


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(stop)
        self._num_held_chars = max((len(s) for s in self._stop), default=1) - 1
        self._token_ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._pending = ""
        self.text = ""
        self.hit_stop = False

    def add(self, token_id: int) -> str:
        """Feed one generated token; return the text that may be emitted now."""
        self._token_ids.append(token_id)
        self._pending += self._decode_new(allow_partial=False)
        if self._stop and self._trim_at_stop():
            return self.flush()
        num_ready_chars = len(self._pending) - self._num_held_chars
        if num_ready_chars <= 0:
            return ""
        delta, self._pending = self._pending[:num_ready_chars], self._pending[num_ready_chars:]
        self.text += delta
        return delta

    def flush(self) -> str:
        """Release everything held back (call once the sequence is finished)."""
        if not self.hit_stop:
            self._pending += self._decode_new(allow_partial=True)
        delta, self._pending = self._pending, ""
        self.text += delta
        return delta

    def _trim_at_stop(self) -> bool:
        found = [index for index in (self._pending.find(s) for s in self._stop) if index >= 0]
        if not found:
            return False
        self._pending = self._pending[: min(found)]
        self.hit_stop = True
        return True

    def _decode_new(self, allow_partial: bool) -> str:
        prefix_text = self._decode(self._token_ids[self._prefix_offset : self._read_offset])
        window_text = self._decode(self._token_ids[self._prefix_offset :])
        if len(window_text) <= len(prefix_text) or (window_text.endswith("\ufffd") and not allow_partial):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self._token_ids)
        return window_text[len(prefix_text) :]

    def _decode(self, token_ids: list[int]) -> str:
        if not token_ids:
            return ""
        return self._tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
