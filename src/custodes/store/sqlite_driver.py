"""aiosqlite connections whose statements cost one trip to the database thread instead of three or four.

SQLAlchemy's aiosqlite adapter opens a cursor, executes, fetches the rows and closes the cursor, each an await on
aiosqlite's thread; every await returns through the event loop, which behind a busy web server means waiting a
whole loop turn. Here a cursor does all of that in one call on the thread (its rows are read eagerly, as the adapter
does for every cursor but server-side ones, which the store does not use), and a transaction's BEGIN goes with its
first statement, so a transaction takes one loop turn per statement plus its commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.engine import URL

Outcome = tuple[Any, int, int | None, list[Any]]


def _run(connection: sqlite3.Connection, begin: str | None, sql: str, parameters: Any, many: bool) -> Outcome:
    if begin is not None:
        connection.execute(begin)
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor:
    """The part of aiosqlite's cursor SQLAlchemy uses, one thread trip per execute."""

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1
        self._rows: list[Any] = []

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _call(self, sql: str, parameters: Any, many: bool) -> OneTripCursor:
        begin, self._connection.pending_begin = self._connection.pending_begin, None
        outcome: Outcome = await self._connection.on_thread(_run, begin, sql, parameters, many)
        self.description, self.rowcount, self.lastrowid, self._rows = outcome
        return self

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> OneTripCursor:
        """Run a statement and keep its rows."""
        return await self._call(sql, parameters, False)

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneTripCursor:
        """Run a statement once per parameter set."""
        return await self._call(sql, list(parameters), True)

    async def fetchone(self) -> Any:
        """The next row, or None."""
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to `size` rows (the arraysize by default)."""
        count = self.arraysize if size is None else size
        taken, self._rows = self._rows[:count], self._rows[count:]
        return taken

    async def fetchall(self) -> list[Any]:
        """Every row left."""
        taken, self._rows = self._rows, []
        return taken

    async def close(self) -> None:
        """Drop the rows (the thread's cursor is already closed)."""
        self._rows = []


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection handing out one-trip cursors; a transaction's BEGIN travels with its first statement."""

    pending_begin: str | None = None
    """The BEGIN statement to run before the next statement (set by `begin`)."""

    def begin(self, statement: str = "BEGIN") -> None:
        """Begin a transaction with the next statement, in the same trip; a transaction that runs no statement
        commits or rolls back without one."""
        self.pending_begin = statement

    async def commit(self) -> None:
        """Commit the transaction (nothing to do if it never ran a statement)."""
        if self.pending_begin is None:
            await super().commit()
        self.pending_begin = None

    async def rollback(self) -> None:
        """Roll the transaction back (nothing to do if it never ran a statement)."""
        if self.pending_begin is None:
            await super().rollback()
        self.pending_begin = None

    def cursor(self) -> OneTripCursor:  # type: ignore[override]  # SQLAlchemy enters it with `async with`
        """A cursor whose execute runs, reads and closes on the connection's thread at once."""
        return OneTripCursor(self)

    async def on_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run `function(sqlite3_connection, *args)` on the connection's thread."""
        run: Callable[[Callable[[], Any]], Awaitable[Any]] = self._execute
        return await run(lambda: function(self._conn, *args))


def creator(url: URL, **connect_args: Any) -> Callable[[], Awaitable[OneTripConnection]]:
    """An `async_creator` for `create_async_engine` opening `url` (its query options kept) with one-trip cursors."""
    positional, named = url.get_dialect()().create_connect_args(url)
    args: list[Any] = list(positional)
    options: dict[str, Any] = {**named, **connect_args}

    async def connect() -> OneTripConnection:
        connection = OneTripConnection(lambda: sqlite3.connect(*args, **options), iter_chunk_size=64)
        connection._thread.daemon = True  # as SQLAlchemy does: an undisposed engine must not keep the process alive
        await connection
        return connection

    return connect
