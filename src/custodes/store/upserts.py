"""INSERT ... ON CONFLICT statements, built once per dialect and shape and then reused, and how many rows reach them.

Building one (the dialect's insert, its ``excluded`` columns, the conflict clause) cost more than a third of a
millisecond, more than executing a small batch; a reused statement also keeps SQLAlchemy's cache key memoised.

`write` and `insert_new` send many rows. PostgreSQL gets an executemany (asyncpg sends it in one round trip). SQLite
gets the statement with every row in one VALUES list (up to 500 rows a statement), sent as it is: SQLAlchemy's
executemany runs the statement once per row, and its per-row parameter processing was the larger part of the
writer's time (in process, 105 -> 72 us per record at batches of 32). The values are converted here as SQLAlchemy's
SQLite dialect stores them, so both paths write the same text. (One JSON parameter unpacked by `json_each` would
also make one statement, but SQLite then parses each row once per column: four times the CPU of bound values.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import cache, lru_cache
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def json_text(value: Any) -> str:
    """A JSON column's stored text (orjson; the standard library for what orjson refuses)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits from a vendor's JSON parser
        return json.dumps(value, default=str)


JSON_CODEC: dict[str, Any] = {"json_serializer": json_text, "json_deserializer": orjson.loads}
"""orjson for JSON columns: the standard library's json was a tenth of the write path's time."""

SQLITE_MAX_VARIABLES = 32_766
"""Parameters one SQLite statement may take (SQLite's default since 3.32)."""
MAX_ROWS_PER_STATEMENT = 500


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
def _returning_new(dialect: str, table: sa.Table, key: str) -> Any:
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


async def write(conn: AsyncConnection, statement: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Execute an INSERT built here for many rows (each with the same keys), as the module docstring says."""
    if conn.dialect.name == "sqlite":
        await _sqlite_rows(conn, statement, rows)
    elif rows:
        await conn.execute(statement, list(rows))


async def insert_new(conn: AsyncConnection, table: sa.Table, key: str, rows: Sequence[Mapping[str, Any]]) -> set[Any]:
    """Insert rows, skipping those whose `key` exists already; return the keys inserted."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return await _sqlite_rows(conn, upsert(dialect, table, (key,), ()), rows, returning=key)
    if not rows:
        return set()
    result = await conn.execute(_returning_new(dialect, table, key), list(rows))
    return {row[0] for row in result}


async def _sqlite_rows(
    conn: AsyncConnection, statement: Any, rows: Sequence[Mapping[str, Any]], returning: str | None = None
) -> set[Any]:
    """Rows into SQLite as multi-row VALUES, converted as SQLAlchemy would; the `returning` column's values."""
    if not rows:
        return set()
    columns = tuple(rows[0])
    converters = _converters(statement.table, columns)
    step = max(1, min(MAX_ROWS_PER_STATEMENT, SQLITE_MAX_VARIABLES // len(columns)))
    returned: set[Any] = set()
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        values = tuple(convert(row[name]) for row in chunk for name, convert in converters)
        result = await conn.exec_driver_sql(_multirow(statement, columns, len(chunk), conn.dialect, returning), values)
        if returning is not None:
            returned.update(row[0] for row in result)
    return returned


@lru_cache(maxsize=4096)
def _multirow(
    statement: Any, columns: tuple[str, ...], count: int, dialect: sa.Dialect, returning: str | None = None
) -> str:
    """The SQL of `statement` with `count` rows of `columns` in its VALUES (qmark parameters, row after row)."""
    compiled = statement.values({name: sa.bindparam(name) for name in columns}).compile(dialect=dialect)
    if list(compiled.positiontup or ()) != list(columns):
        raise ValueError(f"{statement.table.name}: parameters {compiled.positiontup} are not the columns {columns}")
    row = "(" + ", ".join("?" * len(columns)) + ")"
    head, found, tail = str(compiled).partition(f"VALUES {row}")
    if not found:
        raise ValueError(f"{statement.table.name}: no single VALUES row in {compiled}")
    sql = f"{head}VALUES {', '.join([row] * count)}{tail}"
    return sql if returning is None else f"{sql} RETURNING {dialect.identifier_preparer.quote(returning)}"


@cache
def _converters(table: sa.Table, columns: tuple[str, ...]) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    return tuple((name, _sqlite_value(table.c[name].type)) for name in columns)


def _sqlite_value(kind: sa.types.TypeEngine[Any]) -> Callable[[Any], Any]:
    """How SQLAlchemy's SQLite dialect stores a value of this column type, so both paths write the same text."""
    if isinstance(kind, sa.DateTime):
        return _sqlite_datetime
    if isinstance(kind, sa.Date):
        return _sqlite_date
    if isinstance(kind, sa.JSON):
        return json_text
    return _same


def _sqlite_datetime(value: Any) -> str | None:
    if value is None:
        return None
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 - SQLAlchemy's own storage format
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )


def _sqlite_date(value: Any) -> str | None:
    return None if value is None else "%04d-%02d-%02d" % (value.year, value.month, value.day)  # noqa: UP031


def _same(value: Any) -> Any:
    return value
