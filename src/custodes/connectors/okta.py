"""Okta System Log polling: ``GET /api/v1/logs?since=...`` once, then the ``Link: rel="next"`` URL forever.

The checkpoint is the next link (path and query) plus the ids of the last events emitted, which drop a page
served twice (a repeated cursor). Polling without ``until`` always returns a next link, so a round ends on a
page shorter than ``limit``, or on a link back to a page the round has read, and the next round starts from the
saved link.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from yarl import URL

from custodes.connectors.base import Batch
from custodes.connectors.envelope import iso_millis, to_event
from custodes.connectors.http import PageTrail, links
from custodes.connectors.options import PollOptions
from custodes.connectors.poller import TokenPoller

LOGS = "/api/v1/logs"


class OktaLogOptions(PollOptions):
    """`okta` connector options."""

    base_url: str


@dataclass
class OktaSystemLog(TokenPoller[OktaLogOptions]):
    """Polls one Okta org's System Log."""

    @property
    def base_url(self) -> str:
        """The org's base URL, without a trailing slash."""
        return self.options.base_url.rstrip("/")

    def _first_page(self) -> str:
        start = self.window[0] if self.window else self.clock() - self.options.lookback
        query = {"since": iso_millis(start), "limit": str(self.options.page_size)}
        if self.window:
            query["until"] = iso_millis(self.window[1])
        return f"{LOGS}?{urlencode(query)}"

    async def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """One round: follow next links until a short page; each page commits with the link after it."""
        state = checkpoint or {}
        if state.get("done"):
            return
        recent: list[str] = [str(i) for i in state.get("recent", [])]
        path = str(state.get("next") or self._first_page())
        headers = {"Authorization": f"SSWS {self.token.reveal()}", "Accept": "application/json"}
        trail = PageTrail(path)  # paths and queries: the link is followed on base_url
        while True:
            response = await self._get(self.base_url + path, headers)
            records = response.data
            if not isinstance(records, list):
                raise ValueError(f"GET {LOGS}: expected a JSON array of log events, got {type(records).__name__}")
            target = links(response.headers).get("next")
            following = URL(target).path_qs if target else None
            known = set(recent)
            events = []
            for record in records:
                event = to_event(record, self.settings, self.source)
                if event.id not in known:
                    known.add(event.id)
                    events.append(event)
            recent = (recent + [event.id for event in events])[-2 * self.options.page_size :]
            done = self.window is not None and following is None
            value: dict[str, Any] = {"next": following or path, "recent": recent}
            if done:
                value["done"] = True
            yield Batch(events, value)
            if following is None or trail.again(following) or len(records) < self.options.page_size:
                return
            path = following
