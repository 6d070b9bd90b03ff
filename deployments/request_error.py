"""The one error type of the request path: an HTTP status plus OpenAI's error body.

Invariant: `body()` is always `{"error": {"message", "type", "param", "code"}}` and the error crosses
Ray process boundaries intact (handle API callers get the same status, code and headers).
"""

from __future__ import annotations

from typing import Any, Optional


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

    def __reduce__(self):
        return (RequestError, (self.status, self.message, self.param, self.type, self.code, self.headers))

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}
