"""Kibana / Elastic Security alerts posted by a webhook connector with `{{context.alerts}}` in the body.

Alert documents carry `kibana.alert.*` fields (nested or flattened with dots) or, from 7.x detection engine
actions, the legacy `signal.*` fields.
"""

from __future__ import annotations

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

ENTITY_PATHS = ("user.email", "user.name", "user.id", "source.user.name", "winlog.event_data.TargetUserName")


def _alerts(body: Any) -> list[Any]:
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in ("alerts", "context.alerts", "signals"):
            value = first(body, key)
            if isinstance(value, list):
                return value
        if first(body, "kibana.alert.rule.name", "signal.rule.name") is not None:
            return [body]
    raise BadDelivery("invalid_alert", 'expected {"alerts": [...]} (the connector body {{context.alerts}})')


def parse(body: Any) -> Delivery:
    """One finding per alert document."""
    found = []
    for index, doc in enumerate(_alerts(body)):
        if not isinstance(doc, dict):
            raise BadDelivery("invalid_alert", "each alert must be a JSON object", field=f"alerts[{index}]")
        name = text(first(doc, "kibana.alert.rule.name", "signal.rule.name", "rule.name"))
        if name is None:
            raise BadDelivery(
                "invalid_alert", "alert has no kibana.alert.rule.name or signal.rule.name", field=f"alerts[{index}]"
            )
        rule_path, ref = located(
            doc, "kibana.alert.rule.uuid", "kibana.alert.rule.rule_id", "signal.rule.id", "rule.id"
        )
        if text(ref) is None:
            rule_path, ref = located(doc, "kibana.alert.rule.name", "signal.rule.name", "rule.name")
        entity_path, who = located(doc, *ENTITY_PATHS)
        threat = first(doc, "kibana.alert.rule.threat", "signal.rule.threat")
        tags = []
        if isinstance(threat, list):
            for item in threat:
                technique = item.get("technique") if isinstance(item, dict) else None
                for entry in technique if isinstance(technique, list) else []:
                    if isinstance(entry, dict) and text(entry.get("id")):
                        tags.append(f"attack.{str(entry['id']).lower()}")
        rank_path, rank = located(
            doc, "kibana.alert.severity", "signal.rule.severity", "kibana.alert.risk_score", "signal.rule.risk_score"
        )
        time_path, at = located(doc, "kibana.alert.original_time", "signal.original_time", "@timestamp")
        found.append(
            Alert(
                vendor_id=text(first(doc, "kibana.alert.uuid", "_id", "signal.id")),
                rule_id=rule(text(ref) or name, f"alerts[{index}].{rule_path}", "kibana:"),
                title=title(name),
                severity=severity(rank, f"alerts[{index}].{rank_path}"),
                entity=entity(who, f"alerts[{index}].{entity_path}"),
                time=when(at, f"alerts[{index}].{time_path}"),
                raw=doc,
                tags=tags,
            )
        )
    return Delivery(alerts=found)
