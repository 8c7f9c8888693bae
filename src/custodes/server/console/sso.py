"""Single sign-on pages: `/signin/oidc` sends the browser to the identity provider, `/signin/oidc/callback` checks
its answer and starts a console session for the person, as `oidc:<name>` with the role their groups map to."""

from __future__ import annotations

from aiohttp import web

from custodes.server.console.oidc import OidcClient, OidcError, Pending
from custodes.server.console.session import COOKIE, LIFETIME_SECONDS
from custodes.server.console.web import console_key, cookie, local, render, secure, signin_page
from custodes.server.context import services_key

PENDING_COOKIE = "custodes_oidc"
PENDING_SECONDS = 600
"""A sign-in at the provider must come back within ten minutes."""
CALLBACK = "/signin/oidc/callback"


def _client(request: web.Request) -> OidcClient:
    client = request.app[console_key].oidc
    if client is None:
        raise web.HTTPNotFound(text="single sign-on is not configured (console.oidc)")
    return client


def _redirect_uri(request: web.Request, client: OidcClient) -> str:
    return client.settings.redirect_uri or f"{request.scheme}://{request.host}{CALLBACK}"


async def start(request: web.Request) -> web.StreamResponse:
    """GET /signin/oidc: remember a new sign-in (state, nonce, PKCE verifier) in a signed cookie and send the
    browser to the provider."""
    client = _client(request)
    target = local(request.query.get("next"))
    try:
        url, pending = await client.begin(target, _redirect_uri(request, client))
    except OidcError as exc:
        return secure(signin_page(request, target, exc.status, str(exc)))
    response = web.Response(status=302, headers={"Location": url})
    sealed = request.app[console_key].sessions.seal("oidc", pending.as_dict())
    # Lax: the provider's redirect back is a cross-site navigation, which SameSite=Strict cookies do not follow.
    cookie(response, PENDING_COOKIE, sealed, max_age=PENDING_SECONDS, request=request, samesite="Lax", path=CALLBACK)
    return secure(response)


async def callback(request: web.Request) -> web.StreamResponse:
    """GET /signin/oidc/callback: match the provider's answer to the sign-in this browser started, redeem the code,
    validate the ID token and map the person's groups to a role; a session (the sign-in audited as
    `console.signin`), or the sign-in page saying why not."""
    client = _client(request)
    console = request.app[console_key]
    payload = console.sessions.unseal("oidc", request.cookies.get(PENDING_COOKIE))
    pending = Pending.from_dict(payload) if payload is not None else None
    try:
        if pending is None:
            raise OidcError(400, "No sign-in was started in this browser, or it took too long. Start again.")
        identity = await client.finish(pending, request.query, _redirect_uri(request, client))
    except OidcError as exc:
        response = signin_page(request, pending.target if pending else "/", exc.status, str(exc))
    else:
        async with request.app[services_key].store.transaction() as tx:
            details = {"via": "oidc", "role": identity.role, "groups": list(identity.groups)}
            await tx.audit(f"api:{identity.principal}", "console.signin", identity.principal, details)
        # A page of this site moves on to the target: a redirect chain that began at the provider is cross-site,
        # and the browser would not send the new SameSite=Strict session cookie along it.
        response = render(request, None, "signed-in.html", target=pending.target, who=identity.principal)
        value = console.sessions.sign_in_sso(identity.principal, identity.groups)
        cookie(response, COOKIE, value, max_age=LIFETIME_SECONDS, request=request)
    response.del_cookie(PENDING_COOKIE, path=CALLBACK)
    return secure(response)


def routes(app: web.Application) -> None:
    """Add the single sign-on pages."""
    app.router.add_get("/signin/oidc", start)
    app.router.add_get(CALLBACK, callback)
