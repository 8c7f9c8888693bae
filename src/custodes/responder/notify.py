"""Notification actions: post a message to a chat incoming webhook (Slack, Teams, or anything alike).

Playbooks name a channel; its URL (which embeds a credential) lives in ``responder.channels`` as a secret
reference, so it never appears in a playbook, a plan, a step record or a log. A channel without a URL (the
default ``soc`` one) writes the message to the service's log and the step's output instead. The values a
playbook's expressions put into ``text`` are escaped for the channel's markup ``format`` (``custodes.markup``), so
event data shows as written, never as a mention or a link.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from yarl import URL

from custodes.config import ResponderSettings
from custodes.markup import ESCAPERS, Escaper
from custodes.responder.http import send
from custodes.responder.registry import ActionContext, ActionError, action

log = logging.getLogger(__name__)


def _channel_url(ctx: ActionContext, channel: str) -> URL | None:
    """The channel's webhook URL; None for a channel that only logs."""
    configured = ctx.settings.channels.get(channel)
    if configured is None:
        known = ", ".join(sorted(ctx.settings.channels)) or "none configured"
        raise ActionError(
            f"unknown notify channel {channel!r} (channels: {known}); add it under responder.channels",
            code="not_configured",
        )
    if configured.url is None:
        return None
    try:
        target = URL(configured.url.reveal())
    except ValueError:
        target = URL()
    if target.scheme not in {"http", "https"} or not target.host:
        raise ActionError(
            f"channel {channel!r}: the webhook URL must be an absolute http(s) URL", code="invalid_argument"
        )
    return target


def _text_escaper(arguments: Mapping[str, Any], settings: ResponderSettings) -> Escaper | None:
    """The escaper of the channel's markup format; None for a channel that is not configured (the call fails)."""
    channel = arguments.get("channel")
    configured = settings.channels.get(channel) if isinstance(channel, str) else None
    return None if configured is None else ESCAPERS[configured.format]


@action(
    "notify.webhook", plan="post a message to the {channel} channel", target="channel", escape={"text": _text_escaper}
)
async def webhook(
    ctx: ActionContext, *, channel: str, text: str, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Post to a configured incoming-webhook channel: `payload` as the JSON body if given, else ``{"text": text}``."""
    target = _channel_url(ctx, channel)
    body = payload if payload is not None else {"text": text}
    if ctx.dry_run:
        return {"delivered": False, "dry_run": True, "would": f"post a message to the {channel} channel", "body": body}
    if target is None:
        log.warning("notify %s (no url configured, logged only): %s", channel, text)
        return {"delivered": False, "logged": True, "channel": channel, "text": text}
    response = await send(ctx.http, "POST", str(target), json=body, timeout_seconds=ctx.settings.http_timeout_seconds)
    return {"status": response.status, "delivered": True, "channel": channel}
