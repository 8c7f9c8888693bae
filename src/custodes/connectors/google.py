"""Google Workspace Admin SDK Reports API: activities of the login, drive, admin and token applications.

Activities come newest first, so each application is read in complete sweeps (`runtime.sweep`) over
``startTime``/``endTime`` with ``pageToken`` paging; the reports lag, hence a default overlap of an hour.
Authentication is a bearer access token given as a secret reference (minted outside Custodes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import Field
from yarl import URL

from custodes.connectors.base import Batch
from custodes.connectors.envelope import iso_millis, to_event
from custodes.connectors.options import PollOptions
from custodes.connectors.poller import TokenPoller
from custodes.connectors.runtime import sweep
from custodes.model import Event
from custodes.sources import SourceSettings

REPORTS_URL = "https://admin.googleapis.com"
Application = Literal["login", "drive", "admin", "token", "saml", "groups", "user_accounts"]
DEFAULT_SOURCE = SourceSettings(format="google_workspace")
DEFAULT_APPLICATIONS: tuple[Application, ...] = ("login", "drive", "admin", "token")


class GoogleWorkspaceOptions(PollOptions):
    """`google_workspace` connector options."""

    applications: list[Application] = Field(default_factory=lambda: list(DEFAULT_APPLICATIONS))
    overlap_seconds: float = Field(default=3600.0, ge=0)
    base_url: str = REPORTS_URL
    user_key: str = "all"


@dataclass
class GoogleWorkspaceActivities(TokenPoller[GoogleWorkspaceOptions]):
    """One application's activity report as a connector."""

    application: str

    async def _page(self, start: datetime, end: datetime, cursor: str | None) -> tuple[list[Event], str | None]:
        path = f"/admin/reports/v1/activity/users/{self.options.user_key}/applications/{self.application}"
        query = {"startTime": iso_millis(start), "endTime": iso_millis(end), "maxResults": str(self.options.page_size)}
        if cursor is not None:
            query["pageToken"] = cursor
        url = str(URL(self.options.base_url.rstrip("/") + path).with_query(query))
        headers = {"Authorization": f"Bearer {self.token.reveal()}", "Accept": "application/json"}
        response = await self._get(url, headers)
        body = response.data
        if not isinstance(body, dict):
            raise ValueError("the Reports API answered with something other than a JSON object")
        items = body.get("items", [])
        if not isinstance(items, list):
            raise ValueError("the Reports API page has an 'items' that is not an array")
        following = body.get("nextPageToken")
        events = [to_event(item, self.settings, self.source) for item in items]
        return events, following if isinstance(following, str) and following else None

    def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """One complete sweep (or the rest of an interrupted one)."""
        return sweep(
            self._page,
            checkpoint,
            overlap=self.options.overlap,
            lookback=self.options.lookback,
            now=self.clock(),
            window=self.window,
        )
