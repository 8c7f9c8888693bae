"""CERT insider-threat dataset files (logon, device, http, email, file CSVs and LDAP) read as ECS records.

The CSVs of the CMU CERT synthetic insider-threat datasets (r4.2 and later layouts) become the ECS documents the
feature extractor reads: logons with the machine, USB connects and disconnects, web requests (uploads as POST),
outbound and inbound mail with recipients and attachment size, and file operations (copies to removable media as
removable-media writes). Times (`MM/DD/YYYY HH:MM:SS`, no zone; without seconds as a spreadsheet saves them) are
read as UTC. An LDAP CSV becomes directory entries, and the datasets' answers (`insiders.csv` with each insider's
details file) become labels.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from custodes.connectors.envelope import parse_time
from custodes.connectors.files import text_lines
from custodes.errors import CustodesError

KINDS: dict[str, frozenset[str]] = {
    "email": frozenset({"id", "date", "user", "pc", "to", "from"}),
    "file": frozenset({"id", "date", "user", "pc", "filename"}),
    "http": frozenset({"id", "date", "user", "pc", "url"}),
    "logon": frozenset({"id", "date", "user", "pc", "activity"}),
}
"""Columns of each CERT file; logon and device files share theirs, so each row's activity tells them apart."""
KIND_NAMES = {"email": "email", "file": "file", "http": "http", "logon": "logon or device"}
RECORD_KINDS = {"authentication": "logon", "host": "device", "web": "http", "email": "email", "file": "file"}
"""The CERT kind of a record (as an answers' details row names it first) by the category `_record` gives it."""


def cert_kind(header: list[str]) -> str | None:
    """Which CERT file a CSV header belongs to (None: not a CERT event file)."""
    names = {h.strip().lower() for h in header}
    for kind, needed in KINDS.items():
        if needed <= names:
            return kind
    return None


def _rows(lines: Iterable[str]) -> tuple[list[str], Iterator[tuple[int, list[str] | str]]]:
    """The header (lower case) of a CSV and its non-empty rows, each with the line it starts on; a row the CSV
    reader cannot read (a field past its size limit, say) is what is wrong with it, and reading goes on."""
    reader = csv.reader(lines)
    try:
        header = [h.strip().lower() for h in next(reader, [])]
    except csv.Error:
        header = []

    def rows() -> Iterator[tuple[int, list[str] | str]]:
        while True:
            number = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield number, str(exc)
                continue
            if row:
                yield number, row

    return header, rows()


TIME_FORMAT = "%m/%d/%Y %H:%M:%S"
"""The datasets' times: local, without a zone."""


PADDED_TIME = re.compile(r"([0-9]{2})/([0-9]{2})/([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")
"""`TIME_FORMAT` as the datasets write it, every field zero-padded: read without `strptime` (a fifth of its cost)."""


VALID_TIME = re.compile(
    r"(?:0[1-9]|1[0-2])/(?:0[1-9]|1[0-9]|2[0-8])/[0-9]{4} (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
)
"""`PADDED_TIME` of a time that exists in every month and year (days to the 28th): read by position as it stands."""


SHORT_TIME_FORMAT = "%m/%d/%Y %H:%M"
"""`TIME_FORMAT` without seconds, as a spreadsheet saves the datasets' times by default."""


def _time(value: str) -> str:
    text = value.strip()
    padded = PADDED_TIME.fullmatch(text)
    if padded is None:
        form = TIME_FORMAT if text.count(":") == 2 else SHORT_TIME_FORMAT
        return datetime.strptime(text, form).replace(tzinfo=UTC).isoformat()
    month, day, year, hour, minute, second = map(int, padded.groups())
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).isoformat()


def _user(value: str) -> str:
    return value.strip().rpartition("/")[2]


def _addresses(value: str | None) -> list[str]:
    return [a.strip() for a in (value or "").split(";") if a.strip()]


def _base(row: dict[str, str], category: str, action: str) -> dict[str, Any]:
    return {
        "@timestamp": _time(row["date"]),
        "event": {"id": row["id"], "category": [category], "action": action},
        "user": {"name": _user(row["user"])},
        "host": {"name": row["pc"]},
    }


def _record(kind: str, row: dict[str, str]) -> dict[str, Any]:
    activity = (row.get("activity") or "").strip().lower()
    if kind == "logon" and activity not in ("connect", "disconnect"):
        return _base(row, "authentication", "logged-off" if activity == "logoff" else "logged-in")
    if kind == "logon":
        action = "usb-device-disconnected" if activity == "disconnect" else "usb-device-connected"
        return _base(row, "host", action) | {"device": {"type": "usb"}}
    if kind == "http":
        url = row["url"].strip()
        parts = urlsplit(url if "//" in url else "http://" + url)
        method = "POST" if "upload" in activity else "GET"
        url_fields = {"domain": parts.hostname or "", "path": parts.path}
        return _base(row, "web", "http-request") | {"url": url_fields, "http": {"request": {"method": method}}}
    if kind == "email":
        direction = "inbound" if activity in ("view", "receive") else "outbound"
        email: dict[str, Any] = {"direction": direction, "from": {"address": _addresses(row.get("from"))}}
        for part in ("to", "cc", "bcc"):
            email[part] = {"address": _addresses(row.get(part))}
        size = int(row["size"]) if (row.get("size") or "").strip().isdigit() else 0
        attachments = (row.get("attachments") or "").strip()
        if attachments and attachments != "0" and size:
            email["attachments"] = [{"file": {"size": size}}]
        return _base(row, "email", "send") | {"email": email}
    file = {"path": row["filename"]}
    to_usb = (row.get("to_removable_media") or "").strip().lower() == "true"
    if not activity or (activity in ("file copy", "file write") and to_usb):  # r4.2 lists only copies to USB
        return _base(row, "file", "removable-media-write") | {"file": file, "device": {"type": "usb"}}
    actions = {"file delete": "deletion", "file open": "open", "file write": "creation", "file copy": "creation"}
    return _base(row, "file", actions.get(activity, "open")) | {"file": file}


CertRow = tuple[int, dict[str, Any] | None, str | None]
"""(line, ECS record, None) of a CERT row, or (line, None, what is wrong with it) of a row that is not one."""


def cert_records(lines: Iterable[str]) -> Iterator[CertRow] | None:
    """The rows of a CERT event CSV read from `lines` as they come (a dataset's web log runs to gigabytes) as ECS
    records, or None when the CSV is not one; a row that is not one of its kind says why, naming its line."""
    header, rows = _rows(lines)
    kind = cert_kind(header)
    if kind is None:
        return None

    def records() -> Iterator[CertRow]:
        for number, row in rows:
            problem = row if isinstance(row, str) else None
            if problem is None:
                try:
                    record = _record(kind, dict(zip(header, row, strict=False)))
                except KeyError as exc:  # a row shorter than the header
                    problem = f"no {exc.args[0]}"
                except ValueError as exc:
                    problem = str(exc)
                else:
                    yield number, record, None
                    continue
            yield number, None, f"line {number}: not a CERT {KIND_NAMES[kind]} row ({problem})"

    return records()


def cert_times(lines: Iterable[str]) -> Iterator[str]:
    """The time of each row of a CERT event CSV that has one, as text that sorts as the time does
    (`YYYY-MM-DDTHH:MM:SS`), read without building the records: enough to tell whether a file is in time order."""
    header, rows = _rows(lines)
    if "date" not in header:
        return
    column = header.index("date")
    for _, row in rows:
        value = row[column].strip() if isinstance(row, list) and len(row) > column else ""
        if VALID_TIME.fullmatch(value):  # the datasets' own form, read by position (a gigabytes-long web log)
            yield f"{value[6:10]}-{value[:2]}-{value[3:5]}T{value[11:]}"
            continue
        try:
            yield _time(value)[:19]
        except ValueError:  # no time (or none that exists): the reading pass counts the row as not one of its file's
            continue


def _department(row: dict[str, str]) -> str | None:
    """An LDAP row's department within its functional unit: departments of two units may share a name (a `Sales`
    of each), and a peer group is one department's people."""
    unit, department = ((row.get(name) or "").strip() for name in ("functional_unit", "department"))
    return (f"{unit} / {department}" if unit and department and unit != department else department or unit) or None


def cert_people(path: Path, data: bytes) -> list[dict[str, Any]]:
    """Directory entries (Custodes JSON form) of a CERT LDAP CSV (employee_name, user_id, email, role, functional_unit,
    department)."""
    header, rows = _rows(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
    if not {"user_id", "email"} <= set(header):
        raise CustodesError.at(path, "a CSV directory needs the CERT LDAP columns user_id and email")
    people = []
    for number, fields in rows:
        if isinstance(fields, str):
            raise CustodesError.at(path, f"line {number}: not a CSV row ({fields})")
        row = dict(zip(header, fields, strict=False))
        user, email = row.get("user_id", "").strip(), row.get("email", "").strip()
        if not user or not email:
            raise CustodesError.at(path, f"line {number}: user_id and email are required")
        people.append(
            {
                "id": email.lower(),
                "display_name": row.get("employee_name", "").strip() or None,
                "department": _department(row),
                "title": (row.get("role") or "").strip() or None,
                "aliases": [user],
            }
        )
    return people


ANSWER_COLUMNS = frozenset({"dataset", "scenario", "user", "start", "end"})
"""Columns of the answers' `insiders.csv`: one row per insider of every dataset release."""
SCENARIOS = {
    "1": "after_hours_usb_leak",
    "2": "job_search_usb",
    "3": "sysadmin_keylogger",
    "4": "other_machine_mail",
    "5": "layoff_dropbox",
}
"""The datasets' scenario numbers by the names `custodes simulate` gives the same scenarios."""


def is_answers(header: Iterable[str] | None) -> bool:
    """Whether a CSV header is the answers' `insiders.csv`."""
    return {h.strip().lower() for h in header or ()} >= ANSWER_COLUMNS


def _answer_time(path: Path, line: int, row: dict[str, str], name: str) -> str:
    """A time of an `insiders.csv` row: the datasets' own form, or ISO 8601 as it is."""
    value = row[name]
    try:
        return _time(value)
    except ValueError:
        try:
            parse_time(value)
        except (ValueError, TypeError):
            raise CustodesError.at(
                path, f"line {line}: {name} {value!r} is not a time; write MM/DD/YYYY HH:MM:SS as the datasets do"
            ) from None
        return value.strip()


def cert_answers(
    path: Path, rows: Iterable[dict[str, str]], dataset: str | None, warnings: list[str] | None = None
) -> list[dict[str, str]]:
    """Label rows (incident, scenario, person, role, start, end) of the answers' `insiders.csv` (`path`) for one
    dataset release (`dataset`, e.g. "4.2"; needed when the file lists several).

    Each insider's details file (`r4.2-1/r4.2-1-AAM0658.csv` beside the list: the malicious records themselves)
    gives one row per person and day it has acts on, the person being the record's user (an account other than the
    insider's is labelled `compromised`) and the kinds of record its acts are in (`kinds`: `http device`). Without
    it, the insider's whole interval counts, with a warning.
    """
    rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in rows]
    releases = sorted({row["dataset"].removeprefix("r") for row in rows})
    wanted = (dataset or "").strip().removeprefix("r") or (releases[0] if len(releases) == 1 else None)
    if wanted is None or wanted not in releases:
        named = f"dataset {dataset} is not among them" if dataset else "name the one the events are from"
        raise CustodesError.at(
            path, f"lists insiders of CERT datasets {', '.join(releases) or 'none'}: {named} with --dataset"
        )
    labels: list[dict[str, str]] = []
    missing: list[str] = []
    for line, row in enumerate(rows, start=2):
        if row["dataset"].removeprefix("r") != wanted or not row["user"]:
            continue
        insider, scenario = _user(row["user"]), row["scenario"]
        name = row.get("details") or ""
        incident = Path(name).stem if name else f"r{wanted}-{scenario}-{insider}"
        label = {"incident": incident, "scenario": SCENARIOS.get(scenario, f"scenario {scenario}"), "person": insider}
        places = (path.parent / f"r{wanted}-{scenario}" / name, path.parent / name) if name else ()
        details = next((p for p in places if p.is_file()), None)
        if details is None:
            missing.append(name or incident)
            times = {edge: _answer_time(path, line, row, edge) for edge in ("start", "end")}
            labels.append(label | times)
            continue
        for (user, _), (first, last, kinds) in _acts(details).items():
            role = "insider" if user.lower() == insider.lower() else "compromised"
            labels.append(label | {"person": user, "role": role, "start": first, "end": last, "kinds": kinds})
    if missing and warnings is not None:
        warnings.append(
            f"{len(missing)} insiders' details files are not beside {path} (for example r{wanted}-*/{missing[0]}): "
            "each of them counts every day from its start to its end as malicious"
        )
    return labels


def _acts(details: Path) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(user, UTC date) -> first and last time and the kinds (`http device`) of the malicious records of an answers'
    details file (rows of `kind,id,date,user,pc,...` without a header)."""
    acts: dict[tuple[str, str], tuple[str, str, str]] = {}
    with text_lines(details) as lines:
        for number, fields in enumerate(csv.reader(lines), start=1):
            if not fields:
                continue
            try:
                when = _time(fields[2])
                user = _user(fields[3])
            except (IndexError, ValueError) as exc:
                raise CustodesError.at(details, f"line {number}: not a CERT answers record ({exc})") from None
            key = (user, when[:10])
            first, last, kinds = acts.get(key, (when, when, ""))
            kind = fields[0].strip().lower()
            kinds = kinds if kind in kinds.split() else f"{kinds} {kind}".strip()
            acts[key] = (min(first, when), max(last, when), kinds)
    return acts
