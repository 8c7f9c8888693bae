"""The REST API over real HTTP: roles, validation with field names, audited changes, the OpenAPI document."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from custodes.config import DatabaseSettings, Settings
from custodes.server.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custodes.server.serve import serving
from custodes.services import Services

ROOT = Path(__file__).resolve().parents[1]
TOKENS = {
    "viewer": "tok-viewer-0123456789",
    "analyst": "tok-analyst-0123456789",
    "approver": "tok-approver-0123456789",
    "admin": "tok-admin-0123456789",
    "privacy_officer": "tok-privacy-0123456789",
}


@pytest.fixture
async def api(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Services]]:
    monkeypatch.setenv("T_HOOK", "hook-secret-0123456789")
    for role, token in TOKENS.items():
        monkeypatch.setenv(f"T_{role.upper()}", token)
    (tmp_path / "playbooks").mkdir()
    settings = Settings.model_validate(
        {
            "detection": {"rules": [str(ROOT / "detections" / "rules")]},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
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
        body = orjson.dumps(
            [
                {
                    "uuid": "e1",
                    "published": "2026-11-19T02:03:40Z",
                    "eventType": "user.mfa.factor.deactivate",
                    "actor": {"alternateId": "ann@example.com"},
                    "outcome": {"result": "SUCCESS"},
                }
            ]
        )
        stamp = str(int(time.time()))
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{url}/webhooks/generic",
                data=body,
                headers={
                    "Content-Type": "application/json",
                    TIMESTAMP_HEADER: stamp,
                    SIGNATURE_HEADER: sign("hook-secret-0123456789", stamp, body),
                },
            ) as response,
        ):
            assert response.status == 202
        yield url, services


async def call(
    url: str,
    method: str,
    path: str,
    role: str | None = "viewer",
    json: Any = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{url}{path}", json=json, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_roles_gate_changes(api: tuple[str, Services]) -> None:
    url, _ = api
    status, page = await call(url, "GET", "/api/findings")
    assert status == 200
    finding = page["findings"][0]["id"]
    status, body = await call(url, "PATCH", f"/api/findings/{finding}", "viewer", {"status": "closed"})
    assert status == 403 and "analyst role" in body["error"]["message"]
    status, body = await call(
        url, "PATCH", f"/api/findings/{finding}", "analyst", {"status": "acknowledged", "comment": "looking"}
    )
    assert status == 200 and body["status"] == "acknowledged"
    assert (await call(url, "GET", f"/api/findings/{finding}"))[1]["status"] == "acknowledged"
    status, audit = await call(url, "GET", "/api/audit", "analyst")
    assert status == 403
    status, audit = await call(url, "GET", "/api/audit", "admin")
    change = [e for e in audit["entries"] if e["action"] == "finding.update"]
    assert status == 200 and change[0]["actor"] == "api:analyst-token"
    assert change[0]["details"] == {"role": "analyst", "from": "open", "to": "acknowledged", "comment": "looking"}
    assert (await call(url, "GET", "/api/findings", None))[0] == 401


async def test_bad_requests_name_the_field(api: tuple[str, Services]) -> None:
    url, _ = api
    finding = (await call(url, "GET", "/api/findings"))[1]["findings"][0]["id"]
    for body, field in [({"status": "gone"}, "status"), ({}, "status"), ({"status": "closed", "x": 1}, "x")]:
        status, answer = await call(url, "PATCH", f"/api/findings/{finding}", "analyst", body)
        assert status == 400 and answer["error"]["field"] == field, body
    status, answer = await call(url, "PATCH", "/api/findings/nope", "analyst", {"status": "closed"})
    assert status == 404
    status, answer = await call(url, "GET", "/api/entities?limit=0")
    assert status == 400 and answer["error"]["field"] == "limit"
    async with (
        aiohttp.ClientSession() as http,
        http.patch(
            f"{url}/api/findings/{finding}",
            data=b"{",
            headers={"Authorization": "Bearer tok-analyst-0123456789", "Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json"


async def test_entities_timeline_and_catalog(api: tuple[str, Services]) -> None:
    url, _ = api
    status, listed = await call(url, "GET", "/api/entities")
    [pseudonym] = [e["id"] for e in listed["entities"]]
    assert status == 200 and pseudonym.startswith("p-") and "ann" not in str(listed)
    status, timeline = await call(url, "GET", f"/api/entities/{pseudonym}/timeline")
    assert status == 200 and [e["action"] for e in timeline["events"]] == ["user.mfa.factor.deactivate"]
    assert timeline["entity"] == pseudonym and timeline["events"][0]["raw"] is None
    # a real name would link the name to its pseudonym: it needs a reveal (audited)
    status, refused = await call(url, "GET", "/api/entities/ann@example.com/timeline")
    assert status == 403 and refused["error"]["code"] == "reveal_required"
    status, rules = await call(url, "GET", "/api/rules")
    assert status == 200 and rules["rejected"] == []
    assert "Okta MFA Factor Removed or Reset" in {r["title"] for r in rules["rules"]}
    status, playbooks = await call(url, "GET", "/api/playbooks")
    assert status == 200 and playbooks == {"playbooks": []}


async def test_openapi_document_describes_every_route(api: tuple[str, Services]) -> None:
    url, _ = api
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/openapi.json") as response:
        document = await response.json()
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    assert {
        "/api/findings",
        "/api/findings/{id}",
        "/api/entities",
        "/api/entities/{id}/timeline",
        "/api/rules",
        "/api/playbooks",
        "/api/audit",
    } <= set(paths)
    assert paths["/api/findings/{id}"]["patch"]["x-custodes-role"] == "analyst"
    assert "FindingUpdate" in document["components"]["schemas"]


async def test_people_are_pseudonymised_unless_a_privacy_role_reveals_them(api: tuple[str, Services]) -> None:
    url, _ = api
    status, page = await call(url, "GET", "/api/findings")
    pseudonym = page["findings"][0]["entity"]
    assert pseudonym.startswith("p-") and "ann@example.com" not in str(page)
    assert (await call(url, "GET", f"/api/findings?entity={pseudonym}"))[1]["findings"] == page["findings"]
    status, body = await call(url, "GET", "/api/findings?reveal=case+42", "analyst")
    assert status == 403 and "privacy_officer" in body["error"]["message"]
    status, body = await call(url, "GET", "/api/findings?reveal=", "privacy_officer")
    assert status == 400 and body["error"]["field"] == "reveal"
    status, revealed = await call(url, "GET", "/api/findings?reveal=case+42", "privacy_officer")
    assert status == 200 and revealed["findings"][0]["entity"] == "ann@example.com"
    status, timeline = await call(url, "GET", f"/api/entities/{pseudonym}/timeline?reveal=case+42", "admin")
    assert timeline["entity"] == "ann@example.com" and timeline["events"][0]["raw"]["uuid"] == "e1"
    status, audit = await call(url, "GET", "/api/audit", "admin")
    reveals = [(e["actor"], e["details"]["allowed"]) for e in audit["entries"] if e["action"] == "api.reidentify"]
    assert reveals == [("api:analyst-token", False), ("api:privacy_officer-token", True), ("api:admin-token", True)]
