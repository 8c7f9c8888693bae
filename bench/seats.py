"""Removable drives that name only a machine: how many the engine gives to the person who plugged them in, and what
the evaluation loses, side by side with the same records naming the person.

    .venv/bin/python bench/seats.py               # devices and desktops, 400 people, 10 quiet days, 12 acting
    .venv/bin/python bench/seats.py --logs linux  # the same as a Linux machine's syslog says it
    .venv/bin/python bench/seats.py --logs defender  # as Defender for Endpoint's device events and logons say it
    .venv/bin/python bench/seats.py --population 1000 --acting-days 50 --insiders 70 --seeds 5 6 7 \
        --scenarios after_hours_usb_leak job_search_usb sysadmin_keylogger     # the held-out benchmark's density

Each organisation is simulated (`custodes simulate`'s generator), then evaluated twice: as written (each USB
connection an ECS record naming its user), and as the machine logs it. Windows (`--logs windows`, shipped by
Winlogbeat): every USB connection Windows' event 6416 (the subject the machine's own account, `WS-00042$`), the
logons and logoffs 4624 and 4634. Linux (`--logs linux`, syslog lines parsed as the file tail parses them): every
USB connection the kernel's `Attached SCSI removable disk`, the logons and logoffs GDM's PAM sessions opened and
closed. Defender for Endpoint (`--logs defender`, its advanced hunting rows): every USB connection `UsbDriveMounted`
under Windows' own account, the logons `DeviceLogonEvents`' `LogonSuccess`, and no logoff (Defender logs none, so
a visitor stays seated until someone else arrives or 12 hours pass). Each way the engine gives a connection to the
person who arrived at the machine last and had not left (machines.py). Printed per organisation: the connections
given to the person who made them, to another, to no one; and caught, mean percentile, recall within the budget and
false findings, as written and as the machine logs it.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from custodes.config import ScoringSettings
from custodes.connectors.textlogs import parse_syslog_line
from custodes.detections.scoring.engine import ScoringEngine
from custodes.detections.scoring.evaluate import Evaluation, evaluate, load_labels, read_events
from custodes.detections.scoring.features import record_time
from custodes.detections.scoring.identity import IdentityResolver, load_directory
from custodes.detections.scoring.simulate import DEVICE_SCENARIOS, DEVICE_SHAPES, SimulationSettings, simulate


def recognised(record: dict[str, Any]) -> dict[str, Any]:
    """A USB connection record as the machine logs it: Windows' 6416 shipped by Winlogbeat, naming no person."""
    host = record["host"]["name"]
    data = {"SubjectUserName": f"{host}$", "SubjectUserSid": "S-1-5-18", "ClassName": "DiskDrive"}
    return {
        "@timestamp": record["@timestamp"],
        "event": {"id": record["event"]["id"], "code": "6416", "kind": "event"},
        "host": {"name": host},
        "user": {"name": f"{host}$", "domain": "CORP"},
        "winlog": {"channel": "Security", "event_id": "6416", "event_data": data},
    }


def shipped_logon(record: dict[str, Any]) -> dict[str, Any]:
    """A logon or logoff record as Winlogbeat ships Windows' 4624 and 4634 (its `winlog`, a logoff `logged-out`)."""
    off = record["event"]["action"] == "logged-off"
    event = {**record["event"], "code": "4634" if off else "4624", "action": "logged-out" if off else "logged-in"}
    return {**record, "event": event, "winlog": {"channel": "Security", "event_id": event["code"]}}


def attached(record: dict[str, Any]) -> dict[str, Any]:
    """A USB connection record as a Linux machine's kernel logs it (a removable disk attached, naming no person)."""
    host = record["host"]["name"]
    return linux_line(
        f"{record['@timestamp']} {host} kernel: [ 5123.456789] sd 6:0:0:0: [sdb] Attached SCSI removable disk"
    )


def screen_session(record: dict[str, Any]) -> dict[str, Any]:
    """A logon or logoff record as GDM's PAM session opened or closed at a Linux machine's screen."""
    state = "closed" if record["event"]["action"] == "logged-off" else "opened"
    line = f"{record['@timestamp']} {record['host']['name']} gdm-password][1542]: pam_unix(gdm-password:session): "
    return linux_line(line + f"session {state} for user {record['user']['name']}")


def linux_line(line: str) -> dict[str, Any]:
    """A syslog line as the file tail parses it."""
    parsed, warning = parse_syslog_line(line, datetime.now(UTC))
    assert warning is None, line
    return parsed


def defender_row(record: dict[str, Any], action: str, **columns: str) -> dict[str, Any]:
    """A record as a Defender for Endpoint advanced hunting row of `action`, with `columns` of its own."""
    when, ident, host = record["@timestamp"], record["event"]["id"], record["host"]["name"]
    return {"Timestamp": when, "ReportId": ident, "DeviceName": host, "ActionType": action, **columns}


def usb_mounted(record: dict[str, Any]) -> dict[str, Any]:
    """A USB connection record as Defender for Endpoint logs it: `UsbDriveMounted` under Windows' own account."""
    fields = '{"DriveLetter":"E:","BusType":7,"ProductName":"Ultra","Manufacturer":"SanDisk"}'
    return defender_row(record, "UsbDriveMounted", InitiatingProcessAccountName="system", AdditionalFields=fields)


def device_logon(record: dict[str, Any]) -> dict[str, Any] | None:
    """A logon record as Defender for Endpoint's `DeviceLogonEvents` row; a logoff is none (Defender logs none)."""
    if record["event"]["action"] == "logged-off":
        return None
    return defender_row(record, "LogonSuccess", LogonType="Interactive", AccountName=record["user"]["name"])


REWRITE = {
    "windows": (recognised, shipped_logon),
    "linux": (attached, screen_session),
    "defender": (usb_mounted, device_logon),
}
"""How each kind of machine logs a USB connection and a logon or logoff."""


def place(raw: dict[str, Any]) -> tuple[datetime | None, str | None]:
    """A record's time and machine, whichever way it is written: what ties a rewritten connection to its maker."""
    host = raw.get("host") or raw.get("DeviceName")
    return record_time(raw), host.get("name") if isinstance(host, dict) else host


def is_connection(raw: dict[str, Any]) -> bool:
    """Whether a rewritten record is a USB connection (Windows' 6416, the kernel's removable disk, Defender's mount)."""
    event = raw.get("event")
    if event == "removable_attached" or raw.get("ActionType") == "UsbDriveMounted":
        return True
    return isinstance(event, dict) and event.get("code") == "6416"


def machine_only(
    org: Path, out: Path, resolver: IdentityResolver, logs: str
) -> tuple[list[Path], dict[tuple[datetime | None, str | None], str]]:
    """The organisation's files as `logs` machines log them: its USB connections and its logons and logoffs rewritten
    (`REWRITE`); and who made each connection, by its time and machine."""
    connection, logon = REWRITE[logs]
    makers: dict[tuple[datetime | None, str | None], str] = {}
    lines = []
    for line in (org / "endpoint.ndjson").read_bytes().splitlines():
        record = orjson.loads(line)
        action = record["event"].get("action")
        if action == "usb-device-connected":
            makers[place(record)] = resolver.resolve(record["user"]["name"])[0]
            record = connection(record)
        elif action in ("logged-in", "logged-off"):
            rewritten = logon(record)
            if rewritten is None:  # not logged that way
                continue
            record = rewritten
        lines.append(orjson.dumps(record))
    (out / "endpoint.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    files = [f for f in sorted(org.glob("*.ndjson")) if f.name != "endpoint.ndjson"]
    return [*files, out / "endpoint.ndjson"], makers


def given(
    files: list[Path],
    makers: dict[tuple[datetime | None, str | None], str],
    settings: ScoringSettings,
    resolver: IdentityResolver,
) -> Counter[str]:
    """Whom the engine gives each rewritten connection to: its maker, another person, or no one."""
    engine = ScoringEngine(settings, resolver)
    counts: Counter[str] = Counter()
    for event in read_events(files):
        key = engine.observe(event)
        maker = makers.get(place(event.raw)) if is_connection(event.raw) else None
        if maker is not None:
            counts["maker" if key == maker else "no one" if key is None else "another"] += 1
    return counts


def measures(written: Evaluation, rewritten: Evaluation) -> list[str]:
    """Caught, mean percentile, recall within the budget and false findings: as written / as the machine logs it."""

    def cells(report: Evaluation) -> tuple[str, str, str, str]:
        recall = report.recall.get(report.budget, 0.0)
        caught = f"{report.caught}/{len(report.incidents)}"
        return caught, f"{report.mean_percentile:.2f}", f"{100 * recall:.1f}%", str(report.false_findings)

    return [f"{a} / {b}" for a, b in zip(cells(written), cells(rewritten), strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(DEVICE_SHAPES), choices=DEVICE_SHAPES)
    parser.add_argument("--population", type=int, default=400)
    parser.add_argument("--history", type=int, default=10, help="quiet days before insiders act")
    parser.add_argument("--acting-days", type=int, default=12, help="days after the history in which insiders act")
    parser.add_argument("--insiders", type=int, help="incidents injected (default: one per 100 people)")
    parser.add_argument("--scenarios", nargs="+", default=list(DEVICE_SCENARIOS), choices=DEVICE_SCENARIOS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--logs", choices=sorted(REWRITE), default="windows", help="how the machines log them")
    args = parser.parse_args()
    said = {
        "windows": "Windows logs them (6416",
        "linux": "a Linux kernel logs them (a removable disk attached",
        "defender": "Defender for Endpoint logs them (UsbDriveMounted, logons without logoffs",
    }
    table = Table(title=f"USB connections as {said[args.logs]}: the machine, no person) against naming the person")
    for column in ("shape", "seed", "connections", "to their maker", "to another", "to no one"):
        table.add_column(column, justify="right")
    for column in ("caught", "mean percentile", "recall @ budget", "false findings"):
        table.add_column(f"{column} (as written / as the machine logs it)", justify="right")
    with tempfile.TemporaryDirectory() as folder:
        for shape in args.shapes:
            for seed in args.seeds:
                org = Path(folder) / f"{shape}-{seed}"
                knobs = SimulationSettings(
                    population=args.population,
                    days=args.history + args.acting_days,
                    warmup_days=args.history,
                    seed=seed,
                    shape=shape,
                    scenarios=tuple(args.scenarios),
                    insiders=args.insiders,
                )
                simulate(knobs, org)
                out = Path(folder) / f"{shape}-{seed}-{args.logs}"
                out.mkdir()
                settings = ScoringSettings(directory=org / "directory.json", pseudonymise=False)
                labels = load_labels(org / "labels.json")
                resolver = IdentityResolver(load_directory(org / "directory.json"), settings.identities)
                files, makers = machine_only(org, out, resolver, args.logs)
                counts = given(files, makers, settings, resolver)
                total = sum(counts.values())
                share = {k: f"{100 * counts[k] / max(1, total):.1f}%" for k in ("maker", "another", "no one")}
                written = evaluate(sorted(org.glob("*.ndjson")), labels, settings)
                rewritten = evaluate(files, labels, settings)
                table.add_row(
                    shape,
                    str(seed),
                    f"{total:,}",
                    share["maker"],
                    share["another"],
                    share["no one"],
                    *measures(written, rewritten),
                )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
