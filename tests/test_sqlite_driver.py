"""The SQLite driver (one thread trip per statement, BEGIN with the first statement) under SQLAlchemy and the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from custodes.config import DatabaseSettings
from custodes.store import Store
from custodes.store.sqlite_driver import DEFERRED, OneTripConnection


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}"))
    async with store.transaction() as tx:
        await tx.conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)"))
    yield store
    await store.close()


async def test_statements_return_rows_counts_and_ids(sqlite_store: Store) -> None:
    async with sqlite_store.transaction() as tx:
        driver = (await tx.conn.get_raw_connection()).driver_connection
        assert isinstance(driver, OneTripConnection)
        first = await tx.conn.execute(sa.text("INSERT INTO t (name) VALUES ('a')"))
        assert first.lastrowid == 1
        many = await tx.conn.execute(sa.text("INSERT INTO t (name) VALUES (:name)"), [{"name": n} for n in "bcd"])
        assert many.rowcount == 3
        returned = await tx.conn.execute(sa.text("INSERT INTO t (name) VALUES ('e'), ('f') RETURNING id, name"))
        assert [tuple(row) for row in returned] == [(5, "e"), (6, "f")]
        updated = await tx.conn.execute(sa.text("UPDATE t SET name = name || '!' WHERE id > 4"))
        assert updated.rowcount == 2
        rows = await tx.conn.execute(sa.text("SELECT id, name FROM t ORDER BY id"))
        assert rows.fetchone() == (1, "a")
        assert rows.fetchmany(2) == [(2, "b"), (3, "c")]
        assert rows.fetchall() == [(4, "d"), (5, "e!"), (6, "f!")]
    async with sqlite_store.engine.connect() as conn:
        streamed = await conn.stream(sa.text("SELECT name FROM t ORDER BY id"))
        assert [row[0] async for row in streamed] == ["a", "b", "c", "d", "e!", "f!"]


async def test_errors_keep_sqlites_message_and_roll_back(sqlite_store: Store) -> None:
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: t\.name"):
        async with sqlite_store.transaction() as tx:
            await tx.conn.execute(sa.text("INSERT INTO t (name) VALUES ('x')"))
            await tx.conn.execute(sa.text("INSERT INTO t (name) VALUES ('x')"))
    with pytest.raises(OperationalError, match="no such table: missing"):
        async with sqlite_store.transaction() as tx:
            await tx.conn.execute(sa.text("SELECT * FROM missing"))
    async with sqlite_store.transaction() as tx:
        assert (await tx.conn.execute(sa.text("SELECT count(*) FROM t"))).scalar() == 0


async def test_an_empty_transaction_commits_and_rolls_back_without_a_statement(sqlite_store: Store) -> None:
    async with sqlite_store.transaction():
        pass
    with pytest.raises(RuntimeError):
        async with sqlite_store.transaction():
            raise RuntimeError("nothing written")
    async with sqlite_store.transaction() as tx:
        await tx.conn.execute(sa.text("INSERT INTO t (name) VALUES ('after')"))
    async with sqlite_store.transaction() as tx:
        assert (await tx.conn.execute(sa.text("SELECT name FROM t"))).scalars().all() == ["after"]


async def test_the_write_lock_is_taken_with_the_first_statement(sqlite_store: Store, tmp_path: Path) -> None:
    """BEGIN IMMEDIATE travels with the first statement, even a read: a second writer waits for the commit."""
    other = await Store.open(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}"))
    order: list[str] = []
    try:
        holding = asyncio.Event()
        release = asyncio.Event()

        async def first() -> None:
            async with sqlite_store.transaction() as tx:
                await tx.conn.execute(sa.text("SELECT count(*) FROM t"))
                holding.set()
                await release.wait()
                await tx.conn.execute(sa.text("INSERT INTO t (name) VALUES ('first')"))
                order.append("first commits")

        async def second() -> None:
            await holding.wait()
            async with other.transaction() as tx:
                await tx.conn.execute(sa.text("INSERT INTO t (name) VALUES ('second')"))
                order.append("second writes")

        task = asyncio.create_task(first())
        waiting = asyncio.create_task(second())
        await holding.wait()
        await asyncio.sleep(0.3)
        assert order == [] and not waiting.done()
        release.set()
        await asyncio.gather(task, waiting)
        assert order == ["first commits", "second writes"]
    finally:
        await other.close()


async def test_committed_callbacks_run_only_after_a_commit(store: Store) -> None:
    seen: list[str] = []
    async with store.transaction() as tx:
        tx.committed.append(lambda: seen.append("kept"))
        assert seen == []
    assert seen == ["kept"]
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            tx.committed.append(lambda: seen.append("rolled back"))
            raise RuntimeError("abandon")
    assert seen == ["kept"]


async def test_deferred_writes_go_with_the_next_statement_or_the_commit(sqlite_store: Store) -> None:
    insert = DEFERRED + "INSERT INTO t (name) VALUES (?)"  # noqa: S608 - a constant statement
    async with sqlite_store.transaction() as tx:
        await tx.conn.exec_driver_sql(insert, ("held",))
        seen = (await tx.conn.execute(sa.text("SELECT name FROM t"))).scalars().all()
        await tx.conn.exec_driver_sql(insert, ("at commit",))
    assert seen == ["held"]
    with pytest.raises(RuntimeError):
        async with sqlite_store.transaction() as tx:
            await tx.conn.exec_driver_sql(insert, ("dropped",))
            raise RuntimeError("abandon")
    async with sqlite_store.transaction() as tx:
        assert (await tx.conn.execute(sa.text("SELECT name FROM t ORDER BY id"))).scalars().all() == [
            "held",
            "at commit",
        ]


async def test_a_failing_deferred_write_fails_the_commit_and_names_itself(sqlite_store: Store) -> None:
    insert = DEFERRED + "INSERT INTO t (name) VALUES (?)"  # noqa: S608 - a constant statement
    with pytest.raises(IntegrityError) as failed:
        async with sqlite_store.transaction() as tx:
            await tx.conn.exec_driver_sql(insert, ("twice",))
            await tx.conn.exec_driver_sql(insert, ("twice",))
    assert "UNIQUE constraint failed" in str(failed.value)
    assert any("in a deferred write: " + insert in note for note in failed.value.orig.__notes__)  # type: ignore[union-attr]
    async with sqlite_store.transaction() as tx:
        assert (await tx.conn.execute(sa.text("SELECT count(*) FROM t"))).scalar() == 0
        await tx.conn.execute(sa.text("INSERT INTO t (name) VALUES ('usable after')"))
