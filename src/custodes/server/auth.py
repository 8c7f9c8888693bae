"""Request authentication: HMAC-SHA256 webhook signatures over timestamp and body, API bearer tokens."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping, Sequence

from custodes.config import ASCII_WHITESPACE, ApiToken, ReceiverAuth

TIMESTAMP_HEADER = "X-Custodes-Timestamp"
SIGNATURE_HEADER = "X-Custodes-Signature"
SCHEME = "sha256="
UNIX_SECONDS = re.compile("[0-9]{1,19}")
"""A timestamp as senders write it: ASCII digits, no more than a 64-bit integer has (not `int()`'s wider syntax:
signs, underscores, other scripts' digits, thousands of digits)."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for a body sent at `timestamp` (unix seconds, as text)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return SCHEME + mac.hexdigest()


class AuthError(Exception):
    """Authentication failed; the message says why without revealing any secret."""


def verify_signature(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, *, now: float, tolerance: int
) -> None:
    """Check a webhook's timestamp is within `tolerance` seconds and its signature matches; raise AuthError."""
    if not timestamp or not signature:
        raise AuthError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    if not UNIX_SECONDS.fullmatch(timestamp):
        raise AuthError(f"{TIMESTAMP_HEADER} must be unix seconds (1 to 19 ASCII digits)")
    if abs(now - int(timestamp)) > tolerance:
        raise AuthError(f"timestamp outside the {tolerance}s replay window; check the sender's clock")
    if not secret or not hmac.compare_digest(sign(secret, timestamp, body).encode(), octets(presented(signature))):
        raise AuthError("signature does not match the body")


def octets(value: str) -> bytes:
    """A header value's bytes as sent: aiohttp decodes headers as UTF-8 with surrogate escapes, so a value that is
    not UTF-8 (never a configured credential) still compares, unequal, rather than failing to encode."""
    return value.encode("utf-8", "surrogateescape")


def presented(value: str) -> str:
    """A credential as sent, with ASCII whitespace stripped from its ends (never Unicode spaces: a token of
    U+00A0 stays a wrong token, not an empty one)."""
    return value.strip(ASCII_WHITESPACE)


def token_role(tokens: Sequence[ApiToken], authorization: str | None) -> tuple[str, str]:
    """The (token name, role) of a `Bearer` Authorization header; AuthError if none matches exactly."""
    if not authorization or not authorization.startswith("Bearer "):
        raise AuthError("missing 'Authorization: Bearer <token>' header")
    value = presented(authorization.removeprefix("Bearer "))
    if not value:
        raise AuthError("missing 'Authorization: Bearer <token>' header")
    token = find_token(tokens, value)
    if token is None:
        raise AuthError("unknown API token")
    return token.name, token.role


def find_token(tokens: Sequence[ApiToken], value: str) -> ApiToken | None:
    """The configured token exactly equal to `value` (compared in constant time), if any."""
    given = octets(value)
    found = None
    for token in tokens:
        if given and hmac.compare_digest(octets(token.token.reveal()), given):
            found = token
    return found


def authenticate(
    auth: ReceiverAuth,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    remote: str | None,
    body: bytes,
    *,
    now: float,
) -> None:
    """Check a webhook request against its receiver's scheme; raise AuthError saying what is wrong.

    `client_state` is checked per notification by the Graph receiver, which sees the body's structure.
    """
    secret = auth.secret.reveal()
    if auth.scheme == "hmac":
        verify_signature(
            secret,
            headers.get(TIMESTAMP_HEADER),
            headers.get(SIGNATURE_HEADER),
            body,
            now=now,
            tolerance=auth.tolerance_seconds,
        )
    elif auth.scheme == "bearer":
        _same(secret, presented((headers.get("Authorization") or "").removeprefix("Bearer ")), "bearer token")
    elif auth.scheme == "header":
        _same(secret, presented(headers.get(auth.header) or ""), f"{auth.header} header")
    elif auth.scheme == "url_token":
        try:
            address = ipaddress.ip_address(remote or "")
        except ValueError:
            raise AuthError("sender address unknown") from None
        if not any(address in network for network in auth.allow_from):
            raise AuthError("sender address is not in allow_from")
        _same(secret, query.get("token", ""), "token")


def _same(expected: str, given: str, what: str) -> None:
    if not given:
        raise AuthError(f"missing {what}")
    if not expected or not hmac.compare_digest(octets(expected), octets(given)):
        raise AuthError(f"wrong {what}")
