"""Many-row writes: multi-row VALUES on SQLite (stored exactly as SQLAlchemy stores them), executemany elsewhere."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from custodes.config import DatabaseSettings
from custodes.store import Store, upserts
from custodes.store.tables import entities, events, scoring_scores

T0 = datetime(2026, 11, 19, 2, 3, 40, 77000, tzinfo=UTC)


def event_row(ident: str, minutes: int = 0) -> dict[str, Any]:
    return {
        "id": ident,
        "time": T0 + timedelta(minutes=minutes),
        "source": "okta",
        "product": "okta",
        "service": "okta",
        "category": None,
        "actor": "alice@example.com",
        "action": "user.session.start",
        "target": None,
        "outcome": "success",
        "src_ip": "203.0.113.9",
        "bytes": 2**40,
        "raw": {"uuid": ident, "nested": {"list": [1, 2.5, None, True]}, "text": '"quoted" \u00e9 \\ /'},
        "warnings": [],
        "ingested_at": T0,
    }


async def test_new_keys_across_statements_and_duplicates_skipped(store: Store) -> None:
    count = upserts.MAX_ROWS_PER_STATEMENT * 2 + 7
    async with store.transaction() as tx:
        first = await upserts.insert_new(tx.conn, events, "id", [event_row(f"e{i}") for i in range(0, count, 2)])
    async with store.transaction() as tx:
        second = await upserts.insert_new(tx.conn, events, "id", [event_row(f"e{i}") for i in range(count)])
        assert await upserts.insert_new(tx.conn, events, "id", []) == set()
        stored = (await tx.conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one()
    assert first == {f"e{i}" for i in range(0, count, 2)}
    assert second == {f"e{i}" for i in range(1, count, 2)}
    assert stored == count


async def test_rows_read_back_as_written(store: Store) -> None:
    rows = [event_row("a"), event_row("b", minutes=90)]
    async with store.transaction() as tx:
        await upserts.insert_new(tx.conn, events, "id", rows)
        back = {row["id"]: dict(row) for row in (await tx.conn.execute(sa.select(events))).mappings()}
    for row in rows:
        got = back[row["id"]]
        assert got["raw"] == row["raw"] and got["warnings"] == [] and got["bytes"] == 2**40
        assert got["time"].replace(tzinfo=UTC) == row["time"] and got["category"] is None


async def test_sqlite_stores_the_text_sqlalchemy_stores(tmp_path: Path) -> None:
    """The same values written through SQLAlchemy's executemany and through the multi-row path: same stored text."""
    store = await Store.open(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'text.db'}"))

    def score(entity: str) -> dict[str, Any]:
        return {
            "entity": entity,
            "day": date(2026, 1, 2),
            "risk": 97.5,
            "points": 3,
            "detail": {"a": [1, "x"], "b": None},
            "event_ids": ["e1", "e2"],
            "created_at": datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        }

    async with store.transaction() as tx:
        await tx.conn.execute(sa.insert(scoring_scores), [score("through-sqlalchemy")])
        await upserts.write(tx.conn, upserts.upsert("sqlite", scoring_scores, ("entity", "day"), ()), [score("here")])
        result = await tx.conn.exec_driver_sql(
            "SELECT entity, day, typeof(risk), risk, typeof(points), points, detail, event_ids, created_at "
            "FROM scoring_scores ORDER BY entity"
        )
        stored = [tuple(row) for row in result]
    await store.close()
    assert stored[0][1:] == stored[1][1:]
    assert stored[0][1] == "2026-01-02" and stored[0][-1] == "0999-01-02 03:04:05.000006"


async def test_upsert_and_widen_keep_their_conflict_rules(store: Store) -> None:
    early, late = T0, T0 + timedelta(days=1)
    entity = {"id": "alice", "kind": "person", "display_name": "alice", "attributes": {}}
    widen = upserts.widen(store.dialect, entities, "id", "first_seen", "last_seen")
    async with store.transaction() as tx:
        await upserts.write(tx.conn, widen, [{**entity, "first_seen": late, "last_seen": late}])
        await upserts.write(tx.conn, widen, [{**entity, "first_seen": early, "last_seen": early}])
        await upserts.write(tx.conn, widen, [])
        row = (await tx.conn.execute(sa.select(entities.c.first_seen, entities.c.last_seen))).one()
    assert (row[0].replace(tzinfo=UTC), row[1].replace(tzinfo=UTC)) == (early, late)


async def test_a_failing_row_fails_the_whole_write(store: Store) -> None:
    """A NOT NULL violation in a batch fails the statement and its transaction, as an executemany does."""
    good = {"id": "e1", **{k: v for k, v in event_row("e1").items() if k != "id"}}
    bad = {**event_row("e2"), "source": None}
    with pytest.raises(sa.exc.IntegrityError, match="source"):
        async with store.transaction() as tx:
            await upserts.insert_new(tx.conn, events, "id", [good, bad])
    async with store.transaction() as tx:
        assert (await tx.conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one() == 0


def test_chunk_sizes_cover_every_row_with_few_statement_texts() -> None:
    texts: set[int] = set()
    for total in range(1, 1_600):
        sizes = upserts.chunk_sizes(total, 500)
        assert sum(sizes) == total and all(size > 0 for size in sizes)
        texts.update(sizes)
    assert texts == {500, 256, 128, 64, 32, 16, 8, 4, 2, 1}
    assert upserts.chunk_sizes(0, 500) == [] and upserts.chunk_sizes(7, 3) == [3, 3, 1]


async def test_sqlite_writes_of_every_size_share_a_few_statement_texts(tmp_path: Path) -> None:
    store = await Store.open(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"))
    texts: set[str] = set()

    def statement(_conn: object, _cursor: object, sql: str, *_rest: object) -> None:
        if "INSERT INTO events" in sql:
            texts.add(sql)

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", statement)
    try:
        written = 0
        async with store.transaction() as tx:
            for size in [*range(1, 130), 255, 499, 500, 501, 777, 1_023]:
                rows = [event_row(f"e{written + n}") for n in range(size)]
                await upserts.write(tx.conn, upserts.upsert("sqlite", events, ("id",), ()), rows)
                written += size
            stored = (await tx.conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one()
    finally:
        sa.event.remove(store.engine.sync_engine, "before_cursor_execute", statement)
        await store.close()
    assert stored == written
    assert len(texts) <= 10  # 500 rows, and powers of two below it (not one text for each size)
