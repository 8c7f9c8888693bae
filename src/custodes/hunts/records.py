"""Hunt runs in the store. A scheduled run's (hunt, slot) row is unique: inserting it claims the slot."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

from custodes.store import Transaction
from custodes.store.tables import hunt_runs

RunTrigger = Literal["schedule", "manual"]
RunStatus = Literal["succeeded", "failed"]


@dataclass(slots=True)
class HuntRun:
    """One run of a hunt: its window, how each rule ran, what it read and what it found.

    `pushed_down` holds `{rule_id, title, query}` per rule the SIEM evaluated; `in_process` holds
    `{rule_id, title, reason}` per rule matched in process, with why it was not pushed down.
    """

    id: str
    hunt: str
    slot: datetime | None
    trigger: RunTrigger
    window_start: datetime
    window_end: datetime
    started_at: datetime
    finished_at: datetime
    worker: str
    status: RunStatus = "succeeded"
    pushed_down: list[dict[str, Any]] = field(default_factory=list)
    in_process: list[dict[str, Any]] = field(default_factory=list)
    events_scanned: int = 0
    findings: list[str] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The run as JSON-ready values (times in ISO 8601)."""
        times = ("slot", "window_start", "window_end", "started_at", "finished_at")
        values = {name: getattr(self, name) for name in self.__slots__}
        return {
            key: (value.isoformat() if key in times and value is not None else value) for key, value in values.items()
        }


async def slot_taken(tx: Transaction, hunt: str, slot: datetime) -> bool:
    """Whether a run of `hunt` for `slot` is already recorded."""
    query = sa.select(hunt_runs.c.id).where(hunt_runs.c.hunt == hunt, hunt_runs.c.slot == slot)
    return (await tx.conn.execute(query)).first() is not None


async def insert_run(tx: Transaction, run: HuntRun) -> None:
    """Record a run; for a scheduled run this claims the slot (IntegrityError when another worker holds it)."""
    await tx.conn.execute(sa.insert(hunt_runs).values(**_row(run)))


async def update_run(tx: Transaction, run: HuntRun) -> None:
    """Rewrite a recorded run's outcome."""
    values = _row(run)
    del values["id"]
    await tx.conn.execute(sa.update(hunt_runs).where(hunt_runs.c.id == run.id).values(**values))


async def list_runs(tx: Transaction, hunt: str | None = None, *, limit: int = 100) -> list[HuntRun]:
    """Recorded runs, newest first, of one hunt or all."""
    query = sa.select(hunt_runs).order_by(hunt_runs.c.started_at.desc(), hunt_runs.c.id).limit(limit)
    if hunt is not None:
        query = query.where(hunt_runs.c.hunt == hunt)
    return [_run(row) for row in (await tx.conn.execute(query)).mappings()]


def _row(run: HuntRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "hunt": run.hunt,
        "slot": run.slot,
        "trigger": run.trigger,
        "status": run.status,
        "window_start": run.window_start,
        "window_end": run.window_end,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "pushed_down": run.pushed_down,
        "in_process": run.in_process,
        "events_scanned": run.events_scanned,
        "findings": run.findings,
        "error": run.error,
        "worker": run.worker,
    }


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _run(row: Any) -> HuntRun:
    return HuntRun(
        id=row["id"],
        hunt=row["hunt"],
        slot=_utc(row["slot"]),
        trigger=row["trigger"],
        status=row["status"],
        window_start=_utc(row["window_start"]) or row["window_start"],
        window_end=_utc(row["window_end"]) or row["window_end"],
        started_at=_utc(row["started_at"]) or row["started_at"],
        finished_at=_utc(row["finished_at"]) or row["finished_at"],
        pushed_down=list(row["pushed_down"]),
        in_process=list(row["in_process"]),
        events_scanned=int(row["events_scanned"]),
        findings=list(row["findings"]),
        error=row["error"],
        worker=row["worker"],
    )
