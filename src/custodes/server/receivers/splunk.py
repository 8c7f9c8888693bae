"""Splunk's webhook alert action: `{sid, search_name, app, owner, results_link, result: {first row}}`."""

from __future__ import annotations

from typing import Any

from custodes.server.receivers.base import (
    Alert,
    BadDelivery,
    Delivery,
    entity,
    located,
    rule,
    severity,
    text,
    title,
    when,
)

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
    searched = text(body.get("search_name"))
    name, name_path = (searched, "search_name") if searched else (f"Splunk search {sid}", "sid")
    entity_path, who = located(row, *entity_fields)
    urgency_path, urgency = located(row, "severity", "urgency", "risk_score")
    time_path, at = located(row, "_time")
    return Delivery(
        alerts=[
            Alert(
                vendor_id=f"{sid}:{text(row.get('_cd')) or text(row.get('_serial')) or ''}",
                rule_id=rule(name, name_path, "splunk:"),
                title=title(name),
                severity=severity(urgency, f"result.{urgency_path}"),
                entity=entity(who, f"result.{entity_path}"),
                time=when(at, f"result.{time_path}"),
                raw=body,
            )
        ]
    )
