"""Windows Security events read for behaviour scoring and mapped to the envelope, in every shape a SOC holds them:
evtx JSON, Splunk's Windows add-on (XML and classic fields, over the Splunk connector), Sentinel's `SecurityEvent`
and a forwarder's JSON."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from connector_support import poll, services, stored_raw
from custodes.config import ScoringSettings
from custodes.connectors.envelope import to_event
from custodes.connectors.windows import flatten, security_fields
from custodes.detections.scoring.engine import ScoringEngine
from custodes.detections.scoring.features import Extractor, record_time
from custodes.detections.scoring.identity import IdentityResolver, Person
from custodes.detections.scoring.machines import Machines
from custodes.detections.scoring.observation import ARRIVED, LEFT, Observation
from custodes.detections.scoring.risk import DayScore
from custodes.detections.scoring.service import ScoringService
from custodes.model import Event, LogSource, Outcome
from custodes.sandbox import splunk as sim
from custodes.sandbox.server import running
from custodes.services import Services
from custodes.sources import SourceSettings
from custodes.store import Store
from test_connector_splunk import connector

__all__ = ["services"]

WINDOWS = SourceSettings(format="windows")
REGRESSION = Path(__file__).resolve().parents[2] / "shared" / "sigmahq" / "regression_data" / "rules" / "windows"
EXPLICIT_LOGON = (
    REGRESSION
    / "builtin/security/win_security_explicit_credential_local_logon/e3c6d245-7b8f-4e2a-c17f-a9d0e5b38f62.json"
)
SUCCESS, FAILURE = "0x8020000000000000", "0x8010000000000000"
T0 = datetime(2024, 3, 4, 9, tzinfo=UTC)


def evtx(code: int, data: dict[str, Any], *, computer: str = "WS-ALICE.corp.example", **system: Any) -> dict[str, Any]:
    """An event as evtx_dump renders it (SigmaHQ's regression data), `system` added to or replacing its System."""
    return {
        "Event": {
            "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
            "System": {
                "Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing"}},
                "EventID": code,
                "Keywords": FAILURE if code == 4625 else SUCCESS,
                "TimeCreated": {"#attributes": {"SystemTime": "2024-03-04T09:15:02.123456Z"}},
                "EventRecordID": 7001,
                "Channel": "Security",
                "Computer": computer,
                **system,
            },
            "EventData": data,
        }
    }


def flat(code: int | str, **fields: Any) -> dict[str, Any]:
    """An event as Sentinel's `SecurityEvent` or Splunk's `XmlWinEventLog` fields hold it."""
    return {"EventID": code, "Computer": "WS-ALICE", "TimeGenerated": "2024-03-04T09:15:02Z", **fields}


def read(raw: dict[str, Any]) -> Observation | None:
    return Extractor(ScoringSettings()).extract(raw)


LOGON_SHAPES = {
    "evtx JSON": evtx(4624, {"SubjectUserName": "WS-ALICE$", "TargetUserName": "alice", "LogonType": 2}),
    "Sentinel or Splunk XML fields": flat(4624, SubjectUserName="-", TargetUserName="alice", LogonType=2),
    "Splunk classic fields": {
        "EventCode": "4624",
        "ComputerName": "WS-ALICE",
        "Logon_Type": "10",
        "Account_Name": ["WS-ALICE$", "alice"],
        "_time": "2024-03-04T09:15:02.000+00:00",
    },
    "a forwarder's JSON": {"event_id": 4624, "computer": "WS-ALICE", "user": "CORP\\alice", "logon_type": 11},
}


@pytest.mark.parametrize("shape", LOGON_SHAPES)
def test_an_interactive_logon_puts_the_person_at_the_machine_in_every_shape(shape: str) -> None:
    obs = read(LOGON_SHAPES[shape])
    assert obs is not None
    assert obs.actor.rpartition("\\")[2] == "alice", "the account logged on, not the process that logged it on"
    host = obs.host
    assert host is not None and host.startswith("WS-ALICE")
    assert (obs.features, obs.seen) == ([], [("host", host)])


@pytest.mark.parametrize("kind", [3, 4, 5, 8, "3"])
def test_network_batch_and_service_logons_put_no_one_at_the_machine(kind: int | str) -> None:
    obs = read(flat(4624, TargetUserName="alice", LogonType=kind, Computer="FILESRV01"))
    assert obs == Observation("alice", [], [], None), "active, but the file server is no machine of theirs"


def test_logoffs_locks_and_unlocks_are_at_the_machine_and_a_refused_logon_is_a_failed_sign_in() -> None:
    for code in (4634, 4647, 4800, 4801):
        obs = read(flat(code, TargetUserName="alice", LogonType=2 if code == 4634 else None))
        assert obs is not None and (obs.actor, obs.host) == ("alice", "WS-ALICE"), code
        assert obs.presence == (LEFT if code in (4634, 4647) else ARRIVED), "a logoff: the person left the machine"
    for action, left in (("logged-out", True), ("log-off", True), ("logged-in", False), ("logon", False)):
        shipped = {"event": {"category": ["authentication"], "action": action}, "host": {"name": "WS-ALICE"}}
        obs = read({**shipped, "user": {"name": "alice"}, "winlog": {"channel": "Security"}})
        assert obs is not None and obs.presence == (LEFT if left else ARRIVED) and obs.host == "WS-ALICE", action
        other = read({**shipped, "user": {"name": "alice"}})  # another endpoint's logons: no drive names only a machine
        assert other is not None and other.presence == 0 and other.host == "WS-ALICE", action
    remote = {"channel": "Security", "logon": {"type": "RemoteInteractive"}}
    shipped = {"event": {"category": ["authentication"], "action": "logged-in"}, "host": {"name": "WS-ALICE"}}
    obs = read({**shipped, "user": {"name": "alice"}, "winlog": remote})
    assert obs is not None and obs.host == "WS-ALICE" and obs.presence == 0, (
        "a remote desktop: someone else may sit there"
    )
    desktop = read(flat(4624, TargetUserName="alice", LogonType=10))
    assert desktop is not None and desktop.host == "WS-ALICE" and desktop.presence == 0
    refused = read(
        evtx(4625, {"SubjectUserName": "-", "TargetUserName": "alice", "LogonType": 3, "Status": "0xc000006d"})
    )
    assert refused == Observation("alice", [("signin_failed", 1.0)], [])


def test_a_file_written_to_removable_storage_is_a_usb_copy_on_that_machine() -> None:
    write = {"SubjectUserName": "alice", "ObjectName": "\\Device\\HarddiskVolume7\\plans.xlsx", "AccessMask": "0x2"}
    obs = read(evtx(4663, write, Task=12804))
    assert obs == Observation("alice", [("usb_files", 1.0)], [], "WS-ALICE.corp.example")
    classic = {"EventCode": "4663", "ComputerName": "WS-ALICE", "Account_Name": "alice", "Access_Mask": "0x6"}
    assert read({**classic, "TaskCategory": "Removable Storage"}) == Observation(
        "alice", [("usb_files", 1.0)], [], "WS-ALICE"
    )
    assert read(evtx(4663, {**write, "AccessMask": "0x1"}, Task=12804)) is None, (
        "a read from the stick moves nothing out"
    )
    assert read(evtx(4663, write, Task=12800)) is None, "a file system access, not removable storage"


def test_refused_object_access_is_access_denied_only_as_an_audit_failure() -> None:
    handle = {"SubjectUserName": "alice", "ObjectName": "C:\\HR\\salaries.xlsx"}
    assert read(evtx(4656, handle, Keywords=FAILURE)) == Observation("alice", [("access_denied", 1.0)], [])
    assert read(evtx(4656, handle)) is None
    share = flat(5145, SubjectUserName="alice", Keywords="Audit Failure")
    assert read(share) == Observation("alice", [("access_denied", 1.0)], [])
    nxlog = flat(5145, SubjectUserName="alice", Keywords=-9214364837600034816)  # NXLog: signed, audit success
    assert read(nxlog) is None


def test_administration_is_the_administrators_not_the_groups() -> None:
    added = flat(4732, SubjectUserName="bob", TargetUserName="Administrators", MemberName="CN=alice,DC=corp")
    assert read(added) == Observation("bob", [("privilege_grant", 1.0)], [])
    assert read(flat(1102, SubjectUserName="bob")) == Observation("bob", [("sensitive_api", 1.0)], [])
    assert read({**added, "Keywords": FAILURE}) is None
    assert read(flat(4688, SubjectUserName="bob", NewProcessName="C:\\Windows\\notepad.exe")) is None, "not read"
    assert read(flat(4624, TargetUserName="-", LogonType=2)) is None, "Windows' placeholder names no one"


def test_the_time_and_an_event_id_with_its_qualifiers_are_read() -> None:
    nested = evtx(
        4624, {"TargetUserName": "alice", "LogonType": 2}, EventID={"#attributes": {"Qualifiers": 0}, "#text": 4624}
    )
    assert security_fields(nested) is not None and flatten(nested)["EventID"] == 4624
    assert read(nested) is not None
    stamp = datetime(2024, 3, 4, 9, 15, 2, tzinfo=UTC)
    assert record_time(nested) == stamp.replace(microsecond=123456)
    assert record_time(flat(4624)) == stamp
    assert record_time(LOGON_SHAPES["Splunk classic fields"]) == stamp


def test_the_envelope_of_a_real_evtx_record() -> None:
    """SigmaHQ's regression event for a logon with explicit credentials: the subject acted, on the target account."""
    record = orjson.loads(EXPLICIT_LOGON.read_bytes())
    event = to_event(record, WINDOWS, "winsec")
    assert (event.actor, event.action, event.target) == ("xodih", "4648", "testuser")
    assert event.time == datetime(2026, 7, 17, 14, 18, 34, 72213, tzinfo=UTC)
    assert event.outcome is Outcome.SUCCESS and event.src_ip is None and not event.warnings
    assert event.logsource == LogSource("windows", "security")
    assert to_event(record, WINDOWS, "winsec").id == event.id, "the record id on its machine: the same event, once"


def test_the_envelope_of_flat_logons() -> None:
    logon = to_event(
        flat(4624, TargetUserName="alice", LogonType=10, IpAddress="10.1.2.3", EventRecordID=5), WINDOWS, "w"
    )
    assert (logon.actor, logon.action, logon.target, logon.src_ip) == ("alice", "4624", "WS-ALICE", "10.1.2.3")
    refused = to_event(flat(4625, TargetUserName="mallory", IpAddress="-"), WINDOWS, "w")
    assert refused.outcome is Outcome.FAILURE and refused.src_ip is None
    unreadable = to_event({**flat(4624, TargetUserName="alice"), "TimeGenerated": "yesterday"}, WINDOWS, "w")
    assert unreadable.warnings == ["time: unreadable time 'yesterday'; using ingestion time"]
    nothing = to_event({"Message": "not an event"}, WINDOWS, "w")
    assert (nothing.actor, nothing.action, nothing.outcome) == (None, None, Outcome.UNKNOWN)


async def test_windows_logons_pulled_from_splunk_are_scored(services: Services) -> None:
    """Splunk's Windows add-on, classic `WinEventLog:Security` events with their extracted fields (a multi-valued
    `Account_Name`), pulled by the Splunk connector over HTTP into a `windows` source and read by scoring."""
    state = sim.SplunkState()
    start = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    for n, (kind, account) in enumerate([("2", "alice"), ("3", "bob"), ("10", "carol")]):
        at = start + timedelta(minutes=n)
        text = f"03/01/2024 12:0{n}:00 PM\nLogName=Security\nEventCode=4624\nComputerName=WS-{n}"
        state.index(
            at,
            text,
            index="wineventlog",
            sourcetype="WinEventLog:Security",
            EventCode="4624",
            ComputerName=f"WS-{n}",
            Logon_Type=kind,
            Account_Name=[f"WS-{n}$", account],
        )
    async with running(sim.create_app(state)) as url:
        pulled = connector(url, source=WINDOWS, search="search index=wineventlog EventCode=4624")
        assert await poll(services, pulled) == 3
    raws = sorted(await stored_raw(services, "splunk"), key=lambda r: str(r["_time"]))
    events = [to_event(raw, WINDOWS, "splunk") for raw in raws]
    assert [(e.actor, e.action, e.target) for e in events] == [
        ("alice", "4624", "WS-0"),
        ("bob", "4624", "WS-1"),
        ("carol", "4624", "WS-2"),
    ]
    assert [e.time.minute for e in events] == [0, 1, 2], "Splunk's _time"
    observed = [read(raw) for raw in raws]
    assert [(o.actor, o.host) for o in observed if o] == [("alice", "WS-0"), ("bob", None), ("carol", "WS-2")]


@pytest.mark.parametrize("act", ["files written (4663)", "a drive recognised (6416)"])
def test_a_colleagues_machine_used_to_copy_files_to_usb_ranks_first(act: str) -> None:
    """Three weeks of Sentinel `SecurityEvent` rows of twenty people at their own desks (logons, logoffs, locks,
    the odd mistyped password, network logons to the file server); then one person logs on at a colleague's desk,
    the day the colleague is away, and copies files to a stick there: known from the files written, or only from
    the drive the machine recognised, which names no one (the person at the machine is given it)."""
    people = [Person(id=f"u{i}@corp.example", timezone="UTC", hosts=[f"WS-{i}"]) for i in range(20)]
    settings = ScoringSettings(pseudonymise=False, warmup_days=5)
    rankings: dict[date, list[DayScore]] = {}
    resolver = IdentityResolver(people, settings.identities)
    engine = ScoringEngine(settings, resolver, org_domains=["corp.example"], on_ranking=rankings.__setitem__)
    rng = random.Random(3)
    rows: list[dict[str, Any]] = []

    def row(when: datetime, code: int, host: str, **fields: Any) -> None:
        """A row of the machine by its full name in the domain (the directory lists short names)."""
        rows.append(flat(code, Computer=f"{host}.corp.example", TimeGenerated=when.isoformat(), **fields))

    thief, owner, last = 7, 3, 20
    for day in range(last + 1):
        for i in range(20):
            if day == last and i == owner:
                continue
            start = T0 + timedelta(days=day, minutes=rng.randint(0, 40))
            row(start, 4624, f"WS-{i}", TargetUserName=f"u{i}", LogonType=2)
            row(start + timedelta(minutes=5), 4624, "FILESRV01", TargetUserName=f"u{i}", LogonType=3)
            if rng.random() < 0.2:
                row(start - timedelta(minutes=1), 4625, f"WS-{i}", TargetUserName=f"u{i}", LogonType=2)
            row(start + timedelta(hours=3), 4800, f"WS-{i}", TargetUserName=f"u{i}")
            row(start + timedelta(hours=4), 4801, f"WS-{i}", TargetUserName=f"u{i}")
            row(start + timedelta(hours=8), 4647, f"WS-{i}", TargetUserName=f"u{i}")
    away = T0 + timedelta(days=last, hours=4)
    row(away, 4624, f"WS-{owner}", TargetUserName=f"u{thief}", LogonType=2)
    if act.endswith("(6416)"):
        row(away + timedelta(minutes=9), 6416, f"WS-{owner}", SubjectUserName=f"WS-{owner}$", ClassName="DiskDrive")
    for k in range(30 if act.endswith("(4663)") else 0):
        target = f"\\Device\\HarddiskVolume9\\export\\{k}.docx"
        row(
            away + timedelta(minutes=10, seconds=k),
            4663,
            f"WS-{owner}",
            SubjectUserName=f"u{thief}",
            Task=12804,
            ObjectName=target,
            AccessMask="0x2",
        )
    for n, raw in enumerate(sorted(rows, key=lambda r: str(r["TimeGenerated"]))):
        event = to_event(raw, WINDOWS, "winsec")
        assert event.actor and not event.warnings
        engine.observe(Event(f"w{n}", event.time, "winsec", LogSource(), raw))
    engine.flush()
    ranking = rankings[(T0 + timedelta(days=last)).date()]
    top = ranking[0]
    assert top.entity == f"u{thief}@corp.example"
    assert {"other_host", "usb_files" if act.endswith("(4663)") else "usb"} <= {c.feature for c in top.contributions}


def test_a_machine_is_owned_by_its_name_with_or_without_its_domain() -> None:
    people = [
        Person(id="alice@corp.example", hosts=["WS-ALICE"]),
        Person(id="bob@corp.example", hosts=["ws-bob.corp.example", "10.1.2.3"]),
    ]
    resolver = IdentityResolver(people, ScoringSettings(pseudonymise=False).identities)
    alice, bob = resolver.resolve("alice")[0], resolver.resolve("bob")[0]
    assert resolver.host_owner("ws-alice.corp.example") == alice == resolver.host_owner("WS-ALICE")
    assert resolver.host_owner("WS-BOB") == bob == resolver.host_owner("ws-bob.other.example")
    assert resolver.host_owner("10.1.2.3") == bob and resolver.host_owner("10.9.9.9") is None, "addresses exactly"
    assert resolver.host_owner("10") is None


def defender(action: str, logon: str, account: str = "alice") -> dict[str, Any]:
    """A `DeviceLogonEvents` row as advanced hunting or Sentinel return it."""
    return {
        "Timestamp": "2024-03-04T09:15:02Z",
        "DeviceId": "a1b2c3",
        "DeviceName": "ws-alice.corp.example",
        "ActionType": action,
        "LogonType": logon,
        "AccountDomain": "corp",
        "AccountName": account,
        "Protocol": "Negotiate",
    }


@pytest.mark.parametrize(
    ("action", "logon", "expected"),
    [
        (
            "LogonSuccess",
            "Interactive",
            Observation("alice", [], [("host", "ws-alice.corp.example")], "ws-alice.corp.example", ARRIVED),
        ),
        (
            "LogonSuccess",
            "Remote interactive",  # used from elsewhere: no arrival at the machine
            Observation("alice", [], [("host", "ws-alice.corp.example")], "ws-alice.corp.example"),
        ),
        ("LogonSuccess", "Network", Observation("alice", [], [])),
        ("LogonSuccess", "Batch", Observation("alice", [], [])),
        ("LogonFailed", "Interactive", Observation("alice", [("signin_failed", 1.0)], [])),
        ("LogonAttempted", "Interactive", None),
    ],
)
def test_defender_device_logons_as_windows_logons(action: str, logon: str, expected: Observation | None) -> None:
    row = defender(action, logon)
    assert read(row) == expected
    streamed = {
        "time": "2024-03-04T09:15:03Z",
        "tenantId": "t",
        "operationName": "Publish",
        "category": "AdvancedHunting-DeviceLogonEvents",
        "properties": row,
    }
    assert read(streamed) == expected, "the streaming API's record, the row in its properties"
    assert record_time(row) == datetime(2024, 3, 4, 9, 15, 2, tzinfo=UTC)
    assert read(defender(action, logon, account="")) is None


XML_LOGON = (
    "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><Provider "
    "Name='Microsoft-Windows-Security-Auditing' Guid='{54849625-5478-4994-a5ba-3e3b0328c30d}'/><EventID>4624</EventID>"
    "<Version>2</Version><Level>0</Level><Task>12544</Task><Opcode>0</Opcode><Keywords>0x8020000000000000</Keywords>"
    "<TimeCreated SystemTime='2024-03-01T12:00:00.1234567Z'/><EventRecordID>99120</EventRecordID><Correlation/>"
    "<Execution ProcessID='712' ThreadID='3120'/><Channel>Security</Channel><Computer>WS-DAN.corp.example</Computer>"
    "<Security/></System><EventData><Data Name='SubjectUserName'>WS-DAN$</Data><Data Name='TargetUserName'>"
    "d&amp;an</Data><Data Name='TargetDomainName'>CORP</Data><Data Name='LogonType'>2</Data>"
    "<Data Name='IpAddress'>127.0.0.1</Data><Data Name='WorkstationName'>W&#x53;&#45;1&apos;&bogus;</Data>"
    "<Data Name='LogonProcessName'/></EventData></Event>"
)


def test_a_splunk_result_with_only_its_xml_is_read_from_the_xml() -> None:
    """A search head without the Windows add-on extracts no fields: the event is read from `_raw`."""
    result = {"_time": "2024-03-01T12:00:00.000+00:00", "_raw": XML_LOGON, "sourcetype": "XmlWinEventLog:Security"}
    obs = read(result)
    assert obs == Observation("d&an", [], [("host", "WS-DAN.corp.example")], "WS-DAN.corp.example", ARRIVED)
    event = to_event(result, WINDOWS, "splunk")
    assert (event.actor, event.action, event.target, event.src_ip) == ("d&an", "4624", "WS-DAN.corp.example", None)
    base = security_fields(result)
    assert base is not None and base["TimeCreated"] == "2024-03-01T12:00:00.1234567Z"
    assert base["WorkstationName"] == "WS-1'&bogus;", "XML's entities and character references, nothing else"
    assert security_fields({**result, "TargetUserName": "dan"}) == {**base, "TargetUserName": "dan"}, (
        "a field the search head extracted wins"
    )
    assert read({"_raw": "<Event><System></System></Event>"}) is None, "no event id"
    assert read({"_raw": "Mar  1 12:00:00 host sshd[1]: hello"}) is None


def test_malformed_windows_records_are_read_without_error() -> None:
    """What a hostile or broken sender may put where the renderer puts elements: nothing raises; what can be read
    is."""
    deep: dict[str, Any] = {"TargetUserName": "alice"}
    for _ in range(1000):  # as deep as a JSON decoder gives (orjson: 1,024 levels)
        deep = {"Nested": deep}
    broken: list[dict[str, Any]] = [
        {"Event": {"System": {"EventID": 4624, "TimeCreated": {"#attributes": "noon"}}, "EventData": "text"}},
        {"Event": {"System": {"EventID": 4624, "Provider": "x", "Computer": "WS-1"}, "EventData": deep}},
        {"Event": {"System": {"EventID": {"#text": "x"}}}},
        {"EventID": "4624", "Keywords": "0xZZ", "AccessMask": "rw", "TargetUserName": ["a", 1], "LogonType": [2]},
        {"_raw": "<Event" + "<Data Name='a'>" * 10000},
    ]
    for record in broken:
        read(record)
        record_time(record)
        assert to_event(record, WINDOWS, "w").source == "w"
    assert read(broken[1]) == Observation("alice", [], [("host", "WS-1")], "WS-1", ARRIVED), "the leaf, however deep"


def test_a_removable_storage_write_shipped_by_winlogbeat_is_a_usb_copy() -> None:
    """The same 4663 as Winlogbeat or Elastic Agent ship it (ECS, its task and mask under `winlog`; the action the
    task's name, or one a pipeline gave it): a write counts, a read does not, and neither is a device connected."""
    shipped = {
        "@timestamp": "2024-03-04T09:15:02.123Z",
        "event": {"code": "4663", "category": ["file"], "type": ["access"], "action": "Removable Storage"},
        "host": {"name": "WS-ALICE"},
        "user": {"name": "alice", "domain": "CORP"},
        "file": {"path": "E:\\\\export\\\\plans.xlsx"},
        "winlog": {
            "channel": "Security",
            "event_id": "4663",
            "task": "Removable Storage",
            "event_data": {"SubjectUserName": "alice", "ObjectName": "\\\\Device\\\\HarddiskVolume7\\\\plans.xlsx",
                           "AccessMask": "0x2"},
        },
    }  # fmt: skip
    assert read(shipped) == Observation("alice", [("usb_files", 1.0)], [], "WS-ALICE")
    reading = {**shipped, "winlog": {**shipped["winlog"], "event_data": {"AccessMask": "0x1"}}}  # type: ignore[dict-item]
    assert read(reading) == Observation("alice", [], [], "WS-ALICE"), "a read from the stick"
    event = {"code": "4663", "category": ["file"], "action": "object-access-attempted"}
    assert read({**shipped, "event": event}) == Observation("alice", [("usb_files", 1.0)], [], "WS-ALICE")
    assert read({**reading, "event": event}) == Observation("alice", [], [], "WS-ALICE")


def test_another_accounts_credentials_used_is_sensitive() -> None:
    """SigmaHQ's regression event for 4648: `xodih` logged on with `testuser`'s credentials."""
    record = orjson.loads(EXPLICIT_LOGON.read_bytes())
    assert read(record) == Observation("xodih", [("sensitive_api", 1.0)], [])
    own = flat(4648, SubjectUserName="alice", TargetUserName="CORP\\Alice", TargetServerName="FILESRV01")
    assert read(own) is None, "one's own credentials given again (a mapped drive)"
    assert read(flat(4648, SubjectUserName="alice", TargetUserName="-")) is None


RECOGNISED = {  # event 6416 as Windows logs it: the subject is the machine's own account (SYSTEM's SID)
    "SubjectUserSid": "S-1-5-18",
    "SubjectUserName": "WS-ALICE$",
    "SubjectDomainName": "CORP",
    "SubjectLogonId": "0x3e7",
    "DeviceId": "USBSTOR\\DISK&VEN_SANDISK&PROD_ULTRA&REV_1.00\\4C530001",
    "DeviceDescription": "SanDisk Ultra USB Device",
    "ClassId": "{4d36e967-e325-11ce-bfc1-08002be10318}",
    "ClassName": "DiskDrive",
}
AT_ALICES = Observation("", [("usb", 1.0)], [], "WS-ALICE.corp.example")


def test_a_storage_device_recognised_names_the_machine_not_a_person() -> None:
    """6416 (evtx, Sentinel or Splunk fields, Winlogbeat's ECS): a disk drive, portable device or CD drive is a
    removable media connection on the machine, for whoever is at it; a keyboard, a hub or the stick's volume is
    nothing; an account that is a person's, where a forwarder names one, is that person's."""
    assert read(evtx(6416, RECOGNISED)) == AT_ALICES
    assert read(evtx(6416, {**RECOGNISED, "ClassName": None})) == AT_ALICES, "known by its class id"
    assert read(evtx(6416, {**RECOGNISED, "ClassName": "WPD", "ClassId": "x"})) is not None, "a phone"
    for other in ("HIDClass", "USB", "Volume"):
        assert read(evtx(6416, {**RECOGNISED, "ClassName": other, "ClassId": "{745a17a0}"})) is None, other
    sentinel = flat(6416, Computer="WS-ALICE.corp.example", **RECOGNISED)
    assert read(sentinel) == AT_ALICES
    for machine in ("SYSTEM", "NT AUTHORITY\\SYSTEM", "LOCAL SERVICE", "-"):
        assert read({**sentinel, "SubjectUserName": machine}) == AT_ALICES, machine
    assert read({**sentinel, "SubjectUserName": "alice"}) == Observation(
        "alice", [("usb", 1.0)], [], "WS-ALICE.corp.example"
    )
    shipped = {
        "@timestamp": "2024-03-04T09:15:02.123Z",
        "event": {"code": "6416", "kind": "event", "provider": "Microsoft-Windows-Security-Auditing"},
        "host": {"name": "WS-ALICE.corp.example"},
        "user": {"name": "WS-ALICE$", "domain": "CORP", "id": "S-1-5-18"},
        "winlog": {"channel": "Security", "event_id": "6416", "event_data": RECOGNISED},
    }
    assert read(shipped) == AT_ALICES
    assert read({**shipped, "winlog": {"event_data": {**RECOGNISED, "ClassName": "HIDClass", "ClassId": ""}}}) is None
    assert read({**shipped, "winlog": {"event_data": "broken"}}) is None
    assert read({**sentinel, "Computer": None}) is None, "no machine: nobody to give it to"


def test_a_usb_drive_mounted_by_defender_names_the_device() -> None:
    """Defender for Endpoint's `UsbDriveMounted` (advanced hunting, Sentinel's `DeviceEvents`, the streaming API):
    the device is named, the account is Windows' own or none, so whoever is at the device is given it."""
    row = {
        "Timestamp": "2024-03-04T09:15:02Z",
        "DeviceId": "a1b2c3",
        "DeviceName": "ws-alice.corp.example",
        "ActionType": "UsbDriveMounted",
        "AccountName": "",
        "InitiatingProcessAccountName": "system",
        "AdditionalFields": '{"DriveLetter":"E:","BusType":7,"ProductName":"Ultra","Manufacturer":"SanDisk"}',
    }
    mounted = Observation("", [("usb", 1.0)], [], "ws-alice.corp.example", mounted="e:")
    assert read(row) == mounted
    assert read({**row, "Type": "DeviceEvents", "TimeGenerated": "2024-03-04T09:15:03Z"}) == mounted, "Sentinel's"
    streamed = {"time": "2024-03-04T09:15:03Z", "category": "AdvancedHunting-DeviceEvents", "properties": row}
    assert read(streamed) == mounted
    assert read({**row, "InitiatingProcessAccountName": "alice"}) == Observation(
        "alice", [("usb", 1.0)], [], "ws-alice.corp.example", mounted="e:"
    )
    assert read({**row, "ActionType": ["UsbDriveMounted"]}) is None, "a list where the action belongs"
    for fields in ('{"DriveLetter":"C:"}', '{"DriveLetter":7}', '{"DriveLetter":"\\\\srv"}', "{}", "broken"):
        assert read({**row, "AdditionalFields": fields}) == Observation("", [("usb", 1.0)], [], row["DeviceName"])


def file_created(path: str, account: str = "alice", host: str = "ws-alice.corp.example", **more: Any) -> dict[str, Any]:
    """A `DeviceFileEvents` row of a file created, as advanced hunting or Sentinel return it."""
    return {
        "Timestamp": "2024-03-04T09:20:11Z",
        "DeviceId": "a1b2c3",
        "DeviceName": host,
        "ActionType": "FileCreated",
        "FileName": path.rpartition("\\")[2],
        "FolderPath": path,
        "FileSize": 48213,
        "InitiatingProcessAccountDomain": "corp",
        "InitiatingProcessAccountName": account,
        "InitiatingProcessAccountUpn": f"{account}@corp.example",
        "InitiatingProcessFileName": "explorer.exe",
        **more,
    }


def test_a_file_defender_saw_created_off_the_system_drive_is_a_candidate_copy_to_removable_media() -> None:
    """`DeviceFileEvents` names the person who wrote a file and its path, not whether the drive is removable: a file
    on another drive than C: is read with its drive (`written`), for the engine to count only where a USB drive was
    mounted there; Windows' own accounts and shares' paths are not read, as Microsoft's hunting query leaves them."""
    copied = Observation(
        "alice", [("usb_files", 1.0), ("upload_bytes", 48213.0)], [], "ws-alice.corp.example", written="e:"
    )
    row = file_created("E:\\plan.xlsx")
    assert read(row) == copied
    assert read({**row, "Type": "DeviceFileEvents", "TimeGenerated": "2024-03-04T09:20:12Z"}) == copied, "Sentinel's"
    streamed = {"time": "2024-03-04T09:20:12Z", "category": "AdvancedHunting-DeviceFileEvents", "properties": row}
    assert read(streamed) == copied
    assert read({**row, "FileSize": None}) == Observation(
        "alice", [("usb_files", 1.0)], [], row["DeviceName"], written="e:"
    )
    for other in (
        {"FolderPath": "C:\\Users\\alice\\plan.xlsx"},
        {"FolderPath": "\\\\fs01\\share\\plan.xlsx"},
        {"FolderPath": ["E:\\plan.xlsx"]},
        {"InitiatingProcessAccountName": "system"},
        {"InitiatingProcessAccountName": "WS-ALICE$"},
        {"InitiatingProcessAccountName": None},
        {"DeviceName": ""},
        {"ActionType": "FileDeleted"},
    ):
        assert read({**row, **other}) is None, other


def test_a_file_device_control_saw_written_to_removable_storage_is_a_copy_to_removable_media() -> None:
    """Defender's device control names a file written to removable storage (`RemovableStorageFileEvent`, where a
    policy keeps a copy of it): the account that wrote it, else whoever is at the device, copied it there."""
    row: dict[str, Any] = {
        "Timestamp": "2024-03-04T09:20:11Z",
        "DeviceName": "ws-alice.corp.example",
        "ActionType": "RemovableStorageFileEvent",
        "InitiatingProcessAccountName": "alice",
        "FileName": "plan.xlsx",
        "FolderPath": "E:\\plan.xlsx",
        "FileSize": 48213,
        "AdditionalFields": '{"Policy":"Audit writes","DuplicatedOperation":"Write","TargetFileLocation":"\\\\ev\\1"}',
    }
    copied = [("usb_files", 1.0), ("upload_bytes", 48213.0)]
    assert read(row) == Observation("alice", copied, [], "ws-alice.corp.example")
    streamed = {"time": "2024-03-04T09:20:12Z", "category": "AdvancedHunting-DeviceEvents", "properties": row}
    assert read(streamed) == Observation("alice", copied, [], "ws-alice.corp.example")
    assert read({**row, "InitiatingProcessAccountName": "system"}) == Observation("", copied, [], row["DeviceName"])
    assert read({**row, "FileSize": "many"}) == Observation("alice", [("usb_files", 1.0)], [], row["DeviceName"])
    assert read({**row, "DeviceName": None}) is None, "no machine: nowhere to give it"


async def test_defenders_files_count_as_copies_to_removable_media_only_on_a_drive_mounted_before(
    store: Store, tmp_path: Path
) -> None:
    """Microsoft's own hunting query joins a file created to the last USB drive mounted at its letter on the device:
    the engine does so as records come. A file on E: after a stick was mounted there is a copy to removable media by
    whoever wrote it (bob, on alice's machine: another person's), a file on D: (a fixed disk) or on E: more than 12
    hours later is nothing, and the mount is known after a restart, read again from the stored records."""
    settings = two_desks(tmp_path)
    mount = {
        "DeviceName": "ws-alice.corp.example",
        "ActionType": "UsbDriveMounted",
        "InitiatingProcessAccountName": "system",
        "AdditionalFields": '{"DriveLetter":"E:","ProductName":"Ultra"}',
    }
    first = records_at(
        [
            (0.0, file_created("E:\\early.xlsx", "bob")),  # before any drive: a card reader's, a fixed disk's
            (1.0, defender("LogonSuccess", "Interactive", "alice")),
            (2.0, mount),
            (2.1, file_created("E:\\plan.xlsx", "bob", host="WS-ALICE")),  # under its short name
        ]
    )
    service = await ScoringService.open(settings, store)
    async with store.transaction() as tx:
        await tx.insert_events(first)
        await service.ingest(tx, first, [])
    bob = service.engine.states["bob@corp.example"].open
    assert bob is not None and bob.counts.get("usb_files") == 1.0 and bob.counts.get("upload_bytes") == 48213.0
    assert set(bob.owners) == {"alice@corp.example"}, "on alice's machine"
    alice = service.engine.states["alice@corp.example"].open
    assert alice is not None and alice.counts.get("usb") == 1.0 and "usb_files" not in alice.counts
    again = await ScoringService.open(settings, store)  # the process started again
    later = records_at(
        [
            (3.0, file_created("E:\\more.xlsx", "alice")),
            (3.1, file_created("D:\\data\\local.xlsx", "alice")),
            (14.5, file_created("E:\\late.xlsx", "alice")),
        ],
        first=len(first),
    )
    async with store.transaction() as tx:
        await tx.insert_events(later)
        await again.ingest(tx, later, [])
    alice = again.engine.states["alice@corp.example"].open
    assert alice is not None and alice.counts.get("usb_files") == 1.0, "E: after the mount read again; not D:, not late"
    assert again.engine.unattributed["winsec"] == 2


@pytest.mark.parametrize(
    ("fields", "counted"),
    [
        ('{"ClassName":"WPD","DeviceDescription":"Apple iPhone","DeviceId":"USB\\\\VID_05AC&PID_12A8\\\\0001"}', True),
        ({"ClassName": "WPD", "DeviceDescription": "Pixel 8"}, True),  # Sentinel's dynamic column as an object
        ('{"ClassId":"{EEC5AD98-8080-425F-922A-DABF3DE3F69A}"}', True),
        ('{"ClassName":"DiskDrive","DeviceDescription":"SanDisk Ultra USB Device"}', False),  # counted by its mount
        ('{"ClassName":"USB","DeviceDescription":"USB Mass Storage Device"}', False),  # the stick's other devices
        ('{"ClassName":"Volume"}', False),
        ('{"ClassName":"Keyboard","DeviceDescription":"HID Keyboard Device"}', False),
        ('{"ClassName":"WPD"', False),  # cut short: not JSON
        (["WPD"], False),
        (None, False),
    ],
)
def test_a_portable_device_connected_in_defender_is_a_removable_media_connection(fields: Any, counted: bool) -> None:
    """Defender for Endpoint's `PnpDeviceConnected` of a portable device (a phone or camera over MTP, which mounts no
    drive) is a removable media connection on the device; a stick's disk drive, hub, volume or a keyboard is not (the
    stick is counted once, by its `UsbDriveMounted`)."""
    row = {
        "Timestamp": "2024-03-04T09:15:02Z",
        "DeviceName": "ws-alice.corp.example",
        "ActionType": "PnpDeviceConnected",
        "InitiatingProcessAccountName": "",
        "AdditionalFields": fields,
    }
    connected = Observation("", [("usb", 1.0)], [], "ws-alice.corp.example")
    assert read(row) == (connected if counted else None)
    streamed = {"time": "2024-03-04T09:15:03Z", "category": "AdvancedHunting-DeviceEvents", "properties": row}
    assert read(streamed) == (connected if counted else None)


def engine_of(people: list[Person]) -> ScoringEngine:
    settings = ScoringSettings(pseudonymise=False)
    return ScoringEngine(settings, IdentityResolver(people, settings.identities), org_domains=["corp.example"])


def test_a_record_naming_only_a_machine_goes_to_the_person_last_at_it() -> None:
    """Who is given a drive recognised on a machine: the person seen at it last before, within 12 hours, who had
    not logged off since (in time order, whatever order the records arrive in; the machine named in full or by its
    short name), else the machine's owner, else no one (counted as unattributed)."""
    people = [Person(id=f"{name}@corp.example", hosts=[f"WS-{name.upper()}"]) for name in ("alice", "bob")]
    engine = engine_of([*people, *(Person(id=f"{name}@corp.example") for name in ("carol", "dave", "erin"))])
    n = 0

    def feed(raw: dict[str, Any], hours: float) -> str | None:
        nonlocal n
        n += 1
        when = T0 + timedelta(hours=hours)
        return engine.observe(Event(f"e{n}", when, "winsec", LogSource(), {**raw, "TimeGenerated": when.isoformat()}))

    def plugged(machine: str, hours: float) -> str | None:
        return feed(flat(6416, Computer=machine, **RECOGNISED), hours)

    def logon(name: str, machine: str, hours: float) -> None:
        assert feed(flat(4624, TargetUserName=name, LogonType=2, Computer=machine), hours) == f"{name}@corp.example"

    logon("alice", "WS-ALICE.corp.example", 0)
    assert plugged("WS-ALICE", 1) == "alice@corp.example"
    logon("bob", "ws-alice", 5)  # at a colleague's desk
    assert plugged("WS-ALICE.corp.example", 5.5) == "bob@corp.example"
    assert plugged("WS-ALICE", 2) == "alice@corp.example", "late, but alice was the one there then"
    assert plugged("WS-BOB", 1) == "bob@corp.example", "no one seen there: its owner"
    assert plugged("KIOSK-1", 1) is None and engine.unattributed["winsec"] == 1, "nobody's, nobody seen"
    assert plugged("WS-ALICE", -1) == "alice@corp.example", "before anyone was seen: its owner"
    bob = engine.states["bob@corp.example"].open
    assert bob is not None and bob.counts["usb"] == 2
    assert {"alice@corp.example"} == set(bob.owners), "a drive of bob's was on alice's machine"
    assert plugged("WS-ALICE", 16.5) == "bob@corp.example", "within 12 hours of bob's logon"
    assert plugged("WS-ALICE", 17.5) == "alice@corp.example", "a drive is no sign of anyone there: its owner"
    assert plugged("WS-ALICE", 30) == "alice@corp.example", "no one there for 12 hours: its owner"
    logon("carol", "WS-BOB", 30)
    feed(flat(4624, TargetUserName="erin", LogonType=10, Computer="WS-BOB"), 30.5)  # a remote desktop from elsewhere
    logon("dave", "WS-BOB", 31)  # an administrator passing by, who logs off again
    feed(flat(4647, TargetUserName="dave", Computer="WS-BOB"), 31.5)
    assert plugged("WS-BOB", 32) == "carol@corp.example", "dave logged off: carol is still there"
    assert plugged("WS-BOB", 31.2) == "dave@corp.example", "late: dave was there then"
    feed(flat(4634, TargetUserName="carol", LogonType=2, Computer="WS-BOB"), 33)
    assert plugged("WS-BOB", 34) == "bob@corp.example", "everyone logged off: its owner"


def test_seats_are_found_under_any_name_of_the_machine_and_forgotten_once_nobody_could_be_given_them() -> None:
    machines = Machines()
    machines.place(machines.arrived, "ws-1.corp.example")["p0"] = T0
    machines.place(machines.arrived, "ws-1")["p1"] = T0 + timedelta(hours=2)
    machines.place(machines.left, "ws-1")["p1"] = T0 + timedelta(hours=3)
    assert machines.seated("WS-1".lower(), T0 + timedelta(hours=1)) == "p0"
    assert machines.seated("ws-1.corp.example", T0 + timedelta(hours=2, minutes=30)) == "p1", "by its short name"
    assert machines.seated("ws-1", T0 + timedelta(hours=4)) == "p0", "p1 left"
    machines.place(machines.arrived, "ws-3.corp.example")["p2"] = T0
    machines.place(machines.left, "ws-3")["p2"] = T0 + timedelta(hours=1)  # a logoff naming it otherwise
    assert machines.seated("ws-3.corp.example", T0 + timedelta(minutes=30)) == "p2"
    assert machines.seated("ws-3.corp.example", T0 + timedelta(hours=2)) is None, "p2 left, under its short name"
    assert machines.seated("ws-1", T0 + timedelta(hours=13)) is None, "p0 arrived more than 12 hours before"
    machines.place(machines.arrived, "ws-2")["p0"] = T0 + timedelta(hours=20)
    machines.forget(T0 + timedelta(hours=15))
    assert (machines.arrived, machines.left) == ({"ws-2": {"p0": T0 + timedelta(hours=20)}}, {})
    assert machines.names == {"ws-2": {"ws-2"}}


def test_drives_mounted_are_found_under_any_name_of_the_machine_and_forgotten() -> None:
    machines = Machines()
    machines.mount("ws-1.corp.example", "e:", T0)
    assert machines.mounted("ws-1", "e:", T0 + timedelta(hours=1)), "by its short name"
    assert not machines.mounted("ws-1", "f:", T0 + timedelta(hours=1)), "another drive"
    assert not machines.mounted("ws-1", "e:", T0 - timedelta(minutes=1)), "a file written before the mount"
    assert not machines.mounted("ws-1", "e:", T0 + timedelta(hours=12, minutes=1)), "mounted more than 12 hours before"
    machines.mount("ws-1", "e:", T0 + timedelta(hours=20))
    machines.mount("ws-2", "f:", T0)
    machines.forget(T0 + timedelta(hours=15))
    assert machines.drives == {"ws-1": {"e:": {T0 + timedelta(hours=20)}}}


def two_desks(tmp_path: Path) -> ScoringSettings:
    """Scoring settings whose directory gives alice and bob a machine each."""
    people = [Person(id=f"{name}@corp.example", hosts=[f"WS-{name.upper()}"]) for name in ("alice", "bob")]
    path = tmp_path / "people.json"
    path.write_bytes(orjson.dumps([p.to_json() for p in people]))
    return ScoringSettings(directory=path, pseudonymise=False)


def records_at(records: list[tuple[float, dict[str, Any]]], first: int = 0) -> list[Event]:
    """Windows Security records, each `hours` after T0, as events."""
    events = []
    for n, (hours, raw) in enumerate(records, start=first):
        when = T0 + timedelta(hours=hours)
        events.append(Event(f"e{n}", when, "winsec", LogSource(), {**raw, "TimeGenerated": when.isoformat()}))
    return events


async def test_a_rescore_of_the_stored_records_seats_people_as_one_process_does(store: Store, tmp_path: Path) -> None:
    """A cluster scores by re-scoring every stored record in event-time order (`bus.scoring`), as a replay out of
    order settles: the seats are noted from every partition's logons, so a drive plugged into a colleague's machine
    goes to the visitor logged on there, whatever order the records were stored in."""
    events = records_at(
        [
            (0.0, flat(4624, TargetUserName="alice", LogonType=2, Computer="WS-ALICE")),
            (1.0, flat(4624, TargetUserName="bob", LogonType=2, Computer="WS-BOB")),
            (3.0, flat(4624, TargetUserName="bob", LogonType=2, Computer="WS-ALICE.corp.example")),
            (3.5, flat(6416, Computer="WS-ALICE", **RECOGNISED)),
            (4.0, flat(4634, TargetUserName="bob", LogonType=2, Computer="WS-ALICE")),
            (5.0, flat(6416, Computer="WS-ALICE", **RECOGNISED)),
        ]
    )
    async with store.transaction() as tx:
        await tx.insert_events(events[::-1])
    service = await ScoringService.open(two_desks(tmp_path), store)
    await service.rescore(store, page=2)
    days = {key: state.open for key, state in service.engine.states.items()}
    alice, bob = days["alice@corp.example"], days["bob@corp.example"]
    assert bob is not None and bob.counts.get("usb") == 1.0 and set(bob.owners) == {"alice@corp.example"}
    assert alice is not None and alice.counts.get("usb") == 1.0, "after bob logged off, her own machine's drive"


async def test_a_process_started_again_reads_the_seats_from_the_stored_records(store: Store, tmp_path: Path) -> None:
    """Seats are held in memory: a scoring process started again reads them from the stored records of the hours a
    seat can last before the watermark, at its first batch, so a visitor who logged on before the restart is still
    the one a drive plugged in after it is given to; a logon from before those hours is not read."""
    settings = two_desks(tmp_path)
    logons = records_at(
        [
            (-12.0, flat(4624, TargetUserName="alice", LogonType=2, Computer="WS-BOB")),
            (0.0, flat(4624, TargetUserName="alice", LogonType=2, Computer="WS-ALICE")),
            (3.0, flat(4624, TargetUserName="bob", LogonType=2, Computer="WS-ALICE")),
        ]
    )
    before = await ScoringService.open(settings, store)
    async with store.transaction() as tx:
        await tx.insert_events(logons)
        await before.ingest(tx, logons, [])
    after = await ScoringService.open(settings, store)  # the process started again
    assert after.engine.machines.arrived == {}
    plugged = records_at([(3.5, flat(6416, Computer="WS-ALICE", **RECOGNISED))], first=len(logons))
    async with store.transaction() as tx:
        await tx.insert_events(plugged)
        await after.ingest(tx, plugged, [])
    bob = after.engine.states["bob@corp.example"].open
    assert bob is not None and bob.counts.get("usb") == 1.0, "bob was at alice's machine before the restart"
    assert set(after.engine.machines.arrived) == {"ws-alice"}, "the logon 12 hours before the watermark: not read"
