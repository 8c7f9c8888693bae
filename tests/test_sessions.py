"""sudo and auditd lines tailed from files become events with actor, action, target and outcome; Teleport and sudo
sessions become privileged sessions (start, end, commands, recording); evidence bundles copy and seal the
recordings they can read and reference the others."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from conftest import moto_client
from custodes.config import (
    DatabaseSettings,
    EvidenceSettings,
    ResponderSettings,
    S3Connection,
    Settings,
)
from custodes.connectors import filetail, sdk
from custodes.connectors.envelope import to_event
from custodes.connectors.sessions import sessions_from
from custodes.connectors.textlogs import parse_syslog_line
from custodes.model import Outcome
from custodes.responder import catalog
from custodes.responder.evidence import LocalBundle, verify_bundle
from custodes.responder.registry import ActionContext, ActionError
from custodes.sources import SourceSettings
from custodes.store import Store

DATA = Path(__file__).with_name("data")
NOW = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
TELEPORT = SourceSettings(format="teleport", product="teleport", service="audit")


def tail(path: Path, parser: str) -> filetail.FileTailConnector:
    connector = filetail.build("t", parser, filetail.DEFAULT_SOURCES[parser], {"path": str(path), "parser": parser}, {})
    connector.clock = lambda: NOW
    return connector


async def read(connector: filetail.FileTailConnector) -> list[Any]:
    return [event async for batch in connector.batches(None) for event in batch.events]


async def test_sudo_lines_become_events_with_actor_action_target_and_outcome() -> None:
    found = await read(tail(DATA / "sudo-auth.log", "sudo"))
    shown = [(e.actor, e.action, e.target, e.outcome) for e in found]
    assert shown[0] == ("alice", "sudo.command", "root", Outcome.SUCCESS)
    assert found[0].raw["command"] == "/usr/bin/systemctl restart nginx" and found[0].raw["pwd"] == "/home/alice"
    assert shown[1] == ("alice", "sudo.session_open", "root", Outcome.SUCCESS)
    assert shown[4] == ("bob", "sudo.denied", "root", Outcome.FAILURE)
    assert found[4].raw["reason"] == "user NOT in sudoers"
    assert shown[5] == ("alice", "sudo.denied", "root", Outcome.FAILURE)
    assert found[6].raw["tsid"] == "00/00/0A" and found[6].time == datetime(2026, 12, 3, 9, 20, 44, 123456, UTC)
    assert found[0].time == datetime(2026, 12, 3, 9, 12, 1, tzinfo=UTC), "a BSD syslog time takes the current year"
    assert (found[3].actor, found[3].action, found[3].src_ip) == ("bob", "sshd.login", "203.0.113.50"), "sshd's login"
    assert all(e.source == "sudo" and e.logsource.product == "linux" for e in found)
    assert not any(e.warnings for e in found)


async def test_auditd_records_become_events_with_decoded_commands() -> None:
    found = await read(tail(DATA / "audit.log", "auditd"))
    shown = [(e.actor, e.action, e.target, e.outcome) for e in found]
    assert shown[0] == ("1001", "USER_CMD", "systemctl restart nginx", Outcome.SUCCESS)
    assert shown[1] == ("1002", "USER_AUTH", "root", Outcome.FAILURE)
    assert shown[2] == ("1001", "SYSCALL", "/usr/bin/cat", Outcome.FAILURE)
    assert found[2].raw["key"] == "shadow-read"
    assert shown[3][1:3] == ("PATH", "/etc/shadow")
    assert shown[4] == ("carol", "USER_LOGIN", "/usr/sbin/sshd", Outcome.SUCCESS), "the enriched AUID name wins"
    assert found[4].src_ip == "203.0.113.50"
    assert found[5].action == "EXECVE"
    assert found[0].time == datetime.fromtimestamp(1796289121.512, UTC)
    assert len({e.id for e in found}) == len(found) and not any(e.warnings for e in found)


def test_a_file_tail_with_the_sudo_parser_reads_into_the_sudo_source_by_default(tmp_path: Path) -> None:
    from custodes.config import ConnectorSettings, Settings

    entry = ConnectorSettings(kind="file_tail", options={"path": str(tmp_path / "auth.log"), "parser": "sudo"})
    built = sdk.build("sudo-log", entry, Settings())
    assert built.source == "sudo" and built.settings.format == "sudo"
    entry = ConnectorSettings(kind="file_tail", options={"path": str(tmp_path / "x.log"), "parser": "json"})
    assert sdk.build("raw", entry, Settings()).source == "generic"


def teleport_lines(recording: str) -> list[dict[str, Any]]:
    base = {"sid": "6f1c2d3e-aaaa-bbbb-cccc-1234567890ab", "user": "carol", "server_hostname": "db-2"}
    return [
        {**base, "event": "session.start", "code": "T2000I", "time": "2026-12-03T10:00:00Z", "uid": "e1",
         "login": "root", "addr.remote": "203.0.113.50:51234"},
        {**base, "event": "session.command", "code": "T4000I", "time": "2026-12-03T10:00:05Z", "uid": "e2",
         "program": "pg_dump", "argv": ["-d", "payroll"]},
        {**base, "event": "session.end", "code": "T2004I", "time": "2026-12-03T10:07:00Z", "uid": "e3"},
        {**base, "event": "session.upload", "code": "T2005I", "time": "2026-12-03T10:07:02Z", "uid": "e4",
         "url": recording},
    ]  # fmt: skip


def test_teleport_and_sudo_sessions_have_start_end_commands_and_recording() -> None:
    rows = []
    for n, record in enumerate(teleport_lines("s3://recordings/6f1c.tar")):
        event = to_event(record, TELEPORT, "teleport")
        rows.append({"id": f"t{n}", "time": event.time, "actor": event.actor, "outcome": event.outcome, "raw": record})
    for n, line in enumerate((DATA / "sudo-auth.log").read_text().splitlines()):
        record, _ = parse_syslog_line(line, NOW)
        event = to_event(record, filetail.DEFAULT_SOURCES["sudo"], "sudo")
        rows.append({"id": f"s{n}", "time": event.time, "actor": event.actor, "outcome": event.outcome, "raw": record})
    sessions = {session.id: session for session in sessions_from(rows)}
    ssh = sessions["6f1c2d3e-aaaa-bbbb-cccc-1234567890ab"]
    assert (ssh.user, ssh.host, ssh.login) == ("carol", "db-2", "root")
    assert ssh.start == datetime(2026, 12, 3, 10, 0, tzinfo=UTC) and ssh.end == datetime(2026, 12, 3, 10, 7, tzinfo=UTC)
    assert [c.command for c in ssh.commands] == ["pg_dump -d payroll"] and ssh.recording == "s3://recordings/6f1c.tar"
    carol = sessions["db-2:20211"]
    assert (carol.user, carol.login, carol.recording) == ("carol", "postgres", "sudo-io:00/00/0A")
    assert carol.start is not None and carol.end == datetime(2026, 12, 3, 9, 31, 2, 981220, UTC)
    assert [c.command for c in carol.commands] == ["/usr/bin/psql -d payroll"]
    denied = [s for s in sessions.values() if s.user == "bob"]
    assert len(denied) == 1 and denied[0].commands[0].outcome == "failure"


def test_su_sessions_have_the_account_switched_to_and_their_pam_session() -> None:
    lines = [
        "Dec  3 11:00:00 web-1 su[700]: (to root) alice on pts/0",
        "Dec  3 11:00:00 web-1 su[700]: pam_unix(su-l:session): session opened for user root(uid=0) by alice(uid=1000)",
        "Dec  3 11:04:09 web-1 su[700]: pam_unix(su-l:session): session closed for user root",
        "Dec  3 11:05:00 web-1 su[702]: pam_unix(su:auth): authentication failure; logname=bob uid=1001 tty=pts/1",
        "Dec  3 11:05:02 web-1 su[702]: FAILED SU (to root) bob on pts/1",
    ]
    rows = []
    for n, line in enumerate(lines):
        record, _ = parse_syslog_line(line, NOW)
        event = to_event(record, filetail.DEFAULT_SOURCES["sudo"], "sudo")
        rows.append({"id": f"u{n}", "time": event.time, "actor": event.actor, "outcome": event.outcome, "raw": record})
    alice, bob = sessions_from(rows)
    assert (alice.kind, alice.id, alice.user, alice.host, alice.login) == ("su", "web-1:700", "alice", "web-1", "root")
    assert alice.start == datetime(2026, 12, 3, 11, 0, tzinfo=UTC) and alice.end == datetime(
        2026, 12, 3, 11, 4, 9, tzinfo=UTC
    )
    assert alice.events == ["u0", "u1", "u2"] and not alice.commands
    assert (bob.user, bob.login, bob.start, bob.end) == (
        "bob",
        "root",
        datetime(2026, 12, 3, 11, 5, 2, tzinfo=UTC),
        None,
    )
    assert bob.events == ["u4"], "PAM's failure line repeats su's own"


async def test_evidence_seals_readable_recordings_and_references_the_rest(store: Store, tmp_path: Path) -> None:
    recording = tmp_path / "teleport" / "6f1c.tar"
    recording.parent.mkdir()
    recording.write_bytes(b"teleport session recording\x00" * 100)
    iolog = tmp_path / "sudo-io" / "00" / "00" / "0A"
    iolog.mkdir(parents=True)
    for name, data in {"log": b"1764753644:carol:root", "timing": b"4 0.1 12\n", "ttyout": b"payroll=# \\dt\n"}.items():
        (iolog / name).write_bytes(data)
    rows = []
    for record in teleport_lines(recording.as_uri()):
        rows.append(to_event(record, TELEPORT, "teleport"))
    for line in (DATA / "sudo-auth.log").read_text().splitlines()[6:8]:
        rows.append(to_event(parse_syslog_line(line, NOW)[0], filetail.DEFAULT_SOURCES["sudo"], "sudo"))
    other = teleport_lines("s3://recordings/other.tar")
    rows += [to_event({**r, "sid": "77", "uid": f"o{n}"}, TELEPORT, "teleport") for n, r in enumerate(other)]
    async with store.transaction() as tx:
        await tx.insert_events(rows)
    evidence = EvidenceSettings(
        directory=tmp_path / "evidence", sudo_iolog_dir=tmp_path / "sudo-io", recordings_dirs=[tmp_path / "teleport"]
    )
    bundle = await collect_for_carol(store, evidence)
    names = bundle.names()
    assert "recordings/teleport-6f1c2d3e-aaaa-bbbb-cccc-1234567890ab/6f1c.tar" in names
    assert bundle.get("recordings/teleport-6f1c2d3e-aaaa-bbbb-cccc-1234567890ab/6f1c.tar") == recording.read_bytes()
    assert {"recordings/sudo-db-2_20211/log", "recordings/sudo-db-2_20211/ttyout"} <= set(names)
    manifest = orjson.loads(bundle.get("manifest.json") or b"{}")
    assert "recordings/sudo-db-2_20211/timing" in manifest["files"]
    skipped = {item["reference"]: item["skipped"] for item in manifest["recordings"]}
    assert "referenced, not copied" in (skipped["s3://recordings/other.tar"] or "")
    assert skipped[recording.as_uri()] is None
    sessions = orjson.loads(bundle.get("sessions.json") or b"[]")
    assert {session["kind"] for session in sessions} == {"teleport", "sudo"}
    assert verify_bundle(bundle).ok


async def collect_for_carol(store: Store, evidence: EvidenceSettings) -> LocalBundle:
    """The bundle `evidence.collect` seals for carol's day."""
    spec = catalog.get("evidence.collect")
    arguments = {"entity": "carol", "since": "2026-12-03T00:00:00Z", "until": "2026-12-04T00:00:00Z", "reason": "x"}
    async with aiohttp.ClientSession() as http:
        ctx = ActionContext(ResponderSettings(evidence=evidence), http, "k", run_id="r", store=store, actor="a@x.com")
        result = await spec.fn(ctx, **spec.validate(arguments))
    return LocalBundle(Path(result["location"]))


async def test_recording_references_never_lead_outside_their_folders(store: Store, tmp_path: Path) -> None:
    """A recording's reference is event data: a sudo TSID of `../..`, or a file URL naming any file, once had that
    file (the service's own configuration, say) copied into the bundle for analysts to read."""
    secret = tmp_path / "custodes.yaml"
    secret.write_text("token: s3cret-value")
    teleport = tmp_path / "teleport"
    (teleport / "s1").mkdir(parents=True)
    (teleport / "s1" / "part-0").write_bytes(b"chunk-0")
    (teleport / "s1" / "link").symlink_to(secret)
    (tmp_path / "sudo-io").mkdir()
    references = {"s1": (teleport / "s1").as_uri(), "out": secret.as_uri(), "dots": f"{teleport}/../custodes.yaml"}
    rows = [
        to_event({**record, "sid": sid, "uid": f"{sid}-{n}"}, TELEPORT, "teleport")
        for sid, reference in references.items()
        for n, record in enumerate(teleport_lines(reference))
    ]
    line = (DATA / "sudo-auth.log").read_text().splitlines()[6].replace("TSID=00/00/0A", "TSID=../custodes.yaml")
    rows.append(to_event(parse_syslog_line(line, NOW)[0], filetail.DEFAULT_SOURCES["sudo"], "sudo"))
    async with store.transaction() as tx:
        await tx.insert_events(rows)
    evidence = EvidenceSettings(
        directory=tmp_path / "evidence", sudo_iolog_dir=tmp_path / "sudo-io", recordings_dirs=[teleport]
    )
    bundle = await collect_for_carol(store, evidence)
    assert (
        bundle.get("recordings/teleport-s1/part-0") == b"chunk-0"
        and "recordings/teleport-s1/link" not in bundle.names()
    )
    assert not [name for name in bundle.names() if b"s3cret" in (bundle.get(name) or b"")]
    manifest = orjson.loads(bundle.get("manifest.json") or b"{}")
    skipped = {item["reference"]: item["skipped"] for item in manifest["recordings"]}
    assert skipped == {
        references["s1"]: None,
        references["out"]: f"{secret}: outside responder.evidence.recordings_dirs; referenced, not read",
        references[
            "dots"
        ]: f"{teleport}/../custodes.yaml: outside responder.evidence.recordings_dirs; referenced, not read",
        "sudo-io:../custodes.yaml": f"{tmp_path}/sudo-io/../custodes.yaml: outside responder.evidence.sudo_iolog_dir; "
        "referenced, not read",
    }
    with pytest.raises(ActionError, match=r"'a/\.\./\.\./x' would be written outside the bundle"):
        bundle.put("a/../../x", b"")
    assert not (bundle.root.parent / "x").exists()


async def test_the_api_lists_an_entitys_sessions(database: DatabaseSettings, tmp_path: Path) -> None:
    from custodes.server.serve import serving
    from custodes.services import Services

    (tmp_path / "empty").mkdir()
    settings = Settings.model_validate(
        {
            "detection": {"rules": [str(tmp_path / "empty")]},
            "playbooks": {"paths": [str(tmp_path / "empty")]},
            "scoring": {"pseudonymise": False},
            "server": {"api_tokens": [{"name": "a", "token": "env:T_SESSIONS", "role": "analyst"}]},
        },
        context={"environ": {"T_SESSIONS": "tok-sessions-0123456789"}},
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        async with services.store.transaction() as tx:
            await tx.insert_events([to_event(r, TELEPORT, "teleport") for r in teleport_lines("file:///r/6f1c.tar")])
        headers = {"Authorization": "Bearer tok-sessions-0123456789"}
        window = "since=2026-12-03T00:00:00Z&until=2026-12-04T00:00:00Z"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/api/entities/carol/sessions?{window}", headers=headers) as answer:
                assert answer.status == 200, await answer.text()
                body = await answer.json()
            async with http.get(
                f"{url}/api/entities/carol/sessions?since=2026-12-05T00:00:00Z", headers=headers
            ) as bad:
                assert bad.status == 200 and (await bad.json())["sessions"] == [], "a window ending before it starts"
    [session] = body["sessions"]
    assert session["kind"] == "teleport" and session["user"] == "carol" and session["recording"] == "file:///r/6f1c.tar"
    assert session["commands"][0]["command"] == "pg_dump -d payroll" and session["end"].startswith("2026-12-03T10:07")


async def test_evidence_fetches_and_seals_s3_stored_teleport_recordings(
    store: Store, tmp_path: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Teleport's S3 session storage (through moto): the recording object is copied and sealed, a folder of
    objects under a prefix too, a missing one and one over the size bound are referenced with the reason."""
    monkeypatch.setenv("REC_KEY_ID", "testing")
    monkeypatch.setenv("REC_SECRET", "testing-secret")
    s3 = moto_client("s3", moto_url)
    s3.create_bucket(Bucket="recordings")
    tar = b"teleport session recording\x00" * 200
    s3.put_object(Bucket="recordings", Key="sessions/6f1c.tar", Body=tar)
    s3.put_object(Bucket="recordings", Key="sessions/9a/part-0", Body=b"chunk-0")
    s3.put_object(Bucket="recordings", Key="sessions/9a/part-1", Body=b"chunk-1")
    s3.put_object(Bucket="recordings", Key="sessions/big.tar", Body=b"x" * 10_000)
    s3.put_object(Bucket="recordings", Key="sessions/evil/../../../escaped", Body=b"x")  # a key is any string
    references = {
        "6f1c": "s3://recordings/sessions/6f1c.tar",
        "9a": "s3://recordings/sessions/9a",
        "gone": "s3://recordings/sessions/gone.tar",
        "big": "s3://recordings/sessions/big.tar",
        "evil": "s3://recordings/sessions/evil",
    }
    rows = [
        to_event({**record, "sid": sid, "uid": f"{sid}-{n}"}, TELEPORT, "teleport")
        for sid, reference in references.items()
        for n, record in enumerate(teleport_lines(reference))
    ]
    async with store.transaction() as tx:
        await tx.insert_events(rows)
    connection = S3Connection.model_validate(
        {"endpoint_url": moto_url, "access_key_id": "env:REC_KEY_ID", "secret_access_key": "env:REC_SECRET"}
    )
    settings = ResponderSettings(
        evidence=EvidenceSettings(directory=tmp_path / "evidence", recordings_s3=connection, max_recording_bytes=8000)
    )
    spec = catalog.get("evidence.collect")
    arguments = {"entity": "carol", "since": "2026-12-03T00:00:00Z", "until": "2026-12-04T00:00:00Z", "reason": "x"}
    async with aiohttp.ClientSession() as http:
        ctx = ActionContext(settings, http, "k", run_id="r", store=store, actor="analyst@example.com")
        result = await spec.fn(ctx, **spec.validate(arguments))
    bundle = LocalBundle(Path(result["location"]))
    assert bundle.get("recordings/teleport-6f1c/6f1c.tar") == tar
    assert bundle.get("recordings/teleport-9a/part-0") == b"chunk-0"
    assert bundle.get("recordings/teleport-9a/part-1") == b"chunk-1"
    manifest = orjson.loads(bundle.get("manifest.json") or b"{}")
    assert "recordings/teleport-6f1c/6f1c.tar" in manifest["files"]
    skipped = {item["reference"]: item["skipped"] for item in manifest["recordings"]}
    assert skipped[references["6f1c"]] is None and skipped[references["9a"]] is None
    assert skipped[references["gone"]] == f"{references['gone']}: not found"
    assert "over responder.evidence.max_recording_bytes" in (skipped[references["big"]] or "")
    assert skipped[references["evil"]] == (
        f"{references['evil']}: an object named '../../../escaped' would leave the bundle's folder"
    )
    assert not [name for name in bundle.names() if "escaped" in name]
    assert verify_bundle(bundle).ok
