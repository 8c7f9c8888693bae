"""The Entra ID connector: msal (client credentials) and Graph over loopback HTTP against the simulator."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from connector_support import services, stored_raw
from custodes.config import ConnectorSettings, Secret, Settings
from custodes.connectors import registry
from custodes.connectors.entra import DEFAULT_SOURCES, EntraFeed, EntraOptions, GraphClient
from custodes.connectors.graph_auth import GraphAuth
from custodes.connectors.http import RateLimiter
from custodes.connectors.options import RetryOptions
from custodes.connectors.runtime import ConnectorRuntime
from custodes.sandbox import graph
from custodes.sandbox.pathfaults import Fault
from custodes.sandbox.server import running
from custodes.services import Services

__all__ = ["services"]

FAST = RetryOptions(attempts=8, max_wait=2.0, backoff=0.01)
WINDOW = 0.3
Tenant = tuple[graph.GraphState, str]


@pytest.fixture
async def tenant() -> AsyncIterator[Tenant]:
    state = graph.GraphState(reports_window=WINDOW)
    async with running(graph.create_app(state)) as url:
        yield state, url


def client(http: aiohttp.ClientSession, state: graph.GraphState, url: str, secret: str | None = None) -> GraphClient:
    options = EntraOptions(
        tenant_id=state.tenant,
        client_id=state.client_id,
        graph_url=url,
        login_endpoint=url,
        page_size=10,
        timeout_seconds=0.5,
        overlap_seconds=120,
        retry=FAST,
    )
    auth = GraphAuth(
        state.tenant, state.client_id, Secret(secret or state.client_secret, "env:ENTRA_SECRET"), login_endpoint=url
    )
    return GraphClient(http, auth, RateLimiter(5, WINDOW), options)


def feed(graph_client: GraphClient, kind: str = "signins") -> EntraFeed:
    source = {"signins": "entra_signin", "audits": "entra_audit", "risk": "entra_risk"}[kind]
    return EntraFeed(f"entra/{kind}", kind, source, DEFAULT_SOURCES[source], graph_client)  # type: ignore[arg-type]


async def ids(services: Services, source: str) -> list[str]:
    return sorted(str(record["id"]) for record in await stored_raw(services, source))


async def test_sweeps_with_every_fault_store_each_sign_in_once(tenant: Tenant, services: Services) -> None:
    state, url = tenant
    now = time.time()
    expected = [state.add_signin(f"user{n % 4}@contoso.com", now - 1800 + n * 20)["id"] for n in range(47)]
    state.faults.add(Fault(status=429, retry_after=0.05, path="/v1.0/auditLogs"))
    state.faults.add(Fault(status=500, path="/v1.0/auditLogs"))
    state.faults.add(Fault(drop=True, path="/v1.0/auditLogs"))
    state.faults.add(Fault(delay=1.0, path="/v1.0/auditLogs"))
    state.faults.add(Fault(status=503, path="/v1.0/auditLogs"))
    state.empty_pages = 1
    state.repeat_pages = 1
    runtime = ConnectorRuntime(services.pipeline)
    async with aiohttp.ClientSession() as http:
        signins = feed(client(http, state, url))
        first = await runtime.poll(signins, kind="entra")
        assert (first.received, first.stored) == (47, 47)
        late = state.add_signin("late@contoso.com", time.time() - 60)["id"]
        fresh = [state.add_signin("new@contoso.com", time.time() - 1 - n)["id"] for n in range(3)]
        second = await runtime.poll(signins, kind="entra")
        assert (second.received, second.stored) == (4, 4), "the overlap re-read nothing already emitted"
    assert await ids(services, "entra_signin") == sorted([*expected, late, *fresh])
    assert state.faults.pending == [] and state.empty_pages == 0 and state.repeat_pages == 0
    calls = [at for _, path, status, at in state.requests if path.startswith("/v1.0/audit") and status == 200]
    assert all(b - a >= WINDOW * 0.95 for a, b in zip(calls, calls[5:], strict=False)), "over 5 requests per window"
    assert [status for _, path, status, _ in state.requests if path.startswith("/v1.0")].count(429) == 1
    assert state.token_requests == 1, "msal cached the token"


async def test_a_sweep_cut_short_resumes_from_its_cursor_and_moves_the_watermark_only_at_the_end(
    tenant: Tenant, services: Services
) -> None:
    state, url = tenant
    now = time.time()
    expected = [state.add_audit("admin@contoso.com", "Add member to role", now - 900 + n)["id"] for n in range(35)]
    async with aiohttp.ClientSession() as http:
        audits = feed(client(http, state, url), "audits")
        taken = 0
        async for batch in audits.batches(None):
            await services.pipeline.ingest(batch.events, connector=audits.name, checkpoint=batch.checkpoint)
            taken += 1
            assert batch.checkpoint["sweep"] is not None and batch.checkpoint["watermark"]["time"] is None
            if taken == 2:
                break
        report = await ConnectorRuntime(services.pipeline).poll(audits)
    assert (report.received, report.stored) == (15, 15)
    assert await ids(services, "entra_audit") == sorted(expected)
    async with services.store.transaction() as tx:
        saved = await tx.get_checkpoint("entra/audits")
    assert saved is not None and saved["sweep"] is None and saved["watermark"]["time"] is not None


async def test_risk_detections_and_bad_records_are_kept(tenant: Tenant, services: Services) -> None:
    state, url = tenant
    now = time.time()
    risky = state.add_risk("ann@contoso.com", now - 300)["id"]
    state.add("riskDetections", {"id": "odd-1", "detectedDateTime": "not a time", "riskEventType": None}, now - 200)
    async with aiohttp.ClientSession() as http:
        report = await ConnectorRuntime(services.pipeline).poll(feed(client(http, state, url), "risk"))
    assert report.stored == 2
    assert sorted(await ids(services, "entra_risk")) == sorted([risky, "odd-1"])
    assert report.warnings == 1


async def test_a_refused_secret_is_an_error_that_never_shows_the_secret(tenant: Tenant, services: Services) -> None:
    state, url = tenant
    state.add_signin("ann@contoso.com", time.time() - 60)
    runtime = ConnectorRuntime(services.pipeline)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ValueError, match="invalid_client: AADSTS7000215") as raised:
            await runtime.poll(feed(client(http, state, url, secret="wrong-secret-value")))
    assert "wrong-secret-value" not in str(raised.value)
    status = await runtime.status("entra/signins")
    assert status is not None and status.consecutive_failures == 1
    assert status.last_error is not None and "wrong-secret-value" not in status.last_error


async def test_the_registry_builds_one_connector_per_feed(tenant: Tenant, services: Services) -> None:
    state, url = tenant
    entry = ConnectorSettings(
        kind="entra",
        credentials={"client_secret": Secret(state.client_secret, "env:ENTRA_SECRET")},
        options={"tenant_id": state.tenant, "client_id": state.client_id, "graph_url": url, "login_endpoint": url},
    )
    async with aiohttp.ClientSession() as http:
        built = registry.build("entra", entry, Settings(), http)
        assert [item.connector.name for item in built] == ["entra/signins", "entra/audits", "entra/risk"]
        with pytest.raises(Exception, match=r"connectors\.entra\.options\.client_id"):
            registry.build("entra", entry.model_copy(update={"options": {"tenant_id": "t"}}), Settings(), http)


async def test_a_next_link_away_from_graph_is_not_followed_with_the_token(tenant: Tenant) -> None:
    """`@odata.nextLink` once took the app's bearer token to whatever origin a page named."""
    state, login = tenant
    asked: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization"))
        return web.json_response({"value": []})

    async def users(request: web.Request) -> web.Response:
        return web.json_response({"value": [{"id": "1"}], "@odata.nextLink": f"{away}/v1.0/users?$skiptoken=2"})

    collector, api = web.Application(), web.Application()
    collector.router.add_get("/{tail:.*}", elsewhere)
    api.router.add_get("/v1.0/users", users)
    async with running(collector) as away, running(api) as url, aiohttp.ClientSession() as http:
        graph_client = client(http, state, login)
        graph_client.options = graph_client.options.model_copy(update={"graph_url": url})
        with pytest.raises(ValueError, match=rf"the next page's link leads to {away}, away from the API at {url}"):
            await graph_client.all("/v1.0/users")
    assert asked == []
