"""Issue 8's remaining REST endpoints over real HTTP on both stores: an entity's risk and its explanation,
playbook validation, enabling and disabling playbooks and rules (taking effect on detection and response, kept
across restarts, audited), evidence bundles, connectors' status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa

from custodes.config import DatabaseSettings, Settings
from custodes.detections.scoring.risk import Contribution, DayScore
from custodes.detections.scoring.service import pseudonymizer_for, score_row
from custodes.model import utcnow
from custodes.responder.evidence import LocalBundle, seal
from custodes.server.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custodes.server.serve import serving
from custodes.services import Services
from custodes.store import ConnectorStatus
from custodes.store.tables import evidence_bundles, scoring_scores

ROOT = Path(__file__).resolve().parents[1]
MFA_RULE = "6f1c2a44-9a0e-4c47-8d2b-3f0e5a8b7c11"
TOKENS = {
    "viewer": "tok-viewer-0123456789",
    "analyst": "tok-analyst-0123456789",
    "approver": "tok-approver-0123456789",
    "admin": "tok-admin-0123456789",
    "privacy_officer": "tok-privacy-0123456789",
}
PLAYBOOK = f"""\
name: note-mfa
trigger:
  findings:
    min_severity: informational
    rules: [{MFA_RULE}]
steps:
  - id: note
    uses: case.note
    with: {{case: "{{{{ finding.id }}}}", text: "MFA factor removed"}}
"""


@dataclass
class Api:
    url: str
    services: Services
    settings: Settings
    tmp: Path


@pytest.fixture
async def api(database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    monkeypatch.setenv("T_HOOK", "hook-secret-0123456789")
    for role, token in TOKENS.items():
        monkeypatch.setenv(f"T_{role.upper()}", token)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "note-mfa.yml").write_text(PLAYBOOK)
    settings = Settings.model_validate(
        {
            "detection": {"rules": [str(ROOT / "detections" / "rules")]},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "responder": {"evidence": {"directory": str(tmp_path / "evidence")}},
            "webhooks": {
                "generic": {"kind": "generic", "source": "okta", "auth": {"scheme": "hmac", "secret": "env:T_HOOK"}}
            },
            "server": {
                "api_tokens": [
                    {"name": f"{role}-token", "token": f"env:T_{role.upper()}", "role": role} for role in TOKENS
                ]
            },
        }
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        yield Api(url, services, settings, tmp_path)


async def call(url: str, method: str, path: str, role: str | None = "viewer", json: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{url}{path}", json=json, headers=headers) as response,
    ):
        return response.status, await response.json()


async def mfa_removed(url: str, uuid: str, who: str) -> dict[str, Any]:
    """Post one Okta MFA-removal record to the webhook; the 202 body (findings raised)."""
    body = orjson.dumps(
        [
            {
                "uuid": uuid,
                "published": "2026-11-19T02:03:40Z",
                "eventType": "user.mfa.factor.deactivate",
                "actor": {"alternateId": who},
                "outcome": {"result": "SUCCESS"},
            }
        ]
    )
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign("hook-secret-0123456789", stamp, body),
    }
    async with aiohttp.ClientSession() as http, http.post(f"{url}/webhooks/generic", data=body, headers=headers) as r:
        assert r.status == 202
        answer: dict[str, Any] = await r.json()
        return answer


async def runs_for(url: str, finding: str, *, wait: bool = False) -> list[dict[str, Any]]:
    """The finding's runs; with `wait`, once one has started (playbooks start after the 202)."""
    deadline = time.monotonic() + 10
    while True:
        status, page = await call(url, "GET", f"/api/runs?finding={finding}")
        assert status == 200
        runs: list[dict[str, Any]] = page["runs"]
        if runs or not wait or time.monotonic() > deadline:
            return runs
        await asyncio.sleep(0.05)


async def test_rule_and_playbook_toggles_take_effect_and_persist(api: Api) -> None:
    url = api.url
    for role in ("viewer", "analyst", "approver"):
        status, body = await call(url, "POST", f"/api/rules/{MFA_RULE}/disable", role)
        assert status == 403 and "admin role" in body["error"]["message"]
    assert (await call(url, "POST", "/api/rules/no-such-rule/disable", "admin"))[0] == 404
    assert (await call(url, "POST", "/api/playbooks/no-such/disable", "admin"))[0] == 404

    first = await mfa_removed(url, "e1", "ann@example.com")
    assert len(first["findings"]) == 1 and len(await runs_for(url, first["findings"][0], wait=True)) == 1

    status, body = await call(url, "POST", f"/api/rules/{MFA_RULE}/disable", "admin")
    assert status == 200 and body == {"kind": "rule", "name": MFA_RULE, "enabled": False}
    rules = (await call(url, "GET", "/api/rules"))[1]["rules"]
    assert [r["enabled"] for r in rules if r["id"] == MFA_RULE] == [False]
    assert all(r["enabled"] for r in rules if r["id"] != MFA_RULE)
    assert (await mfa_removed(url, "e2", "bob@example.com"))["findings"] == []
    status, body = await call(url, "POST", f"/api/rules/{MFA_RULE}/enable", "admin")
    assert status == 200 and body["enabled"] is True
    assert len((await mfa_removed(url, "e3", "cid@example.com"))["findings"]) == 1

    status, body = await call(url, "POST", "/api/playbooks/note-mfa/disable", "admin")
    assert status == 200 and body == {"kind": "playbook", "name": "note-mfa", "enabled": False}
    assert (await call(url, "GET", "/api/playbooks"))[1]["playbooks"][0]["enabled"] is False
    quiet = await mfa_removed(url, "e4", "dee@example.com")
    assert len(quiet["findings"]) == 1
    async with api.services.store.transaction() as tx:
        finding = await tx.get_finding(quiet["findings"][0])
    assert finding is not None and await api.services.pipeline.respond([finding]) == []

    # kept in the store: a service started now has them disabled
    await call(url, "POST", f"/api/rules/{MFA_RULE}/disable", "admin")
    async with await Services.open(api.settings) as restarted:
        assert restarted.pipeline.disabled_playbooks == {"note-mfa"}
        assert restarted.pipeline.disabled_rules == {MFA_RULE}
    await call(url, "POST", f"/api/rules/{MFA_RULE}/enable", "admin")

    await call(url, "POST", "/api/playbooks/note-mfa/enable", "admin")
    assert (await call(url, "GET", "/api/playbooks"))[1]["playbooks"][0]["enabled"] is True
    again = await mfa_removed(url, "e5", "eve@example.com")
    assert len(await runs_for(url, again["findings"][0], wait=True)) == 1
    assert await runs_for(url, quiet["findings"][0]) == []

    status, audit = await call(url, "GET", "/api/audit", "admin")
    toggles = [
        (e["action"], e["subject"], e["details"]["to"])
        for e in audit["entries"]
        if e["action"].startswith(("rule.", "playbook."))
    ]
    assert toggles == [
        ("rule.disable", MFA_RULE, False),
        ("rule.enable", MFA_RULE, True),
        ("playbook.disable", "note-mfa", False),
        ("rule.disable", MFA_RULE, False),
        ("rule.enable", MFA_RULE, True),
        ("playbook.enable", "note-mfa", True),
    ]
    assert {e["actor"] for e in audit["entries"] if e["action"].startswith("rule.")} == {"api:admin-token"}


async def test_playbook_validation_reports_located_problems(api: Api) -> None:
    url = api.url
    path = "/api/playbooks/validate"
    assert (await call(url, "POST", path, "viewer", {"yaml": PLAYBOOK}))[0] == 403
    status, body = await call(url, "POST", path, "analyst", {"yaml": PLAYBOOK, "name": "note-mfa.yml"})
    assert status == 200 and body == {"valid": True, "problems": []}
    broken = PLAYBOOK.replace("case.note", "case.nope")
    status, body = await call(url, "POST", path, "analyst", {"yaml": broken})
    assert status == 200 and body["valid"] is False
    [problem] = body["problems"]
    assert problem["line"] == 8 and problem["field"] == "steps.0.uses" and "case.nope" in problem["message"]
    status, body = await call(url, "POST", path, "analyst", {"yaml": "name: [unclosed\n"})
    assert status == 200 and body["valid"] is False and body["problems"][0]["message"].startswith("invalid YAML")
    assert body["problems"][0]["line"] is not None
    for sent, field in [
        ({}, "yaml"),
        ({"yaml": 3}, "yaml"),
        ({"yaml": "", "extra": 1}, "extra"),
        ({"yaml": "", "name": ""}, "name"),
    ]:
        status, body = await call(url, "POST", path, "analyst", sent)
        assert status == 400 and body["error"]["field"] == field, sent


async def test_entity_risk_explains_scores_pseudonymised(api: Api) -> None:
    url, services = api.url, api.services
    await mfa_removed(url, "e1", "ann@example.com")
    pseudonym = (await pseudonymizer_for(api.settings.scoring, services.store))("ann@example.com")
    day = date(2026, 11, 18)
    score = DayScore(
        entity=pseudonym,
        kind="person",
        day=day,
        points=12.5,
        risk=71.0,
        contributions=[
            Contribution("download_bytes", 9e9, 2e8, 3e8, 10.0, 1.5, 4.2, 1, 30, ["ev-1", "ev-2"]),
            Contribution("new_country", 1.0, 0.0, 0.0, 2.5, 2.0, 0.0, None, 30, ["ev-3"]),
            Contribution("usb_rise", 18.0, 5.1, 0.0, 2.0, 0.0, 3.7, None, 30, ["ev-4"], days=15),
        ],
        modifiers={"watchlist:departing": 1.5},
        watchlists=["departing"],
        sigma=[(MFA_RULE, "Okta MFA Factor Removed or Reset", 4.0)],
    )
    older = DayScore(pseudonym, "person", day - timedelta(days=1), 1.0, 5.0, [], {}, [], [])
    async with services.store.transaction() as tx:
        await tx.conn.execute(sa.insert(scoring_scores), [score_row(score, utcnow()), score_row(older, utcnow())])
    status, body = await call(url, "GET", f"/api/entities/{pseudonym}/risk")
    assert status == 200 and body["entity"] == pseudonym and "ann" not in str(body)
    assert body["risk"] == 71.0 and body["day"] == "2026-11-18" and body["kind"] == "person"
    assert [s["day"] for s in body["scores"]] == ["2026-11-18", "2026-11-17"]
    # by real name: only revealing (which shows the name), never a name-to-pseudonym link for a viewer
    assert (await call(url, "GET", "/api/entities/ann@example.com/risk"))[0] == 403
    status, named = await call(url, "GET", "/api/entities/ann@example.com/risk?reveal=case+7", "privacy_officer")
    assert status == 200 and named["entity"] == "ann@example.com" and named["risk"] == 71.0
    newest = body["scores"][0]
    assert newest["provisional"] is False and newest["event_ids"] == ["ev-1", "ev-2", "ev-3", "ev-4"]
    rise = next(c for c in newest["contributions"] if c["feature"] == "usb_rise")
    assert (rise["days"], newest["contributions"][0]["days"]) == (15, 1)  # a rise's window, stored and served
    sentence = "18 removable media connections in their last 15 active days, 3.5x their usual 5.1"
    assert sentence in newest["explanation"][2]
    first = newest["contributions"][0]
    assert (first["feature"], first["value"], first["usual"], first["peer_usual"], first["points"]) == (
        "download_bytes",
        9e9,
        2e8,
        3e8,
        10.0,
    )
    assert newest["modifiers"] == {"watchlist:departing": 1.5} and newest["sigma"][0]["rule_id"] == MFA_RULE
    assert newest["explanation"]
    assert (await call(url, "GET", f"/api/entities/{pseudonym}/risk?days=1"))[1]["scores"][0]["day"] == "2026-11-18"
    assert (await call(url, "GET", f"/api/entities/{pseudonym}/risk?days=0"))[1]["error"]["field"] == "days"
    status, body = await call(url, "GET", f"/api/entities/{pseudonym}/risk?reveal=case+7", "analyst")
    assert status == 403
    status, body = await call(url, "GET", f"/api/entities/{pseudonym}/risk?reveal=case+7", "privacy_officer")
    assert status == 200 and body["entity"] == "ann@example.com"
    status, body = await call(url, "GET", "/api/entities/nobody@example.com/risk?reveal=case+7", "admin")
    assert status == 200 and body["risk"] is None and body["scores"] == []


async def test_evidence_bundles_list_and_verify(api: Api) -> None:
    url, services = api.url, api.services
    directory = api.tmp / "evidence" / "b1"
    bundle = LocalBundle(directory)
    files = {"events.ndjson": b'{"id": "e1"}\n'}
    digest = seal(bundle, files, {"bundle": "b1"}, {"events.ndjson": 1}, who="tester", why="case 7")
    now = datetime(2026, 11, 19, tzinfo=UTC)
    async with services.store.transaction() as tx:
        await tx.conn.execute(
            sa.insert(evidence_bundles),
            [
                {
                    "id": "b1",
                    "entity": "ann@example.com",
                    "since": now - timedelta(days=1),
                    "until": now,
                    "reason": "case 7",
                    "location": bundle.url,
                    "manifest_sha256": digest,
                    "files": {"events.ndjson": 1},
                    "created_by": "tester",
                    "run_id": None,
                    "created_at": now,
                }
            ],
        )
    status, listed = await call(url, "GET", "/api/evidence")
    assert status == 200 and [b["id"] for b in listed["bundles"]] == ["b1"]
    assert listed["bundles"][0]["entity"].startswith("p-") and listed["bundles"][0]["files"] == {"events.ndjson": 1}
    assert (await call(url, "GET", "/api/evidence?entity=ann@example.com"))[0] == 403  # a name needs reveal
    named = "/api/evidence?reveal=case+7&entity="
    assert (await call(url, "GET", named + "ann@example.com", "admin"))[1]["bundles"][0]["id"] == "b1"
    assert (await call(url, "GET", named + "bob@example.com", "admin"))[1]["bundles"] == []

    path = "/api/evidence/b1/verify"
    assert (await call(url, "POST", path, "viewer", {"reason": "check"}))[0] == 403
    status, body = await call(url, "POST", path, "analyst", {})
    assert status == 400 and body["error"]["field"] == "reason"
    assert (await call(url, "POST", "/api/evidence/nope/verify", "analyst", {"reason": "check"}))[0] == 404
    status, body = await call(url, "POST", path, "analyst", {"reason": "check"})
    assert status == 200 and body["ok"] is True and body["checked"] == ["events.ndjson"] and body["problems"] == []
    (directory / "events.ndjson").write_bytes(b'{"id": "forged"}\n')
    status, body = await call(url, "POST", path, "analyst", {"reason": "check again"})
    assert status == 200 and body["ok"] is False and "events.ndjson: changed" in body["problems"][0]
    status, audit = await call(url, "GET", "/api/audit", "admin")
    verified = [(e["actor"], e["details"]["ok"]) for e in audit["entries"] if e["action"] == "evidence.verify"]
    assert verified == [("api:analyst-token", True), ("api:analyst-token", False)]


async def test_connectors_status(api: Api) -> None:
    url, services = api.url, api.services
    assert await call(url, "GET", "/api/connectors") == (200, {"connectors": []})
    newest = utcnow() - timedelta(minutes=5)
    async with services.store.transaction() as tx:
        await tx.save_connector_status(
            ConnectorStatus(
                "okta-prod",
                "okta",
                events_total=120,
                last_round_events=20,
                events_per_second=3.5,
                newest_event=newest,
                last_success=utcnow(),
                last_error="HTTP 429",
                last_error_at=utcnow(),
                consecutive_failures=2,
            )
        )
    assert (await call(url, "GET", "/api/connectors", None))[0] == 401
    status, body = await call(url, "GET", "/api/connectors")
    [row] = body["connectors"]
    assert status == 200 and row["connector"] == "okta-prod" and row["kind"] == "okta"
    assert 290 <= row["lag_seconds"] <= 400 and row["events_per_second"] == 3.5
    assert row["consecutive_failures"] == 2 and row["last_error"] == "HTTP 429" and row["configured"] is False


async def test_openapi_documents_the_new_endpoints(api: Api) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/api/openapi.json") as response:
        paths = (await response.json())["paths"]
    assert paths["/api/entities/{id}/risk"]["get"]["x-custodes-role"] == "viewer"
    assert paths["/api/playbooks/validate"]["post"]["x-custodes-role"] == "analyst"
    for path in ("/api/playbooks/{name}/enable", "/api/playbooks/{name}/disable", "/api/rules/{id}/disable"):
        assert paths[path]["post"]["x-custodes-role"] == "admin"
    assert "502" in paths["/api/evidence/{id}/verify"]["post"]["responses"]
    assert paths["/api/connectors"]["get"]["x-custodes-role"] == "viewer"
