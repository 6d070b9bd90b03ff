"""API keys at the edge: who may call the `/v1/*` routes.

Invariant: with no key configured every request passes (the behaviour before keys existed); with
keys, a request passes only with `Authorization: Bearer <key>` naming one of them (the status route:
an admin key when any is configured). Keys are held only as SHA-256 digests and a presented key is
compared with `hmac.compare_digest` against every digest (no early exit), so neither timing, logs,
error bodies nor reprs reveal a key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Iterable, Mapping, Optional

from deployments.protocol import RequestError

API_KEYS_ENV = "SSJF_API_KEYS"
ADMIN_API_KEYS_ENV = "SSJF_ADMIN_API_KEYS"


def keys_from_env(name: str, environ: Mapping[str, str]) -> list[str]:
    """Comma-separated keys from one environment variable (blanks ignored)."""
    return [key.strip() for key in environ.get(name, "").split(",") if key.strip()]


class ApiKeys:
    def __init__(self, keys: Iterable[str] = (), admin_keys: Iterable[str] = ()):
        self._admin_digests = tuple(_digest(key) for key in admin_keys)
        self._digests = tuple(_digest(key) for key in keys) + self._admin_digests

    @classmethod
    def from_config(cls, router_config, environ: Optional[Mapping[str, str]] = None) -> "ApiKeys":
        """Keys from `router.api_keys` / `router.admin_api_keys` plus the environment variables."""
        environ = os.environ if environ is None else environ
        return cls([*router_config.api_keys, *keys_from_env(API_KEYS_ENV, environ)],
                   [*router_config.admin_api_keys, *keys_from_env(ADMIN_API_KEYS_ENV, environ)])

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self._digests)} keys, {len(self._admin_digests)} admin)"

    def authorize(self, authorization: Optional[str], admin: bool = False) -> None:
        """Raise a 401 `RequestError` unless the `Authorization` header value carries an allowed key."""
        if not self.enabled:
            return
        presented = _bearer_token(authorization)
        if presented is None:
            raise _unauthorized("missing API key: send the header 'Authorization: Bearer <key>'",
                                "missing_api_key")
        allowed = self._admin_digests if admin and self._admin_digests else self._digests
        if not _matches_any(_digest(presented), allowed):
            what = "admin API key" if admin and self._admin_digests else "API key"
            raise _unauthorized(f"invalid {what}", "invalid_api_key")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _matches_any(digest: bytes, allowed: tuple[bytes, ...]) -> bool:
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(digest, candidate)
    return found


def _bearer_token(authorization: Optional[str]) -> Optional[str]:
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _unauthorized(message: str, code: str) -> RequestError:
    return RequestError(401, message, code=code, headers={"WWW-Authenticate": "Bearer"})
