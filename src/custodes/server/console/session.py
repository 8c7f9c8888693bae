"""Console sessions: a signed cookie naming the API token that signed in (never the token itself), and CSRF tokens
bound to the session.

The cookie holds `base64(json).signature`: the token's name, a fingerprint of its value (so rotating or removing a
token ends its sessions), the session's id and its expiry, signed with HMAC-SHA256 under the server's session key.
Every POST carries a CSRF token, an HMAC of the session id under the same key (or, before sign-in, of a random
nonce kept in a short-lived cookie).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from custodes.config import ApiToken

COOKIE = "custodes_session"
PRE_COOKIE = "custodes_signin"
LIFETIME_SECONDS = 8 * 3600
"""A session lasts one working day; signing in again starts a new one."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in console user: the API token's name and role, and the session's own id."""

    token_name: str
    role: str
    sid: str
    expires: int


class Sessions:
    """Issues and checks signed session cookies and CSRF tokens under one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, purpose: str, data: bytes) -> str:
        digest = hmac.new(self._key, purpose.encode() + b"\x00" + data, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def _fingerprint(self, token: ApiToken) -> str:
        return self._mac("token", token.token.reveal().encode())[:22]

    def sign_in(self, tokens: Sequence[ApiToken], presented: str, *, now: float | None = None) -> str | None:
        """The cookie value for a session of the token presented, or None when no token matches."""
        match = next(
            (t for t in tokens if hmac.compare_digest(t.token.reveal().encode(), presented.strip().encode())), None
        )
        if match is None or not presented.strip():
            return None
        payload = {
            "n": match.name,
            "f": self._fingerprint(match),
            "s": secrets.token_urlsafe(16),
            "e": int(now if now is not None else time.time()) + LIFETIME_SECONDS,
        }
        body = base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")
        return f"{body}.{self._mac('session', body.encode())}"

    def check(self, tokens: Sequence[ApiToken], cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie stands for, if its signature holds, it has not expired and its token still
        exists with the same value; the role is the token's current role."""
        if not cookie or "." not in cookie:
            return None
        body, signature = cookie.rsplit(".", 1)
        if not hmac.compare_digest(self._mac("session", body.encode()), signature):
            return None
        try:
            payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(payload, dict) or int(payload.get("e", 0)) < (now if now is not None else time.time()):
            return None
        token = next((t for t in tokens if t.name == payload.get("n")), None)
        if token is None or not hmac.compare_digest(self._fingerprint(token), str(payload.get("f", ""))):
            return None
        return Session(token.name, token.role, str(payload["s"]), int(payload["e"]))

    def csrf(self, binding: str) -> str:
        """The CSRF token of a session id (or of the sign-in nonce)."""
        return self._mac("csrf", binding.encode())

    def csrf_ok(self, binding: str | None, presented: str | None) -> bool:
        """Whether a form's CSRF token belongs to this session (or sign-in nonce)."""
        return bool(binding and presented) and hmac.compare_digest(self.csrf(binding or ""), presented or "")
