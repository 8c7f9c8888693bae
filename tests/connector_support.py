"""What the pull-connector tests share: a wired pipeline without rules or playbooks, and draining helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from custodes.config import DatabaseSettings, Settings
from custodes.connectors.base import Connector
from custodes.connectors.retry import RetryPolicy
from custodes.services import Services
from custodes.store.tables import events

FAST = RetryPolicy(attempts=8, max_wait=2.0, backoff=0.01)
"""Retries that keep tests fast while still backing off."""


def quiet_settings(database: DatabaseSettings, empty: Path) -> Settings:
    """Settings with the given store and no rules or playbooks."""
    settings = Settings(database=database)
    settings.detection.rules = [empty]
    settings.playbooks.paths = [empty]
    return settings


@pytest.fixture
async def services(database: DatabaseSettings, tmp_path: Path) -> AsyncIterator[Services]:
    """The wired application on a fresh store, with no rules or playbooks."""
    empty = tmp_path / "empty"
    empty.mkdir()
    async with await Services.open(quiet_settings(database, empty)) as opened:
        yield opened


async def stored_raw(services: Services, source: str) -> list[dict[str, Any]]:
    """The raw records stored for a source."""
    async with services.store.engine.connect() as conn:
        rows = await conn.execute(sa.select(events.c.raw).where(events.c.source == source))
        return [dict(row[0]) for row in rows]


async def poll(services: Services, connector: Connector, times: int = 1) -> int:
    """Run `times` polls of a connector through the pipeline; return how many events were newly stored."""
    stored = 0
    for _ in range(times):
        stored += (await services.pipeline.replay(connector)).stored
    return stored
