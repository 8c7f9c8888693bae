"""The SOC console: server-rendered pages over the REST API's handlers, signed-in with an API token or through
OpenID Connect single sign-on."""

from __future__ import annotations

import secrets

from aiohttp import web

from custodes.server.console import pages, sso
from custodes.server.console.oidc import OidcClient
from custodes.server.console.session import Sessions
from custodes.server.console.web import STATIC, Console, console_key, environment
from custodes.services import Services


def register(app: web.Application, services: Services) -> None:
    """Mount the console at `/` and its static files at `/static/`; sessions are signed with
    `server.session_secret` (or a random key of this process when it is not set); single sign-on when
    `console.oidc` is configured."""
    configured = services.settings.server.session_secret
    key = configured.reveal().encode() if configured is not None else secrets.token_bytes(32)
    oidc = services.settings.console.oidc
    app[console_key] = Console(environment(), Sessions(key), OidcClient(oidc) if oidc is not None else None)
    pages.routes(app)
    sso.routes(app)
    app.router.add_static("/static/", STATIC, append_version=False)
