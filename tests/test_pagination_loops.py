"""A vendor whose next links lead back to pages already read (A -> B -> A) once kept a listing or a round going for
ever: Graph and Okta listings grew without end, an Entra sweep, a GitHub round, an Okta log round and an
Elasticsearch sweep whose cursor went back never ended."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from elasticsearch import AsyncElasticsearch

from conftest import OKTA_TOKEN
from connector_support import services
from custodes.config import Secret
from custodes.connectors.github import MAX_STALLS
from custodes.connectors.okta import OktaLogOptions
from custodes.connectors.runtime import ConnectorRuntime
from custodes.inventory.okta import OktaReader
from custodes.sandbox import github, graph, okta
from custodes.sandbox.server import running
from custodes.services import Services
from test_connector_elasticsearch import T0
from test_connector_elasticsearch import connector as es_connector
from test_connector_entra import client, feed
from test_connector_google_github import audit_log
from test_connector_okta import FAST, connector

__all__ = ["services"]

T = TypeVar("T")
LOOP = "the next page's link returns to a page already read"


async def bounded(call: Awaitable[T]) -> T:
    """The call, which must end by itself: a pagination loop followed for ever fails here instead of hanging."""
    return await asyncio.wait_for(call, timeout=10)


def cycling(path: str, body: Any, link: str) -> tuple[web.Application, list[str]]:
    """An API at `path` whose pages 1 and 2 link to each other; `link` renders a page's next link."""
    asked: list[str] = []

    async def page(request: web.Request) -> web.Response:
        asked.append(request.query.get("p", "first"))
        following = "2" if request.query.get("p") == "1" else "1"
        response = web.json_response(body(following) if callable(body) else body)
        if link == "header":
            response.headers["Link"] = f'<{request.url.with_query(p=following)}>; rel="next"'
        return response

    app = web.Application()
    app.router.add_get(path, page)
    return app, asked


async def test_graph_and_okta_listings_refuse_a_next_link_back_to_a_page_read() -> None:
    app, asked = cycling("/v1.0/users", lambda p: {"value": [{"id": p}], "@odata.nextLink": f"/v1.0/users?p={p}"}, "")
    state = graph.GraphState()
    async with running(graph.create_app(state)) as login, running(app) as url, aiohttp.ClientSession() as http:
        graph_client = client(http, state, login)
        graph_client.options = graph_client.options.model_copy(update={"graph_url": url})
        with pytest.raises(ValueError, match=rf"{LOOP} \(/v1\.0/users, after 3 pages\): the API's pagination loops"):
            await bounded(graph_client.all("/v1.0/users"))
    assert asked == ["first", "1", "2"]

    app, asked = cycling("/api/v1/users", [{"id": "00u1", "profile": {"login": "a@example.com"}}], "header")
    async with running(app) as url, aiohttp.ClientSession() as http:
        reader = OktaReader(http, Secret(OKTA_TOKEN, "env:OKTA"), OktaLogOptions(base_url=url, retry=FAST))
        with pytest.raises(ValueError, match=rf"{LOOP} \(/api/v1/users, after 3 pages\)"):
            await bounded(reader.all("/api/v1/users"))
    assert asked == ["first", "1", "2"]


async def test_an_entra_sweep_fails_its_round_on_cursors_given_again(services: Services) -> None:
    app, asked = cycling("/v1.0/auditLogs/signIns", lambda p: {"value": [], "@odata.nextLink": f"?p={p}"}, "")
    state = graph.GraphState()
    async with running(graph.create_app(state)) as login, running(app) as url, aiohttp.ClientSession() as http:
        graph_client = client(http, state, login)
        graph_client.options = graph_client.options.model_copy(update={"graph_url": url})
        with pytest.raises(RuntimeError, match="keeps answering with cursors it has given before; resuming next"):
            await bounded(ConnectorRuntime(services.pipeline).poll(feed(graph_client)))
    assert asked == ["first", *["1", "2"] * 4]  # each cursor read once, then again three times, no more


async def test_github_and_okta_log_rounds_end_on_a_link_back_to_a_page_read(services: Services) -> None:
    hub = github.GitHubState()
    record = hub.add_event("git.clone", "dev", time.time() - 60)
    app, asked = cycling(f"/orgs/{hub.org}/audit-log", [record], "header")
    async with running(app) as url, aiohttp.ClientSession() as http:
        result = await bounded(ConnectorRuntime(services.pipeline).poll(audit_log(http, hub, url)))
    assert result.stored == 1 and len(asked) == 3 + MAX_STALLS

    org = okta.OktaState(token=OKTA_TOKEN)
    records = [org.add_log_event(actor=f"user{n}@example.com", published=time.time() - 60 + n) for n in range(2)]
    app, asked = cycling("/api/v1/logs", records, "header")
    async with running(app) as url, aiohttp.ClientSession() as http:
        result = await bounded(ConnectorRuntime(services.pipeline).poll(connector(http, url, page=2), kind="okta"))
    assert result.stored == 2 and asked == ["first", "1", "2"]


def elasticsearch_cycling(page: int) -> tuple[web.Application, list[Any]]:
    """An Elasticsearch whose point-in-time pages go A -> B -> A: the page after B's cursor is A again."""
    asked: list[Any] = []
    headers = {"X-Elastic-Product": "Elasticsearch"}

    def hits(first: int) -> list[dict[str, Any]]:
        at = int((T0 + timedelta(seconds=first)).timestamp() * 1000)
        source = {"@timestamp": (T0 + timedelta(seconds=first)).isoformat(), "event": {"action": "login"}}
        return [
            {"_index": "audit-a", "_id": f"d{first + n}", "_source": source, "sort": [at, first + n]}
            for n in range(page)
        ]

    async def pit(request: web.Request) -> web.Response:
        return web.json_response({"id": "pit-1"}, headers=headers)

    async def search(request: web.Request) -> web.Response:
        after = (await request.json()).get("search_after")
        asked.append(after)
        first = page if after is not None and after[1] == page - 1 else 0  # after A: B; after B (or none): A
        return web.json_response({"pit_id": "pit-1", "hits": {"hits": hits(first)}}, headers=headers)

    async def close(request: web.Request) -> web.Response:
        return web.json_response({"succeeded": True, "num_freed": 1}, headers=headers)

    app = web.Application()
    app.router.add_post("/{index}/_pit", pit)
    app.router.add_post("/_search", search)
    app.router.add_delete("/_pit", close)
    return app, asked


async def test_an_elasticsearch_sweep_ends_on_a_cursor_that_goes_back(services: Services) -> None:
    app, asked = elasticsearch_cycling(page=7)
    async with running(app) as url:
        client = AsyncElasticsearch(url, max_retries=0, request_timeout=2)
        try:
            result = await bounded(ConnectorRuntime(services.pipeline).poll(es_connector(client)))
        finally:
            await client.close()
    assert result.stored == 14 and len(asked) == 3  # A, B, then A again: not followed
