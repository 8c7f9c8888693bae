"""Connectors from settings: `build` turns one `connectors.<name>` entry into the connectors it runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from custodes.config import ConnectorSettings, Secret, Settings
from custodes.connectors import entra, github, google, okta, sdk
from custodes.connectors.graph_auth import GraphAuth
from custodes.connectors.http import RateLimiter
from custodes.connectors.runtime import Scheduled
from custodes.errors import ConfigError, Location, Problem
from custodes.sources import SourceSettings

Options = TypeVar("Options", bound=BaseModel)
Builder = Callable[[str, ConnectorSettings, Settings, aiohttp.ClientSession], list[Scheduled]]


def options(name: str, entry: ConnectorSettings, model: type[Options]) -> Options:
    """Validate an entry's `options` with its kind's model; errors name `connectors.<name>.options.<field>`."""
    try:
        return model.model_validate(entry.options)
    except ValidationError as error:
        problems = [
            Problem(
                Location("configuration", field=".".join(["connectors", name, "options", *map(str, e["loc"])])),
                e["msg"],
            )
            for e in error.errors()
        ]
        raise ConfigError(problems, hint="see docs/connectors.md for each kind's options") from None


def credential(name: str, entry: ConnectorSettings, key: str) -> Secret:
    """A required credential of an entry."""
    try:
        return entry.credentials[key]
    except KeyError:
        raise ConfigError(
            f"connectors.{name}.credentials.{key} is required for a {entry.kind} connector",
            hint="give a secret reference: env:NAME or file:/path",
        ) from None


def source(app: Settings, name: str, defaults: dict[str, SourceSettings]) -> SourceSettings:
    """A configured source, else the kind's built-in one of that name."""
    if name in app.sources:
        return app.sources[name]
    if name in defaults:
        return defaults[name]
    return app.source(name)


def _okta(name: str, entry: ConnectorSettings, app: Settings, http: aiohttp.ClientSession) -> list[Scheduled]:
    chosen = entry.source or "okta"
    connector = okta.OktaSystemLog(
        name,
        chosen,
        source(app, chosen, {}),
        http,
        token=credential(name, entry, "token"),
        options=options(name, entry, okta.OktaLogOptions),
    )
    return [Scheduled(connector, entry.kind, entry.interval_seconds)]


def entra_client(name: str, entry: ConnectorSettings, http: aiohttp.ClientSession) -> entra.GraphClient:
    """A Graph client for an `entra` or `entra_inventory` entry."""
    settings = options(name, entry, entra.EntraOptions)
    auth = GraphAuth(
        settings.tenant_id,
        settings.client_id,
        credential(name, entry, "client_secret"),
        login_endpoint=settings.login_endpoint,
    )
    return entra.GraphClient(http, auth, RateLimiter(settings.requests_per_window, settings.window_seconds), settings)


def _entra(name: str, entry: ConnectorSettings, app: Settings, http: aiohttp.ClientSession) -> list[Scheduled]:
    client = entra_client(name, entry, http)
    scheduled = []
    for feed in client.options.feeds:
        chosen = entry.source or entra.FEEDS[feed][2]
        connector = entra.EntraFeed(f"{name}/{feed}", feed, chosen, source(app, chosen, entra.DEFAULT_SOURCES), client)
        scheduled.append(Scheduled(connector, entry.kind, entry.interval_seconds))
    return scheduled


def _google(name: str, entry: ConnectorSettings, app: Settings, http: aiohttp.ClientSession) -> list[Scheduled]:
    settings = options(name, entry, google.GoogleWorkspaceOptions)
    chosen = entry.source or "google_workspace"
    found = source(app, chosen, {"google_workspace": google.DEFAULT_SOURCE})
    token = credential(name, entry, "token")
    return [
        Scheduled(
            google.GoogleWorkspaceActivities(
                f"{name}/{application}", chosen, found, http, application=application, token=token, options=settings
            ),
            entry.kind,
            entry.interval_seconds,
        )
        for application in settings.applications
    ]


def _github(name: str, entry: ConnectorSettings, app: Settings, http: aiohttp.ClientSession) -> list[Scheduled]:
    chosen = entry.source or "github"
    connector = github.GitHubAuditLog(
        name,
        chosen,
        source(app, chosen, {"github": github.DEFAULT_SOURCE}),
        http,
        token=credential(name, entry, "token"),
        options=options(name, entry, github.GitHubOptions),
    )
    return [Scheduled(connector, entry.kind, entry.interval_seconds)]


def _inventory_only(name: str, entry: ConnectorSettings, app: Settings, http: aiohttp.ClientSession) -> list[Scheduled]:
    """Kinds read only by `custodes inventory collect` (``aws_iam``) schedule no event connector."""
    return []


def _sdk(name: str, entry: ConnectorSettings, app: Settings, http: aiohttp.ClientSession) -> list[Scheduled]:
    return [Scheduled(sdk.build(name, entry, app), entry.kind, entry.interval_seconds)]


BUILDERS: dict[str, Builder] = {
    "okta": _okta,
    "entra": _entra,
    "google_workspace": _google,
    "github": _github,
    "aws_iam": _inventory_only,
    **dict.fromkeys(sdk.BUILDERS, _sdk),
}
"""Connector kinds by name; each module of a kind adds its builder here."""


def build(name: str, entry: ConnectorSettings, app: Settings, http: aiohttp.ClientSession) -> list[Scheduled]:
    """The scheduled connectors of one configured entry (SaaS kinds here, SDK kinds from `connectors.sdk`); a
    ConfigError names an unknown kind."""
    try:
        builder = BUILDERS[entry.kind]
    except KeyError:
        known = ", ".join(sorted(BUILDERS))
        raise ConfigError(f"connectors.{name}.kind: unknown kind {entry.kind!r} (known: {known})") from None
    return [replace(item, max_backoff=entry.max_backoff_seconds) for item in builder(name, entry, app, http)]
