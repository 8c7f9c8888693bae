"""GitHub organisation audit log: ``GET /orgs/{org}/audit-log`` in ascending order from a watermark.

Each round asks for ``phrase=created:>=<watermark - overlap>`` with ``order=asc`` and follows the ``Link``
``rel="next"`` (``after`` cursor); every page commits with the watermark (its newest event, never past the
connector's clock: a record stamped in the future by a server whose clock runs ahead does not make the next rounds
skip the present), the ids seen in the overlap window, and the next link, so an interrupted round resumes at that
link; an empty page or a link back to a page the round has read is followed again, up to `MAX_STALLS` times in a
row. Throttling: the primary limit (403/429 with ``X-RateLimit-Remaining: 0``) waits for ``X-RateLimit-Reset``, the
secondary one its ``Retry-After``; a response with no requests left pauses until the reset.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from yarl import URL

from custodes.connectors.base import Batch
from custodes.connectors.envelope import to_event
from custodes.connectors.http import PageTrail, links, next_page
from custodes.connectors.options import PollOptions
from custodes.connectors.poller import TokenPoller
from custodes.connectors.runtime import Watermark
from custodes.sources import SourceSettings

GITHUB_API = "https://api.github.com"
DEFAULT_SOURCE = SourceSettings(format="github")
MAX_STALLS = 3
"""Empty pages or links back to pages already read, in a row, after which a round ends (the next one resumes at the
link)."""


class GitHubOptions(PollOptions):
    """`github` connector options."""

    org: str
    page_size: int = 100
    base_url: str = GITHUB_API
    phrase: str = ""


def phrase_time(value: datetime) -> str:
    """A time as GitHub's search syntax takes it."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class GitHubAuditLog(TokenPoller[GitHubOptions]):
    """One organisation's audit log as a connector."""

    def _first_page(self, mark: Watermark) -> str:
        if self.window is not None:
            created = f"created:{phrase_time(self.window[0])}..{phrase_time(self.window[1])}"
        else:
            since = (mark.time or self.clock() - self.options.lookback) - self.options.overlap
            created = f"created:>={phrase_time(since)}"
        phrase = f"{self.options.phrase} {created}".strip()
        query = {"phrase": phrase, "order": "asc", "per_page": str(min(self.options.page_size, 100)), "include": "all"}
        base = self.options.base_url.rstrip("/")
        return str(URL(f"{base}/orgs/{self.options.org}/audit-log").with_query(query))

    async def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """One round: from the saved next link, or from the watermark less the overlap."""
        state = checkpoint or {}
        if state.get("done"):
            return
        mark = Watermark.load(state.get("watermark"))
        url = str(state.get("next") or self._first_page(mark))
        headers = {
            "Authorization": f"Bearer {self.token.reveal()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        stalls, trail = 0, PageTrail(url)
        while True:
            response = await self._get(url, headers)
            records = response.data
            if not isinstance(records, list):
                raise ValueError("the audit log answered with something other than a JSON array")
            events = mark.fresh(to_event(record, self.settings, self.source) for record in records)
            newest = max((event.time for event in events), default=None)  # a clock ahead does not skip time
            mark.advance(None if newest is None else min(newest, self.clock()), self.options.overlap)
            target = links(response.headers).get("next")
            following = None if target is None else next_page(url, target)
            revisit = following is not None and trail.again(following)
            stalls = stalls + 1 if revisit or not records else 0
            value: dict[str, Any] = {"watermark": mark.dump(), "next": following}
            if following is None and self.window is not None:
                value["done"] = True
            yield Batch(events, value)
            if following is None or stalls > MAX_STALLS:
                return
            url = following
