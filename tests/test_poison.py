"""One bad record fails only its own request: receivers refuse unstorable fields with a 400 naming the field, the
store's refusals are isolated to their request, NUL never reaches PostgreSQL, and a failed transaction leaves the
in-memory scoring state equal to the store's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from connector_support import quiet_settings
from custodes.config import DatabaseSettings, Settings
from custodes.connectors import envelope
from custodes.connectors.envelope import to_event
from custodes.model import Event
from custodes.server.serve import serving
from custodes.services import Services
from custodes.store import Transaction
from custodes.store.tables import events, scoring_state
from custodes.store.text import has_nul, without_nul
from test_api import (
    TOKENS,
    api,  # noqa: F401 (the server fixture)
)
from test_webhook_receivers import RECEIVERS, SECRETS, call

RECORDS = {"kind": "generic", "source": "app", "auth": {"scheme": "bearer", "secret": "env:T_ALERTS"}}
AUTH = {"Authorization": "Bearer generic-alerts-token-0123456789"}
WIDE = "\uff19\uff10"
"""Ninety in full-width digits."""


@pytest.fixture
async def server(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Services]]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "playbooks").mkdir()
    settings = Settings.model_validate(
        {
            "detection": {"rules": []},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "sources": {
                "graph": {"format": "generic", "fields": {"id": "id", "time": "subscriptionExpirationDateTime"}},
                "app": {"format": "generic"},
            },
            "webhooks": {**RECEIVERS, "records": RECORDS},
        }
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        yield url, services


def record(**extra: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "@timestamp": "2026-11-19T02:00:00Z", "user": {"name": "ann"}, **extra}


OKTA_HOOK = {"Authorization": "okta-hook-secret-0123456789"}
KIBANA = {"Authorization": "Bearer kibana-token-0123456789"}
SPLUNK = "splunk?token=splunk-token-0123456789"
GRAPH_STATE = "graph-client-state-0123456789"


def okta_event(**extra: Any) -> dict[str, Any]:
    return {"uuid": uuid.uuid4().hex, "published": "2026-11-19T02:00:00Z", "eventType": "user.session.start", **extra}


def overlong(length: int = 600) -> str:
    return "x" * length


def bounded_requests() -> list[tuple[str, Any, dict[str, str] | None, str | None]]:
    """A valid request and one with an overlong identifier for every receiver kind: (path, body, headers, the
    field the refusal names or None for the valid one)."""
    return [
        ("records", record(), AUTH, None),
        ("records", record(user={"name": overlong()}), AUTH, "[0].user.name"),
        ("records", [record(), record(source={"ip": overlong(65)})], AUTH, "[1].source.ip"),
        ("records", record(event={"action": overlong(513)}), AUTH, "[0].event.action"),
        ("records", record(target=overlong(1025)), AUTH, "[0].target"),
        ("okta", {"data": {"events": [okta_event()]}}, OKTA_HOOK, None),
        (
            "okta",
            {"data": {"events": [okta_event(), okta_event(actor={"alternateId": overlong()})]}},
            OKTA_HOOK,
            "data.events[1].actor.alternateId",
        ),
        (
            "okta",
            {"data": {"events": [okta_event(target=[{"alternateId": overlong(2000)}])]}},
            OKTA_HOOK,
            "data.events[0].target.0.alternateId",
        ),
        ("graph", {"value": [{"id": uuid.uuid4().hex, "clientState": GRAPH_STATE}]}, None, None),
        (
            "graph",
            {"value": [{"id": uuid.uuid4().hex, "clientState": GRAPH_STATE, "user": {"name": overlong()}}]},
            None,
            "value[0].user.name",
        ),
        (SPLUNK, {"sid": uuid.uuid4().hex, "search_name": "s", "result": {"user": "ann"}}, None, None),
        (SPLUNK, {"sid": uuid.uuid4().hex, "search_name": overlong(), "result": {}}, None, "search_name"),
        (SPLUNK, {"sid": uuid.uuid4().hex, "result": {"user": overlong()}}, None, "result.user"),
        ("kibana", {"alerts": [{"kibana.alert.rule.name": "r", "kibana.alert.uuid": uuid.uuid4().hex}]}, KIBANA, None),
        (
            "kibana",
            {"alerts": [{"kibana.alert.rule.name": "r", "kibana.alert.rule.uuid": overlong(200)}]},
            KIBANA,
            "alerts[0].kibana.alert.rule.uuid",
        ),
        (
            "kibana",
            {"alerts": [{"kibana.alert.rule.name": "r", "user": {"name": overlong()}}]},
            KIBANA,
            "alerts[0].user.name",
        ),
        ("alerts", {"items": [{"alert_id": uuid.uuid4().hex, "name": "n"}]}, AUTH, None),
        (
            "alerts",
            {"items": [{"alert_id": "c", "name": "n", "who": {"email": overlong()}}]},
            AUTH,
            "items[0].who.email",
        ),
        ("alerts", {"items": [{"alert_id": "d", "name": "n", "rule_ref": overlong(129)}]}, AUTH, "items[0].rule_ref"),
        ("alerts", {"items": [{"alert_id": "e", "name": overlong(200)}]}, AUTH, "items[0].name"),
    ]


async def test_unstorable_fields_are_400s_naming_the_field(server: tuple[str, Services]) -> None:
    url, _ = server
    future = "9999-01-01T00:00:00Z"
    cases: list[tuple[str, Any, dict[str, str] | None, str]] = [
        ("records", record(bytes=2**63), AUTH, "[0].bytes"),
        ("records", record(bytes=1e308), AUTH, "[0].bytes"),
        ("records", record(bytes="²"), AUTH, "[0].bytes"),
        ("records", [record(), record(bytes=-1)], AUTH, "[1].bytes"),
        ("splunk?token=splunk-token-0123456789", {"sid": "s1", "result": {"urgency": "²"}}, None, "result.urgency"),
        (
            "splunk?token=splunk-token-0123456789",
            {"sid": "s2", "result": {"risk_score": WIDE}},
            None,
            "result.risk_score",
        ),
        ("splunk?token=splunk-token-0123456789", {"sid": "s3", "result": {"_time": future}}, None, "result._time"),
        (
            "splunk?token=splunk-token-0123456789",
            {"sid": "s4", "result": {"_time": "0001-01-01T00:00:00Z"}},
            None,
            "result._time",
        ),
        (
            "kibana",
            {"alerts": [{"kibana.alert.rule.name": "r", "kibana.alert.severity": "³"}]},
            {"Authorization": "Bearer kibana-token-0123456789"},
            "alerts[0].kibana.alert.severity",
        ),
        (
            "kibana",
            {"alerts": [{"kibana.alert.rule.name": "r", "@timestamp": future}]},
            {"Authorization": "Bearer kibana-token-0123456789"},
            "alerts[0].@timestamp",
        ),
        (
            "alerts",
            {"items": [{"alert_id": "a", "name": "n", "priority": "²", "who": {"email": "x@example.com"}}]},
            {"Authorization": "Bearer generic-alerts-token-0123456789"},
            "items[0].priority",
        ),
        (
            "alerts",
            {"items": [{"alert_id": "b", "name": "n", "at": "0001-01-01T00:00:00Z"}]},
            {"Authorization": "Bearer generic-alerts-token-0123456789"},
            "items[0].at",
        ),
        (
            "graph",
            {"value": [{"id": "n1", "clientState": "graph-client-state-0123456789", "bytes": 2**63}]},
            None,
            "value[0].bytes",
        ),
    ]
    for path, body, headers, field in cases:
        status, answer, text = await call("POST", f"{url}/webhooks/{path}", json=body, headers=headers)
        assert status == 400, (path, body, status, text)
        assert answer["error"]["field"] == field, (path, answer)
        assert field.rpartition(".")[2] in answer["error"]["message"], answer


async def test_overlong_identifiers_are_400s_naming_the_field_and_spare_their_neighbours(
    server: tuple[str, Services],
) -> None:
    """Every receiver kind, valid and overlong requests at once (many per group commit): each overlong one is a
    400 naming its field, each valid one is stored."""
    url, services = server
    requests = bounded_requests() * 4
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: Any, headers: dict[str, str] | None) -> tuple[int, Any]:
            async with http.post(f"{url}/webhooks/{path}", json=body, headers=headers) as response:
                return response.status, await response.json()

        answers = await asyncio.gather(*(post(path, body, headers) for path, body, headers, _ in requests))
    stored = set()
    for (path, body, _, field), (status, answer) in zip(requests, answers, strict=True):
        if field is None:
            assert status == 202, (path, body, answer)
            stored.update(answer["event_ids"])
        else:
            assert status == 400, (path, field, answer)
            assert answer["error"]["code"] in {"too_long", "invalid_record"}, answer
            assert answer["error"]["field"] == field, (path, answer)
            assert "characters, more than the" in answer["error"]["message"], answer
    async with services.store.transaction() as tx:
        count = (await tx.conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one()
    assert count == len(stored) == 6


async def test_a_long_alert_title_is_cut_and_kept_whole_in_the_alert(server: tuple[str, Services]) -> None:
    url, services = server
    name = "exfiltration " * 100
    status, answer, text = await call(
        "POST",
        f"{url}/webhooks/kibana",
        json={"alerts": [{"kibana.alert.rule.name": name, "kibana.alert.rule.uuid": "r-1"}]},
        headers=KIBANA,
    )
    assert status == 202, text
    async with services.store.transaction() as tx:
        finding = await tx.get_finding(answer["findings"][0])
        [event] = await tx.get_events(answer["event_ids"])
    assert finding is not None and len(finding.title) == 512 and finding.title.endswith("\u2026")
    assert name.startswith(finding.title[:-1])
    assert event.raw["kibana.alert.rule.name"] == name


async def test_nul_is_stored_without_it(server: tuple[str, Services]) -> None:
    url, services = server
    okta = {
        "uuid": "nul-1",
        "published": "2026-11-19T02:00:00Z",
        "eventType": "user.session.start",
        "actor": {"alternateId": "ann\x00@example.com"},
        "debug\x00": "a\x00b",
    }
    status, answer, text = await call(
        "POST",
        f"{url}/webhooks/okta",
        json={"data": {"events": [okta]}},
        headers={"Authorization": "okta-hook-secret-0123456789"},
    )
    assert status == 202, text
    status, answer, text = await call(
        "POST", f"{url}/webhooks/records", json=record(user={"name": "b\x00b"}), headers=AUTH
    )
    assert status == 202, text
    async with services.store.transaction() as tx:
        stored = await tx.get_events(answer["event_ids"])
    assert stored[0].actor == ("bb" if services.store.dialect == "postgresql" else "b\x00b")


async def poison_stream(
    server: tuple[str, Services], poison: dict[str, tuple[dict[str, Any], int]]
) -> dict[str, tuple[int, Any]]:
    """Post 120 valid records and each poison three times, all at once (many per group commit); check that every
    valid one and every poison expected to be is stored and each poison got its status; the poisons' answers."""
    url, services = server

    async def post(http: aiohttp.ClientSession, body: Any) -> tuple[int, Any]:
        async with http.post(f"{url}/webhooks/records", json=body, headers=AUTH) as response:
            return response.status, await response.json()

    valid = [record(user={"name": f"user{n % 7}"}) for n in range(120)]
    bodies = valid[:40] + [body for body, _ in poison.values()] * 3 + valid[40:]
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(post(http, body) for body in bodies))
    by_id = {body["id"]: answer for body, answer in zip(bodies, answers, strict=True)}
    assert [by_id[body["id"]][0] for body in valid] == [202] * len(valid)
    for name, (body, expected) in poison.items():
        status, answer = by_id[body["id"]]
        assert status == expected, (name, answer)
    async with services.store.transaction() as tx:
        stored = (await tx.conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one()
    assert stored == len(valid) + sum(1 for _, expected in poison.values() if expected == 202)
    return {name: by_id[body["id"]] for name, (body, _) in poison.items()}


async def test_a_poison_stream_fails_only_the_poison(server: tuple[str, Services]) -> None:
    """Valid requests and poison ones at once, many per group commit: every valid one is stored."""
    answers = await poison_stream(
        server,
        {
            "bytes": (record(bytes=2**63), 400),
            "nul": (record(user={"name": "nul\x00"}), 202),
            # longer than events.actor holds: refused before the transaction, on PostgreSQL and SQLite alike
            "long": (record(user={"name": "x" * 600}), 400),
        },
    )
    assert answers["bytes"][1]["error"]["field"] == "[0].bytes"
    assert answers["long"][1]["error"]["field"] == "[0].user.name"


async def test_a_refusal_no_check_foresaw_fails_only_its_request(
    server: tuple[str, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the integer check taken away, 2**63 reaches the store, which refuses its transaction (SQLite and
    PostgreSQL alike): the batch is committed request by request and only that request gets a 422."""
    monkeypatch.setattr(envelope, "whole_number", int)
    answers = await poison_stream(server, {"bytes": (record(bytes=2**63), 422)})
    assert answers["bytes"][1]["error"]["code"] == "unstorable_record"


async def test_a_failed_commit_leaves_scoring_as_stored(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    async with await Services.open(quiet_settings(database, tmp_path / "empty")) as services:
        scoring = services.pipeline.scoring
        assert scoring is not None
        source = services.settings.source("okta")

        def sign_ins(who: str, count: int) -> list[Event]:
            return [
                to_event(
                    {
                        "uuid": uuid.uuid4().hex,
                        "published": f"2026-11-19T0{n % 9}:00:00Z",
                        "eventType": "user.session.start",
                        "actor": {"alternateId": f"{who}@example.com"},
                        "client": {"ipAddress": "192.0.2.1"},
                        "outcome": {"result": "SUCCESS"},
                    },
                    source,
                    "okta",
                )
                for n in range(count)
            ]

        await services.pipeline.ingest(sign_ins("ann", 3))
        flush = Transaction.flush

        async def refused(self: Transaction) -> None:
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

        monkeypatch.setattr(Transaction, "flush", refused)
        with pytest.raises(OperationalError):
            await services.pipeline.ingest(sign_ins("ann", 5) + sign_ins("bob", 4))
        monkeypatch.setattr(Transaction, "flush", flush)
        await services.pipeline.ingest(sign_ins("cy", 2))
        async with services.store.transaction() as tx:
            rows = {row.entity: row.state for row in await tx.conn.execute(sa.select(scoring_state))}
        memory = {key: state.to_json() for key, state in scoring.engine.states.items()}
        assert len(rows) == 2 and memory == rows


async def test_nul_in_api_parameters_is_a_400_naming_it(api: tuple[str, Services]) -> None:  # noqa: F811
    url, _ = api
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
    cases = {
        "/api/findings?entity=ann%00x": "entity",
        "/api/findings?status=open%00": "status",
        "/api/runs?playbook=p%00": "playbook",
        "/api/findings/f%00": "id",
        "/api/entities/ann%00/timeline": "id",
        "/api/runs/r%00": "id",
    }
    for path, field in cases.items():
        status, answer, text = await call("GET", f"{url}{path}", headers=headers)
        assert status == 400, (path, text)
        assert answer["error"] == {"code": "invalid_parameter", "message": answer["error"]["message"], "field": field}
    status, _, text = await call("GET", f"{url}/api/findings?status=open", headers=headers)
    assert status == 200, text


def test_nul_is_found_and_removed_however_deep() -> None:
    """The clean-up PostgreSQL needs walks a record by a loop: keys and strings at every level, in order, whatever
    the nesting a JSON decoder gave (1,024 levels)."""
    value: Any = {"k\x00": ["a\x00", ("b", 1, None), {"c": "d\x00e"}], "n": 2}
    assert has_nul(value) and without_nul(value) == {"k": ["a", ["b", 1, None], {"c": "de"}], "n": 2}
    assert not has_nul({"k": ["a", ("b", 1)], "n": None}) and without_nul("x\x00") == "x" and without_nul(3) == 3
    deep: Any = "leaf\x00"
    for level in range(1020):
        deep = {f"k{level}": deep} if level % 2 else [deep]
    assert has_nul(deep)
    cleaned = without_nul(deep)
    while not isinstance(cleaned, str):
        cleaned = next(iter(cleaned.values())) if isinstance(cleaned, dict) else cleaned[0]
    assert cleaned == "leaf"
