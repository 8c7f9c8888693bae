"""What a bus message holds: one event as a receiver or connector read it, the alert it carries (if any) and the
webhook receiver that accepted it (whose playbook triggers the worker owes in the event's transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from custodes.model import Event, Finding, FindingStatus, LogSource, Outcome, Severity


class BadMessage(ValueError):
    """A message that is not an envelope this version reads."""


@dataclass(slots=True)
class Envelope:
    """One event on the bus, with its alert and receiver."""

    event: Event
    alert: Finding | None = None
    receiver: str | None = None


def encode(envelope: Envelope) -> bytes:
    """The message body (JSON)."""
    event = envelope.event
    body: dict[str, Any] = {
        "event": {
            "id": event.id,
            "time": event.time.isoformat(),
            "source": event.source,
            "logsource": [event.logsource.product, event.logsource.service, event.logsource.category],
            "raw": event.raw,
            "actor": event.actor,
            "action": event.action,
            "target": event.target,
            "outcome": event.outcome.value,
            "src_ip": event.src_ip,
            "bytes": event.bytes,
            "warnings": event.warnings,
        },
        "receiver": envelope.receiver,
    }
    alert = envelope.alert
    if alert is not None:
        body["alert"] = {
            "id": alert.id,
            "dedup_key": alert.dedup_key,
            "detector": alert.detector,
            "rule_id": alert.rule_id,
            "title": alert.title,
            "severity": int(alert.severity),
            "entity": alert.entity,
            "event_ids": alert.event_ids,
            "tags": alert.tags,
            "first_seen": alert.first_seen.isoformat(),
            "last_seen": alert.last_seen.isoformat(),
            "source": alert.source,
            "count": alert.count,
            "status": alert.status.value,
            "description": alert.description,
        }
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def decode(body: bytes) -> Envelope:
    """The envelope a message body holds; BadMessage saying what is wrong."""
    try:
        data = orjson.loads(body)
        item = data["event"]
        product, service, category = item["logsource"]
        event = Event(
            id=item["id"],
            time=datetime.fromisoformat(item["time"]),
            source=item["source"],
            logsource=LogSource(product, service, category),
            raw=dict(item["raw"]),
            actor=item["actor"],
            action=item["action"],
            target=item["target"],
            outcome=Outcome(item["outcome"]),
            src_ip=item["src_ip"],
            bytes=item["bytes"],
            warnings=list(item["warnings"]),
        )
        alert = None if data.get("alert") is None else _alert(data["alert"])
        return Envelope(event, alert, data.get("receiver"))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadMessage(f"not an event envelope: {type(exc).__name__}: {exc}") from None


def _alert(item: dict[str, Any]) -> Finding:
    return Finding(
        id=item["id"],
        dedup_key=item["dedup_key"],
        detector=item["detector"],
        rule_id=item["rule_id"],
        title=item["title"],
        severity=Severity(item["severity"]),
        entity=item["entity"],
        event_ids=list(item["event_ids"]),
        tags=list(item["tags"]),
        first_seen=datetime.fromisoformat(item["first_seen"]),
        last_seen=datetime.fromisoformat(item["last_seen"]),
        source=item["source"],
        count=int(item["count"]),
        status=FindingStatus(item["status"]),
        description=item["description"],
    )
