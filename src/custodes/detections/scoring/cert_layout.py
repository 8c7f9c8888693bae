"""A simulated organisation written in the CERT insider-threat datasets' layout, to rehearse `eval scoring` on it.

For the shapes seen through logons and removable media (`devices`, `desktops`), `custodes simulate --layout cert`
also writes what the held-out benchmark gives: `logon.csv` and `device.csv` (r4.2 columns, each person's local
time without a zone, in time order), `LDAP.csv`, and `answers/` (`insiders.csv` for the release `sim`, with a
details file per incident listing its records). `custodes eval scoring` reads them as it reads the datasets.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from custodes.connectors.cert import TIME_FORMAT
from custodes.connectors.files import iter_records
from custodes.detections.scoring.cert import SCENARIOS
from custodes.detections.scoring.simulate import Label, Simulation

RELEASE = "sim"
"""The `dataset` column of the answers a simulation writes (`--dataset sim`)."""
ACTIVITIES = {
    "logged-in": ("logon", "Logon"),
    "logged-off": ("logon", "Logoff"),
    "usb-device-connected": ("device", "Connect"),
    "usb-device-disconnected": ("device", "Disconnect"),
}
COLUMNS = ["id", "date", "user", "pc", "activity"]
LDAP_COLUMNS = ["employee_name", "user_id", "email", "role", "business_unit", "functional_unit", "department", "team"]
NUMBERS = {name: number for number, name in SCENARIOS.items()}
SLACK = timedelta(seconds=1)
"""Acts keep microseconds, records milliseconds: a record this close to an act is one of its records."""

Row = tuple[datetime, datetime, str, list[str]]
"""A record's time, its local time without a zone (the order of a CERT file), its file and its columns."""


def write_cert(sim: Simulation, out: Path) -> list[Path]:
    """Write `sim` (its `endpoint.ndjson` in `out`) in the CERT layout into `out`; the files written."""
    zones = {p.aliases[1]: ZoneInfo(p.timezone or "UTC") for p in sim.people}  # records name people by this alias
    rows: dict[str, list[Row]] = {"logon": [], "device": []}
    by_user: dict[str, list[Row]] = defaultdict(list)
    for _, record, _ in iter_records(out / "endpoint.ndjson"):
        kind, activity = ACTIVITIES[record["event"]["action"]]
        user = record["user"]["name"]
        when = datetime.fromisoformat(record["@timestamp"])
        local = when.astimezone(zones[user]).replace(tzinfo=None)
        columns = [
            "{" + record["event"]["id"] + "}",
            local.strftime(TIME_FORMAT),
            user,
            record["host"]["name"],
            activity,
        ]
        row = (when, local, kind, columns)
        rows[kind].append(row)
        by_user[user].append(row)
    written = []
    for kind, kept in rows.items():
        kept.sort(key=lambda row: row[1])
        written.append(_csv(out / f"{kind}.csv", COLUMNS, [row[3] for row in kept]))
    people = [
        [p.display_name or "", p.aliases[1], p.id, p.title or "", "1", p.department or "", p.department or "", "1"]
        for p in sim.people
    ]
    written.append(_csv(out / "LDAP.csv", LDAP_COLUMNS, people))
    return [*written, *_answers(sim, out / "answers", by_user, zones)]


def _answers(sim: Simulation, folder: Path, by_user: dict[str, list[Row]], zones: dict[str, ZoneInfo]) -> list[Path]:
    """`insiders.csv` and each incident's details file: its people's records within its acts."""
    incidents: dict[str, list[Label]] = defaultdict(list)
    for act in sim.acts:
        incidents[act.incident].append(act)
    user_of = {p.id: p.aliases[1] for p in sim.people}
    listed, written = [], []
    for acts in incidents.values():
        insider = next(act for act in acts if act.role == "insider")
        number, user = NUMBERS[insider.scenario], user_of[insider.person]
        name = f"r{RELEASE}-{number}-{user}.csv"
        first, last = min(act.start for act in acts), max(act.end for act in acts)
        start, end = (when.astimezone(zones[user]).strftime(TIME_FORMAT) for when in (first, last))
        listed.append([RELEASE, number, name, user, start, end])
        details = [
            [kind, *columns]
            for act in acts
            for when, _, kind, columns in by_user[user_of[act.person]]
            if act.start - SLACK <= when <= act.end + SLACK
        ]
        (folder / f"r{RELEASE}-{number}").mkdir(parents=True, exist_ok=True)
        written.append(_csv(folder / f"r{RELEASE}-{number}" / name, None, details))
    columns = ["dataset", "scenario", "details", "user", "start", "end"]
    return [_csv(folder / "insiders.csv", columns, listed), *written]


def _csv(path: Path, header: list[str] | None, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path
