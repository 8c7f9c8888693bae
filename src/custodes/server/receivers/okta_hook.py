"""Okta event hooks: `{eventType: com.okta.event_hook, data: {events: [System Log events]}}`."""

from __future__ import annotations

from typing import Any

from custodes.server.receivers.base import BadDelivery, Delivery

VERIFICATION_HEADER = "X-Okta-Verification-Challenge"


def verification(challenge: str) -> dict[str, str]:
    """The one-time verification answer Okta expects for a GET with the challenge header."""
    return {"verification": challenge}


def parse(body: Any, source: str) -> Delivery:
    """The System Log events of one delivery, as raw records of the Okta source."""
    events = (
        body.get("data", {}).get("events") if isinstance(body, dict) and isinstance(body.get("data"), dict) else None
    )
    if not isinstance(events, list):
        raise BadDelivery(
            "invalid_delivery", "expected an Okta event hook delivery with data.events[]", field="data.events"
        )
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise BadDelivery("invalid_delivery", "each event must be a JSON object", field=f"data.events[{index}]")
    return Delivery(records=events, source=source, records_at="data.events")
