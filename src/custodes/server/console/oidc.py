"""OpenID Connect for the console: the authorization code flow with PKCE, `state` and `nonce`, the provider's
discovery document and keys, and ID-token validation (signature against the provider's JWKS, issuer, audience,
expiry, nonce) with PyJWT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import jwt

from custodes.config import OidcSettings
from custodes.server.console.session import mapped_role

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
"""Signatures accepted on ID tokens: public-key algorithms only (never `none` or a shared-secret HMAC)."""
LEEWAY_SECONDS = 60
"""Clock skew allowed between Custodes and the provider when checking `exp` and `iat`."""
DISCOVERY_SECONDS = 3600
"""How long the discovery document and keys are kept before being read again (an unknown key id reads them at once)."""
TIMEOUT = aiohttp.ClientTimeout(total=10)
PRINCIPAL = re.compile(r"^\S{1,200}$")


class OidcError(Exception):
    """A single sign-on refused; the message says why for the person signing in, without any secret."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Pending:
    """A sign-in under way: what the callback must match, kept signed in a cookie of the browser that started it."""

    state: str
    nonce: str
    verifier: str
    target: str

    def as_dict(self) -> dict[str, str]:
        """The fields, for sealing."""
        return {"state": self.state, "nonce": self.nonce, "verifier": self.verifier, "target": self.target}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pending | None:
        """The pending sign-in a sealed cookie held, or None when a field is missing."""
        values = [data.get(name) for name in ("state", "nonce", "verifier", "target")]
        if not all(isinstance(value, str) and value for value in values):
            return None
        return cls(*(str(value) for value in values))


@dataclass(frozen=True, slots=True)
class Identity:
    """A person the provider vouched for: the principal the console acts as, their role and mapped groups."""

    principal: str
    role: str
    groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Provider:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    read_at: float


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


class OidcClient:
    """The console's relying party for one provider; discovery and keys are read over HTTP and cached."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._provider: _Provider | None = None
        self._keys: jwt.PyJWKSet | None = None

    async def _get(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(url) as response:
                if response.status != 200:
                    raise OidcError(502, f"The identity provider's {what} ({url}) answered HTTP {response.status}.")
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OidcError(
                502, f"The identity provider's {what} ({url}) could not be read: {type(exc).__name__}."
            ) from None
        if not isinstance(document, dict):
            raise OidcError(502, f"The identity provider's {what} ({url}) is not a JSON object.")
        return document

    async def provider(self) -> _Provider:
        """The provider's endpoints from its discovery document, whose issuer must be the configured one."""
        if self._provider is not None and time.time() - self._provider.read_at < DISCOVERY_SECONDS:
            return self._provider
        issuer = self.settings.issuer
        document = await self._get(f"{issuer}/.well-known/openid-configuration", "discovery document")
        if document.get("issuer") != issuer:
            raise OidcError(502, f"The discovery document names issuer {document.get('issuer')!r}, not {issuer!r}.")
        fields = ("authorization_endpoint", "token_endpoint", "jwks_uri")
        missing = [name for name in fields if not isinstance(document.get(name), str)]
        if missing:
            raise OidcError(502, f"The discovery document lacks {', '.join(missing)}.")
        self._provider = _Provider(
            str(document["authorization_endpoint"]),
            str(document["token_endpoint"]),
            str(document["jwks_uri"]),
            time.time(),
        )
        self._keys = None
        return self._provider

    def _authorize_url(self, endpoint: str, pending: Pending, redirect_uri: str) -> str:
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": _challenge(pending.verifier),
            "code_challenge_method": "S256",
        }
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"

    async def begin(self, target: str, redirect_uri: str) -> tuple[str, Pending]:
        """The provider's authorization URL for a new sign-in, and what its callback must match."""
        provider = await self.provider()
        pending = Pending(secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48), target)
        return self._authorize_url(provider.authorization_endpoint, pending, redirect_uri), pending

    async def finish(self, pending: Pending, query: Mapping[str, str], redirect_uri: str) -> Identity:
        """Check the callback against the pending sign-in, redeem the code and validate the ID token; the person
        and the role their groups map to. OidcError says what failed."""
        if query.get("error"):
            raise OidcError(401, f"The identity provider refused the sign-in: {query['error']}.")
        if not hmac.compare_digest(pending.state.encode(), query.get("state", "").encode()):
            raise OidcError(400, "The sign-in response does not belong to the sign-in started here (state differs).")
        code = query.get("code", "")
        if not code:
            raise OidcError(400, "The sign-in response carries no authorization code.")
        id_token = await self._redeem(code, pending.verifier, redirect_uri)
        claims = await self.verify(id_token, pending.nonce)
        return self.identity(claims)

    async def _redeem(self, code: str, verifier: str, redirect_uri: str) -> str:
        provider = await self.provider()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        # client_secret_basic: both parts form-encoded first (RFC 6749 section 2.3.1)
        basic = aiohttp.encode_basic_auth(
            quote(self.settings.client_id, safe=""), quote(self.settings.client_secret.reveal(), safe="")
        )
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as http,
                http.post(provider.token_endpoint, data=form, headers={"Authorization": basic}) as response,
            ):
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OidcError(
                502, f"The identity provider's token endpoint could not be read: {type(exc).__name__}."
            ) from None
        if not isinstance(answer, dict):
            raise OidcError(502, "The identity provider's token endpoint did not answer a JSON object.")
        if status != 200:
            reason = str(answer.get("error") or f"HTTP {status}")
            detail = answer.get("error_description")
            raise OidcError(401, f"The identity provider refused the code: {reason}{f' ({detail})' if detail else ''}.")
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError(502, "The identity provider answered no ID token (is the openid scope granted?).")
        return id_token

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        for fresh in (False, True):
            if fresh or self._keys is None:
                jwks_uri = (await self.provider()).jwks_uri
                try:
                    self._keys = jwt.PyJWKSet.from_dict(await self._get(jwks_uri, "key set"))
                except jwt.PyJWTError as exc:
                    raise OidcError(502, f"The identity provider's key set ({jwks_uri}) is not usable: {exc}") from None
            match = [key for key in self._keys.keys if kid is None or key.key_id == kid]
            if len(match) == 1:
                return match[0]
        raise OidcError(401, f"The ID token is signed with a key ({kid}) the identity provider does not publish.")

    async def verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims once its signature (against the provider's keys), issuer, audience, expiry and
        nonce hold; OidcError naming the check that failed."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise OidcError(401, "The ID token is not a signed JWT.") from None
        if header.get("alg") not in ALGORITHMS:
            raise OidcError(401, f"The ID token is signed with {header.get('alg')!r}, which is not accepted.")
        key = await self._key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=ALGORITHMS,
                audience=self.settings.client_id,
                issuer=self.settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise OidcError(401, _token_problem(exc, self.settings.client_id)) from None
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.settings.client_id:
            raise OidcError(401, "The ID token names several audiences and this client is not its authorized party.")
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise OidcError(401, "The ID token's nonce does not match this sign-in (a replayed or foreign token).")
        return claims

    def identity(self, claims: Mapping[str, Any]) -> Identity:
        """The principal and role of validated claims; OidcError when the name is unusable or no group maps."""
        claim = self.settings.username_claim
        name = claims.get(claim)
        if not isinstance(name, str) or not PRINCIPAL.match(name):
            raise OidcError(401, f"The ID token's {claim} claim is missing or not a name without spaces.")
        groups = _groups(claims.get(self.settings.groups_claim))
        role = mapped_role(groups, self.settings.roles)
        if role is None:
            shown = ", ".join(groups[:10]) or "none"
            raise OidcError(
                403,
                f"{name} is signed in at the identity provider, but none of their groups ({shown}) is given a "
                "Custodes role. Ask an administrator to map one of them under console.oidc.roles.",
            )
        mapped = tuple(group for group in groups if group in self.settings.roles)
        return Identity(f"oidc:{name}", role, mapped)


def _groups(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [item for item in value if isinstance(item, str)]
    return []


def _token_problem(exc: jwt.PyJWTError, client_id: str) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "The ID token has expired."
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"The ID token was issued for another client (its audience is not {client_id})."
    if isinstance(exc, jwt.InvalidIssuerError):
        return "The ID token was issued by another issuer than the configured one."
    if isinstance(exc, jwt.InvalidSignatureError):
        return "The ID token's signature does not verify against the identity provider's published keys."
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"The ID token lacks the {exc.claim} claim."
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "The ID token is not valid yet (check the clocks)."
    return f"The ID token is not valid: {type(exc).__name__}."
