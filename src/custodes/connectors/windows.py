"""Windows event log records rendered as JSON (evtx records as evtx_dump and SigmaHQ's regression data write
them), the flat field view Sigma's Windows rules are written against, and what a Security event says (its id,
account, machine, logon type, outcome, time) whether it comes as evtx JSON or flat, as SIEMs and forwarders hold
it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Final


def rendered_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a file holding one or several concatenated JSON documents."""
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return
        record, position = decoder.raw_decode(text, position)
        yield record


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """System scalars (EventID, Channel, Computer, ...; an element with attributes beside its text, as EventID
    with Qualifiers, by its text), the provider as Provider_Name, and every leaf under
    EventData and UserData by its element name; Defender-style names with spaces ("Source Name") are also
    given without them ("SourceName"), which is how the Sigma Windows taxonomy spells them."""
    event = record["Event"]
    system = event["System"]
    flat: dict[str, Any] = {
        key: _text_of(value) for key, value in system.items() if not isinstance(value, dict) or "#text" in value
    }
    provider = attribute(system.get("Provider"), "Name")
    if provider is not None:
        flat["Provider_Name"] = provider
    for section in ("EventData", "UserData"):
        data = event.get(section)
        if isinstance(data, dict):
            _merge_leaves(flat, data)
    return flat


def attribute(element: Any, name: str) -> Any:
    """An XML attribute of an element as evtx JSON renders it (`{"#attributes": {name: value}}`); None without it."""
    attributes = element.get("#attributes") if isinstance(element, dict) else None
    return attributes.get(name) if isinstance(attributes, dict) else None


def _merge_leaves(flat: dict[str, Any], data: dict[str, Any]) -> None:
    """Every leaf of `data` by its key, in document order, however deep (a loop, not recursion: the nesting is the
    record's)."""
    stack = [iter(data.items())]
    while stack:
        for key, value in stack[-1]:
            if key == "#attributes":
                continue
            if isinstance(value, dict):
                stack.append(iter(value.items()))
                break
            flat[key] = value
            flat[key.replace(" ", "")] = value
        else:
            stack.pop()


def _text_of(value: Any) -> Any:
    """A System element's value: its text when the renderer wrote attributes beside it (`EventID` with
    `Qualifiers`), the value itself otherwise."""
    return value.get("#text") if isinstance(value, dict) else value


LOGON_EVENTS: Final = frozenset({"4624", "4625", "4634", "4647", "4800", "4801"})
"""Security events whose account is the one logged on, refused, logged off, locked or unlocked (its `TargetUserName`);
every other event's account is the one that acted (its `SubjectUserName`)."""
TIME_FIELDS: Final = ("TimeCreated", "TimeGenerated", "EventTime", "SystemTime", "_time")
"""Where a flat record holds its time: evtx JSON flattened, Sentinel's `SecurityEvent`, NXLog, Splunk's result."""
_COMPUTER = ("Computer", "ComputerName", "Hostname", "computer", "dest_nt_host", "dest", "host")
_TARGET = ("TargetUserName", "user", "Account_Name")
_SUBJECT = ("SubjectUserName", "src_user", "Account_Name")
_PLACEHOLDERS = frozenset({"", "-", "N/A"})
AUDIT_FAILURE: Final = 0x0010000000000000
"""The `Keywords` bit of an audit failure."""


def security_fields(record: dict[str, Any]) -> dict[str, Any] | None:
    """The flat fields of a Windows event record, by the event's own names (`EventID`, `Computer`,
    `TargetUserName`, `LogonType`, ...): evtx JSON (`{"Event": {"System": ..., "EventData": ...}}`) flattened; a
    record already flat (Splunk's Windows add-on, Sentinel's `SecurityEvent`, NXLog, a forwarder's JSON) as it is; a
    Splunk result whose search head extracts no fields, from the event's XML in `_raw` (the fields it does extract
    win). None when the record holds no event id."""
    event = record.get("Event")
    if isinstance(event, dict) and isinstance(event.get("System"), dict):
        flat = flatten(record)
    else:
        raw = record.get("_raw")
        flat = {**xml_fields(raw), **record} if isinstance(raw, str) and raw.startswith("<Event") else record
    return flat if event_code(flat) else None


_XML_ENTITIES: Final = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


@cache
def _xml_patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """The patterns an event's XML is read with (compiled on first use: most processes read none)."""
    return (
        re.compile(r"<(EventID|Task|Keywords|EventRecordID|Channel|Computer)(?:\s[^>]*)?>([^<]*)</\1>"),
        re.compile(r"<TimeCreated SystemTime=['\"]([^'\"]+)['\"]"),
        re.compile(r"<Data Name=['\"]([^'\"]+)['\"]>([^<]*)</Data>"),
        re.compile(r"&(?:#(\d{1,7})|#x([0-9A-Fa-f]{1,6})|(lt|gt|amp|quot|apos));"),
    )


def xml_fields(text: str) -> dict[str, Any]:
    """The System values and named `Data` of an event's XML rendering (Splunk's `XmlWinEventLog` `_raw`), XML's
    entities and character references unescaped. Read by pattern, not by an XML parser: the text is the event's, and
    nothing in it is expanded."""
    system, created, data, entity = _xml_patterns()

    def unescape(value: str) -> str:
        return entity.sub(_entity, value) if "&" in value else value

    fields: dict[str, Any] = {name: unescape(value) for name, value in system.findall(text)}
    found = created.search(text)
    if found is not None:
        fields["TimeCreated"] = found[1]
    fields.update((name, unescape(value)) for name, value in data.findall(text))
    return fields


def _entity(found: re.Match[str]) -> str:
    decimal, hexadecimal, name = found.groups()
    if name is not None:
        return _XML_ENTITIES[name]
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    return chr(code) if code <= 0x10FFFF else found[0]


def event_code(flat: dict[str, Any]) -> str:
    """A flat record's event id as text (`EventID`, Splunk's classic `EventCode`, a forwarder's `event_id`); empty
    when it has none."""
    for key in ("EventID", "EventCode", "event_id"):
        value = _text_of(flat.get(key))
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and value.strip().isdigit():
            return value.strip()
    return ""


def _named(flat: dict[str, Any], keys: tuple[str, ...], last: bool) -> str | None:
    """The value of the first of `keys` that names something (of several values, as Splunk's classic `Account_Name`
    gives the subject first and the new logon's account last, the `last` or the first); None for Windows'
    placeholders (`-`)."""
    for key in keys:
        value = flat.get(key)
        if isinstance(value, list):
            value = value[-1 if last else 0] if value else None
        if isinstance(value, str) and value.strip() not in _PLACEHOLDERS:
            return value.strip()
    return None


def security_actor(flat: dict[str, Any], code: str) -> str | None:
    """Who an event is about: the account logged on (or refused, off, locked, unlocked) for `LOGON_EVENTS`, the
    account that acted for every other."""
    return target_account(flat) if code in LOGON_EVENTS else subject_account(flat)


def target_account(flat: dict[str, Any]) -> str | None:
    """The account an event was done to or for (`TargetUserName`, Splunk's CIM `user`, the last `Account_Name`)."""
    return _named(flat, _TARGET, last=True)


def subject_account(flat: dict[str, Any]) -> str | None:
    """The account that acted (`SubjectUserName`, Splunk's CIM `src_user`, the first `Account_Name`)."""
    return _named(flat, _SUBJECT, last=False)


def computer(flat: dict[str, Any]) -> str | None:
    """The machine that logged the event."""
    return _named(flat, _COMPUTER, last=False)


def logon_type(flat: dict[str, Any]) -> str:
    """A logon's type as the record gives it (`LogonType`, Splunk's classic `Logon_Type`, a forwarder's
    `logon_type`): a number as text; empty when it has none."""
    value = next((flat[key] for key in ("LogonType", "Logon_Type", "logon_type") if key in flat), None)
    return "" if value is None or isinstance(value, dict | list) else str(value).strip()


def audit_failure(flat: dict[str, Any]) -> bool:
    """Whether the event is an audit failure: its `Keywords` name one (`Audit Failure`) or carry its bit
    (0x0010000000000000), or Splunk's `action` says `failure`."""
    keywords = _text_of(flat.get("Keywords"))
    if isinstance(keywords, int) and not isinstance(keywords, bool):
        return bool(keywords & AUDIT_FAILURE)
    text = str(keywords or "").strip().lower()
    if text.startswith("0x"):
        try:
            return bool(int(text, 16) & AUDIT_FAILURE)
        except ValueError:
            return False
    return "failure" in text or str(flat.get("action") or "").lower() == "failure"


def access_mask(flat: dict[str, Any]) -> int:
    """An object access's mask (`AccessMask`, Splunk's classic `Access_Mask`: `0x2`); 0 when it has none."""
    value = flat.get("AccessMask", flat.get("Access_Mask"))
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip(), 16) if value is not None else 0
    except ValueError:
        return 0


def time_value(record: dict[str, Any]) -> Any:
    """The time a Windows event record states, as written (evtx JSON's `TimeCreated` `SystemTime`, else the first of
    `TIME_FIELDS`); None without one."""
    event = record.get("Event")
    system = event.get("System") if isinstance(event, dict) else None
    stamp = attribute(system.get("TimeCreated"), "SystemTime") if isinstance(system, dict) else None
    if stamp is not None:
        return stamp
    return next((record[key] for key in TIME_FIELDS if isinstance(record.get(key), str | int | float)), None)
