"""Splunk's webhook alert action: `{sid, search_name, app, owner, results_link, result: {first row}}`."""

from __future__ import annotations

from typing import Any

from custodes.server.receivers.base import Alert, BadDelivery, Delivery, first, located, severity, text, when

ENTITY_FIELDS = ("user", "src_user", "user_name", "User", "userName", "actor", "email")


def parse(body: Any, entity_fields: tuple[str, ...] = ENTITY_FIELDS) -> Delivery:
    """One alert per webhook call; the search name is the rule, the result row carries the entity."""
    if not isinstance(body, dict):
        raise BadDelivery("invalid_alert", "a Splunk webhook body is a JSON object")
    sid = text(body.get("sid"))
    if sid is None:
        raise BadDelivery("invalid_alert", "missing 'sid' (the search id of the triggering search)", field="sid")
    result = body.get("result")
    if result is not None and not isinstance(result, dict):
        raise BadDelivery("invalid_alert", "'result' must be an object (the first result row)", field="result")
    row: dict[str, Any] = result or {}
    name = text(body.get("search_name")) or f"Splunk search {sid}"
    entity = text(first(row, *entity_fields))
    urgency_path, urgency = located(row, "severity", "urgency", "risk_score")
    time_path, at = located(row, "_time")
    return Delivery(
        alerts=[
            Alert(
                vendor_id=f"{sid}:{text(row.get('_cd')) or text(row.get('_serial')) or ''}",
                rule_id=f"splunk:{name}",
                title=name,
                severity=severity(urgency, f"result.{urgency_path}"),
                entity=entity,
                time=when(at, f"result.{time_path}"),
                raw=body,
            )
        ]
    )
