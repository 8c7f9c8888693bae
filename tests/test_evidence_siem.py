"""Evidence from the SIEM: evidence.collect also reads the entity's records through configured Elasticsearch
(Lucene and ES|QL) and Splunk connectors, over real HTTP with the official clients, into the sealed bundle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pydantic
import pytest

from custodes.config import Settings
from custodes.responder import catalog
from custodes.responder.evidence import LocalBundle, verify_bundle
from custodes.responder.registry import ActionContext, ActionError
from custodes.responder.siem import entity_condition
from custodes.sandbox import elasticsearch as es_sim
from custodes.sandbox import splunk as splunk_sim
from custodes.sandbox.server import running
from custodes.store import Store

T0 = datetime(2026, 11, 19, 2, 0, tzinfo=UTC)
ALICE = "alice@example.com"
WINDOW = {"since": "2026-11-19T00:00:00Z", "until": "2026-11-20T00:00:00Z"}

# (hours after T0, user, action): in the window unless said otherwise.
ACTIVITY = [
    (0, ALICE, "file-download"),
    (1, "alice", "usb-mount"),  # her short login, an identity alias
    (2, "bob@example.com", "file-download"),
    (3, 'o"neil@example.com', "print"),
    (30, ALICE, "logon"),  # after the window
]


@pytest.fixture
async def elastic() -> AsyncIterator[tuple[es_sim.ElasticsearchState, str]]:
    state = es_sim.ElasticsearchState()
    for n, (hours, user, action) in enumerate(ACTIVITY):
        at = (T0 + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")
        state.index("logs-endpoint", f"d{n}", {"@timestamp": at, "user": {"name": user}, "event": {"action": action}})
    async with running(es_sim.create_app(state)) as url:
        yield state, url


@pytest.fixture
async def splunk() -> AsyncIterator[tuple[splunk_sim.SplunkState, str]]:
    state = splunk_sim.SplunkState()
    for hours, user, action in ACTIVITY:
        raw = orjson.dumps({"user": user, "action": action}).decode()
        state.index(T0 + timedelta(hours=hours), raw, index="endpoint", user=user, action=action)
    async with running(splunk_sim.create_app(state)) as url:
        yield state, url


def settings_for(tmp_path: Path, connectors: dict[str, Any], siem: list[dict[str, Any]]) -> Settings:
    return Settings.model_validate(
        {
            "connectors": connectors,
            "responder": {"evidence": {"directory": str(tmp_path / "evidence"), "siem": siem}},
            "scoring": {"identities": {"aliases": {"alice": ALICE}}},
        }
    )


def elastic_entry(url: str, **options: Any) -> dict[str, Any]:
    return {"kind": "elasticsearch", "options": {"hosts": [url], "index": "logs-*", "page_size": 1, **options}}


def splunk_entry(state: splunk_sim.SplunkState, url: str) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    return {
        "kind": "splunk",
        "credentials": {"username": "env:CUSTODES_TEST_SPLUNK_USER", "password": "env:CUSTODES_TEST_SPLUNK_PASSWORD"},
        "options": {"host": host, "port": int(port), "scheme": "http", "search": "search index=endpoint"},
    }


async def collect(store: Store, session: aiohttp.ClientSession, app: Settings, **overrides: Any) -> dict[str, Any]:
    ctx = ActionContext(
        app.responder, session, "run1/preserve", run_id="run1", store=store, actor="analyst@example.com", app=app
    )
    spec = catalog.get("evidence.collect")
    arguments = {"entity": ALICE, "reason": "INC-42", **WINDOW, **overrides}
    result: dict[str, Any] = await spec.fn(ctx, **spec.validate(arguments))
    return result


def records(result: dict[str, Any], connector: str) -> list[dict[str, Any]]:
    path = Path(result["location"]) / "siem" / f"{connector}.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def users_and_actions(found: list[dict[str, Any]], user: Any, action: Any) -> list[tuple[Any, Any]]:
    return sorted((user(item["raw"]), action(item["raw"])) for item in found)


async def test_lucene_evidence_holds_the_entity_and_its_aliases_in_the_window(
    store: Store, session: aiohttp.ClientSession, tmp_path: Path, elastic: tuple[es_sim.ElasticsearchState, str]
) -> None:
    _, url = elastic
    app = settings_for(tmp_path, {"es": elastic_entry(url)}, [{"connector": "es", "entity_fields": ["user.name"]}])
    result = await collect(store, session, app)

    found = records(result, "es")
    pairs = users_and_actions(found, lambda raw: raw["user"]["name"], lambda raw: raw["event"]["action"])
    assert pairs == [("alice", "usb-mount"), (ALICE, "file-download")]
    assert result["files"]["siem/es.ndjson"] == 2
    root = Path(result["location"])
    manifest = orjson.loads((root / "manifest.json").read_bytes())
    assert "siem/es.ndjson" in manifest["files"]
    [queried] = manifest["siem"]
    assert queried["connector"] == "es" and queried["records"] == 2
    assert queried["query"] == f'(user.name:"{ALICE}" OR user.name:"alice")'
    report = verify_bundle(LocalBundle(root), expected_manifest=result["manifest_sha256"])
    assert report.ok and "siem/es.ndjson" in report.checked


async def test_a_quote_in_a_name_stays_a_literal(
    store: Store, session: aiohttp.ClientSession, tmp_path: Path, elastic: tuple[es_sim.ElasticsearchState, str]
) -> None:
    _, url = elastic
    app = settings_for(tmp_path, {"es": elastic_entry(url)}, [{"connector": "es"}])
    result = await collect(store, session, app, entity='o"neil@example.com')
    assert [item["raw"]["event"]["action"] for item in records(result, "es")] == ["print"]
    assert entity_condition("lucene", ["user.name"], ['a" OR *:*']) == 'user.name:"a\\" OR *:*"'
    assert entity_condition("esql", ["user.name"], ["a\\"]) == '`user.name` == "a\\\\"'
    assert entity_condition("spl", ["user"], ["a*", "b"]) == 'user="b"'


async def test_esql_evidence_appends_a_where_to_the_connectors_query(
    store: Store, session: aiohttp.ClientSession, tmp_path: Path, elastic: tuple[es_sim.ElasticsearchState, str]
) -> None:
    _, url = elastic
    entry = elastic_entry(url, esql='FROM logs-* | WHERE `event.action` != "logon"')
    app = settings_for(tmp_path, {"es": entry}, [{"connector": "es"}])
    result = await collect(store, session, app)
    pairs = users_and_actions(
        records(result, "es"), lambda raw: raw["user"]["name"], lambda raw: raw["event"]["action"]
    )
    assert pairs == [("alice", "usb-mount"), (ALICE, "file-download")]


async def test_an_unknown_esql_column_is_a_located_error_and_nothing_is_recorded(
    store: Store, session: aiohttp.ClientSession, tmp_path: Path, elastic: tuple[es_sim.ElasticsearchState, str]
) -> None:
    _, url = elastic
    entry = elastic_entry(url, esql="FROM logs-*")
    app = settings_for(tmp_path, {"es": entry}, [{"connector": "es", "entity_fields": ["user.email"]}])
    with pytest.raises(ActionError) as failed:
        await collect(store, session, app)
    assert failed.value.code == "siem_error"
    assert "evidence from es" in str(failed.value) and "user.email" in str(failed.value)
    assert not (tmp_path / "evidence").exists()


async def test_splunk_evidence_and_two_siems_in_one_bundle(
    store: Store,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    elastic: tuple[es_sim.ElasticsearchState, str],
    splunk: tuple[splunk_sim.SplunkState, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUSTODES_TEST_SPLUNK_USER", splunk[0].username)
    monkeypatch.setenv("CUSTODES_TEST_SPLUNK_PASSWORD", splunk[0].password)
    connectors = {"es": elastic_entry(elastic[1]), "spl": splunk_entry(*splunk)}
    app = settings_for(tmp_path, connectors, [{"connector": "es"}, {"connector": "spl"}])
    result = await collect(store, session, app)
    pairs = users_and_actions(records(result, "spl"), lambda raw: raw["user"], lambda raw: raw["action"])
    assert pairs == [("alice", "usb-mount"), (ALICE, "file-download")]
    assert result["files"]["siem/es.ndjson"] == result["files"]["siem/spl.ndjson"] == 2
    searches = [form.get("search", "") for _method, path, form in splunk[0].requests if path.endswith("/export")]
    assert searches == [
        f'search index=endpoint (user="{ALICE}" OR user="alice" OR src_user="{ALICE}" OR src_user="alice")'
    ]


async def test_dry_run_names_the_siems_and_reads_nothing(
    store: Store, session: aiohttp.ClientSession, tmp_path: Path, elastic: tuple[es_sim.ElasticsearchState, str]
) -> None:
    state, url = elastic
    app = settings_for(tmp_path, {"es": elastic_entry(url)}, [{"connector": "es"}])
    ctx = ActionContext(app.responder, session, "k", store=store, dry_run=True, app=app)
    spec = catalog.get("evidence.collect")
    planned = await spec.fn(ctx, **spec.validate({"entity": ALICE, "reason": "r", **WINDOW}))
    assert planned["dry_run"] is True and "with records from es" in planned["would"]
    assert state.requests == []


def test_an_evidence_siem_must_be_a_configured_siem_connector(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        settings_for(tmp_path, {"okta": {"kind": "okta"}}, [{"connector": "okta"}])
    assert "responder.evidence.siem[0].connector: 'okta' is not an elasticsearch or splunk entry" in str(refused.value)
    with pytest.raises(pydantic.ValidationError) as bad_field:
        settings_for(tmp_path, {}, [{"connector": "es", "entity_fields": ["user name"]}])
    assert "entity_fields" in str(bad_field.value)
