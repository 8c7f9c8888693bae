"""INSERT ... ON CONFLICT statements, built once per dialect and shape and then reused, and how many rows reach them.

Building one (the dialect's insert, its ``excluded`` columns, the conflict clause) cost more than a third of a
millisecond, more than executing a small batch; a reused statement also keeps SQLAlchemy's cache key memoised.

`write` and `insert_new` send many rows. PostgreSQL gets an executemany (asyncpg sends it in one round trip). On SQLite
the rows go in multi-row VALUES lists (500 rows a statement, the rest in powers of two: see `chunk_sizes`), converted
here as SQLAlchemy's SQLite dialect stores them (both paths write the same text), and marked deferred, so the driver
sends them with the transaction's next statement or its commit. Each SQLite step hands Python's interpreter lock from
the database thread to the event loop and back, which behind a busy web server costs far more than the step: an
executemany takes a step per row, and so does RETURNING (which is why `insert_new` asks for the keys already present
instead); and SQLAlchemy's per-row parameter processing was the larger part of the writer's time (in process, 105 -> 72
us per record at batches of 32). One JSON parameter unpacked by `json_each` would also be one step, but SQLite then
parses each row once per column: four times the CPU of bound values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from custodes.model import json_bytes
from custodes.store.sqlite_driver import DEFERRED


def column_text(value: Any) -> str:
    """A JSON column's stored text (`model.json_bytes`: orjson, else an encoder for what orjson refuses)."""
    return json_bytes(value, orjson.OPT_NON_STR_KEYS).decode()


JSON_CODEC: dict[str, Any] = {"json_serializer": column_text, "json_deserializer": orjson.loads}
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
    if not rows:
        return set()
    if dialect == "sqlite":
        # Rather than RETURNING, which costs a step (and an interpreter lock hand-over) per row: the keys present
        # now are the ones skipped, as SQLite writes one transaction at a time (the store begins IMMEDIATE).
        keys = [row[key] for row in rows]
        present = await conn.execute(_present(table, key), {"keys": orjson.dumps(keys).decode()})
        await _sqlite_rows(conn, upsert(dialect, table, (key,), ()), rows)
        return set(keys) - {row[0] for row in present}
    result = await conn.execute(_returning_new(dialect, table, key), list(rows))
    return {row[0] for row in result}


async def _sqlite_rows(conn: AsyncConnection, statement: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows into SQLite as multi-row VALUES, converted as SQLAlchemy would, deferred (see the module docstring)."""
    if not rows:
        return
    columns = tuple(rows[0])
    pick = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
    converters = _converters(statement.table, columns)
    step = max(1, min(MAX_ROWS_PER_STATEMENT, SQLITE_MAX_VARIABLES // len(columns)))
    start = 0
    for size in chunk_sizes(len(rows), step):
        chunk = rows[start : start + size]
        start += size
        values = [value for row in chunk for value in pick(row)]
        for offset in range(0, len(values), len(columns)):
            for index, convert in converters:
                values[offset + index] = convert(values[offset + index])
        await conn.exec_driver_sql(_multirow(statement, columns, len(chunk), conn.dialect), tuple(values))


def chunk_sizes(total: int, step: int) -> list[int]:
    """Rows per statement for `total` rows: as many of `step` as fit, then the rest in falling powers of two.

    Each count is a statement of its own text, which SQLite prepares and its connection keeps (128 of them, about half
    a megabyte each at 400-500 rows): with any count for the rest, batches of every size filled that cache with texts
    used once; so, every write of a statement shares at most `step.bit_length() + 1` texts."""
    full, rest = divmod(total, step)
    return [step] * full + [1 << bit for bit in reversed(range(rest.bit_length())) if rest >> bit & 1]


@cache
def _present(table: sa.Table, key: str) -> sa.Select[Any]:
    keys = sa.func.json_each(sa.bindparam("keys")).table_valued("value")
    return sa.select(table.c[key]).where(table.c[key].in_(sa.select(keys.c.value)))


@lru_cache(maxsize=4096)
def _multirow(statement: Any, columns: tuple[str, ...], count: int, dialect: sa.Dialect) -> str:
    """The deferred SQL of `statement` with `count` rows of `columns` in its VALUES (qmark parameters)."""
    compiled = statement.values({name: sa.bindparam(name) for name in columns}).compile(dialect=dialect)
    if list(compiled.positiontup or ()) != list(columns):
        raise ValueError(f"{statement.table.name}: parameters {compiled.positiontup} are not the columns {columns}")
    row = "(" + ", ".join("?" * len(columns)) + ")"
    head, found, tail = str(compiled).partition(f"VALUES {row}")
    if not found:
        raise ValueError(f"{statement.table.name}: no single VALUES row in {compiled}")
    return f"{DEFERRED}{head}VALUES {', '.join([row] * count)}{tail}"


@cache
def _converters(table: sa.Table, columns: tuple[str, ...]) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """(position, conversion) of the columns whose values SQLAlchemy's SQLite dialect stores converted."""
    found = ((index, _sqlite_value(table.c[name].type)) for index, name in enumerate(columns))
    return tuple((index, convert) for index, convert in found if convert is not None)


def _sqlite_value(kind: sa.types.TypeEngine[Any]) -> Callable[[Any], Any] | None:
    """How SQLAlchemy's SQLite dialect stores a value of this column type (None: as it is)."""
    if isinstance(kind, sa.DateTime):
        return _sqlite_datetime
    if isinstance(kind, sa.Date):
        return _sqlite_date
    if isinstance(kind, sa.JSON):
        return column_text
    return None


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
