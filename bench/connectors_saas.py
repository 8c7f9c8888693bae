"""Events/s of each SaaS connector against its simulator, store included (SQLite, no rules, no playbooks).

    .venv/bin/python bench/connectors_saas.py [--events 20000]

Each connector reads the seeded events in full pages (Okta and Graph 1000, Google 1000, GitHub 100 as the APIs
allow) through the runtime: HTTP on loopback, JSON decoding, envelope mapping, one transaction per page.
Graph's client-side limit is lifted here (the real one, 5 requests per 10 s, caps a sweep at 500 events/s).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from custodes.config import DatabaseSettings, Secret, Settings
from custodes.connectors.base import Connector
from custodes.connectors.entra import DEFAULT_SOURCES, EntraFeed, EntraOptions, GraphClient
from custodes.connectors.github import DEFAULT_SOURCE as GITHUB_SOURCE
from custodes.connectors.github import GitHubAuditLog, GitHubOptions
from custodes.connectors.google import DEFAULT_SOURCE as GOOGLE_SOURCE
from custodes.connectors.google import GoogleWorkspaceActivities, GoogleWorkspaceOptions
from custodes.connectors.graph_auth import GraphAuth
from custodes.connectors.http import RateLimiter
from custodes.connectors.okta import OktaLogOptions, OktaSystemLog
from custodes.connectors.runtime import ConnectorRuntime
from custodes.sandbox import github, google, graph, okta
from custodes.sandbox.server import running
from custodes.services import Services
from custodes.sources import SourceSettings


async def measure(name: str, count: int, make: Callable[[str], Connector], app: web.Application, root: Path) -> None:
    """Poll `make(url)` to the end against the running simulator `app`; print events/s."""
    empty = root / "empty"
    empty.mkdir(exist_ok=True)
    settings = Settings(database=DatabaseSettings(url=f"sqlite+aiosqlite:///{root / (name + '.db')}"))
    settings.detection.rules = [empty]
    settings.playbooks.paths = [empty]
    async with running(app) as url, await Services.open(settings) as services:
        runtime = ConnectorRuntime(services.pipeline, run_playbooks=False)
        connector = make(url)
        started = time.perf_counter()
        stored = 0
        while stored < count:
            report = await runtime.poll(connector)
            if report.received == 0:
                break
            stored += report.stored
        elapsed = time.perf_counter() - started
    print(f"{name:<18} {stored:>8} events  {elapsed:7.2f} s  {stored / elapsed:>9,.0f} events/s")


async def main(count: int) -> None:
    """Seed each simulator with `count` events and measure each connector."""
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        async with aiohttp.ClientSession() as http:
            await run_all(http, Path(tmp), count, now)


async def run_all(http: aiohttp.ClientSession, root: Path, count: int, now: float) -> None:
    """Measure each connector in turn."""
    okta_state = okta.OktaState(token="bench", rate_limit=10**9)
    for n in range(count):
        okta_state.add_log_event(actor=f"u{n % 97}@example.com", published=now - count + n)
    okta_options = OktaLogOptions(base_url="", page_size=1000, lookback_seconds=count + 60)

    def okta_connector(url: str) -> Connector:
        options = okta_options.model_copy(update={"base_url": url})
        return OktaSystemLog(
            "okta", "okta", SourceSettings(format="okta"), http, token=Secret("bench", "env:B"), options=options
        )

    await measure("okta", count, okta_connector, okta.create_app(okta_state), root)

    graph_state = graph.GraphState(reports_limit=10**9)
    for n in range(count):
        graph_state.add_signin(f"u{n % 97}@contoso.com", now - count + n)

    def entra_connector(url: str) -> Connector:
        options = EntraOptions(
            tenant_id=graph_state.tenant,
            client_id=graph_state.client_id,
            graph_url=url,
            login_endpoint=url,
            lookback_seconds=count + 60,
        )
        auth = GraphAuth(
            graph_state.tenant,
            graph_state.client_id,
            Secret(graph_state.client_secret, "env:B"),
            login_endpoint=url,
        )
        client = GraphClient(http, auth, RateLimiter(10**9, 1.0), options)
        return EntraFeed("entra/signins", "signins", "entra_signin", DEFAULT_SOURCES["entra_signin"], client)

    await measure("entra signins", count, entra_connector, graph.create_app(graph_state), root)

    google_state = google.GoogleState()
    for n in range(count):
        google_state.add_activity("drive", f"u{n % 97}@example.com", "download", now - count + n)

    def google_connector(url: str) -> Connector:
        options = GoogleWorkspaceOptions(base_url=url, applications=["drive"], lookback_seconds=count + 60)
        return GoogleWorkspaceActivities(
            "gws/drive",
            "google_workspace",
            GOOGLE_SOURCE,
            http,
            application="drive",
            token=Secret(google_state.token, "env:B"),
            options=options,
        )

    await measure("google drive", count, google_connector, google.create_app(google_state), root)

    github_state = github.GitHubState(rate_limit=10**9)
    for n in range(count):
        github_state.add_event("git.clone", f"dev{n % 13}", now - count + n)

    def github_connector(url: str) -> Connector:
        options = GitHubOptions(org=github_state.org, base_url=url, lookback_seconds=count + 60)
        return GitHubAuditLog(
            "github", "github", GITHUB_SOURCE, http, token=Secret(github_state.token, "env:B"), options=options
        )

    await measure("github audit log", count, github_connector, github.create_app(github_state), root)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().events))
