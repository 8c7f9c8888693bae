"""The records inside what SOC engineers save from SIEMs and vendor APIs, so that a file holding an export reads as
the records it holds (`custodes.connectors.files`), as the service's connectors read the same answers live.

A saved answer (one JSON document) holds its records in a list under a key (`RECORD_LISTS`): CloudTrail's log files
(`Records`), a Microsoft Graph or OData page (`value`), Google's Reports API (`items`), Splunk's search results
(`results`), Defender's advanced hunting (`Results`), `aws cloudtrail lookup-events` (`Events`) and an
Elasticsearch search (`hits.hits`). A list is read as records only when its first element is an object. A Log
Analytics (Microsoft Sentinel) or Azure Data Explorer answer holds tables of columns and rows (`TABLE_LISTS`): each
row is a record of its columns (`table_record`).

Each record may itself be wrapped (`wrapping_of`, decided by a file's first record: an export is of one kind):
an Elasticsearch hit (`_index`, `_id`, `_source`: a search's hits, `elasticdump` lines), a line of Splunk's JSON
export (`{"preview": false, "result": {...}}`: Splunk Web's and the REST `export` endpoint's), a Splunk result whose
`_raw` holds the vendor's record as ingested (`raw_record`), a LookupEvents item (its `CloudTrailEvent`), and a
Microsoft 365 audit log search's row (its `AuditData`: Purview's CSV export, `Search-UnifiedAuditLog`'s objects).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from custodes.connectors.envelope import iso_millis, parse_time
from custodes.connectors.textlogs import parse_auditd_line, parse_syslog_line, read_record
from custodes.model import json_object, json_value, utcnow

RecordLists = dict[str, "RecordLists | None"]
"""Keys of a document's records: None for a list of records, else the keys within the object under the key."""
RECORD_LISTS: Final[RecordLists] = {
    "Records": None,
    "value": None,
    "items": None,
    "results": None,
    "Results": None,
    "Events": None,
    "hits": {"hits": None},
}

TABLE_LISTS: Final = frozenset({"tables", "Tables"})
"""Keys of the tables of a Log Analytics (Microsoft Sentinel) or Azure Data Explorer answer: each table a list of
columns (`name` or `ColumnName`, and `type`, `ColumnType` or `DataType`) and a list of rows."""
Columns = list[tuple[str, bool]]
"""A table's column names, each with whether its values are JSON within text (Kusto's `dynamic`)."""

NESTED_PARTS: Final = 32
"""The most parts of a dotted column name read as nested objects: a longer one (no vendor's field is) stays a name of
its own, so that no column builds a record deeper than the store reads back (orjson decodes 1,024 levels)."""

Unwrap = Callable[[dict[str, Any]], tuple[Any, str | None]]
"""The record inside a wrapped one, and a warning (None: none); a None record is no record (a message line)."""


@dataclass(frozen=True, slots=True)
class Wrapping:
    """How the records of an export are wrapped."""

    unwrap: Unwrap
    encoded: bool
    """The record is JSON within a string: a line's bytes do not spell its values as JSON spells them."""


def hit_record(hit: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """An Elasticsearch hit's document (`_source`); an empty one, with a warning, for a hit without it."""
    source = hit.get("_source")
    return (source, None) if isinstance(source, dict) else ({}, "hit has no _source")


def raw_record(result: dict[str, Any]) -> dict[str, Any]:
    """A Splunk result's vendor record as ingested, where its `_raw` holds one: a JSON object; a sudo, sshd or su
    syslog line or an auditd record, parsed as the file tail parses them (`textlogs`), a syslog line at Splunk's
    `_time` (its own stamp has neither year nor zone). Else the result itself, with the fields Splunk extracted."""
    raw = result.get("_raw")
    if not isinstance(raw, str):
        return result
    if raw.lstrip().startswith("{"):
        parsed = json_object(raw.lstrip())
        return result if parsed is None else parsed
    try:
        when = parse_time(result.get("_time"))
    except (ValueError, OverflowError, OSError):
        when = None
    record, warning = parse_syslog_line(raw, when or utcnow())
    if warning is None and read_record(record):
        if when is not None:
            record["time"] = iso_millis(when)
        return record
    record, warning = parse_auditd_line(raw, when or utcnow())
    return record if warning is None else result


def trail_record(item: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A LookupEvents item's CloudTrail record (its `CloudTrailEvent`); where that holds no JSON object, the item's
    summary under CloudTrail's names, with a warning."""
    try:
        record = orjson.loads(item.get("CloudTrailEvent") or "")
    except orjson.JSONDecodeError:
        record = None
    if isinstance(record, dict):
        return record, None
    summary = {**item, "eventID": item.get("EventId"), "eventTime": item.get("EventTime")}
    return summary, "CloudTrailEvent is not a JSON object; kept the LookupEvents summary"


def search_record(row: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A Microsoft 365 unified audit record as an audit log search gives it (Purview's export, PowerShell's
    `Search-UnifiedAuditLog`): the record in its `AuditData` text; where that holds no JSON object, the row itself,
    with a warning."""
    record = json_object(row.get("AuditData"))
    if record is None:
        return row, "AuditData is not a JSON object; kept the search's row"
    return record, None


def _splunk_line(line: dict[str, Any]) -> tuple[Any, str | None]:
    result = line.get("result")
    return (raw_record(result), None) if isinstance(result, dict) else (None, None)


def _splunk_result(result: dict[str, Any]) -> tuple[Any, str | None]:
    return raw_record(result), None


_HIT: Final = Wrapping(hit_record, encoded=False)
_SPLUNK_LINE: Final = Wrapping(_splunk_line, encoded=True)
_SPLUNK_RESULT: Final = Wrapping(_splunk_result, encoded=True)
_LOOKUP: Final = Wrapping(trail_record, encoded=True)
_AUDIT_SEARCH: Final = Wrapping(search_record, encoded=True)
_SPLUNK_LINE_KEYS: Final = ("preview", "offset", "lastrow")
_SPLUNK_KEYS: Final = ("_time", "_cd", "_indextime", "sourcetype")


def nested(row: dict[str, Any]) -> dict[str, Any]:
    """A row of dotted column names (`user.name`) as the nested record they name; a name that collides, or of more
    than `NESTED_PARTS` parts, stays dotted, and nulls are dropped."""
    record: dict[str, Any] = {}
    for name in sorted(row):
        value = row[name]
        if value is None:
            continue
        node = record
        parts = name.split(".", NESTED_PARTS)
        if len(parts) > NESTED_PARTS:
            record[name] = value
            continue
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            if parts[-1] not in node:
                node[parts[-1]] = value
                continue
        record[name] = value
    return record


def table_columns(columns: Any) -> Columns:
    """A Log Analytics or Azure Data Explorer table's columns (an unnamed one `column<n>`)."""
    found: Columns = []
    for position, column in enumerate(columns if isinstance(columns, list) else [], start=1):
        named = column if isinstance(column, dict) else {}
        name = named.get("name") or named.get("ColumnName") or f"column{position}"
        kind = named.get("type") or named.get("ColumnType") or named.get("DataType")
        found.append((str(name), str(kind).lower() == "dynamic"))
    return found


def table_record(columns: Columns, row: Any) -> Any:
    """A table's row as a record of its columns, empty values left out and a `dynamic` column's JSON text decoded;
    a row that is not a list is kept as it is (not a record, which the reader says)."""
    if not isinstance(row, list):
        return row
    record: dict[str, Any] = {}
    for (name, dynamic), value in zip(columns, row, strict=False):
        if value is None or value == "":
            continue
        record[name] = json_value(value) if dynamic else value  # text that is no JSON kept as it is
    return record


PORTAL_UTC: Final = " [UTC]"
"""How the Azure portal's CSV export of a Log Analytics (Sentinel) query names a time column shown in UTC
(`TimeGenerated [UTC]`), its values in the portal's display form (`portal_time`)."""
_PORTAL_TIME: Final = re.compile(
    r"^(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4}), (?P<hour>\d{1,2}):(?P<minute>\d\d):(?P<second>\d\d)"
    r"(?:\.(?P<fraction>\d{1,7}))? (?P<half>[AP]M)$"
)


def portal_time(text: str) -> str:
    """A time as the Azure portal shows it in UTC (`2/25/2025, 9:19:25.391 AM`: month first, a 12-hour clock) in
    ISO 8601 (`2025-02-25T09:19:25.391000Z`); any other text as it stands (a display form of another locale is not
    guessed at: its row is counted without a time)."""
    found = _PORTAL_TIME.match(text)
    if found is None:
        return text
    hour = int(found["hour"]) % 12 + (12 if found["half"] == "PM" else 0)
    try:
        when = datetime(
            int(found["year"]),
            int(found["month"]),
            int(found["day"]),
            hour,
            int(found["minute"]),
            int(found["second"]),
            int((found["fraction"] or "0")[:6].ljust(6, "0")),  # Kusto's ticks are 100 ns: the 7th digit dropped
        )
    except ValueError:  # no such date (13/40/2025)
        return text
    return when.isoformat() + "Z"


def table_rows(
    header: list[str], rows: Iterable[tuple[int, list[str] | str]]
) -> Iterator[tuple[int, dict[str, Any] | str, str | None]]:
    """The rows of a CSV export (a SIEM's search results, a spreadsheet) as records: each column's text under its
    name (`nested`: dotted names as objects; an unnamed column, or a field past the header's names, `column<n>`),
    empty ones left out; a row of more or fewer fields than the header names, with a warning; a row the CSV reader
    could not read is kept as its error, with a warning. A time column of the Azure portal's export (`PORTAL_UTC`)
    is named as its column is (`TimeGenerated`), its values in ISO 8601 (`portal_time`)."""
    names = [name or f"column{position}" for position, name in enumerate(header, start=1)]
    shown = {position for position, name in enumerate(names) if name.endswith(PORTAL_UTC)}
    names = [name.removesuffix(PORTAL_UTC) for name in names]
    for number, row in rows:
        if isinstance(row, str):
            yield number, row, f"line {number}: not a CSV row ({row})"
            continue
        names += [f"column{position}" for position in range(len(names) + 1, len(row) + 1)]
        if shown:
            row = [portal_time(value) if position in shown else value for position, value in enumerate(row)]
        record = nested({name: value for name, value in zip(names, row, strict=False) if value != ""})
        if len(row) == len(header):
            yield number, record, None
        else:
            yield number, record, f"line {number}: {len(row)} fields where the header names {len(header)}"


def wrapping_of(record: dict[str, Any]) -> Wrapping | None:
    """How records shaped as `record` are wrapped; None for a record as it stands."""
    if "_source" in record and "_id" in record:
        return _HIT
    if any(key in record for key in _SPLUNK_LINE_KEYS) and ("result" in record or "messages" in record):
        return _SPLUNK_LINE
    if isinstance(record.get("_raw"), str) and any(key in record for key in _SPLUNK_KEYS):
        return _SPLUNK_RESULT
    if isinstance(record.get("CloudTrailEvent"), str) and "EventId" in record:
        return _LOOKUP
    if isinstance(record.get("AuditData"), str) and "CreationDate" in record:
        return _AUDIT_SEARCH
    return None
