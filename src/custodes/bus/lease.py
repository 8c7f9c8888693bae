"""The pull connectors' lease: one receiver of a cluster at a time runs the enabled pull connectors.

The lease is a PostgreSQL session advisory lock, keyed by the store's schema and the cluster's exchange, held on a
connection of its own. PostgreSQL frees it when that session ends, so a receiver that dies (even by SIGKILL: its
socket closes) hands the connectors over to the next receiver that asks, within `LEASE_SECONDS`. The holder checks
its session every `LEASE_SECONDS` and stops the connectors when it is gone; in the moment between the session's end
and that check, two receivers may poll at once, which costs duplicate reads only (checkpoints are transactional,
events deduplicated by id)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from custodes.connectors.supervisor import ConnectorSupervisor
from custodes.store import Store
from custodes.store.locks import lock_key

log = logging.getLogger(__name__)
LEASE_SECONDS = 2.0
"""How often a receiver asks for the lease, and how often its holder checks it still holds it."""


class ConnectorLease:
    """Runs the supervisor's enabled connectors while this process holds the cluster's lease."""

    def __init__(self, store: Store, supervisor: ConnectorSupervisor, exchange: str) -> None:
        self.store = store
        self.supervisor = supervisor
        self.key = lock_key("connectors", store.settings.schema_name, exchange)
        self.held = False

    async def run(self, stop: asyncio.Event) -> None:
        """Ask for the lease until `stop`; run the connectors while it is held, stop them when it is lost (no
        enabled connector: no lease to ask for)."""
        if not self.supervisor.autostart:
            await stop.wait()
            return
        while not stop.is_set():
            try:
                async with self.store.engine.connect() as conn:
                    if await self._take(conn):
                        await self._hold(conn, stop)
            except (OSError, SQLAlchemyError) as exc:
                if self.held:
                    log.warning("connector lease lost: %s", type(exc).__name__)
            finally:
                if self.held:
                    self.held = False
                    for name in sorted(self.supervisor.autostart):
                        await self.supervisor.stop(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LEASE_SECONDS)

    async def _take(self, conn: AsyncConnection) -> bool:
        taken = (await conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key})).scalar_one()
        await conn.commit()
        return bool(taken)

    async def _hold(self, conn: AsyncConnection, stop: asyncio.Event) -> None:
        """Run the connectors; check the session every `LEASE_SECONDS` (raising when it is gone) until `stop`."""
        self.held = True
        log.info("connector lease taken: this receiver runs the pull connectors")
        self.supervisor.start_all()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LEASE_SECONDS)
            await conn.execute(sa.text("SELECT 1"))
            await conn.commit()
        await conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        await conn.commit()
