"""A local incoming-webhook receiver in the manner of Slack and Microsoft Teams.

``POST /hooks/{name}`` with a JSON object answers 200 ``ok`` (``text/plain``) and records the message.
Like Slack it answers 400 ``invalid_payload`` to a body that is not a JSON object and 400 ``no_text`` to
one with nothing to show (no ``text``, ``blocks``, ``attachments`` or ``sections``). Tests can make the
next requests fail with 429 and a ``Retry-After`` header, or with a 5xx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from custodes.sandbox.statusfaults import StatusFaults

_CONTENT_KEYS = ("text", "blocks", "attachments", "sections")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A message a hook accepted."""

    hook: str
    payload: dict[str, Any]


class ChatState:
    """Accepted messages, the number of requests each hook received, and injected faults."""

    def __init__(self) -> None:
        self.messages: list[ChatMessage] = []
        self.attempts: dict[str, int] = {}
        self._faults = StatusFaults()

    def messages_for(self, hook: str) -> list[dict[str, Any]]:
        """The payloads a hook accepted, oldest first."""
        return [message.payload for message in self.messages if message.hook == hook]

    def fail_next(self, count: int = 1, *, status: int = 429, retry_after: int = 1) -> None:
        """Answer the next `count` requests with `status`: 429 carries ``Retry-After: retry_after``."""
        self._faults.add(count, status, retry_after)


STATE = web.AppKey("chat_state", ChatState)


async def _receive(request: web.Request) -> web.Response:
    state = request.app[STATE]
    hook = request.match_info["name"]
    state.attempts[hook] = state.attempts.get(hook, 0) + 1
    if (fault := state._faults.take()) is not None:
        if fault.status == 429:
            return web.Response(status=429, text="rate_limited", headers={"Retry-After": str(fault.retry_after)})
        return web.Response(status=fault.status, text="internal_error")
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return web.Response(status=400, text="invalid_payload")
    if not isinstance(payload, dict):
        return web.Response(status=400, text="invalid_payload")
    if not any(payload.get(key) for key in _CONTENT_KEYS):
        return web.Response(status=400, text="no_text")
    state.messages.append(ChatMessage(hook, payload))
    return web.Response(text="ok")


def create_app(state: ChatState | None = None) -> web.Application:
    """The receiver as an aiohttp application; pass a `ChatState` to inspect it."""
    app = web.Application()
    app[STATE] = state if state is not None else ChatState()
    app.router.add_post("/hooks/{name}", _receive)
    return app
