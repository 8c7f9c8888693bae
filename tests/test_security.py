"""Security hardening over real sockets: secrets that must be strong, exact token comparison."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa
from aiohttp import web
from click.testing import Result
from typer.testing import CliRunner

from conftest import moto_client
from custodes.cli import app
from custodes.config import (
    MIN_SECRET_CHARS,
    DatabaseSettings,
    ScoringSettings,
    Secret,
    Settings,
    load_settings,
    remember_secrets,
)
from custodes.connectors.envelope import to_event
from custodes.detections.scoring.privacy import Pseudonymizer
from custodes.detections.scoring.service import pseudonymizer_for
from custodes.errors import ConfigError, CustodesError
from custodes.logs import JsonFormatter
from custodes.model import utcnow
from custodes.redaction import RedactingFilter, redact_every_record
from custodes.sandbox.server import running
from custodes.server.serve import serving
from custodes.services import Services
from custodes.store import Store, audit_hash
from custodes.store.tables import audit_log, entities, scoring_meta, steps

TOKEN = "api-token-for-security-tests"


@pytest.mark.parametrize("value", ["", "   ", "short-secret"])
def test_empty_or_short_secrets_refuse_to_start(tmp_path: Path, value: str) -> None:
    config = tmp_path / "custodes.yaml"
    config.write_text(
        "webhooks:\n  hook:\n    kind: generic\n    auth: {scheme: hmac, secret: 'env:HOOK'}\n"
        "server:\n  api_tokens: [{name: ann, token: 'env:TOKEN', role: admin}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={"HOOK": value, "TOKEN": value})
    text = str(caught.value)
    assert "webhooks.hook.auth.secret" in text and "server.api_tokens.0.token" in text
    assert f"at least {MIN_SECRET_CHARS} characters" in text
    assert value.strip() == "" or value not in text


async def raw_request(url: str, request: bytes) -> bytes:
    """Send exact bytes (no client normalising headers) and read the response until the server closes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    response = await reader.read()
    writer.close()
    return response


@pytest.fixture
async def server(database: DatabaseSettings, tmp_path: Path) -> AsyncIterator[tuple[str, Services]]:
    (tmp_path / "playbooks").mkdir()
    settings = Settings.model_validate(
        {
            "detection": {"rules": []},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "server": {"api_tokens": [{"name": "ann", "token": "env:T_ADMIN", "role": "admin"}]},
        },
        context={"environ": {"T_ADMIN": TOKEN}},
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        yield url, services


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (f"Bearer {TOKEN}".encode(), b"200"),
        (f"Bearer  {TOKEN} \t".encode(), b"200"),  # ASCII whitespace around the token is stripped
        (f"Bearer {TOKEN}\u00a0".encode(), b"401"),  # Unicode whitespace is not: the token differs
        ("Bearer \u00a0".encode(), b"401"),
        (b"Bearer ", b"401"),
    ],
)
async def test_tokens_compare_exactly(server: tuple[str, Services], authorization: bytes, status: bytes) -> None:
    request = b"GET /api/findings HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + authorization
    response = await raw_request(server[0], request + b"\r\n\r\n")
    assert response.split(b" ", 2)[1] == status, response[:300]


BOMB = (
    'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
)


async def test_a_yaml_alias_bomb_is_refused_at_its_first_alias(server: tuple[str, Services]) -> None:
    url, _ = server
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/api/playbooks/validate",
            json={"yaml": BOMB, "name": "bomb.yml"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response,
    ):
        assert response.status == 200
        body = await response.json()
    assert body["valid"] is False
    assert body["problems"] == [
        {"line": 2, "column": 8, "field": None, "message": "YAML aliases are not allowed (*a): write the value out"}
    ]


def test_configuration_files_refuse_aliases(tmp_path: Path) -> None:
    config = tmp_path / "custodes.yaml"
    config.write_text("server: &s {port: 9000}\nhunts: {paths: [h]}\ndetection: {<<: *s}\n")
    with pytest.raises(CustodesError, match=r"custodes.yaml:3:17: YAML aliases are not allowed \(\*s\)"):
        load_settings(config, environ={})


def test_a_graph_receiver_without_its_source_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "custodes.yaml"
    config.write_text("webhooks:\n  graph:\n    kind: graph\n    auth: {scheme: client_state, secret: 'env:STATE'}\n")
    environ = {"STATE": "graph-client-state-0123456789"}
    with pytest.raises(ConfigError, match=r"webhooks.*the graph receiver 'graph' reads its records as source 'graph'"):
        load_settings(config, environ=environ)
    fields = "{id: id, time: subscriptionExpirationDateTime}"
    config.write_text(config.read_text() + f"sources:\n  graph: {{format: generic, fields: {fields}}}\n")
    assert load_settings(config, environ=environ).webhooks["graph"].record_source == "graph"


QUORUM = """\
name: two-keys
trigger: {manual: true}
steps:
  - id: note
    uses: case.note
    with: {case: c1, text: "containing {{ entity }}"}
    approval: {count: 2, expires_after: 3600}
"""
PEOPLE = {"lead1": "lead1-token-0123456789", "lead2": "lead2-token-0123456789", "ann": "ann-token-0123456789"}


async def test_one_person_is_one_approver_through_the_api_and_the_cli(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    """A token's name is the person, whether the API (`api:lead1`) or the CLI (`lead1`) records it: the requester
    cannot approve through the other door, nor one approver count twice towards a quorum."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "two.yml").write_text(QUORUM)
    config = tmp_path / "custodes.yaml"
    tokens = [{"name": name, "token": f"env:T_{name.upper()}", "role": "approver"} for name in PEOPLE]
    config.write_text(
        orjson.dumps(
            {
                "database": database.model_dump(exclude_none=True),
                "detection": {"rules": []},
                "playbooks": {"paths": [str(tmp_path / "playbooks")]},
                "server": {"api_tokens": tokens},
            }
        ).decode()
    )
    environ = {f"T_{name.upper()}": token for name, token in PEOPLE.items()}
    settings = load_settings(config, environ=environ)
    cli = CliRunner()

    def approve_by_cli(run: dict[str, Any], who: str) -> Result:
        step = run["steps"][0]
        args = ["run", "approve", run["id"], "note", "--plan", step["plan_hash"], "-c", str(config)]
        return cli.invoke(app, [*args, "--token", f"env:T_{who.upper()}"], env=environ)

    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:

        async def api(who: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {PEOPLE[who]}"}) as r,
            ):
                return r.status, await r.json()

        status, run = await api("lead1", "/api/playbooks/two-keys/runs", {"entity": "bob"})
        assert status == 201 and run["requested_by"] == "api:lead1" and run["status"] == "waiting"
        own = await asyncio.to_thread(approve_by_cli, run, "lead1")
        assert own.exit_code == 2 and "lead1 requested this run" in own.output
        decision = {"step": "note", "plan_hash": run["steps"][0]["plan_hash"]}
        status, half = await api("lead2", f"/api/runs/{run['id']}/approve", decision)
        assert status == 200 and half["status"] == "waiting"
        twice = await asyncio.to_thread(approve_by_cli, run, "lead2")
        assert twice.exit_code == 2 and "lead2 already decided" in twice.output
        done = await asyncio.to_thread(approve_by_cli, run, "ann")
        assert done.exit_code == 0, done.output
        async with services.store.transaction() as tx:
            assert sorted(d["approver"] for d in await tx.approvals_for(run["id"], "note")) == ["ann", "lead2"]
            assert (await tx.get_run(run["id"])).status.value == "succeeded"  # type: ignore[union-attr]
    no_token = ["run", "approve", run["id"], "note", "--plan", "0" * 16, "-c", str(config)]
    refused = await asyncio.to_thread(cli.invoke, app, no_token, env={**environ, "CUSTODES_API_TOKEN": None})
    assert refused.exit_code == 2 and "CUSTODES_API_TOKEN" in refused.output


@pytest.fixture
async def guarded(database: DatabaseSettings, tmp_path: Path) -> AsyncIterator[str]:
    """A server with short deadlines and room for three connections."""
    (tmp_path / "playbooks").mkdir()
    settings = Settings.model_validate(
        {
            "detection": {"rules": []},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "server": {
                "api_tokens": [{"name": "ann", "token": "env:T_ADMIN", "role": "admin"}],
                "max_connections": 3,
                "idle_timeout_seconds": 0.5,
                "header_timeout_seconds": 0.5,
                "body_timeout_seconds": 0.5,
            },
        },
        context={"environ": {"T_ADMIN": TOKEN}},
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        yield url


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def closed_by_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes = b"") -> bytes:
    """Everything the server sends until it closes the connection, sending `trickle` a byte at a time meanwhile;
    fails after 10 s (the deadlines under test are 0.5 s)."""

    async def feed() -> None:
        for byte in trickle:
            await asyncio.sleep(0.1)
            writer.write(bytes([byte]))

    feeding = asyncio.create_task(feed())
    try:
        received = b""
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                received += chunk
        return received
    except ConnectionResetError:
        return received
    finally:
        feeding.cancel()
        writer.close()


async def test_idle_slow_header_and_slow_body_connections_are_closed(
    guarded: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    idle = await connect(guarded)
    assert await closed_by_server(*idle) == b""
    slow_header = await connect(guarded)
    slow_header[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert await closed_by_server(*slow_header, trickle=b"X-Slow: " + b"a" * 100) == b""
    slow_body = await connect(guarded)
    head = f"POST /api/playbooks/validate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    slow_body[1].write(head.encode() + b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{")
    assert await closed_by_server(*slow_body, trickle=b'"yaml": "' + b"a" * 100) == b""
    # a prompt request on a kept-alive connection is served, then the connection idles out
    prompt = await connect(guarded)
    prompt[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await closed_by_server(*prompt)).startswith(b"HTTP/1.1 200 OK")
    dropped = [r.getMessage() for r in caplog.records if r.name == "custodes.server.connections"]
    assert dropped == [
        "connection closed: idle",
        "connection closed: request headers not complete in time",
        "connection closed: request body not complete in time",
        "connection closed: idle",
    ]
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


async def test_connections_over_the_cap_are_refused_with_503(guarded: str, caplog: pytest.LogCaptureFixture) -> None:
    held = [await connect(guarded) for _ in range(3)]
    for _, writer in held:  # each keeps its connection busy: headers under way (0.5 s) ...
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        await writer.drain()
    refused = await connect(guarded)
    assert (await closed_by_server(*refused)).startswith(b"HTTP/1.1 503 Service Unavailable")
    assert "connection refused: 3 connections open (server.max_connections)" in caplog.text
    for connection in held:  # ... until the server closes them, which frees room again
        await closed_by_server(*connection)
    again = await connect(guarded)
    again[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await closed_by_server(*again)).startswith(b"HTTP/1.1 200 OK")
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


AUDIT_KEY = "audit-key-for-tests-0123456789abcdef"


async def test_audit_verify_detects_truncation_and_rewriting(database: DatabaseSettings, tmp_path: Path) -> None:
    checkpoints = tmp_path / "outside" / "audit.jsonl"
    db = database.model_dump(exclude_none=True, mode="json") | {
        "audit_key": "env:AUDIT_KEY",
        "audit_checkpoint": str(checkpoints),
    }
    config = tmp_path / "custodes.yaml"
    config.write_text(orjson.dumps({"database": db}).decode())
    environ = {"AUDIT_KEY": AUDIT_KEY}
    settings = load_settings(config, environ=environ)
    cli = CliRunner()

    def verify() -> tuple[int, dict[str, Any]]:
        result = cli.invoke(app, ["audit", "verify", "--json", "-c", str(config)], env=environ)
        return result.exit_code, orjson.loads(result.stdout)

    store = await Store.open(settings.database)
    try:
        async with store.transaction() as tx:
            for n in range(5):
                await tx.audit("ann", "finding.update", f"f{n}", {"n": n})
        async with store.transaction() as tx:
            [first, *_] = await tx.audit_entries()
        key = AUDIT_KEY.encode()
        fields = (first.prev_hash, first.at, first.actor, first.action, first.subject, first.details)
        assert first.hash == audit_hash(*fields, key) != audit_hash(*fields)  # keyed: HMAC, not plain SHA-256
        code, report = await asyncio.to_thread(verify)
        assert code == 0 and report["ok"] and report["head"]["seq"] == 5 and report["keyed"]
        assert [orjson.loads(line)["seq"] for line in checkpoints.read_text().splitlines()] == [5]

        # the newest entries removed: the rest is a valid chain, but the checkpointed head is gone
        async with store.transaction() as tx:
            await tx.conn.execute(sa.delete(audit_log).where(audit_log.c.seq > 3))
        code, report = await asyncio.to_thread(verify)
        assert code == 1 and not report["ok"]
        assert "entry 5, the head checkpointed at" in report["problems"][0]
        assert "the log now ends at entry 3" in report["problems"][0]

        # an entry rewritten and every hash after it recomputed without the key: caught at that entry
        async with store.transaction() as tx:
            entries = await tx.audit_entries()
            prev = entries[0].hash
            for entry in entries[1:]:
                details = {"n": 99} if entry.seq == 2 else entry.details
                digest = audit_hash(prev, entry.at, entry.actor, entry.action, entry.subject, details)
                await tx.conn.execute(
                    sa.update(audit_log)
                    .where(audit_log.c.seq == entry.seq)
                    .values(details=details, prev_hash=prev, hash=digest)
                )
                prev = digest
        code, report = await asyncio.to_thread(verify)
        assert (
            code == 1
            and "audit entry 2: its content does not match its hash (not signed with the audit key)"
            in (report["problems"][0])
        )
    finally:
        await store.close()


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


ROOT = Path(__file__).resolve().parents[1]
PRIVACY_TOKENS = {"viewer": "viewer-token-0123456789", "privacy_officer": "privacy-token-0123456789"}
NOTIFY = """\
name: tell
trigger: {manual: true}
steps:
  - id: tell
    uses: notify.webhook
    with: {channel: soc, text: "contain {{ entity }}"}
"""


async def test_viewers_see_pseudonyms_everywhere_and_names_need_an_audited_reveal(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    async def echo(request: web.Request) -> web.Response:  # a vendor whose error names the person
        text = (await request.json())["text"]
        return web.json_response({"errorCode": "E1", "errorSummary": f"refused: {text}"}, status=400)

    vendor = web.Application()
    vendor.router.add_post("/hook", echo)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "tell.yml").write_text(NOTIFY)
    key_file = tmp_path / "keys" / "pseudonym.key"
    async with running(vendor) as vendor_url:
        environ = {f"T_{role.upper()}": token for role, token in PRIVACY_TOKENS.items()}
        settings = Settings.model_validate(
            {
                "detection": {"rules": [str(ROOT / "detections" / "rules")]},
                "playbooks": {"paths": [str(tmp_path / "playbooks")]},
                "responder": {"channels": {"soc": {"url": "env:HOOK"}}},
                "scoring": {"pseudonym_key_file": str(key_file)},
                "server": {
                    "api_tokens": [
                        {"name": role, "token": f"env:T_{role.upper()}", "role": role} for role in PRIVACY_TOKENS
                    ]
                },
            },
            context={"environ": {**environ, "HOOK": f"{vendor_url}/hook"}},
        )
        settings.database = database
        async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
            event = {
                "uuid": "u1",
                "published": "2026-11-19T02:03:40.077Z",
                "eventType": "user.mfa.factor.deactivate",
                "actor": {"alternateId": "ann@example.com", "type": "User"},
                "target": [{"alternateId": "bob@example.com", "type": "User"}],
                "outcome": {"result": "SUCCESS"},
                "client": {"ipAddress": "185.220.101.4"},
            }
            await services.pipeline.ingest([to_event(event, settings.source("okta"), "okta")])
            run = await services.runner.start_manual(
                services.playbooks[0], {}, requested_by="api:privacy_officer", entity="ann@example.com"
            )

            async def get(path: str, role: str = "viewer") -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {PRIVACY_TOKENS[role]}"}
                async with aiohttp.ClientSession() as http, http.get(f"{url}{path}", headers=headers) as response:
                    return response.status, await response.json()

            status, listed = await get("/api/findings")
            [pseudonym] = {f["entity"] for f in listed["findings"]}
            assert status == 200 and pseudonym.startswith("p-")
            status, refused = await get("/api/findings?entity=ann@example.com")
            assert status == 403 and refused["error"]["code"] == "reveal_required"
            status, by_pseudonym = await get(f"/api/findings?entity={pseudonym}")
            assert status == 200 and len(by_pseudonym["findings"]) == len(listed["findings"])
            status, named = await get("/api/findings?entity=ann@example.com&reveal=case+12", "privacy_officer")
            assert status == 200 and {f["entity"] for f in named["findings"]} == {"ann@example.com"}
            status, timeline = await get(f"/api/entities/{pseudonym}/timeline")
            assert status == 200 and timeline["events"]
            status, shown_run = await get(f"/api/runs/{run.id}")
            assert run.status.value == "failed" and "ann@example.com" in (run.steps[0].error or "")
            seen = orjson.dumps([listed, by_pseudonym, timeline, shown_run]).decode()
            assert [leak for leak in ("ann@example.com", "bob@example.com", "185.220.101.4") if leak in seen] == []
            assert f"refused: contain {pseudonym}" in shown_run["steps"][0]["error"]
            async with services.store.transaction() as tx:
                audit = [(e.action, e.subject) for e in await tx.audit_entries()]
                indexed = dict((await tx.conn.execute(sa.select(entities.c.pseudonym, entities.c.id))).all())
                kept = await tx.conn.execute(sa.select(scoring_meta.c.key))
    assert ("api.lookup", "ann@example.com") in audit and ("api.reidentify", "/api/findings") in audit
    assert indexed[pseudonym] == "ann@example.com"  # the pseudonym is stored beside the entity, looked up by index
    assert "pseudonym_key" not in {row[0] for row in kept} and len(key_file.read_text().strip()) == 64
    assert key_file.stat().st_mode & 0o777 == 0o600


async def test_a_pseudonym_key_kept_in_the_store_is_moved_out(store: Store, tmp_path: Path) -> None:
    async with store.transaction() as tx:
        await tx.conn.execute(
            sa.insert(scoring_meta), [{"key": "pseudonym_key", "value": "ab" * 32, "updated_at": utcnow()}]
        )
    settings = ScoringSettings(pseudonym_key_file=str(tmp_path / "pseudonym.key"))
    before = Pseudonymizer(bytes.fromhex("ab" * 32))("ann@example.com")
    assert (await pseudonymizer_for(settings, store))("ann@example.com") == before  # the same pseudonyms
    assert (tmp_path / "pseudonym.key").read_text().strip() == "ab" * 32
    async with store.transaction() as tx:
        assert (await tx.conn.execute(sa.select(scoring_meta.c.key))).all() == []
    opted = ScoringSettings(pseudonym_key_file=str(tmp_path / "unused.key"), pseudonym_key_in_store=True)
    await pseudonymizer_for(opted, store)
    assert not (tmp_path / "unused.key").exists()


async def test_audit_heads_are_also_checkpointed_in_s3_with_object_lock(
    database: DatabaseSettings, tmp_path: Path, moto_url: str
) -> None:
    bucket = f"audit-{database.url.split(':')[0].split('+')[0]}-{os.getpid()}"
    s3 = moto_client("s3", moto_url)
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    locked = {
        "bucket": bucket,
        "prefix": "audit/",
        "endpoint_url": moto_url,
        "access_key_id": "env:S3_KEY",
        "secret_access_key": "env:S3_SECRET",
        "retention_days": 1,
    }
    db = database.model_dump(exclude_none=True, mode="json") | {
        "audit_checkpoint": str(tmp_path / "audit.jsonl"),
        "audit_checkpoint_s3": locked,
    }
    config = tmp_path / "custodes.yaml"
    config.write_text(orjson.dumps({"database": db}).decode())
    environ = {"S3_KEY": "testing", "S3_SECRET": "testing-secret"}
    store = await Store.open(load_settings(config, environ=environ).database)
    try:
        async with store.transaction() as tx:
            for n in range(3):
                await tx.audit("ann", "finding.update", f"f{n}", {"n": n})
        ok = await asyncio.to_thread(
            CliRunner().invoke, app, ["audit", "verify", "--json", "-c", str(config)], env=environ
        )
        assert ok.exit_code == 0, ok.output
        [key] = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="audit/")["Contents"]]
        assert s3.head_object(Bucket=bucket, Key=key)["ObjectLockMode"] == "COMPLIANCE"
        # the local checkpoint file and the newest entry both removed: the locked object still tells
        (tmp_path / "audit.jsonl").unlink()
        async with store.transaction() as tx:
            await tx.conn.execute(sa.delete(audit_log).where(audit_log.c.seq == 3))
        bad = await asyncio.to_thread(
            CliRunner().invoke, app, ["audit", "verify", "--json", "-c", str(config)], env=environ
        )
        assert bad.exit_code == 1 and "entry 3, the head checkpointed at" in orjson.loads(bad.stdout)["problems"][0]
    finally:
        await store.close()
