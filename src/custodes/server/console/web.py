"""The console's request plumbing: templates, the signed-in session on every page, CSRF on every POST, security
headers, and API refusals shown as pages."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from custodes.server.api import meta
from custodes.server.console.bridge import may
from custodes.server.console.oidc import OidcClient
from custodes.server.console.session import COOKIE, PRE_COOKIE, Session, Sessions
from custodes.server.context import services_key
from custodes.server.endpoints import ApiError

HERE = Path(__file__).parent
STATIC = HERE / "static"

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Every console page: scripts and styles only from the console's own static files, never framed, never cached."""


@dataclass(slots=True)
class Console:
    """The console's shared state: its templates, its session signer and its single sign-on client (if any)."""

    templates: jinja2.Environment
    sessions: Sessions
    oidc: OidcClient | None = None

    def session(self, request: web.Request) -> Session | None:
        """The request's signed-in session, if its cookie still stands for one."""
        tokens = request.app[services_key].settings.server.api_tokens
        roles = self.oidc.settings.roles if self.oidc is not None else None
        return self.sessions.check(tokens, request.cookies.get(COOKIE), sso_roles=roles)


console_key = web.AppKey("console", Console)


def environment() -> jinja2.Environment:
    """Templates from the package, every value escaped."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def secure(response: web.StreamResponse) -> web.StreamResponse:
    """Add the console's security headers."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def render(
    request: web.Request, session: Session | None, template: str, status: int = 200, **context: Any
) -> web.Response:
    """A page rendered with the signed-in session, its CSRF token and a `may(handler)` role test."""
    console = request.app[console_key]
    html = console.templates.get_template(template).render(
        session=session,
        csrf=console.sessions.csrf(session.sid) if session else "",
        may=(lambda handler: session is not None and may(session, handler)),
        read_audit=meta.read_audit,
        path=request.path,
        notice=NOTICES.get(request.query.get("done", "")),
        **context,
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


NOTICES = {
    "approved": "Approved: the run continues with exactly the plan you saw.",
    "denied": "Denied: the step will not run.",
    "enabled": "Enabled.",
    "disabled": "Disabled.",
    "triaged": "The finding is in the case.",
    "commented": "Comment added.",
    "updated": "Updated.",
    "signed-out": "Signed out.",
}
"""Confirmations a redirect after a change may ask for (fixed texts: nothing from the URL is echoed)."""


def see_other(location: str) -> web.Response:
    """A 303 redirect after a POST (the browser then GETs the page)."""
    return web.Response(status=303, headers={"Location": location})


def local(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this site, else `default` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    return default if parts.scheme or parts.netloc else target


def same_origin(request: web.Request) -> bool:
    """Whether a POST comes from this site: its Origin (or Referer) names this host, when the browser sends one."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


PageHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def page(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A console page: signed-in users only (others go to sign in), POSTs need the session's CSRF token and this
    site as their origin, and an API refusal becomes an error page with its status."""

    async def handle(request: web.Request) -> web.StreamResponse:
        console = request.app[console_key]
        session = console.session(request)
        if session is None:
            if request.method != "GET":
                return secure(render(request, None, "error.html", 401, title="Signed out", message=SIGNED_OUT))
            return secure(see_other(f"/signin?next={quote(request.path_qs)}"))
        if request.method == "POST":
            form = await read_form(request)
            if form is None:
                return secure(render(request, session, "error.html", 400, title="Not accepted", message=BAD_FORM))
            presented = form.get("csrf") or request.headers.get("X-CSRF-Token")
            if not same_origin(request) or not console.sessions.csrf_ok(session.sid, str(presented or "")):
                return secure(render(request, session, "error.html", 403, title="Refused", message=STALE_FORM))
        try:
            response = await handler(request, session)
        except ApiError as exc:
            response = render(
                request,
                session,
                "error.html",
                exc.status,
                title=ERROR_TITLES.get(exc.status, "Error"),
                message=str(exc),
            )
        return secure(response)

    handle.__name__ = handler.__name__
    return handle


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | FileField] | None:
    """The POSTed form, or None when it cannot be read: URL-encoded text that is not UTF-8, a malformed multipart
    body. Read once here, the handlers' own `request.post()` then gets the same form."""
    try:
        return await request.post()
    except ValueError:  # UnicodeDecodeError included
        return None


BAD_FORM = "The form could not be read (not UTF-8, or a malformed multipart body). Reload the page and try again."
SIGNED_OUT = "Your session has ended. Sign in again and repeat the change."
STALE_FORM = (
    "The form's security token is missing or stale (or it came from another site). Reload the page and try again."
)
ERROR_TITLES = {400: "Not accepted", 403: "Not allowed", 404: "Not found", 409: "Conflict", 502: "Unavailable"}


def new_nonce() -> str:
    """A random nonce for the sign-in form's CSRF token."""
    return secrets.token_urlsafe(16)


def cookie(
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    max_age: int,
    request: web.Request,
    samesite: str = "Strict",
    path: str = "/",
) -> None:
    """Set an HttpOnly cookie, SameSite=Strict for the whole site unless told otherwise (Secure when the request
    came over HTTPS)."""
    response.set_cookie(
        name, value, max_age=max_age, path=path, httponly=True, samesite=samesite, secure=request.secure
    )


def signin_page(request: web.Request, target: str, status: int = 200, problem: str | None = None) -> web.Response:
    """The sign-in form (and the single sign-on link when it is configured), its CSRF token bound to a fresh nonce
    kept in a short-lived cookie."""
    nonce = new_nonce()
    console = request.app[console_key]
    response = render(
        request,
        None,
        "signin.html",
        status,
        next=target,
        signin_csrf=console.sessions.csrf(nonce),
        problem=problem,
        sso=console.oidc is not None,
    )
    cookie(response, PRE_COOKIE, nonce, max_age=900, request=request)
    return response
