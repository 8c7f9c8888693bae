"""What a receiver extracts from one request: alerts raised elsewhere and raw records of a source."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from custodes.connectors.bounds import clamped, too_long
from custodes.connectors.envelope import dig, parse_time, whole_number
from custodes.model import Event, Finding, LogSource, Severity, stable_id, utcnow
from custodes.widths import ENTITY, RULE_ID, TITLE


class BadDelivery(ValueError):
    """A body that does not have the shape its receiver expects; `field` is a JSON path when known."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


@dataclass(slots=True)
class Alert:
    """An alert another system raised (a Splunk search, a Kibana rule): it becomes a finding."""

    vendor_id: str | None
    rule_id: str
    title: str
    severity: Severity
    entity: str | None
    time: datetime
    raw: dict[str, Any]
    tags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Delivery:
    """Alerts and raw event records (of `source`) carried by one request."""

    alerts: list[Alert] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    source: str | None = None
    records_at: str = ""
    """The JSON path of the records in the body (for errors that name a record's field)."""


def text(value: Any) -> str | None:
    """A scalar as text; None for missing values and containers."""
    if value is None or isinstance(value, dict | list) or value == "":
        return None
    return str(value)


def bounded(value: str, field: str, limit: int, name: str) -> str:
    """`value`, refused (BadDelivery naming `field`) when longer than `limit` characters."""
    reason = too_long(value, limit, name)
    if reason is not None:
        raise BadDelivery("too_long", f"{field}: {reason}", field)
    return value


def entity(value: Any, field: str) -> str | None:
    """An alert's entity (who it is about) as text, refused when longer than a finding's entity may be."""
    found = text(value)
    return None if found is None else bounded(found, field, ENTITY, "an entity")


def rule(value: str, field: str, prefix: str) -> str:
    """The rule id `prefix` + `value`, refused when longer than a finding's rule id may be."""
    return prefix + bounded(
        value, field, RULE_ID - len(prefix), f"a rule id after {prefix!r}" if prefix else "a rule id"
    )


def title(value: str) -> str:
    """An alert's title: descriptive text, cut to what a finding's title holds (the alert keeps it whole)."""
    return clamped(value, TITLE)


def first(record: dict[str, Any], *paths: str) -> Any:
    """The first present value among dotted paths (literal dotted keys win, as Kibana flattens them)."""
    return located(record, *paths)[1]


def located(record: dict[str, Any], *paths: str) -> tuple[str, Any]:
    """The first present value among dotted paths and its path (the first path and None when none is present)."""
    for path in paths:
        value = dig(record, path)
        if value is not None:
            return path, value
    return paths[0], None


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
AHEAD = timedelta(days=1)
"""How far ahead of the clock an alert's time may be."""


def when(value: Any, field: str) -> datetime:
    """An alert time, or now when absent or unreadable (the alert is kept either way); a readable time before
    1970 or more than a day ahead is refused (BadDelivery naming `field`)."""
    if value is None:
        return utcnow()
    try:
        parsed = parse_time(value)
    except (ValueError, OverflowError, OSError):
        return utcnow()
    now = utcnow()
    if not EARLIEST <= parsed <= now + AHEAD:
        raise BadDelivery(
            "invalid_time", f"{field}: {value!r} is before 1970 or more than a day ahead of {now:%Y-%m-%d}", field
        )
    return parsed


SEVERITY_WORDS = {
    "informational": Severity.INFORMATIONAL,
    "info": Severity.INFORMATIONAL,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "moderate": Severity.MEDIUM,
    "high": Severity.HIGH,
    "critical": Severity.CRITICAL,
}


def severity(value: Any, field: str, default: Severity = Severity.MEDIUM) -> Severity:
    """A vendor severity as ours: words (Kibana, Sigma), Splunk urgency 1-5, or a 0-100 risk score; digits
    other than ASCII ones are refused (BadDelivery naming `field`)."""
    if isinstance(value, str):
        word = SEVERITY_WORDS.get(value.strip().lower())
        if word is not None:
            return word
        if any(char.isdigit() for char in value):
            try:
                value = whole_number(value)
            except ValueError as exc:
                raise BadDelivery("invalid_severity", f"{field}: {exc}", field) from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value > 5:
            return (
                Severity.CRITICAL
                if value >= 90
                else Severity.HIGH
                if value >= 70
                else (Severity.MEDIUM if value >= 40 else Severity.LOW)
            )
        return [
            Severity.INFORMATIONAL,
            Severity.INFORMATIONAL,
            Severity.LOW,
            Severity.MEDIUM,
            Severity.HIGH,
            Severity.CRITICAL,
        ][max(0, int(value))]
    return default


def alert_records(alert: Alert, receiver: str, kind: str) -> tuple[Event, Finding]:
    """The stored form of an alert: its raw document as an event, and the finding that references it.

    The event id comes from the vendor's alert id (or the document itself), so a re-delivered alert is a
    duplicate; the finding deduplicates on (receiver kind, rule, entity) like every other finding.
    """
    ident = stable_id(receiver, alert.vendor_id if alert.vendor_id is not None else alert.raw)
    event = Event(
        id=ident,
        time=alert.time,
        source=receiver,
        logsource=LogSource(kind, "alert"),
        raw=alert.raw,
        actor=alert.entity,
        action=alert.title,
    )
    dedup_key = stable_id(kind, alert.rule_id, alert.entity)
    finding = Finding(
        id=stable_id("finding", dedup_key, ident),
        dedup_key=dedup_key,
        detector=kind,
        rule_id=alert.rule_id,
        title=alert.title,
        severity=alert.severity,
        entity=alert.entity,
        event_ids=[ident],
        tags=alert.tags,
        first_seen=alert.time,
        last_seen=alert.time,
        source=receiver,
    )
    return event, finding
