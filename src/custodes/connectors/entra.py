"""Microsoft Entra ID through Microsoft Graph: sign-ins, directory audits and risk detections.

A client-credentials token comes from msal (cached by msal until it expires; msal is synchronous, so it runs in a
thread). Graph is read over aiohttp. The reports are newest first, so each feed is read in complete sweeps
(`runtime.sweep`): ``$filter`` on the feed's time property over [watermark - overlap, now], ``@odata.nextLink``
followed as is, the watermark moved only when a sweep is complete. One `RateLimiter` per app keeps every
request under the reports API's limit (5 requests per 10 s); a 429 waits its ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from pydantic import Field
from yarl import URL

from custodes.connectors.base import Batch
from custodes.connectors.envelope import to_event
from custodes.connectors.graph_auth import GraphAuth
from custodes.connectors.http import PageTrail, RateLimiter, get_json, next_page
from custodes.connectors.options import PollOptions
from custodes.connectors.runtime import backfill_name, sweep
from custodes.model import Event, utcnow
from custodes.sources import SourceSettings

GRAPH_URL = "https://graph.microsoft.com"

Feed = Literal["signins", "audits", "risk"]
ALL_FEEDS: tuple[Feed, ...] = ("signins", "audits", "risk")
FEEDS: dict[str, tuple[str, str, str]] = {
    "signins": ("/v1.0/auditLogs/signIns", "createdDateTime", "entra_signin"),
    "audits": ("/v1.0/auditLogs/directoryAudits", "activityDateTime", "entra_audit"),
    "risk": ("/v1.0/identityProtection/riskDetections", "detectedDateTime", "entra_risk"),
}
"""feed -> (Graph path, time property, default source name)."""

DEFAULT_SOURCES = {
    "entra_signin": SourceSettings(format="entra_signin_graph"),
    "entra_audit": SourceSettings(format="entra_audit_graph"),
    "entra_risk": SourceSettings(
        format="generic",
        product="azure",
        service="riskdetection",
        fields={
            "id": "id",
            "time": "detectedDateTime|activityDateTime",
            "actor": "userPrincipalName",
            "action": "riskEventType",
            "target": "userPrincipalName",
            "src_ip": "ipAddress",
        },
    ),
}
"""Sources the feeds use when none with that name is configured."""


class EntraOptions(PollOptions):
    """`entra` and `entra_inventory` connector options."""

    tenant_id: str
    client_id: str
    feeds: list[Feed] = Field(default_factory=lambda: list(ALL_FEEDS))
    requests_per_window: int = Field(default=5, ge=1, description="client-side limit per app")
    window_seconds: float = Field(default=10.0, gt=0)
    graph_url: str = GRAPH_URL
    login_endpoint: str | None = Field(
        default=None, description="send msal's requests for the real authority to this base URL (a simulator)"
    )


@dataclass(slots=True)
class GraphClient:
    """GETs on Graph for one app: token, rate limit, retries."""

    http: aiohttp.ClientSession
    auth: GraphAuth
    limiter: RateLimiter
    options: EntraOptions

    def url(self, path: str) -> str:
        """An absolute Graph URL for a path such as ``/v1.0/users``."""
        return self.options.graph_url.rstrip("/") + path

    async def get(self, url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """One Graph page as a JSON object."""
        target = url if params is None else str(URL(url).update_query(params))
        headers = {"Authorization": f"Bearer {await self.auth.token()}", "Accept": "application/json"}
        response = await get_json(
            self.http,
            target,
            headers=headers,
            policy=self.options.retry.policy,
            timeout_seconds=self.options.timeout_seconds,
            limiter=self.limiter,
        )
        if not isinstance(response.data, dict):
            raise ValueError("Graph answered with something other than a JSON object")
        return response.data

    async def all(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every item of a collection, following ``@odata.nextLink``."""
        items: list[dict[str, Any]] = []
        url = self.url(path)
        page = await self.get(url, params)
        trail = PageTrail(url)
        while True:
            items += [item for item in page.get("value", []) if isinstance(item, dict)]
            following = page.get("@odata.nextLink")
            if not isinstance(following, str):
                return items
            url = trail.follow(url, following)
            page = await self.get(url)


def graph_time(value: datetime) -> str:
    """A filter literal: ISO 8601 in UTC with ``Z``, to the second."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class EntraFeed:
    """One Graph report (sign-ins, directory audits or risk detections) as a connector."""

    def __init__(
        self,
        name: str,
        feed: Feed,
        source: str,
        settings: SourceSettings,
        client: GraphClient,
        *,
        window: tuple[datetime, datetime] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.name = name
        self.feed = feed
        self.source = source
        self.settings = settings
        self.client = client
        self.window = window
        self.clock = clock

    def backfill(self, start: datetime, end: datetime) -> EntraFeed:
        """This feed over [start, end] only."""
        return EntraFeed(
            backfill_name(self.name, start, end),
            self.feed,
            self.source,
            self.settings,
            self.client,
            window=(start, end),
            clock=self.clock,
        )

    async def _page(self, start: datetime, end: datetime, cursor: str | None) -> tuple[list[Event], str | None]:
        path, prop, _ = FEEDS[self.feed]
        url = cursor or self.client.url(path)
        params = {
            "$filter": f"{prop} ge {graph_time(start)} and {prop} le {graph_time(end)}",
            "$top": str(self.client.options.page_size),
        }
        page = await self.client.get(url, None if cursor else params)
        records = page.get("value")
        if not isinstance(records, list):
            raise ValueError(f"Graph {path}: the page has no 'value' array")
        following = page.get("@odata.nextLink")
        events = [to_event(record, self.settings, self.source) for record in records]
        return events, next_page(url, following) if isinstance(following, str) else None

    def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """One complete sweep (or the rest of an interrupted one)."""
        options = self.client.options
        return sweep(
            self._page,
            checkpoint,
            overlap=options.overlap,
            lookback=options.lookback,
            now=self.clock(),
            window=self.window,
        )
