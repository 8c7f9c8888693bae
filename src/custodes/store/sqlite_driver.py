"""aiosqlite connections whose statements cost one trip to the database thread instead of three or four.

SQLAlchemy's aiosqlite adapter opens a cursor, executes, fetches the rows and closes the cursor, each an await on
aiosqlite's thread; every await returns through the event loop, which behind a busy web server means waiting a
whole loop turn. Here a cursor does all of that in one call on the thread (its rows are read eagerly, as the adapter
does for every cursor but server-side ones, which the store does not use). A transaction's BEGIN, and the writes
marked `DEFERRED` (whose outcome nobody reads), wait and go with the next statement or the commit on the same trip;
a deferred write that fails fails that statement or the commit, so the transaction is rolled back all the same.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.engine import URL

Outcome = tuple[Any, int, int | None, list[Any]]
Ahead = tuple[str | None, list[tuple[str, Any]]]
"""A pending BEGIN and the deferred writes, sent ahead of the next statement or commit."""

DEFERRED = "/* deferred */ "
"""Starts a write whose outcome (rows, count) is not read: it is sent with the next statement or the commit."""


def _send(connection: sqlite3.Connection, ahead: Ahead) -> None:
    begin, writes = ahead
    if begin is not None:
        connection.execute(begin)
    for sql, parameters in writes:
        try:
            connection.execute(sql, parameters)
        except sqlite3.Error as exc:
            exc.add_note(f"in a deferred write: {sql[:300]}")
            raise


def _commit(connection: sqlite3.Connection, ahead: Ahead) -> None:
    _send(connection, ahead)
    connection.commit()


def _run(connection: sqlite3.Connection, ahead: Ahead, sql: str, parameters: Any, many: bool) -> Outcome:
    _send(connection, ahead)
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
        if not many and sql.startswith(DEFERRED):
            self._connection.defer(sql, parameters)
            self.description, self.rowcount, self.lastrowid, self._rows = None, -1, None, []
            return self
        outcome: Outcome = await self._connection.on_thread(_run, self._connection.take(), sql, parameters, many)
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
    """An aiosqlite connection handing out one-trip cursors; BEGIN and deferred writes travel with what follows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._begin: str | None = None
        self._writes: list[tuple[str, Any]] = []

    def begin(self, statement: str = "BEGIN") -> None:
        """Begin a transaction with the next statement, in the same trip; a transaction that runs no statement
        commits or rolls back without one."""
        self._begin, self._writes = statement, []

    def defer(self, sql: str, parameters: Any) -> None:
        """Hold a write until the next statement or the commit."""
        self._writes.append((sql, parameters))

    def take(self) -> Ahead:
        """The pending BEGIN and deferred writes, now to be sent."""
        ahead = (self._begin, self._writes)
        self._begin, self._writes = None, []
        return ahead

    async def commit(self) -> None:
        """Send what waits, then commit (nothing at all if the transaction never had a statement)."""
        ahead = begin, writes = self.take()
        if begin is None or writes:
            await self.on_thread(_commit, ahead)

    async def rollback(self) -> None:
        """Drop what waits; roll back what was sent."""
        begin, _ = self.take()
        if begin is None:
            await super().rollback()

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
