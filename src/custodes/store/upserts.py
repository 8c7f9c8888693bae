"""INSERT ... ON CONFLICT statements, built once per dialect and shape and then reused.

Building one (the dialect's insert, its ``excluded`` columns, the conflict clause) cost more than a third of a
millisecond, more than executing a small batch; a reused statement also keeps SQLAlchemy's cache key memoised.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def insert(dialect: str, table: sa.Table) -> Any:
    """The dialect's INSERT for `table` (PostgreSQL's or SQLite's, both with ON CONFLICT)."""
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


@cache
def upsert(dialect: str, table: sa.Table, keys: tuple[str, ...], update: tuple[str, ...]) -> Any:
    """Insert rows; a row whose `keys` exist already sets the `update` columns to the new values (none: it is
    skipped)."""
    stmt = insert(dialect, table)
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    return stmt.on_conflict_do_update(index_elements=list(keys), set_={name: stmt.excluded[name] for name in update})


@cache
def insert_new(dialect: str, table: sa.Table, key: str) -> Any:
    """Insert rows, skipping those whose `key` exists; returns the keys inserted."""
    return upsert(dialect, table, (key,), ()).returning(table.c[key])


@cache
def widen(dialect: str, table: sa.Table, key: str, first: str, last: str) -> Any:
    """Insert rows; a row whose `key` exists keeps the earlier `first` and the later `last` of the two."""
    stmt = insert(dialect, table)
    low, high = (sa.func.min, sa.func.max) if dialect == "sqlite" else (sa.func.least, sa.func.greatest)
    return stmt.on_conflict_do_update(
        index_elements=[key],
        set_={first: low(table.c[first], stmt.excluded[first]), last: high(table.c[last], stmt.excluded[last])},
    )
