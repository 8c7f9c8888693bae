"""The Elasticsearch connector with the official async client over loopback HTTP against the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from elasticsearch import ApiError, AsyncElasticsearch
from elasticsearch.helpers import async_bulk
from sigma.backends.elasticsearch.elasticsearch_lucene import LuceneBackend
from sigma.collection import SigmaCollection

from connector_support import FAST, poll, services, stored_raw
from custodes.connectors import runtime
from custodes.connectors.elasticsearch import ElasticsearchConnector, ElasticsearchOptions
from custodes.connectors.retry import SourceError
from custodes.connectors.runtime import ConnectorRuntime
from custodes.sandbox import elasticsearch as sim
from custodes.sandbox.pathfaults import Fault
from custodes.sandbox.server import running
from custodes.services import Services
from custodes.sources import SourceSettings

__all__ = ["services"]

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
SOURCE = SourceSettings(format="generic", product="custodes", service="siem")
ACTIONS = ["login", "sudo", "download", "noise"]


def doc(n: int, at: datetime, index: str = "audit-a") -> dict[str, Any]:
    action = ACTIONS[n % len(ACTIONS)]
    source = {
        "@timestamp": at.isoformat().replace("+00:00", "Z"),
        "event": {"action": action},
        "n": n,
        "user": {"name": f"user{n % 5}"},
    }
    return {"_index": index, "_id": f"doc-{n}", "_source": source}


Cluster = tuple[sim.ElasticsearchState, AsyncElasticsearch]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """The simulator seeded with 60 documents over two indices, and a client without its own retries."""
    state = sim.ElasticsearchState()
    async with running(sim.create_app(state)) as url:
        client = AsyncElasticsearch(url, max_retries=0, request_timeout=0.5)
        docs = [doc(n, T0 + timedelta(seconds=n), "audit-a" if n % 2 else "audit-b") for n in range(60)]
        assert (await async_bulk(client, docs))[0] == 60
        try:
            yield state, client
        finally:
            await client.close()


def connector(client: AsyncElasticsearch, **options: Any) -> ElasticsearchConnector:
    opts = ElasticsearchOptions.model_validate(
        {
            "hosts": ["http://unused"],
            "index": "audit-*",
            "start": T0 - timedelta(minutes=1),
            "page_size": 7,
            "overlap_seconds": 30,
            **options,
        }
    )
    return ElasticsearchConnector("es", "siem", SOURCE, client, opts, policy=FAST, clock=lambda: NOW)


def numbers(raws: list[dict[str, Any]]) -> list[int]:
    return sorted(raw["n"] for raw in raws)


async def test_sweeps_page_by_page_and_resume_with_late_documents_in_the_overlap(
    cluster: Cluster, services: Services
) -> None:
    state, client = cluster
    es = connector(client, query="event.action:(login OR sudo)")
    assert await poll(services, es) == 30
    assert numbers(await stored_raw(services, "siem")) == [n for n in range(60) if n % 4 in (0, 1)]
    assert state.pits == {}, "every point in time is closed"
    late = [
        doc(100, T0 + timedelta(seconds=59 - 20)),  # indexed late, within the 30 s overlap: found
        doc(104, T0 + timedelta(seconds=59 - 45)),  # older than the overlap: not found by a normal poll
        doc(108, T0 + timedelta(seconds=70)),  # new
        doc(102, T0 + timedelta(seconds=71)),  # new but not matching the query
    ]
    await async_bulk(client, late)
    assert await poll(services, es, times=2) == 2
    assert numbers(await stored_raw(services, "siem"))[-2:] == [100, 108]
    runtime = ConnectorRuntime(services.pipeline)
    backfill = await runtime.backfill(es, T0, T0 + timedelta(seconds=20))
    assert backfill.stored == 1, "a backfill over the range finds the document the overlap missed"
    assert (await runtime.backfill(es, T0, T0 + timedelta(seconds=20))).received == 0, "a finished backfill is done"


async def test_faults_neither_lose_nor_duplicate_documents(cluster: Cluster, services: Services) -> None:
    state, client = cluster
    state.faults.add(Fault(status=500, path="/audit-*/_pit"))
    state.faults.add(Fault(status=429, retry_after=0.05, path="/_search", times=2))
    state.faults.add(Fault(drop=True, path="/_search"))
    state.faults.add(Fault(delay=1.0, path="/_search"))
    state.faults.add(Fault(status=503, path="/_search"))
    state.repeat_pages = 1
    state.empty_pages = 1
    es = connector(client)
    assert await poll(services, es, times=4) == 60
    assert numbers(await stored_raw(services, "siem")) == list(range(60))
    assert state.faults.pending == [] and state.repeat_pages == 0 and state.empty_pages == 0
    assert await poll(services, es) == 0


async def test_a_refused_query_fails_at_once_and_closes_its_point_in_time(cluster: Cluster, services: Services) -> None:
    state, client = cluster
    with pytest.raises(SourceError, match=r"HTTP 400 search_phase_execution_exception: Failed to parse query"):
        await poll(services, connector(client, query="event.action:(login"))
    assert state.requests.count(("POST", "/_search")) == 1
    assert state.requests[-1] == ("DELETE", "/_pit")


async def test_an_outage_outlasting_the_retries_is_an_error_and_the_next_poll_recovers(
    cluster: Cluster, services: Services
) -> None:
    state, client = cluster
    state.faults.add(Fault(status=503, retry_after=0, path="/_search", times=FAST.attempts))
    es = connector(client)
    with pytest.raises(SourceError, match=f"after {FAST.attempts} attempts"):
        await poll(services, es)
    assert await poll(services, es) == 60


async def test_a_sigma_rule_pushed_down_to_lucene_selects_the_same_documents(
    cluster: Cluster, services: Services
) -> None:
    rule = SigmaCollection.from_yaml(
        """
title: privileged or download actions by two users
logsource: {product: custodes, service: siem}
detection:
  actions: {event.action: [sudo, download*]}
  users: {user.name: [user1, user2]}
  condition: actions and users
"""
    )
    query = LuceneBackend().convert(rule)[0]
    assert await poll(services, connector(cluster[1], query=query)) > 0
    expected = [n for n in range(60) if n % 4 in (1, 2) and n % 5 in (1, 2)]
    assert numbers(await stored_raw(services, "siem")) == expected


# ES|QL ------------------------------------------------------------------------------------------------
ESQL = 'FROM audit-* | WHERE event.action == "login" OR event.action == "sudo"'


def test_esql_and_lucene_are_mutually_exclusive_and_the_esql_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        ElasticsearchOptions.model_validate({"hosts": ["http://x"], "index": "a", "query": "x:1", "esql": ESQL})
    with pytest.raises(ValueError, match="starts with `FROM"):
        ElasticsearchOptions.model_validate({"hosts": ["http://x"], "index": "a", "esql": "ROW a = 1"})
    with pytest.raises(ValueError, match="`STATS` is not allowed"):
        ElasticsearchOptions.model_validate({"hosts": ["http://x"], "index": "a", "esql": "FROM a | STATS c = COUNT()"})
    quoted = 'FROM a METADATA _index | WHERE msg == "x | STATS y"'
    assert ElasticsearchOptions.model_validate({"hosts": ["http://x"], "index": "a", "esql": quoted}).esql == quoted


def test_esql_page_query_appends_the_window_keyset_sort_and_limit(cluster: Cluster) -> None:
    es = connector(cluster[1], esql='FROM audit-* METADATA _index | WHERE user.name == "user1"')
    text = es.esql_page(T0, NOW, ("2024-03-01T12:00:05.000Z", "doc-5"))
    assert text == (
        'FROM audit-* METADATA _index, _id | WHERE user.name == "user1" | WHERE @timestamp >= '
        'TO_DATETIME("2024-03-01T12:00:00.000Z") AND @timestamp <= TO_DATETIME("2024-03-01T13:00:00.000Z") AND '
        '(@timestamp > TO_DATETIME("2024-03-01T12:00:05.000Z") OR (@timestamp == '
        'TO_DATETIME("2024-03-01T12:00:05.000Z") AND _id > "doc-5")) | SORT @timestamp ASC, _id ASC | LIMIT 7'
    )


async def test_the_simulator_answers_esql_like_elasticsearch(cluster: Cluster) -> None:
    _state, client = cluster
    response = await client.esql.query(
        query='FROM audit-a METADATA _id | WHERE n >= 50 AND event.action != "noise" | SORT n DESC | LIMIT 2'
    )
    assert response.meta.headers["X-Elastic-Product"] == "Elasticsearch"
    assert response["columns"] == [
        {"name": "@timestamp", "type": "date"},
        {"name": "event.action", "type": "keyword"},
        {"name": "n", "type": "long"},
        {"name": "user.name", "type": "keyword"},
        {"name": "_id", "type": "keyword"},
    ]
    assert response["values"] == [
        ["2024-03-01T12:00:57.000Z", "sudo", 57, "user2", "doc-57"],
        ["2024-03-01T12:00:53.000Z", "sudo", 53, "user3", "doc-53"],
    ]
    for query, kind, reason in [
        ("FROM audit-* | WHERE nope == 1", "verification_exception", "line 1:22: Unknown column [nope]"),
        ('FROM audit-* | WHERE n == "x"', "verification_exception", 'first argument of [n == "x"]'),
        ("FROM audit-* | WHERE @timestamp > 5", "verification_exception", "is [date] so second argument"),
        ("FROM missing", "verification_exception", "Unknown index [missing]"),
        ("FROM audit-* | FROBNICATE", "parsing_exception", "line 1:16: mismatched input 'FROBNICATE'"),
        ("FROM audit-* | WHERE (n > 1", "parsing_exception", "mismatched input '<EOF>' expecting ')'"),
        ("FROM audit-* | EVAL x = 1", "parsing_exception", "[EVAL] is not simulated"),
    ]:
        with pytest.raises(ApiError) as raised:
            await client.esql.query(query=query)
        assert raised.value.meta.status == 400
        assert raised.value.body["error"]["type"] == kind
        assert reason in raised.value.body["error"]["root_cause"][0]["reason"]


async def test_esql_pages_by_time_and_id_with_no_gap_no_duplicate_and_resumes(
    cluster: Cluster, services: Services
) -> None:
    state, client = cluster
    # ten more documents sharing one timestamp: a page boundary falls inside them (keyset on (time, _id))
    tied = [doc(200 + i, T0 + timedelta(seconds=30), "audit-a") for i in range(0, 40, 4)]
    await async_bulk(client, tied)
    es = connector(client, esql=ESQL)
    expected = sorted([n for n in range(60) if n % 4 in (0, 1)] + [200 + i for i in range(0, 40, 4)])
    assert await poll(services, es) == len(expected)
    assert numbers(await stored_raw(services, "siem")) == expected
    pages = state.requests.count(("POST", "/_query"))
    assert pages == len(expected) // 7 + 1, "full pages, then a short one ends the sweep"
    assert state.pits == {} and ("POST", "/audit-*/_pit") not in state.requests
    late = [
        doc(100, T0 + timedelta(seconds=59 - 20)),  # late, within the 30 s overlap: found
        doc(104, T0 + timedelta(seconds=59 - 45)),  # older than the overlap: only a backfill finds it
        doc(108, T0 + timedelta(seconds=70)),  # new
        doc(102, T0 + timedelta(seconds=71)),  # new but not matching the query
    ]
    await async_bulk(client, late)
    assert await poll(services, es, times=2) == 2, "the overlap is re-read but nothing is sent twice"
    raws = await stored_raw(services, "siem")
    assert numbers(raws) == sorted([*expected, 100, 108])
    assert len({raw["n"] for raw in raws}) == len(raws)
    assert raws[0]["event"]["action"] in ("login", "sudo") and "user" in raws[0], "columns nested back"
    runtime = ConnectorRuntime(services.pipeline)
    assert (await runtime.backfill(es, T0, T0 + timedelta(seconds=20))).stored == 1


async def test_esql_resumes_from_the_checkpoint_of_a_page(cluster: Cluster, services: Services) -> None:
    _state, client = cluster
    es = connector(client, esql=ESQL)
    first = None
    async for batch in es.batches(None):
        first = batch
        break
    assert first is not None and len(first.events) == 7
    assert first.checkpoint["watermark"] == "2024-03-01T12:00:12.000Z"
    assert set(first.checkpoint["seen"]) == {f"doc-{n}" for n in (0, 1, 4, 5, 8, 9, 12)}
    resumed = [event for batch in [b async for b in es.batches(first.checkpoint)] for event in batch.events]
    again = {event.id for event in first.events} & {event.id for event in resumed}
    assert not again, "nothing committed is sent again"
    assert len(first.events) + len(resumed) == 30


async def test_esql_faults_are_retried_and_neither_lose_nor_duplicate(cluster: Cluster, services: Services) -> None:
    state, client = cluster
    state.faults.add(Fault(status=429, retry_after=0.05, path="/_query", times=2))
    state.faults.add(Fault(status=500, path="/_query"))
    state.faults.add(Fault(drop=True, path="/_query"))
    state.faults.add(Fault(delay=1.0, path="/_query"))
    state.faults.add(Fault(status=503, path="/_query"))
    es = connector(client, esql="FROM audit-*")
    assert await poll(services, es, times=2) == 60
    assert numbers(await stored_raw(services, "siem")) == list(range(60))
    assert state.faults.pending == []


async def test_a_refused_esql_query_fails_at_once(cluster: Cluster, services: Services) -> None:
    state, client = cluster
    es = connector(client, esql='FROM audit-* | WHERE actor == "x"')
    with pytest.raises(
        SourceError, match=r"HTTP 400 verification_exception: Found 1 problem\nline 1:\d+: Unknown column \[actor\]"
    ):
        await poll(services, es)
    assert state.requests.count(("POST", "/_query")) == 1


async def test_the_ids_a_checkpoint_keeps_are_bounded_and_a_re_read_past_them_stores_nothing_twice(
    cluster: Cluster, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every id within the overlap was kept in each checkpoint, however many: at a busy SIEM, megabytes a commit."""
    monkeypatch.setattr(runtime, "MAX_SEEN_IDS", 4)
    _state, client = cluster
    es = connector(client, query="event.action:(login OR sudo)", overlap_seconds=3600)
    runner = ConnectorRuntime(services.pipeline)
    assert (await runner.poll(es)).stored == 30
    async with services.store.transaction() as tx:
        checkpoint = await tx.get_checkpoint("es")
    assert checkpoint is not None and len(checkpoint["seen"]) == 4
    again = await runner.poll(es)
    assert again.stored == 0 and again.duplicates == 26, "the overlap re-read: the 4 kept ids sent nothing again"
    assert numbers(await stored_raw(services, "siem")) == [n for n in range(60) if n % 4 in (0, 1)]
