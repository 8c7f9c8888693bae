"""PAM sources through the file tail: Teleport and Vault audit JSON lines, sudo syslog and auditd records,
across rotation by rename, truncation in place and half-written lines."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from connector_support import poll, services, stored_raw
from custodes.connectors import filetail
from custodes.connectors.envelope import to_event
from custodes.connectors.files import BOM
from custodes.connectors.filetail import FileTailConnector, FileTailOptions
from custodes.connectors.textlogs import parse_auditd_line, parse_syslog_line
from custodes.model import Outcome
from custodes.services import Services
from custodes.sources import SourceSettings

__all__ = ["services"]

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
TELEPORT = SourceSettings(format="teleport")
VAULT = SourceSettings(format="vault")
SUDO = SourceSettings(format="sudo")
AUDITD = SourceSettings(format="auditd")

SESSION: list[dict[str, Any]] = [
    {
        "event": "session.start",
        "code": "T2000I",
        "uid": "u-1",
        "time": "2024-03-01T10:00:00.000Z",
        "user": "alice",
        "login": "root",
        "sid": "s-42",
        "server_hostname": "db-1",
        "addr.remote": "10.0.0.5:51234",
    },
    {
        "event": "session.end",
        "code": "T2004I",
        "uid": "u-2",
        "time": "2024-03-01T10:30:00.000Z",
        "user": "alice",
        "sid": "s-42",
        "server_hostname": "db-1",
        "session_recording": "node",
    },
    {
        "event": "session.upload",
        "code": "T2005I",
        "uid": "u-3",
        "time": "2024-03-01T10:30:01.000Z",
        "sid": "s-42",
        "url": "s3://recordings/s-42.tar",
    },
    {
        "event": "user.login",
        "code": "T1000W",
        "uid": "u-4",
        "time": "2024-03-01T10:31:00Z",
        "user": "mallory",
        "success": False,
        "addr.remote": "[2001:db8::1]:443",
    },
]


def vault_entry(kind: str, path: str, error: str = "") -> dict[str, Any]:
    return {
        "time": "2024-03-01T11:00:00.123456Z",
        "type": kind,
        "auth": {
            "client_token": "hmac-sha256:3f1e",
            "display_name": "userpass-bob",
            "metadata": {"username": "bob"},
            "policies": ["default", "admin"],
        },
        "request": {
            "id": f"req-{path}",
            "operation": "update",
            "path": path,
            "remote_address": "10.1.2.3",
            "client_token": "hmac-sha256:3f1e",
        },
        "error": error,
    }


def tail(path: Path, parser: str, settings: SourceSettings, name: str = "tail") -> FileTailConnector:
    options = FileTailOptions.model_validate({"path": path, "parser": parser, "batch_lines": 3})
    return FileTailConnector(name, name, settings, options, clock=lambda: NOW)


def write(path: Path, lines: list[str], mode: str = "a") -> None:
    with path.open(mode, encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)


def test_pam_records_map_to_the_envelope() -> None:
    events = [to_event(record, TELEPORT, "teleport") for record in SESSION]
    assert [(e.actor, e.action, e.target, e.outcome) for e in events] == [
        ("alice", "session.start", "db-1", Outcome.SUCCESS),
        ("alice", "session.end", "db-1", Outcome.SUCCESS),
        (None, "session.upload", "s3://recordings/s-42.tar", Outcome.SUCCESS),
        ("mallory", "user.login", None, Outcome.FAILURE),
    ]
    assert events[0].src_ip == "10.0.0.5" and events[3].src_ip == "2001:db8::1"
    request = to_event(vault_entry("request", "sys/policies/acl/admin"), VAULT, "vault")
    response = to_event(vault_entry("response", "sys/policies/acl/admin", "permission denied"), VAULT, "vault")
    assert (request.actor, request.action, request.target, request.outcome) == (
        "bob",
        "update",
        "sys/policies/acl/admin",
        Outcome.UNKNOWN,
    )
    assert response.outcome is Outcome.FAILURE and response.id != request.id and response.src_ip == "10.1.2.3"
    assert to_event({"type": "request"}, VAULT, "vault").warnings[0] == "request missing"


def test_sudo_and_auditd_lines_parse() -> None:
    command, _ = parse_syslog_line(
        "Mar  1 11:59:58 web-1 sudo[4242]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; TSID=00/00/01 ; "
        "COMMAND=/bin/bash",
        NOW,
    )
    assert command["time"] == "2024-03-01T11:59:58+00:00"
    assert (command["user"], command["run_as"], command["tsid"], command["command"]) == (
        "alice",
        "root",
        "00/00/01",
        "/bin/bash",
    )
    denied, _ = parse_syslog_line(
        "2024-03-01T11:00:00+00:00 web-1 sudo[1]: eve : 3 incorrect password attempts ; "
        "TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/sh",
        NOW,
    )
    assert denied["event"] == "denied" and denied["reason"] == "3 incorrect password attempts"
    assert to_event(denied, SUDO, "sudo").outcome is Outcome.FAILURE
    opened, _ = parse_syslog_line(
        "Dec 31 23:59:59 web-1 sudo[7]: pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)",
        NOW,
    )
    assert (opened["event"], opened["run_as"], opened["user"]) == ("session_open", "root", "alice")
    assert opened["time"].startswith("2023-12-31"), "a BSD syslog time ahead of now is last year's"
    record, warning = parse_auditd_line(
        'type=USER_CMD msg=audit(1709290800.123:456): pid=4242 uid=1000 auid=1000 ses=3 msg=\'cwd="/home/alice" '
        'cmd=2F62696E2F62617368 exe="/usr/bin/sudo" terminal=pts/0 res=success\'',
        NOW,
    )
    assert warning is None and record["cmd"] == "/bin/bash" and record["success"] == "yes", "hex commands decoded"
    event = to_event(record, AUDITD, "auditd")
    assert (event.action, event.actor, event.outcome) == ("USER_CMD", "1000", Outcome.SUCCESS)
    assert event.time == datetime(2024, 3, 1, 11, 0, 0, 123000, tzinfo=UTC)
    named, warning = parse_auditd_line(
        "node=web-1 type=USER_CMD msg=audit(1709290800.123:457): auid=1000 res=success", NOW
    )
    assert warning is None and (named["node"], named["type"]) == ("web-1", "USER_CMD"), "name_format: node= first"
    assert parse_syslog_line("garbage", NOW) == ({"line": "garbage"}, "not a syslog line; kept as text")


async def test_rotation_truncation_and_partial_lines_neither_lose_nor_repeat(
    tmp_path: Path, services: Services
) -> None:
    log = tmp_path / "teleport.log"
    lines = [orjson.dumps(record).decode() for record in SESSION]
    write(log, lines[:2])
    with log.open("a") as handle:
        handle.write(lines[2][:20])  # half-written
    connector = tail(log, "json", TELEPORT, "teleport")
    assert await poll(services, connector) == 2
    with log.open("a") as handle:
        handle.write(lines[2][20:] + "\n")
    write(log, ["{not json", lines[3]])
    log.rename(tmp_path / "teleport.log.1")  # rotation by rename: the tail finishes the old file first
    write(log, [orjson.dumps({**SESSION[0], "uid": "u-5"}).decode()], mode="w")
    assert await poll(services, connector) == 4
    raws = await stored_raw(services, "teleport")
    assert sorted(str(raw.get("uid", raw.get("line"))) for raw in raws) == [
        "u-1",
        "u-2",
        "u-3",
        "u-4",
        "u-5",
        "{not json",
    ]
    write(log, [orjson.dumps({**SESSION[0], "uid": "u-6"}).decode()], mode="w")  # truncated in place, rewritten
    assert await poll(services, connector) == 1
    assert await poll(services, connector) == 0
    (tmp_path / "teleport.log.1").unlink()
    log.rename(tmp_path / "teleport.log.2")  # rotated where the tail does not look: said, not silent
    write(log, [orjson.dumps({**SESSION[0], "uid": "u-7"}).decode()], mode="w")
    batches = [batch async for batch in connector.batches(await _checkpoint(services, "teleport"))]
    assert "its old file is gone" in batches[0].warnings[0]
    assert [e.raw["uid"] for b in batches for e in b.events] == ["u-7"]


async def _checkpoint(services: Services, name: str) -> dict[str, Any] | None:
    async with services.store.transaction() as tx:
        return await tx.get_checkpoint(name)


async def test_vault_audit_log_batches_resume_by_offset(tmp_path: Path, services: Services) -> None:
    log = tmp_path / "vault_audit.log"
    entries = [vault_entry(kind, f"secret/data/app{n}") for n in range(5) for kind in ("request", "response")]
    write(log, [orjson.dumps(entry).decode() for entry in entries])
    connector = tail(log, "json", VAULT, "vault")
    assert await poll(services, connector) == 10
    checkpoint = await _checkpoint(services, "vault")
    assert checkpoint is not None
    assert (checkpoint["inode"], checkpoint["offset"]) == (log.stat().st_ino, log.stat().st_size)
    assert await poll(services, connector) == 0


async def test_a_byte_order_mark_before_the_first_line_is_no_part_of_it(tmp_path: Path, services: Services) -> None:
    log = tmp_path / "teleport.log"
    log.write_bytes(BOM + orjson.dumps(SESSION[0]) + b"\n")
    connector = tail(log, "json", TELEPORT, "teleport")
    assert await poll(services, connector) == 1
    write(log, [orjson.dumps(SESSION[1]).decode()])
    assert await poll(services, connector) == 1
    assert [raw["uid"] for raw in await stored_raw(services, "teleport")] == [SESSION[0]["uid"], SESSION[1]["uid"]]


async def test_a_line_past_the_bound_is_skipped_unheld_and_said(
    tmp_path: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line without end was read whole on every poll (a Vault request logged with a huge body), however long."""
    monkeypatch.setattr(filetail, "LONGEST_RECORD", 1 << 20)
    log = tmp_path / "vault.log"
    first = orjson.dumps({**SESSION[0], "uid": "u-1"}).decode()
    write(log, [first])
    long = orjson.dumps({**SESSION[1], "uid": "u-long", "padding": "x" * (3 << 20)}).decode()
    with log.open("a") as handle:
        handle.write(long[: 2 << 20])  # still being written, already past the bound
    connector = tail(log, "json", TELEPORT, "teleport")
    batches = [batch async for batch in connector.batches(None)]
    assert [e.raw["uid"] for b in batches for e in b.events] == ["u-1"] and not any(b.warnings for b in batches)
    assert batches[-1].checkpoint["offset"] == len(first) + 1, "the long line waits for its end"
    with log.open("a") as handle:
        handle.write(long[2 << 20 :] + "\n")
    write(log, [orjson.dumps({**SESSION[2], "uid": "u-3"}).decode()])
    batches = [batch async for batch in connector.batches(batches[-1].checkpoint)]
    assert [e.raw["uid"] for b in batches for e in b.events] == ["u-3"]
    assert [w for b in batches for w in b.warnings] == [
        f"{log}: the line at offset {len(first) + 1} is longer than 1 MiB; skipped"
    ]
    assert batches[-1].checkpoint["offset"] == log.stat().st_size
