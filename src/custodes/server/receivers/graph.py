"""Microsoft Graph change notifications: `{value: [{subscriptionId, clientState, changeType, resource, ...}]}`."""

from __future__ import annotations

import hmac
from typing import Any

from custodes.server.receivers.base import BadDelivery, Delivery


def parse(body: Any, client_state: str, source: str) -> Delivery:
    """Each notification, after its clientState matched the secret agreed at subscription time."""
    items = body.get("value") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadDelivery("invalid_notification", "expected a changeNotificationCollection with value[]", field="value")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadDelivery("invalid_notification", "each notification must be an object", field=f"value[{index}]")
        presented = item.get("clientState")
        if not isinstance(presented, str) or not hmac.compare_digest(presented.encode(), client_state.encode()):
            raise PermissionError(f"value[{index}].clientState does not match the subscription's clientState")
    return Delivery(records=items, source=source, records_at="value")
