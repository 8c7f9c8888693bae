"""Every webhook receiver over real HTTP: vendor shapes, their authentication, dedup and back-pressure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from custodes.config import DatabaseSettings, Settings
from custodes.errors import ConfigError
from custodes.model import Severity
from custodes.pipeline import IngestReport
from custodes.server.serve import serving
from custodes.services import Services

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {
    "T_SPLUNK": "splunk-token-0123456789",
    "T_KIBANA": "kibana-token-0123456789",
    "T_OKTA_HOOK": "okta-hook-secret-0123456789",
    "T_GRAPH": "graph-client-state-0123456789",
    "T_ALERTS": "generic-alerts-token-0123456789",
}
RECEIVERS: dict[str, Any] = {
    "splunk": {
        "kind": "splunk",
        "auth": {"scheme": "url_token", "secret": "env:T_SPLUNK", "allow_from": ["127.0.0.0/8", "::1/128"]},
    },
    "splunk-elsewhere": {
        "kind": "splunk",
        "auth": {"scheme": "url_token", "secret": "env:T_SPLUNK", "allow_from": ["10.20.0.0/16"]},
    },
    "kibana": {"kind": "kibana", "auth": {"scheme": "bearer", "secret": "env:T_KIBANA"}},
    "okta": {
        "kind": "okta_event_hook",
        "source": "okta",
        "auth": {"scheme": "header", "header": "Authorization", "secret": "env:T_OKTA_HOOK"},
    },
    "graph": {"kind": "graph", "source": "graph", "auth": {"scheme": "client_state", "secret": "env:T_GRAPH"}},
    "alerts": {
        "kind": "generic",
        "root": "items",
        "auth": {"scheme": "bearer", "secret": "env:T_ALERTS"},
        "alert_fields": {
            "id": "alert_id",
            "title": "name",
            "severity": "priority",
            "entity": "who.email",
            "time": "at",
            "rule": "rule_ref",
        },
    },
}


@pytest.fixture
async def server(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Services]]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "playbooks").mkdir()
    settings = Settings.model_validate(
        {
            "detection": {"rules": [str(ROOT / "detections" / "rules")]},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "sources": {
                "graph": {"format": "generic", "fields": {"id": "id", "time": "subscriptionExpirationDateTime"}}
            },
            "webhooks": RECEIVERS,
        }
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        yield url, services


async def call(
    method: str,
    url: str,
    *,
    json: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as http, http.request(method, url, json=json, headers=headers) as response:
        text = await response.text()
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body, text


async def findings(services: Services) -> list[Any]:
    async with services.store.transaction() as tx:
        return await tx.list_findings(limit=100)


SPLUNK_ALERT = {
    "sid": "scheduler__admin__search__RMD5e1b3_at_1763518800_42",
    "search_name": "Mass download from SharePoint",
    "app": "search",
    "owner": "admin",
    "results_link": "http://splunk.example:8000/app/search/@go?sid=42",
    "result": {"user": "alice@example.com", "count": "412", "urgency": "4", "_time": "1763518800"},
}


async def test_splunk_alert_becomes_a_finding_once(server: tuple[str, Services]) -> None:
    url, services = server
    status, body, _ = await call("POST", f"{url}/webhooks/splunk?token=splunk-token-0123456789", json=SPLUNK_ALERT)
    assert status == 202 and body["stored"] == 1 and len(body["findings"]) == 1
    again, repeat, _ = await call("POST", f"{url}/webhooks/splunk?token=splunk-token-0123456789", json=SPLUNK_ALERT)
    assert again == 202 and repeat["duplicates"] == 1 and repeat["findings"] == []
    [finding] = await findings(services)
    assert (finding.title, finding.entity, finding.severity, finding.detector) == (
        "Mass download from SharePoint",
        "alice@example.com",
        Severity.HIGH,
        "splunk",
    )


async def test_splunk_needs_token_and_allowed_sender(server: tuple[str, Services]) -> None:
    url, services = server
    for path, message in [
        ("splunk", "missing token"),
        ("splunk?token=nope", "wrong token"),
        ("splunk-elsewhere?token=splunk-token-0123456789", "not in allow_from"),
    ]:
        status, body, _ = await call("POST", f"{url}/webhooks/{path}", json=SPLUNK_ALERT)
        assert status == 401 and message in body["error"]["message"], path
    status, body, _ = await call("POST", f"{url}/webhooks/splunk?token=splunk-token-0123456789", json={"result": {}})
    assert status == 400 and body["error"]["field"] == "sid"
    assert await findings(services) == []


async def test_kibana_alerts_in_every_shape(server: tuple[str, Services]) -> None:
    url, services = server
    nested = {
        "kibana": {
            "alert": {
                "uuid": "a1",
                "severity": "critical",
                "original_time": "2026-11-19T02:00:00Z",
                "rule": {"name": "Exfil to personal cloud", "uuid": "r1", "threat": [{"technique": [{"id": "T1567"}]}]},
            }
        },
        "user": {"name": "bob"},
    }
    flat = {
        "kibana.alert.uuid": "a2",
        "kibana.alert.rule.name": "USB mass copy",
        "kibana.alert.rule.uuid": "r2",
        "kibana.alert.risk_score": 73,
        "user.name": "carol",
    }
    legacy = {
        "_id": "s1",
        "signal": {"rule": {"name": "Legacy signal", "id": "r3", "severity": "low"}},
        "user": {"email": "dan@example.com"},
    }
    headers = {"Authorization": "Bearer kibana-token-0123456789"}
    status, body, _ = await call(
        "POST", f"{url}/webhooks/kibana", json={"alerts": [nested, flat, legacy]}, headers=headers
    )
    assert status == 202 and len(body["findings"]) == 3
    seen = {(f.title, f.entity, f.severity) for f in await findings(services)}
    assert seen == {
        ("Exfil to personal cloud", "bob", Severity.CRITICAL),
        ("USB mass copy", "carol", Severity.HIGH),
        ("Legacy signal", "dan@example.com", Severity.LOW),
    }
    assert next(f for f in await findings(services) if f.entity == "bob").tags == ["attack.t1567"]
    status, body, _ = await call("POST", f"{url}/webhooks/kibana", json={"alerts": [{"no": "rule"}]}, headers=headers)
    assert status == 400 and body["error"]["field"] == "alerts[0]"
    assert (await call("POST", f"{url}/webhooks/kibana", json={"alerts": []}))[0] == 401


async def test_okta_event_hook_verification_and_delivery(server: tuple[str, Services]) -> None:
    url, services = server
    auth = {"Authorization": "okta-hook-secret-0123456789"}
    status, body, _ = await call(
        "GET", f"{url}/webhooks/okta", headers={**auth, "X-Okta-Verification-Challenge": "chal-123"}
    )
    assert (status, body) == (200, {"verification": "chal-123"})
    status, _, _ = await call("GET", f"{url}/webhooks/okta", headers={"X-Okta-Verification-Challenge": "x"})
    assert status == 401
    delivery = {
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "data": {
            "events": [
                {
                    "uuid": "e-1",
                    "published": "2026-11-19T02:03:40Z",
                    "eventType": "user.mfa.factor.deactivate",
                    "actor": {"alternateId": "erin@example.com"},
                    "outcome": {"result": "SUCCESS"},
                }
            ]
        },
    }
    status, body, _ = await call("POST", f"{url}/webhooks/okta", json=delivery, headers=auth)
    assert status == 202 and body["stored"] == 1
    [finding] = await findings(services)
    assert finding.title == "Okta MFA Factor Removed or Reset" and finding.entity == "erin@example.com"
    status, body, _ = await call("POST", f"{url}/webhooks/okta", json={"data": {}}, headers=auth)
    assert status == 400 and body["error"]["field"] == "data.events"


async def test_graph_validation_and_client_state(server: tuple[str, Services]) -> None:
    url, services = server
    status, _, text = await call("POST", f"{url}/webhooks/graph?validationToken=Validation%3A%20abc")
    assert (status, text) == (200, "Validation: abc")
    note = {
        "subscriptionId": "s-1",
        "changeType": "updated",
        "resource": "users/42",
        "id": "n-1",
        "subscriptionExpirationDateTime": "2026-11-20T00:00:00Z",
        "tenantId": "t",
    }
    status, body, _ = await call(
        "POST", f"{url}/webhooks/graph", json={"value": [{**note, "clientState": "graph-client-state-0123456789"}]}
    )
    assert status == 202 and body["stored"] == 1
    status, body, _ = await call(
        "POST", f"{url}/webhooks/graph", json={"value": [{**note, "id": "n-2", "clientState": "forged"}]}
    )
    assert status == 401 and "clientState" in body["error"]["message"]
    async with services.store.transaction() as tx:
        assert await tx.count_events() == 1


async def test_generic_alert_mapping(server: tuple[str, Services]) -> None:
    url, services = server
    body = {
        "items": [
            {
                "alert_id": "x1",
                "name": "DLP: payroll to gmail",
                "priority": "high",
                "rule_ref": "dlp-7",
                "who": {"email": "frank@example.com"},
                "at": 1763518800,
            }
        ]
    }
    status, answer, _ = await call(
        "POST", f"{url}/webhooks/alerts", json=body, headers={"Authorization": "Bearer generic-alerts-token-0123456789"}
    )
    assert status == 202 and len(answer["findings"]) == 1
    [finding] = await findings(services)
    assert (finding.rule_id, finding.entity, finding.severity) == ("dlp-7", "frank@example.com", Severity.HIGH)
    status, answer, _ = await call(
        "POST",
        f"{url}/webhooks/alerts",
        json={"items": [{"alert_id": "x2"}]},
        headers={"Authorization": "Bearer generic-alerts-token-0123456789"},
    )
    assert status == 400 and "no title" in answer["error"]["message"]


async def test_a_full_queue_answers_429_and_loses_nothing_accepted(
    server: tuple[str, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, services = server
    release = asyncio.Event()
    original = services.pipeline.ingest

    async def slow(*args: Any, **kwargs: Any) -> IngestReport:
        await release.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(services.pipeline, "ingest", slow)
    services.settings.server.ingest_queue_records = 1
    queue_url = f"{url}/webhooks/splunk?token=splunk-token-0123456789"
    first = asyncio.create_task(call("POST", queue_url, json=SPLUNK_ALERT))
    await asyncio.sleep(0.2)
    second = {**SPLUNK_ALERT, "sid": "other"}
    status, body, _ = await asyncio.wait_for(call("POST", queue_url, json=second), 10)
    assert status == 429 and body["error"]["code"] == "queue_full"
    release.set()
    status, body, _ = await asyncio.wait_for(first, 10)
    assert status == 202 and body["stored"] == 1
    assert len(await findings(services)) == 1


@pytest.mark.parametrize(
    ("receiver", "message"),
    [
        ({"kind": "splunk", "auth": {"scheme": "url_token", "secret": "env:T_SPLUNK"}}, "never enough alone"),
        ({"kind": "graph", "auth": {"scheme": "hmac", "secret": "env:T_GRAPH"}}, "authenticates with client_state"),
        ({"kind": "okta_event_hook", "auth": {"scheme": "bearer", "secret": "env:T_OKTA_HOOK"}}, "with header"),
    ],
)
def test_unsafe_receiver_configurations_are_refused(
    receiver: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from custodes.config import load_settings

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    import orjson

    path = tmp_path / "custodes.yaml"
    path.write_bytes(orjson.dumps({"webhooks": {"r": receiver}}))
    with pytest.raises(ConfigError, match=message):
        load_settings(path)
