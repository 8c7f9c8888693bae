"""The Google Workspace reports and GitHub audit log connectors over loopback HTTP against their simulators."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from connector_support import services, stored_raw
from custodes.config import Secret
from custodes.connectors.github import DEFAULT_SOURCE as GITHUB_SOURCE
from custodes.connectors.github import GitHubAuditLog, GitHubOptions
from custodes.connectors.google import DEFAULT_SOURCE as GOOGLE_SOURCE
from custodes.connectors.google import GoogleWorkspaceActivities, GoogleWorkspaceOptions
from custodes.connectors.http import next_page
from custodes.connectors.options import RetryOptions
from custodes.connectors.runtime import ConnectorRuntime
from custodes.sandbox import github, google
from custodes.sandbox.pathfaults import Fault
from custodes.sandbox.server import running
from custodes.services import Services

__all__ = ["services"]

FAST = RetryOptions(attempts=8, max_wait=2.0, backoff=0.01)
Workspace = tuple[google.GoogleState, str]
Org = tuple[github.GitHubState, str]


@pytest.fixture
async def workspace() -> AsyncIterator[Workspace]:
    state = google.GoogleState()
    async with running(google.create_app(state)) as url:
        yield state, url


@pytest.fixture
async def org() -> AsyncIterator[Org]:
    state = github.GitHubState()
    async with running(github.create_app(state)) as url:
        yield state, url


def activities(http: aiohttp.ClientSession, state: google.GoogleState, url: str, app: str) -> GoogleWorkspaceActivities:
    options = GoogleWorkspaceOptions(base_url=url, page_size=10, timeout_seconds=0.5, overlap_seconds=300, retry=FAST)
    token = Secret(state.token, "env:GOOGLE_TOKEN")
    return GoogleWorkspaceActivities(
        f"gws/{app}", "google_workspace", GOOGLE_SOURCE, http, application=app, token=token, options=options
    )


def audit_log(http: aiohttp.ClientSession, state: github.GitHubState, url: str) -> GitHubAuditLog:
    options = GitHubOptions(
        org=state.org, base_url=url, page_size=10, timeout_seconds=0.5, overlap_seconds=300, retry=FAST
    )
    return GitHubAuditLog("github", "github", GITHUB_SOURCE, http, token=Secret(state.token, "env:GH"), options=options)


def faults(state: google.GoogleState | github.GitHubState, path: str) -> None:
    state.faults.add(Fault(status=429, retry_after=0.05, path=path))
    state.faults.add(Fault(status=500, path=path, times=2))
    state.faults.add(Fault(drop=True, path=path))
    state.faults.add(Fault(delay=1.0, path=path))
    state.empty_pages = 1
    state.repeat_pages = 1


async def test_workspace_reports_with_faults_store_each_activity_once(workspace: Workspace, services: Services) -> None:
    state, url = workspace
    now = time.time()
    logins = [state.add_activity("login", f"u{n}@example.com", "login_success", now - 2000 + n * 30) for n in range(33)]
    drive = [
        state.add_activity("drive", "ann@example.com", "download", now - 500 + n, doc_id=f"d{n}") for n in range(12)
    ]
    faults(state, "/admin/reports")
    runtime = ConnectorRuntime(services.pipeline)
    async with aiohttp.ClientSession() as http:
        login, files = activities(http, state, url, "login"), activities(http, state, url, "drive")
        assert (await runtime.poll(login)).stored == 33
        assert (await runtime.poll(files)).stored == 12
        late = state.add_activity("login", "late@example.com", "login_failure", time.time() - 100)
        second = await runtime.poll(login)
        assert (second.received, second.stored) == (1, 1)
    stored = sorted(r["id"]["uniqueQualifier"] for r in await stored_raw(services, "google_workspace"))
    assert stored == sorted(r["id"]["uniqueQualifier"] for r in [*logins, *drive, late])
    assert state.faults.pending == [] and state.empty_pages == 0 and state.repeat_pages == 0


async def test_audit_log_with_faults_stores_each_event_once_and_resumes_from_the_watermark(
    org: Org, services: Services
) -> None:
    state, url = org
    now = time.time()
    first = [state.add_event("repo.download_zip", f"dev{n % 3}", now - 1000 + n * 7) for n in range(41)]
    faults(state, "/orgs")
    runtime = ConnectorRuntime(services.pipeline)
    async with aiohttp.ClientSession() as http:
        log = audit_log(http, state, url)
        assert (await runtime.poll(log)).stored == 41
        more = [state.add_event("org.remove_member", "admin", time.time() - 5 + n) for n in range(4)]
        report = await runtime.poll(log)
        assert (report.received, report.stored) == (4, 4)
        assert (await runtime.poll(log)).received == 0
    stored = sorted(r["_document_id"] for r in await stored_raw(services, "github"))
    assert stored == sorted(r["_document_id"] for r in [*first, *more])
    assert state.faults.pending == [] and state.empty_pages == 0 and state.repeat_pages == 0


async def test_audit_log_primary_rate_limit_waits_for_the_reset(org: Org, services: Services) -> None:
    state, url = org
    expected = [state.add_event("git.clone", "dev", time.time() - 300 + n) for n in range(25)]
    state.rate_limit = 2
    state.rate_window = 0.5
    async with aiohttp.ClientSession() as http:
        assert (await ConnectorRuntime(services.pipeline).poll(audit_log(http, state, url))).stored == 25
    assert sorted(r["_document_id"] for r in await stored_raw(services, "github")) == sorted(
        r["_document_id"] for r in expected
    )


async def test_audit_log_backfill_reads_its_range_once(org: Org, services: Services) -> None:
    state, url = org
    base = time.time() - 7200
    inside = [state.add_event("repo.create", "dev", base + n * 10) for n in range(12)]
    state.add_event("repo.destroy", "dev", base + 3000)
    start = datetime.fromtimestamp(base - 1, UTC)
    runtime = ConnectorRuntime(services.pipeline)
    async with aiohttp.ClientSession() as http:
        log = audit_log(http, state, url)
        assert (await runtime.backfill(log, start, start + timedelta(seconds=200))).stored == 12
        assert (await runtime.backfill(log, start, start + timedelta(seconds=200))).received == 0
    assert sorted(r["_document_id"] for r in await stored_raw(services, "github")) == sorted(
        r["_document_id"] for r in inside
    )


async def test_a_next_link_away_from_the_api_is_not_followed_with_the_token(services: Services) -> None:
    """The audit log's `Link: rel="next"` once took the connector, and its bearer token, to any origin named."""
    state = github.GitHubState()
    record = state.add_event("git.clone", "dev", time.time() - 60)
    asked: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization"))
        return web.json_response([])

    async def page(request: web.Request) -> web.Response:
        return web.json_response([record], headers={"Link": f'<{away}/orgs/{state.org}/audit-log?after=2>; rel="next"'})

    collector, api = web.Application(), web.Application()
    collector.router.add_get("/{tail:.*}", elsewhere)
    api.router.add_get("/orgs/{org}/audit-log", page)
    async with running(collector) as away, running(api) as url, aiohttp.ClientSession() as http:
        with pytest.raises(ValueError, match=rf"the next page's link leads to {away}, away from the API at {url}: not"):
            await ConnectorRuntime(services.pipeline).poll(audit_log(http, state, url))
    assert asked == []


def test_next_links_resolve_against_their_page_and_stay_on_its_origin() -> None:
    page = "https://graph.example.com/v1.0/users?$top=5"
    assert next_page(page, "/v1.0/users?$skiptoken=x") == "https://graph.example.com/v1.0/users?$skiptoken=x"
    assert next_page(page, "https://graph.example.com/v1.0/users?a=1") == "https://graph.example.com/v1.0/users?a=1"
    for target, origin in [
        ("https://evil.example/v1.0/users", "https://evil.example"),
        ("http://graph.example.com/v1.0/users", "http://graph.example.com"),
        ("https://graph.example.com:8443/v1.0/users", "https://graph.example.com:8443"),
        ("//evil.example/x", "https://evil.example"),
    ]:
        with pytest.raises(ValueError, match=rf"leads to {origin}, away from the API at https://graph\.example\.com:"):
            next_page(page, target)
    with pytest.raises(ValueError, match=r"the next page's link is a malformed URL \(.*\): 'http://\[::1'"):
        next_page(page, "http://[::1")


async def test_a_record_stamped_in_the_future_does_not_make_the_audit_log_skip_the_present(
    services: Services,
) -> None:
    """The watermark once took the newest record's time as stated: one from a clock years ahead stopped every read."""
    state = github.GitHubState()
    state.add_event("git.clone", "dev", time.time() - 60)
    state.add_event("repo.download_zip", "dev", time.time() + 400 * 86400 * 365)
    async with running(github.create_app(state)) as url, aiohttp.ClientSession() as http:
        log = audit_log(http, state, url)
        assert (await ConnectorRuntime(services.pipeline).poll(log)).stored == 2
        state.add_event("git.clone", "dev", time.time())
        assert (await ConnectorRuntime(services.pipeline).poll(log)).stored == 1
