"""Playbook runs over the REST API (real HTTP): start with typed inputs, read, approve/deny with separation of
duties, undo; role refusals and bad inputs naming the field; every change in the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from custodes.config import DatabaseSettings, Settings
from custodes.server.serve import serving
from custodes.services import Services

TOKENS = {name: f"tok-{name}-0123456789abcdef" for name in ("viewer", "analyst", "approver", "approver2", "admin")}
ROLE_OF = {"approver2": "approver"}
PLAYBOOK = """\
name: contain
trigger: {manual: true}
inputs:
  user: {type: string, required: true}
  hours: {type: integer, default: 4}
steps:
  - id: note
    uses: notify.webhook
    with: {channel: soc, text: "containing {{ inputs.user }} for {{ inputs.hours }}h"}
    approval: {approvers: [], count: 1, expires_after: 3600}
"""


@pytest.fixture
async def api(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Services]]:
    for name, token in TOKENS.items():
        monkeypatch.setenv(f"T_{name.upper()}", token)
    monkeypatch.setenv("T_CHAT", "http://127.0.0.1:9/unused")
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "contain.yml").write_text(PLAYBOOK)
    settings = Settings.model_validate(
        {
            "detection": {"rules": []},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "responder": {"channels": {"soc": {"url": "env:T_CHAT"}}},
            "server": {
                "api_tokens": [
                    {"name": f"{name}-token", "token": f"env:T_{name.upper()}", "role": ROLE_OF.get(name, name)}
                    for name in TOKENS
                ]
            },
        }
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        yield url, services


async def call(url: str, method: str, path: str, who: str, json: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{url}{path}", json=json, headers={"Authorization": f"Bearer {TOKENS[who]}"}) as r,
    ):
        return r.status, await r.json()


async def test_start_approve_and_read_a_run(api: tuple[str, Services]) -> None:
    url, _ = api
    status, body = await call(url, "POST", "/api/playbooks/contain/runs", "viewer", {"inputs": {"user": "a"}})
    assert status == 403 and "analyst role" in body["error"]["message"]
    status, run = await call(url, "POST", "/api/playbooks/contain/runs", "analyst", {"inputs": {"user": "ann"}})
    assert status == 201, run
    assert run["status"] == "waiting" and run["requested_by"] == "api:analyst-token"
    # an analyst sees the run without names; the approver, who decides on it, sees exactly what would be done
    assert run["inputs"] == {"user": "***", "hours": "***"} and run["steps"][0]["plan"] is None
    status, full = await call(url, "GET", f"/api/runs/{run['id']}", "approver")
    assert full["inputs"] == {"user": "ann", "hours": 4}
    [step] = full["steps"]
    assert step["status"] == "waiting" and "containing ann for 4h" in step["plan"][0]["arguments"]["text"]
    decision = {"step": "note", "plan_hash": step["plan_hash"][:16], "comment": "ok"}
    status, body = await call(url, "POST", f"/api/runs/{run['id']}/approve", "analyst", decision)
    assert status == 403 and "approver role" in body["error"]["message"]
    status, body = await call(
        url, "POST", f"/api/runs/{run['id']}/approve", "approver", {**decision, "plan_hash": "0" * 16}
    )
    assert status == 409 and "plan hash does not match" in body["error"]["message"]
    status, body = await call(url, "POST", f"/api/runs/{run['id']}/deny", "approver", decision)
    assert status == 200, body
    assert body["status"] == "failed" and "denied by approver-token" in body["steps"][0]["error"]
    status, listed = await call(url, "GET", "/api/runs?status=failed", "viewer")
    assert status == 200 and [r["id"] for r in listed["runs"]] == [run["id"]]
    status, read = await call(url, "GET", f"/api/runs/{run['id']}", "viewer")
    assert status == 200 and read["status"] == "failed"
    assert (await call(url, "GET", "/api/runs/nope", "viewer"))[0] == 404
    status, audit = await call(url, "GET", "/api/audit", "admin")
    actions = [(e["actor"], e["action"]) for e in audit["entries"]]
    assert ("api:analyst-token", "run.request") in actions
    assert ("api:approver-token", "approval.deny") in actions
    assert ("approver-token", "approval.denied") in actions


async def test_the_requester_cannot_approve_their_own_run(api: tuple[str, Services]) -> None:
    url, _ = api
    status, run = await call(url, "POST", "/api/playbooks/contain/runs", "approver", {"inputs": {"user": "bob"}})
    assert status == 201
    decision = {"step": "note", "plan_hash": run["steps"][0]["plan_hash"]}
    status, body = await call(url, "POST", f"/api/runs/{run['id']}/approve", "approver", decision)
    assert status == 403 and body["error"]["code"] == "separation_of_duties"
    status, body = await call(url, "POST", f"/api/runs/{run['id']}/approve", "approver2", decision)
    assert status == 200, body
    [step] = body["steps"]
    assert step["attempt"] == 1 and step["status"] == "failed", step  # approved: the call was made (port 9 refuses)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": {}}, "inputs.user"),
        ({"inputs": {"user": 3}}, "inputs.user"),
        ({"inputs": {"user": "a", "hours": "4"}}, "inputs.hours"),
        ({"inputs": {"user": "a", "hours": True}}, "inputs.hours"),
        ({"inputs": {"user": "a", "days": 1}}, "inputs.days"),
        ({"inputs": {"user": "a"}, "extra": 1}, "extra"),
        ({"inputs": [], "dry_run": False}, "inputs"),
    ],
)
async def test_bad_inputs_name_the_field(api: tuple[str, Services], body: Any, field: str) -> None:
    url, services = api
    status, answer = await call(url, "POST", "/api/playbooks/contain/runs", "analyst", body)
    assert status == 400 and answer["error"]["field"] == field, answer
    assert answer["error"]["message"].startswith(field)
    async with services.store.transaction() as tx:
        assert await tx.list_runs() == []


async def test_unknown_playbook_and_undo(api: tuple[str, Services]) -> None:
    url, _ = api
    status, body = await call(url, "POST", "/api/playbooks/nope/runs", "analyst", {})
    assert status == 404
    status, run = await call(url, "POST", "/api/playbooks/contain/runs", "analyst", {"inputs": {"user": "c"}})
    status, body = await call(url, "POST", f"/api/runs/{run['id']}/undo", "viewer", {})
    assert status == 403
    status, body = await call(url, "POST", f"/api/runs/{run['id']}/undo", "analyst", {"comment": "fp"})
    assert status == 409 and "undo a finished run" in body["error"]["message"]
