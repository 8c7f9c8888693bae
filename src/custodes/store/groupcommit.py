"""Group commit: many small units of work from concurrent tasks committed together in one transaction.

Each caller hands over a unit (an async function of a `Transaction`) and waits until it is committed. Whoever
holds the commit lock takes everything queued so far and runs it in one transaction; units queued meanwhile are
committed by the next holder. A caller therefore returns only once its own writes are durable, exactly as with a
transaction of its own, but many callers share one commit (one fsync on SQLite, one round of locks on PostgreSQL).

If a unit raises, the shared transaction is rolled back and every unit of that batch runs again in a transaction
of its own, so one caller's error (a lost run, a refused write) never undoes another caller's work. Units must
therefore write only through the transaction they are given and be safe to run a second time after a rollback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from custodes.store.database import Transaction

Work = Callable[["Transaction"], Awaitable[Any]]
MAX_BATCH = 256


@dataclass(slots=True)
class _Unit:
    work: Work
    done: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit:
    """Commits the units of concurrent callers together (see the module docstring)."""

    def __init__(self, transaction: Callable[[], AbstractAsyncContextManager[Transaction]]) -> None:
        self._transaction = transaction
        self._queue: list[_Unit] = []
        self._lock: asyncio.Lock | None = None
        self.batches = 0
        self.units = 0

    async def run(self, work: Work) -> Any:
        """Run `work` in a transaction shared with other waiting units; return its result once committed."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        unit = _Unit(work)
        self._queue.append(unit)
        try:
            async with self._lock:
                while not unit.done.done():
                    batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                    try:
                        await self._commit(batch)
                    finally:
                        unfinished = [u for u in batch if not u.done.done() and u is not unit]
                        self._queue[:0] = unfinished
        except asyncio.CancelledError:
            if unit in self._queue:
                self._queue.remove(unit)
            raise
        return unit.done.result()

    async def _commit(self, batch: list[_Unit]) -> None:
        try:
            async with self._transaction() as tx:
                results = [await unit.work(tx) for unit in batch]
        except Exception as exc:
            if len(batch) == 1:
                batch[0].done.set_exception(exc)
                return
            for unit in batch:
                await self._alone(unit)
            return
        self.batches += 1
        self.units += len(batch)
        for unit, result in zip(batch, results, strict=True):
            unit.done.set_result(result)

    async def _alone(self, unit: _Unit) -> None:
        try:
            async with self._transaction() as tx:
                result = await unit.work(tx)
        except Exception as exc:
            unit.done.set_exception(exc)
        else:
            self.batches += 1
            self.units += 1
            unit.done.set_result(result)
