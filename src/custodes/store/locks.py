"""PostgreSQL advisory locks: one key per purpose and store schema (and, for a cluster's own turns, its exchange), so
deployments that share a database in schemas of their own never wait for, or skip a turn because of, each other."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:
    from custodes.store.database import Store


def lock_key(purpose: str, schema: str | None, scope: str = "") -> int:
    """The signed 64-bit advisory lock key of `purpose` in the store's `schema` (None: the default schema), within
    `scope` (a cluster's exchange; empty for what the whole store shares)."""
    digest = hashlib.sha256(f"custodes.{purpose}/{schema or ''}/{scope}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def transaction_lock(conn: AsyncConnection, key: int) -> None:
    """Take the advisory lock `key` until the transaction on `conn` ends."""
    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


@asynccontextmanager
async def holding(store: Store, purpose: str, scope: str = "", *, wait: bool = True) -> AsyncIterator[bool]:
    """Hold the store's session advisory lock of `purpose` (`lock_key`) on a connection of its own for the block,
    which gets whether it holds it: waiting for it (`wait`), or not taken when another session holds it. PostgreSQL
    frees it if the process dies."""
    key = lock_key(purpose, store.settings.schema_name, scope)
    async with store.engine.connect() as conn:
        if wait:
            await conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            held = True
        else:
            held = bool((await conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key})).scalar_one())
        await conn.commit()
        try:
            yield held
        finally:
            if held:
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                await conn.commit()
