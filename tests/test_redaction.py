"""One redactor: configured secrets and credential shapes never reach stored records, the API or logs."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web

from custodes.config import DatabaseSettings, Secret, Settings, remember_secrets
from custodes.logs import JsonFormatter
from custodes.redaction import RedactingFilter, redact_every_record
from custodes.sandbox.server import running
from custodes.server.serve import serving
from custodes.services import Services
from custodes.store.tables import audit_log, steps

TOKEN = "api-token-for-security-tests"


LEAKY = """\
name: leaky
trigger: {manual: true}
steps:
  - id: note
    uses: case.note
    with: {case: "{{ secrets.CASE }}", text: "key AKIAIOSFODNN7EXAMPLE, case {{ secrets.CASE }}"}
  - id: tell
    uses: notify.webhook
    with: {channel: soc, text: hello}
"""
CASE = "case-secret-value-4711"
ECHOED = (
    "invalid Authorization: SSWS 00abcDEFghiJKLmnop12345 for https://hooks.slack.com/services/T0/B0/XXXXSECRET "
    "via https://admin:hunter2pass@proxy.example/x"
)
LEAKS = (CASE, "AKIAIOSFODNN7EXAMPLE", "00abcDEFghiJKLmnop12345", "XXXXSECRET", "hunter2pass")


async def test_secrets_and_credential_shapes_never_reach_stored_records_or_the_api(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    async def echo(request: web.Request) -> web.Response:  # a vendor whose error body echoes the request
        return web.json_response({"errorCode": "E0000011", "errorSummary": ECHOED}, status=400)

    vendor = web.Application()
    vendor.router.add_post("/hook", echo)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "leaky.yml").write_text(LEAKY)
    async with running(vendor) as vendor_url:
        settings = Settings.model_validate(
            {
                "detection": {"rules": []},
                "playbooks": {"paths": [str(tmp_path / "playbooks")], "secrets": {"CASE": "env:CASE"}},
                "responder": {"channels": {"soc": {"url": "env:HOOK"}}},
                "server": {"api_tokens": [{"name": "ann", "token": "env:T_ADMIN", "role": "admin"}]},
            },
            context={"environ": {"T_ADMIN": TOKEN, "CASE": CASE, "HOOK": f"{vendor_url}/hook"}},
        )
        settings.database = database
        async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                async with http.post(f"{url}/api/playbooks/leaky/runs", json={"entity": "bob"}) as response:
                    run = await response.json()
                    assert response.status == 201, run
                async with http.get(f"{url}/api/runs/{run['id']}") as response:
                    shown = await response.text()
                async with http.get(f"{url}/api/audit") as response:
                    audit_page = await response.text()
            async with services.store.transaction() as tx:
                stored = [dict(row) for row in (await tx.conn.execute(sa.select(steps))).mappings()]
                stored += [dict(row) for row in (await tx.conn.execute(sa.select(audit_log))).mappings()]
    assert run["status"] == "failed"
    note, tell = run["steps"]
    assert note["target"] == "***" and note["arguments"]["text"] == "key ***, case ***"
    assert "SSWS ***" in tell["error"] and "https://hooks.slack.com/services/***" in tell["error"]
    assert "https://admin:***@proxy.example/x" in tell["error"]
    everything = str(stored) + shown + audit_page
    assert [leak for leak in LEAKS if leak in everything] == []


def test_log_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    remember_secrets({"key": Secret("a-configured-secret-value", "env:X")})
    record = logging.makeLogRecord(
        {"name": "custodes.test", "levelno": 30, "levelname": "WARNING", "msg": "failed: %s", "args": (ECHOED,)}
    )
    record.detail = {"url": "https://u:a-configured-secret-value@h/"}
    assert RedactingFilter().filter(record)
    line = JsonFormatter().format(record)
    assert [leak for leak in (*LEAKS, "a-configured-secret-value") if leak in line] == []
    assert "SSWS ***" in line and "https://u:***@h/" in line
    previous = logging.getLogRecordFactory()
    redact_every_record()  # as every command does: records are masked whichever handler prints them
    try:
        made = logging.getLogger("custodes.test").makeRecord("custodes.test", 30, "f", 1, "sent %s", (ECHOED,), None)
    finally:
        logging.setLogRecordFactory(previous)
    assert "SSWS ***" in made.getMessage() and "00abcDEFghiJKLmnop12345" not in made.getMessage()
