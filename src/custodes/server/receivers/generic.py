"""The generic JSON receiver: raw records of a source, or alerts mapped with dotted paths from config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from custodes.server.receivers.base import (
    Alert,
    BadDelivery,
    Delivery,
    entity,
    first,
    located,
    rule,
    severity,
    text,
    title,
    when,
)


def _records(body: Any, root: str | None) -> list[dict[str, Any]]:
    items = first(body, root) if root and isinstance(body, dict) else body
    if items is None:
        raise BadDelivery("invalid_record", f"no records at {root!r}", field=root)
    items = items if isinstance(items, list) else [items]
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadDelivery("invalid_record", "each record must be a JSON object", field=f"{root or ''}[{index}]")
    return items


def parse(body: Any, *, source: str | None, root: str | None, alert_fields: Mapping[str, str]) -> Delivery:
    """Records under `root` (the body itself by default); with `alert_fields`, each record is an alert."""
    records = _records(body, root)
    if not alert_fields:
        return Delivery(records=records, source=source, records_at=root or "")
    alerts = []
    for index, record in enumerate(records):

        def locate(name: str, record: dict[str, Any] = record, index: int = index) -> tuple[str, Any]:
            paths = alert_fields.get(name)
            path, value = located(record, *paths.split("|")) if paths else (name, None)
            return f"{root or ''}[{index}].{path}", value

        def pick(name: str) -> Any:
            return locate(name)[1]

        name = text(pick("title"))
        if name is None:
            raise BadDelivery(
                "invalid_alert", f"no title at {alert_fields.get('title')!r}", field=f"{root or ''}[{index}]"
            )
        rule_path, ref = locate("rule")
        if text(ref) is None:
            rule_path, ref = locate("title")
        alerts.append(
            Alert(
                vendor_id=text(pick("id")),
                rule_id=rule(text(ref) or name, rule_path, ""),
                title=title(name),
                severity=severity(locate("severity")[1], locate("severity")[0]),
                entity=entity(locate("entity")[1], locate("entity")[0]),
                time=when(locate("time")[1], locate("time")[0]),
                raw=record,
            )
        )
    return Delivery(alerts=alerts)
