"""What the token-authenticated polling connectors (Okta, GitHub, Google Workspace) hold, and their backfill."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, replace
from datetime import datetime
from typing import Generic, Self, TypeVar

import aiohttp

from custodes.config import Secret
from custodes.connectors.options import PollOptions
from custodes.connectors.runtime import backfill_name
from custodes.model import utcnow
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
