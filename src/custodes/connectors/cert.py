"""CERT insider-threat dataset event CSVs (logon, device, http, email, file) read as ECS records.

The CSVs of the CMU CERT synthetic insider-threat datasets (r4.2 and later layouts) become the ECS documents the
scoring engine's feature extractor reads: logons with the machine, USB connects and disconnects, web requests
(uploads as POST), outbound and inbound mail with recipients and attachment size, and file operations (copies to
removable media as removable-media writes). Times (`MM/DD/YYYY HH:MM:SS`, no zone; without seconds as a spreadsheet
saves them) are read as UTC. `iter_records` reads such a file as it reads any log file, so `custodes replay` and
`custodes eval scoring` take the datasets alike.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

KINDS: dict[str, frozenset[str]] = {
    "email": frozenset({"id", "date", "user", "pc", "to", "from"}),
    "file": frozenset({"id", "date", "user", "pc", "filename"}),
    "http": frozenset({"id", "date", "user", "pc", "url"}),
    "logon": frozenset({"id", "date", "user", "pc", "activity"}),
}
"""Columns of each CERT file; logon and device files share theirs, so each row's activity tells them apart."""
DIRECTORY_COLUMNS = frozenset({"user_id", "email"})
"""Columns a CERT LDAP CSV (a directory, not events) needs."""
PSYCHOMETRIC_COLUMNS = frozenset({"employee_name", "user_id", "o", "c", "e", "a", "n"})
"""Columns of a CERT release's `psychometric.csv` (each person's personality scores, not events)."""
ANSWER_COLUMNS = frozenset({"dataset", "scenario", "user", "start", "end"})
"""Columns of the answers' `insiders.csv` (labels, not events): one row per insider of every dataset release."""
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


def is_answers(header: Iterable[str] | None) -> bool:
    """Whether a CSV header is the answers' `insiders.csv`."""
    return {h.strip().lower() for h in header or ()} >= ANSWER_COLUMNS


def quoted(header: Sequence[str] | None) -> str:
    """A CSV header as an error message quotes it: its first names, each cut short."""
    return ", ".join(repr(name[:40]) for name in (header or ())[:8]) or "nothing"


def not_events(header: list[str]) -> str | None:
    """Why a CSV with `header` (as `csv_rows` reads it) holds no events, where it is one of a CERT dataset's other
    CSVs, and where it goes instead; None for any other CSV."""
    if is_answers(header):
        return "it is the answers' insiders.csv (labels, not events): give it to eval scoring's --labels"
    names = {h.lower() for h in header}
    if names >= DIRECTORY_COLUMNS:
        return (
            "it is a CERT LDAP file (people, not events): give it, or its LDAP folder, as the directory (eval "
            "scoring's --directory, or scoring.directory)"
        )
    if names >= PSYCHOMETRIC_COLUMNS:
        return "it is a CERT psychometric file (people's traits, not events): the evaluation does not read it"
    return None


def csv_rows(lines: Iterable[str]) -> tuple[list[str], Iterator[tuple[int, list[str] | str]]]:
    """The header of a CSV (its names stripped, in their own case) and its non-empty rows, each with the line it
    starts on; a row the CSV reader cannot read (a field past its size limit, say) is what is wrong with it, and
    reading goes on."""
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader, [])]
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


def cert_time(value: str) -> str:
    """A CERT time (`MM/DD/YYYY HH:MM:SS`, or without seconds) as ISO 8601 in UTC; ValueError for one that is not."""
    text = value.strip()
    padded = PADDED_TIME.fullmatch(text)
    if padded is None:
        form = TIME_FORMAT if text.count(":") == 2 else SHORT_TIME_FORMAT
        return datetime.strptime(text, form).replace(tzinfo=UTC).isoformat()
    month, day, year, hour, minute, second = map(int, padded.groups())
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).isoformat()


def cert_user(value: str) -> str:
    """A CERT user column's account (`DTAA/ABC0123` -> `ABC0123`)."""
    return value.strip().rpartition("/")[2]


def _addresses(value: str | None) -> list[str]:
    return [a.strip() for a in (value or "").split(";") if a.strip()]


def _base(row: dict[str, str], category: str, action: str) -> dict[str, Any]:
    return {
        "@timestamp": cert_time(row["date"]),
        "event": {"id": row["id"], "category": [category], "action": action},
        "user": {"name": cert_user(row["user"])},
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


CertRow = tuple[int, dict[str, Any] | list[str] | str, str | None]
"""(line, ECS record, None) of a CERT row; of a row that is not one, (line, its fields, or the CSV reader's complaint
where it read none, what is wrong with it)."""


def cert_records(lines: Iterable[str]) -> Iterator[CertRow] | None:
    """The rows of a CERT event CSV read from `lines` as they come (a dataset's web log runs to gigabytes) as ECS
    records, or None when the CSV is not one; a row that is not one of its kind says why, naming its line."""
    return cert_rows(*csv_rows(lines))


def cert_rows(header: list[str], rows: Iterator[tuple[int, list[str] | str]]) -> Iterator[CertRow] | None:
    """`cert_records` of a CSV already opened with `csv_rows`."""
    kind = cert_kind(header)
    if kind is None:
        return None
    names = [name.lower() for name in header]

    def records() -> Iterator[CertRow]:
        for number, row in rows:
            problem = row if isinstance(row, str) else None
            if not isinstance(row, str):
                try:
                    record = _record(kind, dict(zip(names, row, strict=False)))
                except KeyError as exc:  # a row shorter than the header
                    problem = f"no {exc.args[0]}"
                except ValueError as exc:
                    problem = str(exc)
                else:
                    yield number, record, None
                    continue
            yield number, row, f"line {number}: not a CERT {KIND_NAMES[kind]} row ({problem})"

    return records()


def cert_times(lines: Iterable[str]) -> Iterator[str]:
    """The time of each row of a CERT event CSV that has one, as text that sorts as the time does
    (`YYYY-MM-DDTHH:MM:SS`), read without building the records: enough to tell whether a file is in time order."""
    named, rows = csv_rows(lines)
    header = [name.lower() for name in named]
    if "date" not in header:
        return
    column = header.index("date")
    for _, row in rows:
        value = row[column].strip() if isinstance(row, list) and len(row) > column else ""
        if VALID_TIME.fullmatch(value):  # the datasets' own form, read by position (a gigabytes-long web log)
            yield f"{value[6:10]}-{value[:2]}-{value[3:5]}T{value[11:]}"
            continue
        try:
            yield cert_time(value)[:19]
        except ValueError:  # no time (or none that exists): the reading pass counts the row as not one of its file's
            continue


def is_csv(path: Path) -> bool:
    """Whether a log file is read as CSV (by its name: `.csv`, or `.csv.gz` compressed)."""
    return path.name.lower().endswith((".csv", ".csv.gz"))
