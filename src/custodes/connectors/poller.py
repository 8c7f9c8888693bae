"""What the token-authenticated polling connectors (Okta, GitHub, Google Workspace) hold, how they GET a page, and
their backfill."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, replace
from datetime import datetime
from typing import Generic, Self, TypeVar

import aiohttp

from custodes.config import Secret
from custodes.connectors.http import get_json
from custodes.connectors.options import PollOptions
from custodes.connectors.runtime import backfill_name
from custodes.model import utcnow
from custodes.responder.http import HttpResponse
from custodes.sources import SourceSettings

OptionsT = TypeVar("OptionsT", bound=PollOptions)


@dataclass
class TokenPoller(Generic[OptionsT]):
    """A connector reading one vendor API with a bearer-style token, live or over a fixed window."""

    name: str
    source: str
    settings: SourceSettings
    http: aiohttp.ClientSession
    _: KW_ONLY
    token: Secret
    options: OptionsT
    window: tuple[datetime, datetime] | None = None
    clock: Callable[[], datetime] = utcnow

    def backfill(self, start: datetime, end: datetime) -> Self:
        """The same source over [start, end] only, under its own checkpoint name."""
        return replace(self, name=backfill_name(self.name, start, end), window=(start, end))

    async def _get(self, url: str, headers: Mapping[str, str]) -> HttpResponse:
        """GET `url` as JSON with the options' retry policy and per-request timeout."""
        return await get_json(
            self.http,
            url,
            headers=headers,
            policy=self.options.retry.policy,
            timeout_seconds=self.options.timeout_seconds,
        )
