"""Console sessions: a signed cookie naming the API token that signed in (never the token itself) or the person
single sign-on admitted, and CSRF tokens bound to the session.

The cookie holds `base64(json).signature`, signed with HMAC-SHA256 under the server's session key: for a token, its
name and a fingerprint of its value (so rotating or removing a token ends its sessions); for single sign-on, the
principal (`oidc:<name>`) and the groups of theirs that map to a role (so the role follows the current mapping);
and the session's id and its expiry.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from custodes.config import ApiToken
from custodes.server.auth import find_token, octets
from custodes.server.auth import presented as presented_credential
from custodes.server.endpoints import RANK

COOKIE = "custodes_session"
PRE_COOKIE = "custodes_signin"
LIFETIME_SECONDS = 8 * 3600
"""A session lasts one working day; signing in again starts a new one."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in console user: the principal (the API token's name, or `oidc:<name>` for single sign-on), its
    role, and the session's own id."""

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

    def seal(self, purpose: str, payload: Mapping[str, Any]) -> str:
        """`payload` as signed text for one purpose (a session, a pending single sign-on)."""
        body = base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")
        return f"{body}.{self._mac(purpose, body.encode())}"

    def unseal(self, purpose: str, sealed: str | None) -> dict[str, Any] | None:
        """The payload `seal` signed for this purpose, or None when the text is missing, altered or malformed."""
        if not sealed or "." not in sealed:
            return None
        body, signature = sealed.rsplit(".", 1)
        if not hmac.compare_digest(self._mac(purpose, octets(body)).encode(), octets(signature)):
            return None
        try:
            payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (binascii.Error, ValueError):
            return None
        return payload if isinstance(payload, dict) else None

    def _session(self, payload: dict[str, Any], now: float | None) -> str:
        payload = {**payload, "s": secrets.token_urlsafe(16)}
        payload["e"] = int(now if now is not None else time.time()) + LIFETIME_SECONDS
        return self.seal("session", payload)

    def sign_in(self, tokens: Sequence[ApiToken], presented: str, *, now: float | None = None) -> str | None:
        """The cookie value for a session of the token presented, or None when no token matches."""
        match = find_token(tokens, presented_credential(presented))
        if match is None:
            return None
        return self._session({"n": match.name, "f": self._fingerprint(match)}, now)

    def sign_in_sso(self, principal: str, groups: Sequence[str], *, now: float | None = None) -> str:
        """The cookie value for a session of a person single sign-on admitted, with their mapped groups."""
        return self._session({"k": "oidc", "n": principal, "g": list(groups)}, now)

    def check(
        self,
        tokens: Sequence[ApiToken],
        cookie: str | None,
        *,
        sso_roles: Mapping[str, str] | None = None,
        now: float | None = None,
    ) -> Session | None:
        """The session a cookie stands for, if its signature holds and it has not expired; for a token, if it still
        exists with the same value (the role is its current one); for single sign-on, if it is still configured
        and one of the person's groups still maps to a role (`sso_roles`: group to role)."""
        payload = self.unseal("session", cookie)
        if payload is None or int(payload.get("e", 0)) < (now if now is not None else time.time()):
            return None
        if payload.get("k") == "oidc":
            groups = payload.get("g")
            role = mapped_role(groups, sso_roles) if sso_roles is not None and isinstance(groups, list) else None
            if role is None:
                return None
            return Session(str(payload["n"]), role, str(payload["s"]), int(payload["e"]))
        token = next((t for t in tokens if t.name == payload.get("n")), None)
        if token is None or not hmac.compare_digest(self._fingerprint(token), str(payload.get("f", ""))):
            return None
        return Session(token.name, token.role, str(payload["s"]), int(payload["e"]))

    def csrf(self, binding: str) -> str:
        """The CSRF token of a session id (or of the sign-in nonce)."""
        return self._mac("csrf", octets(binding))

    def csrf_ok(self, binding: str | None, presented: str | None) -> bool:
        """Whether a form's CSRF token belongs to this session (or sign-in nonce)."""
        return bool(binding and presented) and hmac.compare_digest(
            self.csrf(binding or "").encode(), octets(presented or "")
        )


def mapped_role(groups: Sequence[object], roles: Mapping[str, str]) -> str | None:
    """The strongest role any of `groups` maps to (a privacy officer above a viewer), or None when none does."""
    found = [roles[group] for group in groups if isinstance(group, str) and group in roles]
    return max(found, key=lambda role: (RANK[role], role == "privacy_officer"), default=None)
