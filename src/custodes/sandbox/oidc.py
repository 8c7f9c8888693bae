"""An OpenID Connect provider in the manner of Okta, Entra ID and Keycloak, for the console's single sign-on.

- ``GET /.well-known/openid-configuration``: the discovery document; the issuer is the base URL it is served at.
- ``GET /authorize``: checks the client, its registered ``redirect_uri``, ``response_type=code``, the ``openid``
  scope and an S256 PKCE challenge, then shows a sign-in form (user name and password); ``POST /authorize`` signs
  the person in and redirects to ``redirect_uri`` with a one-time code (valid 60 s) and the caller's ``state``.
- ``POST /token``: the authorization-code grant; the client authenticates with HTTP Basic or form fields, the code
  must be unused, for this client and ``redirect_uri``, and ``code_verifier`` must hash to the challenge. A used
  code is refused (``invalid_grant``). Answers an access token and an RS256 ID token (``iss``, ``sub``, ``aud``,
  ``exp``, ``iat``, ``nonce``, ``preferred_username``, ``name``, ``groups``) signed with the key in ``/jwks``.

Tests can have the next ID token altered (claims overridden, or signed with a key not in ``/jwks``) and rotate
the signing key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

CODE_SECONDS = 60
TOKEN_SECONDS = 300


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True, slots=True)
class OidcUser:
    """A person who can sign in: their password, display name and group memberships."""

    password: str
    name: str
    groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    username: str
    expires: float


@dataclass(slots=True)
class _Tamper:
    claims: dict[str, Any]
    foreign_key: bool


@dataclass
class OidcState:
    """Registered clients (id to secret and redirect URIs), users, issued and used codes, the signing key and
    injected token faults."""

    clients: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    users: dict[str, OidcUser] = field(default_factory=dict)
    codes: dict[str, _Grant] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    _tamper: list[_Tamper] = field(default_factory=list)
    key: rsa.RSAPrivateKey = field(default_factory=_new_key)
    key_id: str = "sandbox-1"

    def register(self, client_id: str, secret: str, *redirect_uris: str) -> None:
        """Register a confidential client and the exact redirect URIs it may use."""
        self.clients[client_id] = (secret, redirect_uris)

    def add_user(self, username: str, password: str, name: str, groups: tuple[str, ...] = ()) -> None:
        """Add a person who can sign in."""
        self.users[username] = OidcUser(password, name, groups)

    def alter_next_token(self, *, foreign_key: bool = False, **claims: Any) -> None:
        """Make the next ID token carry these claims instead (e.g. ``nonce``, ``aud``, ``exp``), or be signed with
        a key that is not in ``/jwks``."""
        self._tamper.append(_Tamper(claims, foreign_key))

    def rotate_key(self) -> None:
        """Sign from now on with a new key under a new key id (``/jwks`` then publishes only the new one)."""
        self.key = _new_key()
        self.key_id = f"sandbox-{int(self.key_id.rsplit('-', 1)[1]) + 1}"

    def next_tamper(self) -> _Tamper | None:
        """The alteration for the token being issued now, if any."""
        return self._tamper.pop(0) if self._tamper else None


STATE = web.AppKey("oidc_state", OidcState)


def _issuer(request: web.Request) -> str:
    return str(request.url.origin())


def _error(status: int, code: str, description: str) -> web.Response:
    return web.json_response({"error": code, "error_description": description}, status=status)


async def _discovery(request: web.Request) -> web.Response:
    issuer = _issuer(request)
    return web.json_response(
        {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "groups"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "preferred_username", "name", "groups"],
        }
    )


async def _jwks(request: web.Request) -> web.Response:
    state = request.app[STATE]
    public = RSAAlgorithm.to_jwk(state.key.public_key(), as_dict=True)
    return web.json_response({"keys": [{**public, "kid": state.key_id, "use": "sig", "alg": "RS256"}]})


def _authorize_problem(state: OidcState, params: dict[str, str]) -> str | None:
    """Why an authorization request cannot be served, before anything is redirected (RFC 6749 4.1.2.1)."""
    client = state.clients.get(params.get("client_id", ""))
    if client is None:
        return "unknown client_id"
    if params.get("redirect_uri") not in client[1]:
        return "redirect_uri is not registered for this client"
    if params.get("response_type") != "code":
        return "response_type must be code"
    if "openid" not in params.get("scope", "").split():
        return "scope must include openid"
    if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
        return "a PKCE code_challenge with code_challenge_method=S256 is required"
    return None


FIELDS = ("client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge")


def _form(params: dict[str, str], problem: str = "") -> str:
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{_escape(params.get(name, ""))}">'
        for name in (*FIELDS, "code_challenge_method")
    )
    alert = f'<p role="alert">{_escape(problem)}</p>' if problem else ""
    return (
        "<!doctype html><html lang=en><head><title>Sandbox identity provider</title></head><body>"
        f"<h1>Sign in to the sandbox identity provider</h1>{alert}<form method=post action=/authorize>{hidden}"
        "<label for=username>User name</label><input id=username name=username autofocus>"
        "<label for=password>Password</label><input id=password name=password type=password>"
        "<button type=submit>Sign in</button></form></body></html>"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


async def _authorize_form(request: web.Request) -> web.Response:
    params = dict(request.query)
    problem = _authorize_problem(request.app[STATE], params)
    if problem:
        return web.Response(status=400, text=problem)
    return web.Response(text=_form(params), content_type="text/html")


async def _authorize(request: web.Request) -> web.Response:
    state = request.app[STATE]
    params = {name: str(value) for name, value in (await request.post()).items()}
    problem = _authorize_problem(state, params)
    if problem:
        return web.Response(status=400, text=problem)
    user = state.users.get(params.get("username", ""))
    if user is None or not hmac.compare_digest(user.password, params.get("password", "")):
        return web.Response(status=401, text=_form(params, "Wrong user name or password."), content_type="text/html")
    code = secrets.token_urlsafe(24)
    state.codes[code] = _Grant(
        params["client_id"],
        params["redirect_uri"],
        params["code_challenge"],
        params.get("nonce") or None,
        params["username"],
        time.time() + CODE_SECONDS,
    )
    answer = {"code": code, **({"state": params["state"]} if params.get("state") else {})}
    raise web.HTTPFound(f"{params['redirect_uri']}?{urlencode(answer)}")


def _client(request: web.Request, form: dict[str, str]) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        try:
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return "", ""
        return unquote_plus(client_id), unquote_plus(secret)  # form-encoded first (RFC 6749 section 2.3.1)
    return form.get("client_id", ""), form.get("client_secret", "")


def _pkce(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


async def _token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = {name: str(value) for name, value in (await request.post()).items()}
    client_id, secret = _client(request, form)
    client = state.clients.get(client_id)
    if client is None or not hmac.compare_digest(client[0], secret):
        return _error(401, "invalid_client", "client authentication failed")
    if form.get("grant_type") != "authorization_code":
        return _error(400, "unsupported_grant_type", "only authorization_code is supported")
    code = form.get("code", "")
    if code in state.used:
        return _error(400, "invalid_grant", "the code was already used")
    grant = state.codes.pop(code, None)
    if grant is None or grant.expires < time.time():
        return _error(400, "invalid_grant", "unknown or expired code")
    state.used.add(code)
    if grant.client_id != client_id or grant.redirect_uri != form.get("redirect_uri"):
        return _error(400, "invalid_grant", "the code was issued to another client or redirect_uri")
    if not hmac.compare_digest(_pkce(form.get("code_verifier", "")), grant.challenge):
        return _error(400, "invalid_grant", "code_verifier does not match the code_challenge")
    return web.json_response(
        {
            "access_token": secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": TOKEN_SECONDS,
            "id_token": _id_token(state, grant, _issuer(request)),
        }
    )


def _id_token(state: OidcState, grant: _Grant, issuer: str) -> str:
    user = state.users[grant.username]
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": hashlib.sha256(grant.username.encode()).hexdigest()[:20],
        "aud": grant.client_id,
        "iat": now,
        "exp": now + TOKEN_SECONDS,
        "preferred_username": grant.username,
        "name": user.name,
        "groups": list(user.groups),
    }
    if grant.nonce:
        claims["nonce"] = grant.nonce
    tamper = state.next_tamper()
    key = state.key
    if tamper is not None:
        claims.update(tamper.claims)
        if tamper.foreign_key:
            key = _new_key()
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": state.key_id})


def create_app(state: OidcState | None = None) -> web.Application:
    """The provider as an aiohttp application; pass an `OidcState` to register clients and users."""
    app = web.Application()
    app[STATE] = state if state is not None else OidcState()
    app.router.add_get("/.well-known/openid-configuration", _discovery)
    app.router.add_get("/jwks", _jwks)
    app.router.add_get("/authorize", _authorize_form)
    app.router.add_post("/authorize", _authorize)
    app.router.add_post("/token", _token)
    return app
