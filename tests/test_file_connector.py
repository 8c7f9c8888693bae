"""The file connector and envelope mapping, on real vendor records from ../shared/datasets."""

from __future__ import annotations

import csv
import gzip
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import SHARED
from connector_support import services, stored_raw
from custodes.config import load_settings
from custodes.connectors import files
from custodes.connectors.envelope import parse_time, to_event
from custodes.connectors.files import BOM, FileConnector, iter_records, parse_stream
from custodes.errors import CustodesError
from custodes.model import Event, Outcome, json_text, stable_id
from custodes.pipeline import IngestReport
from custodes.server.responses import json_response
from custodes.services import Services
from custodes.sources import SourceSettings

SETTINGS = load_settings(None, environ={})
OKTA = SETTINGS.source("okta")
CLOUDTRAIL = SETTINGS.source("cloudtrail")
PANTHER = SHARED / "datasets" / "panther-rule-tests"
__all__ = ["services"]
OTRF = SHARED / "datasets" / "otrf-cloudtrail" / "ec2_proxy_s3_exfiltration_2020-09-14011940.json"


def panther_logs(name: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (PANTHER / name).read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row["log"].items() if not k.startswith("p_")} for row in rows]


async def drain(connector: FileConnector, checkpoint: dict[str, Any] | None = None) -> tuple[list[Event], Any]:
    events: list[Event] = []
    last = checkpoint
    async for batch in connector.batches(checkpoint):
        events += batch.events
        last = batch.checkpoint
    return events, last


def test_okta_system_log_records_map_to_the_envelope() -> None:
    logs = panther_logs("okta.ndjson")
    events = [to_event(log, OKTA, "okta") for log in logs]
    assert len(events) == len(logs) > 50
    for log, event in zip(logs, events, strict=True):
        assert event.raw is log
        assert event.action == log.get("eventType")
        assert event.actor == (log.get("actor") or {}).get("alternateId")
        unreadable = [w for w in event.warnings if "time" in w]
        assert bool(unreadable) == (not str(log.get("published", ""))[:1].isdigit()), event.warnings
    session = next(e for e in events if e.action == "user.session.start" and e.outcome is Outcome.FAILURE)
    assert session.src_ip


def test_cloudtrail_records_map_to_the_envelope() -> None:
    records = [json.loads(line) for line in OTRF.read_text().splitlines()]
    events = [to_event(record, CLOUDTRAIL, "cloudtrail") for record in records]
    assert len({e.id for e in events}) == len(records) == 103
    assert {e.actor for e in events} >= {"pedro"}
    assert all(e.src_ip and e.action and not e.warnings for e in events)
    failures = [e for e in events if e.outcome is Outcome.FAILURE]
    assert all(e.raw.get("errorCode") for e in failures)


def test_assumed_role_actor_is_the_session_name() -> None:
    record = {
        "eventID": "x",
        "eventTime": "2026-11-19T02:14:37Z",
        "eventName": "StopLogging",
        "userIdentity": {
            "type": "AssumedRole",
            "arn": "arn:aws:sts::1:assumed-role/AWSReservedSSO_Admin/alice@example.com",
        },
        "requestParameters": {"userName": "deploy-bot"},
        "additionalEventData": {"bytesTransferredOut": 12},
    }
    event = to_event(record, CLOUDTRAIL, "cloudtrail")
    assert (event.actor, event.target, event.bytes, event.outcome) == (
        "alice@example.com",
        "deploy-bot",
        12,
        Outcome.SUCCESS,
    )


def test_bad_vendor_data_is_kept_with_warnings() -> None:
    event = to_event({"uuid": "u1", "published": "yesterday"}, OKTA, "okta")
    assert any("unreadable time 'yesterday'" in w for w in event.warnings)
    assert any("eventType missing" in w for w in event.warnings)
    wrapped = to_event(["not", "an", "object"], OKTA, "okta")
    assert wrapped.raw == {"value": ["not", "an", "object"]} and wrapped.warnings
    generic = SourceSettings(format="generic", fields={"actor": "who", "time": "when"})
    mapped = to_event({"who": "bob", "when": 1763520000}, generic, "custom")
    assert mapped.actor == "bob" and mapped.time.year == 2025 and not mapped.warnings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-19T02:14:37Z", "2026-11-19T02:14:37+00:00"),
        ("2026-11-19 02:14:37.5", "2026-11-19T02:14:37.500000+00:00"),
        ("2026-11-19T03:14:37+01:00", "2026-11-19T02:14:37+00:00"),
        (1763518477, "2025-11-19T02:14:37+00:00"),
        (1763518477000, "2025-11-19T02:14:37+00:00"),
        ("1763518477", "2025-11-19T02:14:37+00:00"),
    ],
)
def test_time_formats(value: Any, expected: str) -> None:
    assert parse_time(value).isoformat() == expected


def test_every_layout_is_read(tmp_path: Path) -> None:
    records = [{"eventID": f"e{i}", "eventTime": "2026-11-19T02:00:00Z", "eventName": "GetObject"} for i in range(3)]
    layouts = {
        "lines.ndjson": b"\n".join(orjson.dumps(r) for r in records) + b"\n\n",
        "array.json": orjson.dumps(records, option=orjson.OPT_INDENT_2),
        "trail.json.gz": gzip.compress(orjson.dumps({"Records": records})),
        "trail.json": orjson.dumps({"Records": records}, option=orjson.OPT_INDENT_2),
    }
    for name, data in layouts.items():
        (tmp_path / name).write_bytes(data)
        assert [r["eventID"] for _, r, _ in iter_records(tmp_path / name)] == ["e0", "e1", "e2"], name
    (tmp_path / "one.json").write_bytes(orjson.dumps(records[0], option=orjson.OPT_INDENT_2))
    assert [r for _, r, _ in iter_records(tmp_path / "one.json")] == [records[0]]
    (tmp_path / "empty.json").write_bytes(b"  \n")
    assert list(iter_records(tmp_path / "empty.json")) == []


AUDIT_LOG = (
    b'node=db-1 type=USER_CMD msg=audit(1709290800.123:456): pid=4242 uid=1000 auid=1000 ses=3 msg=\'cwd="/" '
    b'cmd=6C73 exe="/usr/bin/sudo" terminal=pts/0 res=success\'\x1dAUID="alice"\n'
    b"node=db-1 type=SYSCALL msg=audit(1709290801.5:457): syscall=257 success=no exit=-13 auid=1000\r\n"
    b"\n"
    b"node=db-1 type=PROCTITLE msg=audit(1709290801.5:457): proctitle=636174\n"
)
SECURE_LOG = (
    b"Mar  1 11:59:58 web-1 sudo[4242]:    alice : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/ls\n"
    b"Mar  1 11:59:59 web-1 sshd[77]: Accepted publickey for alice from 10.0.0.9 port 51000 ssh2\n"
    b"a line no syslog wrote\n"
    b"2024-03-01T12:00:00+00:00 web-1 sudo[4243]: bob : user NOT in sudoers ; TTY=pts/1 ; PWD=/ ; USER=root ; "
    b"COMMAND=/bin/sh\n"
)


def test_text_logs_are_read_line_by_line_as_the_file_tail_reads_them(tmp_path: Path) -> None:
    """`replay` and `eval scoring` read auditd's log and a syslog file (sudo's lines among others') as they stand on
    disk, gzipped or not, whatever the chunk boundaries: before, every line was invalid JSON kept as text."""
    for name, data in (("audit.log", AUDIT_LOG), ("secure.gz", gzip.compress(SECURE_LOG))):
        (tmp_path / name).write_bytes(data)
    audit = list(iter_records(tmp_path / "audit.log"))
    assert [(n, r["node"], r["type"], w) for n, r, w in audit] == [
        (1, "db-1", "USER_CMD", None),
        (2, "db-1", "SYSCALL", None),
        (4, "db-1", "PROCTITLE", None),
    ]
    assert audit[0][1]["AUID"] == "alice" and audit[2][1]["proctitle"] == "cat"
    secure = list(iter_records(tmp_path / "secure.gz"))
    assert [(n, r["program"], r["event"]) for n, r, w in secure if w is None] == [
        (1, "sudo", "command"),
        (2, "sshd", "login"),
        (4, "sudo", "denied"),
    ]
    kept = [(n, r, w) for n, r, w in secure if w is not None]
    assert kept == [(3, "a line no syslog wrote", f"{tmp_path / 'secure.gz'}:3: not a syslog line; kept as text")]
    for data in (AUDIT_LOG, SECURE_LOG):
        expected = list(parse_stream(iter([data]), tmp_path / "log"))
        for size in (1, 7, 64):
            assert list(parse_stream(pieces(data, size), tmp_path / "log")) == expected, size
    (tmp_path / "notes.txt").write_bytes(b"nothing a log wrote\n")
    [(_, text, warning)] = list(iter_records(tmp_path / "notes.txt"))
    assert text == "nothing a log wrote" and "invalid JSON" in str(warning), "kept as text, as an NDJSON line is"


def test_a_byte_order_mark_at_the_start_is_skipped_in_every_layout(tmp_path: Path) -> None:
    records = [{"eventID": f"e{i}", "eventTime": "2026-11-19T02:00:00Z"} for i in range(3)]
    layouts = {
        "lines.ndjson": b"\n".join(orjson.dumps(r) for r in records) + b"\n",
        "array.json": orjson.dumps(records, option=orjson.OPT_INDENT_2),
        "trail.json": orjson.dumps({"Records": records}),
    }
    for name, data in layouts.items():
        for path, content in ((tmp_path / name, BOM + data), (tmp_path / f"{name}.gz", gzip.compress(BOM + data))):
            path.write_bytes(content)
            assert list(iter_records(path)) == [(n, r, None) for n, r in enumerate(records, start=1)], path.name
    (tmp_path / "mark.ndjson").write_bytes(BOM)
    assert list(iter_records(tmp_path / "mark.ndjson")) == []


def test_a_malformed_ndjson_line_is_kept_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "okta.ndjson"
    path.write_text('{"uuid": "a", "eventType": "x"}\n{"uuid": "b", oops}\n{"uuid": "c", "eventType": "y"}\n')
    rows = list(iter_records(path))
    assert [n for n, _, _ in rows] == [1, 2, 3]
    assert rows[1][1] == '{"uuid": "b", oops}' and rows[1][2] is not None and f"{path}:2:" in rows[1][2]


def test_a_malformed_document_is_located(tmp_path: Path) -> None:
    path = tmp_path / "trail.json"
    path.write_text('{"Records": [\n  {"eventID": "a"},\n  {"eventID": }\n]}\n')
    with pytest.raises(CustodesError, match=rf"{path}:3:\d+: invalid JSON"):
        list(iter_records(path))
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(CustodesError, match="cannot read log file"):
        list(iter_records(tmp_path / "bad.gz"))
    with pytest.raises(CustodesError, match="file not found"):
        list(iter_records(tmp_path / "absent.json"))


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("[" * 100_000 + "]" * 100_000, "1:2", "the value nests too deeply"),  # once a RecursionError, exit 1
        ('{"Records": [\n  {"a": 1},\n  {"b": ' + "[" * 5000 + "]" * 5000 + "}]}", "3:3", "the value nests too deeply"),
        ('[\n {"uuid": "a", "published": ' + "9" * 5000 + "}]", "2:2", "a number has more than 4300 digits"),
    ],
)
def test_a_document_too_deep_or_with_a_huge_number_is_located(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = tmp_path / "log.json"
    path.write_text(text)
    with pytest.raises(CustodesError, match=rf"{path}:{where}: invalid JSON: {what}"):
        list(iter_records(path))


async def test_replay_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "okta.ndjson"
    lines = [orjson.dumps({"uuid": f"u{i}", "published": "2026-11-19T02:00:00Z", "eventType": "t"}) for i in range(5)]
    path.write_bytes(b"\n".join(lines[:3]) + b"\n")
    connector = FileConnector("replay", "okta", OKTA, [path], batch_size=2)
    first, checkpoint = await drain(connector)
    assert len(first) == 3
    again, checkpoint = await drain(connector, checkpoint)
    assert again == []
    path.write_bytes(b"\n".join(lines) + b"\n")
    more, checkpoint = await drain(connector, checkpoint)
    assert [e.raw["uuid"] for e in more] == ["u3", "u4"]
    path.write_bytes(b"\n".join(reversed(lines)) + b"\n")
    replaced, _ = await drain(connector, checkpoint)
    assert [e.raw["uuid"] for e in replaced] == ["u4", "u3", "u2", "u1", "u0"]


def test_a_replays_total_counts_its_ingests_without_holding_every_id_they_stored() -> None:
    total = IngestReport()
    for n in range(3):  # a replay's batches: a total of a year's would hold millions of ids
        total.add(IngestReport(received=3, stored=2, duplicates=1, stored_ids={f"a{n}", f"b{n}"}))
    assert (total.received, total.stored, total.duplicates, total.stored_ids) == (9, 6, 3, set())


# streaming ---------------------------------------------------------------------------------------------
def pieces(data: bytes, size: int, pulled: list[int] | None = None) -> Iterator[bytes]:
    """`data` in chunks of `size` bytes, counting the chunks taken in `pulled`."""
    for start in range(0, len(data), size):
        if pulled is not None:
            pulled.append(start)
        yield data[start : start + size]


def test_every_layout_reads_the_same_whatever_the_chunk_boundaries(tmp_path: Path) -> None:
    records: list[Any] = [
        {"eventID": f"e{i}", "n": 10**i, "x": 1.5e-3, "s": 'quote " back\\ é ✓ \U0001f600', "l": [True, None, {}]}
        for i in range(6)
    ]
    layouts = {
        "lines": b"\n".join(orjson.dumps(r) for r in records) + b"\r\n\n",
        "array": orjson.dumps(records, option=orjson.OPT_INDENT_2),
        "compact array": orjson.dumps(records),
        "trail": orjson.dumps({"Records": records}, option=orjson.OPT_INDENT_2),
        "trail after a key": orjson.dumps({"other": [1, {"a": 2}], "Records": records}),
        "object": orjson.dumps({"Records": "not a list", "n": 12345}, option=orjson.OPT_INDENT_2),
        "search answer": orjson.dumps({"took": 2, "hits": {"total": {"value": 6}, "hits": hits(records)}}),
        "page": orjson.dumps({"@odata.context": "x", "value": records, "@odata.nextLink": "y"}),
        "a list of numbers": orjson.dumps({"value": [1, 2, {"a": 1}], "hits": {"total": 3}, "items": [[{}]]}),
        "spaced page": b'{"value": [' + b" \n" * 3000 + orjson.dumps(records)[1:-1] + b"]}",
        "spaced numbers": b'{"value": [' + b" \n" * 3000 + b"1, 2]}",
    }
    for name, data in layouts.items():
        expected = list(parse_stream(iter([data]), tmp_path / name))
        assert expected, name
        for size in (1, 2, 3, 7, 64):
            assert list(parse_stream(pieces(data, size), tmp_path / name)) == expected, (name, size)
    assert [r for _, r, _ in parse_stream(iter([layouts["trail after a key"]]), tmp_path)] == records
    assert [r for _, r, _ in parse_stream(iter([layouts["array"]]), tmp_path)] == records


def hits(records: list[Any]) -> list[dict[str, Any]]:
    """The records as Elasticsearch answers them: hits."""
    return [{"_index": "logs-1", "_id": str(n), "_score": 1.0, "_source": r} for n, r in enumerate(records)]


def test_exports_saved_from_siems_and_vendor_apis_are_read_as_the_records_they_hold(tmp_path: Path) -> None:
    trail = [{"eventID": f"e{i}", "eventTime": "2024-03-04T10:00:00Z", "eventName": "GetObject"} for i in range(3)]

    def splunk(record: dict[str, Any]) -> dict[str, Any]:
        return {"_raw": json.dumps(record), "_time": "2024-03-04T10:00:00.000+00:00", "sourcetype": "aws:cloudtrail"}

    lookup = [
        {"EventId": r["eventID"], "EventName": "GetObject", "CloudTrailEvent": json.dumps(r), "Resources": []}
        for r in trail
    ]
    exports = {
        "search.json": orjson.dumps({"took": 5, "hits": {"total": {"value": 3}, "hits": hits(trail)}}),
        "elasticdump.ndjson": b"\n".join(orjson.dumps(hit) for hit in hits(trail)) + b"\n",
        "export.ndjson": b"\n".join(
            [
                *(orjson.dumps({"preview": False, "offset": n, "result": splunk(r)}) for n, r in enumerate(trail)),
                orjson.dumps({"preview": False, "messages": [{"type": "INFO", "text": "search finished"}]}),
            ]
        ),
        "results.json": orjson.dumps(
            {
                "preview": False,
                "init_offset": 0,
                "messages": [],
                "fields": [{"name": "_raw"}],
                "results": list(map(splunk, trail)),
            },
            option=orjson.OPT_INDENT_2,
        ),
        "lookup-events.json": orjson.dumps({"Events": lookup, "NextToken": "abc"}, option=orjson.OPT_INDENT_2),
        "graph.json": orjson.dumps({"@odata.context": "https://graph", "value": trail}),
        "reports.json": orjson.dumps({"kind": "admin#reports#activities", "etag": "x", "items": trail}),
        "hunting.json": orjson.dumps({"Schema": [{"Name": "eventID", "Type": "String"}], "Results": trail}),
        "purview.csv": b"RecordId,CreationDate,RecordType,Operation,UserId,AuditData\r\n"
        + b"".join(
            b'%s,2024-03-04T10:00:00.0000000Z,SharePointFileOperation,FileDownloaded,a@corp.example,"%s"\r\n'
            % (r["eventID"].encode(), json.dumps(r).replace('"', '""').encode())
            for r in trail
        ),
        "unified-audit-log.json": orjson.dumps(  # Search-UnifiedAuditLog | ConvertTo-Json
            [
                {"RecordType": 6, "CreationDate": "/Date(1709546400000)/", "UserIds": "a", "AuditData": json.dumps(r)}
                for r in trail
            ]
        ),
    }
    for name, data in exports.items():
        (tmp_path / name).write_bytes(data)
        assert [(r, w) for _, r, w in iter_records(tmp_path / name)] == [(r, None) for r in trail], name
    # a Splunk result whose _raw is no record of its own stays the row Splunk extracted
    row = {"_raw": "Mar  4 10:00:00 fw-1 kernel: DROP IN=eth0", "_time": "2024-03-04T10:00:00Z", "action": "blocked"}
    (tmp_path / "rows.json").write_bytes(orjson.dumps({"results": [row]}))
    assert [r for _, r, _ in iter_records(tmp_path / "rows.json")] == [row]
    # a LookupEvents item whose CloudTrailEvent is not a record keeps its summary, with a warning
    broken = {"EventId": "e9", "EventTime": "2024-03-04T10:00:00Z", "CloudTrailEvent": "{cut"}
    (tmp_path / "broken.json").write_bytes(orjson.dumps([broken]))
    [(_, record, warning)] = iter_records(tmp_path / "broken.json")
    assert record["eventID"] == "e9" and record["eventTime"] == broken["EventTime"]
    assert warning == "CloudTrailEvent is not a JSON object; kept the LookupEvents summary"
    # an audit log search's row whose AuditData is not a record is kept, with a warning
    row = {"CreationDate": "2024-03-04T10:00:00Z", "Operation": "FileDownloaded", "AuditData": "(truncated)"}
    (tmp_path / "search.ndjson").write_bytes(b"\n".join(orjson.dumps(r) for r in (row, {**row, "AuditData": "{}"})))
    assert list(iter_records(tmp_path / "search.ndjson")) == [
        (1, row, "AuditData is not a JSON object; kept the search's row"),
        (2, {}, None),
    ]
    # a single record whose own fields are named as lists of records is kept whole
    one = {"id": "r1", "value": [1, 2], "hits": {"total": 2}, "items": "x", "results": [[1]]}
    (tmp_path / "one.json").write_bytes(orjson.dumps(one, option=orjson.OPT_INDENT_2))
    assert [r for _, r, _ in iter_records(tmp_path / "one.json")] == [one]
    # what a record holds is not unwrapped unless the file's first record is an export's
    plain = [{"id": "p1", "result": {"a": 1}}, {"id": "p2", "_source": {"b": 2}, "_id": "x"}]
    (tmp_path / "plain.ndjson").write_bytes(b"\n".join(map(orjson.dumps, plain)))
    assert [r for _, r, _ in iter_records(tmp_path / "plain.ndjson")] == plain


def test_a_csv_export_is_read_as_records_of_its_columns(tmp_path: Path) -> None:
    trail = {"eventID": "e1", "eventTime": "2024-03-04T10:00:00Z", "eventName": "GetObject", "note": 'a "b", c'}
    secure = "Mar  4 11:00:05 web-1 sudo:    alice : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/ls"
    windows = "03/04/2024 10:00:07 AM\nLogName=Security\nEventCode=4624\nAccount_Name=alice"
    export = tmp_path / "splunk.csv"
    with export.open("w", newline="") as out:  # as Splunk writes its results: CR LF, a _raw quoted across lines
        writer = csv.writer(out)
        writer.writerow(["_time", "host", "_raw", "EventCode"])
        writer.writerow(["2024-03-04T10:00:00.000+0000", "aws", json.dumps(trail), ""])
        writer.writerow(["2024-03-04T10:00:05.000+0000", "web-1", secure, ""])
        writer.writerow(["2024-03-04T10:00:07.000+0000", "ws-1", windows, "4624"])
    rows = list(iter_records(export))
    assert [(number, warning) for number, _, warning in rows] == [(2, None), (3, None), (4, None)]
    assert rows[0][1] == trail  # the vendor's record, as the Splunk connector reads it
    assert rows[1][1]["command"] == "/bin/ls" and rows[1][1]["time"] == "2024-03-04T10:00:05.000Z"
    assert rows[2][1] == {"_time": "2024-03-04T10:00:07.000+0000", "host": "ws-1", "_raw": windows, "EventCode": "4624"}
    table = tmp_path / "table.csv.gz"
    table.write_bytes(
        gzip.compress(
            b"@timestamp,user.name,user.domain,event.action,,user\r\n"
            b"2024-03-04T10:00:00Z,alice,CORP,logon,x,\r\n"
            b"2024-03-04T10:00:01Z,bob,,logoff\r\n"
            b"2024-03-04T10:00:02Z,carol,,logon,y,clash,extra\r\n"
        )
    )
    assert list(iter_records(table)) == [
        (
            2,
            {
                "@timestamp": "2024-03-04T10:00:00Z",
                "user": {"name": "alice", "domain": "CORP"},
                "event": {"action": "logon"},
                "column5": "x",
            },
            None,
        ),
        (
            3,
            {"@timestamp": "2024-03-04T10:00:01Z", "user": {"name": "bob"}, "event": {"action": "logoff"}},
            "line 3: 4 fields where the header names 6",
        ),
        (
            4,
            {
                "@timestamp": "2024-03-04T10:00:02Z",
                "user": "clash",
                "user.name": "carol",
                "event": {"action": "logon"},
                "column5": "y",
                "column7": "extra",
            },
            "line 4: 7 fields where the header names 6",
        ),
    ]


def test_a_log_analytics_csv_export_from_the_azure_portal_is_read_with_its_times(tmp_path: Path) -> None:
    """The portal names a time column shown in UTC `<name> [UTC]` and shows it month first on a 12-hour clock."""
    export = tmp_path / "query_data.csv"
    export.write_text(
        '"TimeGenerated [UTC]","CreatedDateTime [UTC]",Type,UserPrincipalName,Status\n'
        '"2/25/2025, 9:19:25.391 AM","2/25/2025, 12:00:00 AM",SigninLogs,ann@corp.example,"{""errorCode"":0}"\n'
        '"12/31/2025, 11:59:59.1234567 PM",,SigninLogs,bob@corp.example,\n'
        '"31/12/2025 23:59:59","13/1/2025, 1:00:00 PM",SigninLogs,cy@corp.example,\n'
    )
    assert [record for _, record, _ in iter_records(export)] == [
        {
            "TimeGenerated": "2025-02-25T09:19:25.391000Z",
            "CreatedDateTime": "2025-02-25T00:00:00Z",
            "Type": "SigninLogs",
            "UserPrincipalName": "ann@corp.example",
            "Status": '{"errorCode":0}',
        },
        {"TimeGenerated": "2025-12-31T23:59:59.123456Z", "Type": "SigninLogs", "UserPrincipalName": "bob@corp.example"},
        {  # another locale's form, or no such date: kept as the text it is, not guessed at
            "TimeGenerated": "31/12/2025 23:59:59",
            "CreatedDateTime": "13/1/2025, 1:00:00 PM",
            "Type": "SigninLogs",
            "UserPrincipalName": "cy@corp.example",
        },
    ]


async def test_a_csv_column_named_with_thousands_of_dots_is_stored_and_read_back(
    services: Services, tmp_path: Path
) -> None:
    deep, shallow = ".".join(["a"] * 3000), ".".join(["b"] * 32)
    path = tmp_path / "deep.csv"
    path.write_text(f"@timestamp,{deep},{shallow}\n2024-03-04T10:00:00Z,x,y\n")
    [(_, record, _)] = iter_records(path)
    assert record[deep] == "x" and "a" not in record  # a name of more parts than any field's stays a name
    node = record
    for _ in range(31):
        node = node["b"]
    assert node == {"b": "y"}
    connector = FileConnector("deep", "deep", SourceSettings(format="generic"), [path])
    assert (await services.pipeline.replay(connector, close=True)).stored == 1  # and scoring reads the store back
    assert (await stored_raw(services, "deep")) == [record]


def test_a_log_analytics_or_data_explorer_answer_is_read_as_its_tables_rows(tmp_path: Path) -> None:
    rows = [
        ["2024-03-04T09:00:00Z", 4624, "WS-1.corp.example", "alice", 2, '{"Reason": "unlock"}'],
        ["2024-03-04T09:05:00Z", 4625, "WS-2.corp.example", "bob", 3, ""],
    ]
    names = ["TimeGenerated", "EventID", "Computer", "TargetUserName", "LogonType", "AdditionalFields"]
    kinds = ["datetime", "int", "string", "string", "int", "dynamic"]
    records = [
        {**dict(zip(names[:5], rows[0][:5], strict=True)), "AdditionalFields": {"Reason": "unlock"}},
        dict(zip(names[:5], rows[1][:5], strict=True)),  # an empty value left out
    ]
    sentinel = {
        "tables": [
            {
                "name": "PrimaryResult",
                "columns": [{"name": n, "type": k} for n, k in zip(names, kinds, strict=True)],
                "rows": rows,
            }
        ]
    }
    explorer = {
        "Tables": [
            {
                "TableName": "Table_0",
                "Columns": [
                    {"ColumnName": n, "DataType": k.capitalize(), "ColumnType": k}
                    for n, k in zip(names, kinds, strict=True)
                ],
                "Rows": rows,
            }
        ]
    }
    backwards = {"tables": [{"rows": rows, "name": "PrimaryResult", "columns": sentinel["tables"][0]["columns"]}]}
    for name, answer in (("sentinel", sentinel), ("explorer", explorer), ("backwards", backwards)):
        path = tmp_path / f"{name}.json"
        path.write_bytes(orjson.dumps(answer, option=orjson.OPT_INDENT_2))
        assert [r for _, r, _ in iter_records(path)] == records, name
        assert list(parse_stream(pieces(path.read_bytes(), 7), path)) == list(iter_records(path)), name
    windows = SourceSettings(format="windows")
    events = [to_event(r, windows, "sentinel") for _, r, _ in iter_records(tmp_path / "sentinel.json")]
    assert [(e.actor, e.action, e.target) for e in events] == [
        ("alice", "4624", "WS-1.corp.example"),
        ("bob", "4625", "WS-2.corp.example"),
    ]
    odd = tmp_path / "odd.json"  # what is no table, and a row that is no list, are kept and said so by the reader
    odd.write_bytes(orjson.dumps({"tables": [7, {"columns": [{"name": "a"}], "rows": [["x"], "y"]}]}))
    assert [r for _, r, _ in iter_records(odd)] == [7, {"a": "x"}, "y"]


def test_a_document_yields_its_first_record_before_the_rest_is_read(tmp_path: Path) -> None:
    records = [{"eventID": f"e{i}", "eventName": "GetObject", "pad": "x" * 200} for i in range(20_000)]
    for document in (records, {"Records": records}):
        data = orjson.dumps(document)  # one line of 4.7 MB, as CloudTrail writes its files
        pulled: list[int] = []
        rows = parse_stream(pieces(data, 4096, pulled), tmp_path / "trail.json")
        assert next(rows)[1] == records[0]
        # at most the first-line look-ahead (1 MiB) is read, not the whole file
        assert len(pulled) * 4096 <= (1 << 20) + 8192 < len(data) // 4
        assert sum(1 for _ in rows) == len(records) - 1


def test_a_large_gzip_file_is_read_in_bounded_memory(tmp_path: Path) -> None:
    record = {"eventName": "GetObject", "requestParameters": {"bucketName": "b", "key": "k" * 300}}
    lines = tmp_path / "big.ndjson.gz"
    trail = tmp_path / "big.json.gz"
    count = 60_000  # ~25 MB decompressed each
    with gzip.open(lines, "wb", compresslevel=1) as out:
        for i in range(count):
            out.write(orjson.dumps({**record, "eventID": str(i)}) + b"\n")
    with gzip.open(trail, "wb", compresslevel=1) as out:
        out.write(b'{"Records": [')
        for i in range(count):
            out.write((b"," if i else b"") + orjson.dumps({**record, "eventID": str(i)}))
        out.write(b"]}")
    for path in (lines, trail):
        tracemalloc.start()
        try:
            seen = sum(1 for _ in iter_records(path))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert seen == count
        assert peak < 12 * 1024 * 1024, (path.name, peak)  # a few chunks, far below the 25 MB of content


def test_a_truncated_document_is_an_error_whatever_the_chunks(tmp_path: Path) -> None:
    for data in (b'[{"a": 1}, 12', b'{"Records": [{"a": 1}', b'{"a": 12', b"[1, 2"):
        for size in (1, 3, len(data)):
            with pytest.raises(CustodesError, match=r"invalid JSON"):
                list(parse_stream(pieces(data, size), tmp_path / "cut.json"))


def test_a_line_without_an_end_past_the_longest_record_is_refused_not_read_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`custodes replay /dev/zero` once read on until memory ran out: NUL bytes make one line that never ends."""
    monkeypatch.setattr(files, "LONGEST_RECORD", 3 << 20)
    path = tmp_path / "binary.ndjson"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n' + b"\x00" * (4 << 20) + b"\n{}\n")
    read: list[Any] = []
    with pytest.raises(CustodesError, match=r"binary\.ndjson: line 3: more than 3 MiB without a line end: not a log"):
        read.extend(record for _, record, _ in iter_records(path))
    assert read == [{"a": 1}, {"a": 2}]
    path.write_bytes(b'{"a": 1}\n{"b": "' + b"x" * (2 << 20) + b'"}\n')  # a long record within the bound is read
    assert [len(str(record)) for _, record, _ in iter_records(path)] == [8, (2 << 20) + 9]


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_records_nested_as_deep_as_a_decoder_allows_are_stored_and_served(
    tmp_path: Path, services: Services
) -> None:
    """orjson writes 254 levels and the standard library stops at Python's recursion limit; a JSON line may nest
    1,024 levels. Such a record (a hostile one, in a file the tail reads) is stored, identified and served, and the
    records after it are not held up."""
    path = tmp_path / "deep.ndjson"
    records = [
        {"user": {"name": f"u{depth}"}, "@timestamp": "2026-11-19T02:00:00Z", "deep": nested(depth, depth)}
        for depth in (300, 1020)
    ]
    records.append({"user": {"name": "after"}, "@timestamp": "2026-11-19T02:00:01Z"})
    path.write_bytes(b"\n".join(json_text(r).encode() for r in records) + b"\n")
    source = SourceSettings(format="generic")
    events, _ = await drain(FileConnector("replay", "generic", source, [path]))
    assert len({e.id for e in events}) == 3 and [e.actor for e in events] == ["u300", "u1020", "after"]
    assert stable_id(records[1]) == stable_id(orjson.loads(json_text(records[1], sort_keys=True)))
    assert (await services.pipeline.replay(FileConnector("replay", "generic", source, [path]))).stored == 3
    written = {json_text(r, sort_keys=True) for r in records}  # `==` on the records would recurse 1,020 levels
    assert {json_text(r, sort_keys=True) for r in await stored_raw(services, "generic")} == written
    body = orjson.loads(json_response({"events": records}).body)  # type: ignore[arg-type]
    assert {json_text(r, sort_keys=True) for r in body["events"]} == written
    assert orjson.loads(json_text({"big": 2**70, "b": [1, {"c": None}]})) == {"big": 2**70, "b": [1, {"c": None}]}
