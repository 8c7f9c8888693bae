"""The store: the one piece of shared state. SQLite (WAL) by default, PostgreSQL by URL.

Use ``async with store.transaction() as tx`` for anything that writes, so that related writes (a batch of
events and the connector checkpoint that covers it; a step and its status) commit together.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from custodes.config import DatabaseSettings
from custodes.errors import ConfigError
from custodes.model import (
    Event,
    Finding,
    FindingStatus,
    LogSource,
    Outcome,
    Run,
    RunStatus,
    Severity,
    StepRecord,
    utcnow,
)
from custodes.redaction import redact
from custodes.store import migrate, upserts
from custodes.store.groupcommit import GroupCommit
from custodes.store.locks import lock_key, transaction_lock
from custodes.store.sqlite_driver import creator
from custodes.store.tables import (
    approvals,
    audit_log,
    checkpoints,
    connector_status,
    controls,
    correlation_clocks,
    correlation_groups,
    entities,
    entity_locks,
    events,
    findings,
    outbox,
    runs,
    steps,
)

GENESIS_HASH = "0" * 64
MAX_EVIDENCE_IDS = 200


def _started_by(since: datetime, by: str) -> tuple[sa.ColumnElement[bool], ...]:
    """Runs `by` started itself (not a playbook's child run) since `since`."""
    return (runs.c.created_at >= since, runs.c.requested_by == by, runs.c.parent_run_id.is_(None))


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _required_utc(value: datetime) -> datetime:
    result = _utc(value)
    assert result is not None
    return result


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry of the hash-chained audit log."""

    seq: int
    at: datetime
    actor: str
    action: str
    subject: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(slots=True)
class ConnectorStatus:
    """A connector's health as `custodes connectors status` shows it."""

    connector: str
    kind: str
    events_total: int = 0
    last_round_events: int = 0
    events_per_second: float = 0.0
    newest_event: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0
    updated_at: datetime | None = None

    def lag(self, now: datetime) -> timedelta | None:
        """How far behind the connector is: now minus the newest event it has stored (None before any)."""
        return None if self.newest_event is None else now - self.newest_event


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """The result of checking the audit chain: how many entries held, the first that did not, and the head (the
    last entry's sequence number and hash) when all held."""

    ok: bool
    checked: int
    broken_seq: int | None = None
    reason: str | None = None
    head_seq: int = 0
    head_hash: str = "0" * 64
    unkeyed: int = 0
    """Entries hashed without the audit key: written before a key was configured (or no key is configured)."""
    hashes: dict[int, str] = field(default_factory=dict)
    """The hashes of the entries asked for (checkpointed sequence numbers), as found."""


def audit_hash(
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    subject: str | None,
    details: dict[str, Any],
    key: bytes | None = None,
) -> str:
    """The chain hash of an audit entry over the previous hash and the canonical entry: HMAC-SHA256 with the audit
    key (`database.audit_key`, kept outside the store), else plain SHA-256 (anyone who can write the store could
    recompute it)."""
    body = orjson.dumps(
        [prev_hash, at.astimezone(UTC).isoformat(), actor, action, subject, details],
        option=orjson.OPT_SORT_KEYS,
    )
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class CorrelationGroupRecord:
    """The persisted state of one group of one Sigma correlation rule; `position` orders groups by last use."""

    correlation_id: str
    group_key: str
    state: dict[str, Any]
    position: int


class RunNotHeld(Exception):
    """A staged write was for a run its worker no longer holds (the reaper gave it to another worker)."""

    def __init__(self, owner: str, run_ids: list[str]) -> None:
        super().__init__(f"{owner} no longer holds one of {', '.join(run_ids)}")
        self.owner = owner
        self.run_ids = run_ids


class Transaction:
    """Reads and writes on one connection inside one database transaction."""

    def __init__(self, conn: AsyncConnection, audit_key: bytes | None = None, schema: str | None = None) -> None:
        self.conn = conn
        self._audit_key = audit_key
        self._dialect = conn.dialect.name
        self._schema = schema
        self._audit_head: str | None = None
        self._controls: dict[str, Any] = {}
        self._held: dict[str, set[str]] = {}
        self._run_changes: dict[str, dict[str, Any]] = {}
        self._step_rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._audit_rows: list[tuple[datetime, str, str, str | None, dict[str, Any]]] = []
        self.committed: list[Callable[[], None]] = []
        """Called, in order, once the transaction has committed (never after a rollback)."""

    def _insert(self, table: sa.Table) -> Any:
        return upserts.insert(self._dialect, table)

    async def _lock(self, purpose: str) -> None:
        """Take the store schema's advisory lock of `purpose` until the transaction ends (PostgreSQL; SQLite has one
        writer at a time)."""
        if self._dialect == "postgresql":
            await transaction_lock(self.conn, lock_key(purpose, self._schema))

    # events ---------------------------------------------------------------------------------------
    async def insert_events(self, batch: Sequence[Event]) -> set[str]:
        """Store events, ignoring ids already stored; return the ids that were new."""
        if not batch:
            return set()
        now = utcnow()
        rows = [
            {
                "id": e.id,
                "time": e.time,
                "source": e.source,
                "product": e.logsource.product,
                "service": e.logsource.service,
                "category": e.logsource.category,
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "outcome": e.outcome.value,
                "src_ip": e.src_ip,
                "bytes": e.bytes,
                "raw": e.raw,
                "warnings": e.warnings,
                "ingested_at": now,
            }
            for e in {event.id: event for event in batch}.values()
        ]
        return await upserts.insert_new(self.conn, events, "id", rows)

    async def get_events(self, ids: Iterable[str]) -> list[Event]:
        """Events by id, oldest first."""
        id_list = list(ids)
        if not id_list:
            return []
        result = await self.conn.execute(sa.select(events).where(events.c.id.in_(id_list)).order_by(events.c.time))
        return [_event(row) for row in result.mappings()]

    async def events_in_time_order(self, after: tuple[datetime, str] | None = None, limit: int = 5000) -> list[Event]:
        """Up to `limit` events in (time, id) order, after the given (time, id) key: a deterministic replay order."""
        query = sa.select(events)
        if after is not None:
            time, ident = after
            query = query.where(sa.or_(events.c.time > time, sa.and_(events.c.time == time, events.c.id > ident)))
        query = query.order_by(events.c.time, events.c.id).limit(limit)
        return [_event(row) for row in (await self.conn.execute(query)).mappings()]

    async def findings_by_time(self, *, exclude_detector: str, after: datetime | None = None) -> list[Finding]:
        """Every finding except one detector's (last seen after `after`, when given), by (last seen, id)."""
        query = sa.select(findings).where(findings.c.detector != exclude_detector)
        if after is not None:
            query = query.where(findings.c.last_seen > after)
        query = query.order_by(findings.c.last_seen, findings.c.id)
        return [_finding(row) for row in (await self.conn.execute(query)).mappings()]

    async def count_warned_events(self, prefix: str) -> dict[str, int]:
        """Stored events with a warning starting with `prefix`, by source."""
        text = sa.cast(events.c.warnings, sa.Text)
        query = sa.select(events.c.source, sa.func.count()).where(text.like(f'%"{prefix}%')).group_by(events.c.source)
        return {row[0]: int(row[1]) for row in await self.conn.execute(query)}

    async def count_events(self) -> int:
        """How many events are stored."""
        return int((await self.conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one())

    async def purge_events(self, older_than: datetime) -> int:
        """Delete events whose time is before `older_than`; return how many."""
        result = await self.conn.execute(sa.delete(events).where(events.c.time < older_than))
        return int(result.rowcount or 0)

    # entities -------------------------------------------------------------------------------------
    async def touch_entities(self, seen: dict[str, tuple[datetime, datetime]], kind: str = "person") -> None:
        """Create entities first seen now, and widen the first/last-seen times of known ones."""
        if not seen:
            return
        rows = [
            {
                "id": entity,
                "kind": kind,
                "display_name": entity,
                "attributes": {},
                "first_seen": first,
                "last_seen": last,
            }
            for entity, (first, last) in seen.items()
        ]
        await upserts.write(self.conn, upserts.widen(self._dialect, entities, "id", "first_seen", "last_seen"), rows)

    async def list_entities(self, limit: int = 100, hide: sa.Select[Any] | None = None) -> list[dict[str, Any]]:
        """Entities, most recently seen first; `hide` selects ids to leave out."""
        query = sa.select(entities).order_by(entities.c.last_seen.desc()).limit(limit)
        if hide is not None:
            query = query.where(entities.c.id.not_in(hide))
        result = await self.conn.execute(query)
        return [
            {**row, "first_seen": _utc(row["first_seen"]), "last_seen": _utc(row["last_seen"])}
            for row in result.mappings()
        ]

    # findings -------------------------------------------------------------------------------------
    async def record_finding(self, candidate: Finding, window: timedelta) -> tuple[Finding, bool]:
        """Store a finding, or merge it into an open one with the same dedup key seen within `window`.

        Returns the stored finding and whether it is new.
        """
        existing = (
            (
                await self.conn.execute(
                    sa.select(findings)
                    .where(
                        findings.c.dedup_key == candidate.dedup_key,
                        findings.c.status != FindingStatus.CLOSED.value,
                        findings.c.last_seen >= candidate.first_seen - window,
                        findings.c.first_seen <= candidate.last_seen + window,
                    )
                    .order_by(findings.c.last_seen.desc())
                    .limit(1)
                )
            )
            .mappings()
            .first()
        )
        if existing is None:
            await self.conn.execute(sa.insert(findings), [_finding_row(candidate)])
            return candidate, True
        merged = _finding(existing)
        new_ids = [i for i in candidate.event_ids if i not in merged.event_ids]
        if not new_ids:
            return merged, False
        merged.event_ids = (merged.event_ids + new_ids)[-MAX_EVIDENCE_IDS:]
        merged.count += len(new_ids)
        merged.first_seen = min(merged.first_seen, candidate.first_seen)
        merged.last_seen = max(merged.last_seen, candidate.last_seen)
        merged.severity = max(merged.severity, candidate.severity)
        await self.conn.execute(
            sa.update(findings)
            .where(findings.c.id == merged.id)
            .values(
                event_ids=merged.event_ids,
                count=merged.count,
                first_seen=merged.first_seen,
                last_seen=merged.last_seen,
                severity=int(merged.severity),
            )
        )
        return merged, False

    async def list_findings(
        self,
        *,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
        min_severity: Severity | None = None,
        status: FindingStatus | None = None,
        entity: str | None = None,
        hide: sa.Select[Any] | None = None,
    ) -> list[Finding]:
        """Findings, newest first; `before` is the (created_at, id) of the last row of the previous page; `hide`
        selects ids to leave out."""
        query = sa.select(findings).order_by(findings.c.created_at.desc(), findings.c.id.desc()).limit(limit)
        if hide is not None:
            query = query.where(findings.c.id.not_in(hide))
        if before is not None:
            query = query.where(sa.tuple_(findings.c.created_at, findings.c.id) < sa.tuple_(*before))
        if min_severity is not None:
            query = query.where(findings.c.severity >= int(min_severity))
        if status is not None:
            query = query.where(findings.c.status == status.value)
        if entity is not None:
            query = query.where(findings.c.entity == entity)
        return [_finding(row) for row in (await self.conn.execute(query)).mappings()]

    async def set_finding_status(self, finding_id: str, status: FindingStatus) -> None:
        """Change a finding's status."""
        await self.conn.execute(sa.update(findings).where(findings.c.id == finding_id).values(status=status.value))

    async def events_for_actor(self, actor: str, *, limit: int = 100, before: datetime | None = None) -> list[Event]:
        """An entity's events, newest first (its timeline)."""
        query = sa.select(events).where(events.c.actor == actor).order_by(events.c.time.desc()).limit(limit)
        if before is not None:
            query = query.where(events.c.time < before)
        return [_event(row) for row in (await self.conn.execute(query)).mappings()]

    async def finding_created_at(self, finding_id: str) -> datetime | None:
        """When a finding was first stored (the API's page cursor)."""
        value = (
            await self.conn.execute(sa.select(findings.c.created_at).where(findings.c.id == finding_id))
        ).scalar_one_or_none()
        return _utc(value)

    async def get_finding(self, finding_id: str) -> Finding | None:
        """A finding by id."""
        row = (await self.conn.execute(sa.select(findings).where(findings.c.id == finding_id))).mappings().first()
        return None if row is None else _finding(row)

    # outbox ---------------------------------------------------------------------------------------
    async def enqueue_starts(self, starts: Iterable[tuple[str, str]], *, receiver: str | None = None) -> None:
        """Record (playbook, finding id) starts owed, in the transaction that stores the findings; with
        `receiver`, (playbook, record id) starts of a webhook trigger, in the records' transaction."""
        now = utcnow()
        rows = [
            {"playbook": p, "finding_id": f, "created_at": now, "receiver": receiver} for p, f in dict.fromkeys(starts)
        ]
        if rows:
            await self.conn.execute(self._insert(outbox).on_conflict_do_nothing(), rows)

    async def claim_starts(self, limit: int, lease: timedelta) -> list[tuple[str, str, str | None]]:
        """Claim owed (playbook, finding or record id, receiver or None) starts no one holds, in the order they were
        written, for `lease`: other drains (of this process or another) leave them alone until it ends. On
        PostgreSQL the rows are picked `FOR UPDATE SKIP LOCKED`, so runners claiming together never wait on nor
        take each other's rows."""
        now = utcnow()
        free = sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now)
        query = (
            sa.select(outbox.c.seq, outbox.c.playbook, outbox.c.finding_id, outbox.c.receiver)
            .where(free)
            .order_by(outbox.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = list(await self.conn.execute(query))
        if rows:
            claimed = sa.update(outbox).where(outbox.c.seq.in_([row.seq for row in rows]))
            await self.conn.execute(claimed.values(claimed_until=now + lease))
        return [(row.playbook, row.finding_id, row.receiver) for row in rows]

    async def hold_starts(self, playbook: str, finding_ids: list[str], until: datetime) -> None:
        """Leave owed starts of a playbook in the outbox, unclaimable until `until` (it started as many runs in the
        last hour as it may)."""
        await self.conn.execute(
            sa.update(outbox)
            .where(outbox.c.playbook == playbook, outbox.c.finding_id.in_(finding_ids))
            .values(claimed_until=until)
        )

    async def runs_started(self, playbook: str, since: datetime, by: str) -> tuple[int, datetime | None]:
        """How many runs of `playbook` that `by` started itself (no parent) since `since`, and the oldest one's
        start."""
        query = sa.select(sa.func.count(), sa.func.min(runs.c.created_at)).where(
            runs.c.playbook == playbook, *_started_by(since, by)
        )
        count, oldest = (await self.conn.execute(query)).one()
        return int(count), _utc(oldest)

    async def starts_by_playbook(self, since: datetime, by: str) -> tuple[dict[str, int], dict[str, int]]:
        """Per playbook: the runs `by` started itself (no parent) since `since`, and the starts the outbox owes."""
        started = sa.select(runs.c.playbook, sa.func.count()).where(*_started_by(since, by)).group_by(runs.c.playbook)
        owed = sa.select(outbox.c.playbook, sa.func.count()).group_by(outbox.c.playbook)
        return (
            {name: int(count) for name, count in await self.conn.execute(started)},
            {name: int(count) for name, count in await self.conn.execute(owed)},
        )

    async def clear_start(self, playbook: str, finding_id: str) -> None:
        """Forget an owed start once its run exists (or it is not to run)."""
        await self.conn.execute(
            sa.delete(outbox).where(outbox.c.playbook == playbook, outbox.c.finding_id == finding_id)
        )

    # staged writes --------------------------------------------------------------------------------
    # The playbook engine's transitions stage their writes; `flush` sends them as a few bulk statements (one
    # ownership check, one update per kind of run change, one step upsert, one audit append), before the
    # transaction commits and before anything in it reads or writes runs, steps or the audit log directly.
    def stage_held(self, run_id: str, owner: str) -> None:
        """Require that `owner` holds the running run (checked, and its heartbeat refreshed, at flush)."""
        self._held.setdefault(owner, set()).add(run_id)

    def stage_run(self, run_id: str, status: RunStatus, owner: str | None, **values: Any) -> None:
        """Move a run to `status` held by `owner` (None: released), with other columns (error, outputs, ...)."""
        change: dict[str, Any] = {"status": status.value, "owner": owner, **values}
        if status.final:
            change["finished_at"] = utcnow()
        else:
            change["heartbeat_at"] = utcnow() if owner is not None else None
        self._run_changes.setdefault(run_id, {}).update(change)

    def stage_step(self, run_id: str, step: StepRecord) -> None:
        """Insert or update a step record (its values as they are now)."""
        self._step_rows[(run_id, step.step_id)] = {"run_id": run_id, "step_id": step.step_id, **_step_values(step)}

    def stage_audit(
        self, actor: str, action: str, subject: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        """Append an entry to the audit chain (chained and inserted with the transaction's other entries); secrets
        in it are masked."""
        self._audit_rows.append((utcnow(), redact(actor), action, redact(subject), redact(details or {})))

    async def flush(self) -> None:
        """Send the staged writes; RunNotHeld (nothing written) when a run is no longer held by its owner."""
        await self._flush_runs()
        if self._step_rows:
            rows, self._step_rows = list(self._step_rows.values()), {}
            columns = tuple(c for c in rows[0] if c not in ("run_id", "step_id"))
            await upserts.write(self.conn, upserts.upsert(self._dialect, steps, ("run_id", "step_id"), columns), rows)
        if self._audit_rows:
            entries, self._audit_rows = self._audit_rows, []
            prev = await self._audit_tail()
            rows = []
            for at, actor, action, subject, details in entries:
                digest = audit_hash(prev, at, actor, action, subject, details, self._audit_key)
                rows.append(
                    {
                        "at": at,
                        "actor": actor,
                        "action": action,
                        "subject": subject,
                        "details": details,
                        "prev_hash": prev,
                        "hash": digest,
                    }
                )
                prev = digest
            self._audit_head = prev
            await self.conn.execute(sa.insert(audit_log), rows)

    async def _flush_runs(self) -> None:
        held, self._held = self._held, {}
        for owner, run_ids in held.items():
            result = await self.conn.execute(
                sa.update(runs)
                .where(runs.c.id.in_(sorted(run_ids)), runs.c.owner == owner, runs.c.status == RunStatus.RUNNING.value)
                .values(heartbeat_at=utcnow())
            )
            if result.rowcount != len(run_ids):
                self._run_changes, self._step_rows, self._audit_rows = {}, {}, []
                raise RunNotHeld(owner, sorted(run_ids))
        changes, self._run_changes = self._run_changes, {}
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for run_id, change in changes.items():
            by_columns.setdefault(tuple(sorted(change)), []).append({"b_id": run_id, **change})
        for columns, rows in by_columns.items():
            await self.conn.execute(
                sa.update(runs).where(runs.c.id == sa.bindparam("b_id")).values({c: sa.bindparam(c) for c in columns}),
                rows,
            )

    async def _audit_tail(self) -> str:
        """The chain's last hash, taking the chain's lock first (once per transaction)."""
        if self._audit_head is None:
            await self._lock("audit")
            last = (
                await self.conn.execute(sa.select(audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1))
            ).scalar_one_or_none()
            self._audit_head = last or GENESIS_HASH
        return self._audit_head

    # runs -----------------------------------------------------------------------------------------
    async def create_run(self, run: Run) -> bool:
        """Store a new run; False when this playbook already has a run for this finding (trigger dedup)."""
        stmt = self._insert(runs).on_conflict_do_nothing().returning(runs.c.id)
        row = {
            "id": run.id,
            "playbook": run.playbook,
            "playbook_version": run.playbook_version,
            "finding_id": run.finding_id,
            "entity": run.entity,
            "status": run.status.value,
            "dry_run": run.dry_run,
            "error": run.error,
            "created_at": run.created_at,
            "finished_at": run.finished_at,
            "requested_by": run.requested_by,
            "parent_run_id": run.parent_run_id,
            "inputs": run.inputs,
            "trigger": run.trigger,
            "definition": run.definition,
            "outputs": run.outputs,
            "owner": run.owner,
            "heartbeat_at": run.heartbeat_at,
            "resumes": run.resumes,
        }
        return (await self.conn.execute(stmt, [row])).first() is not None

    async def finish_run(
        self, run_id: str, status: RunStatus, error: str | None = None, *, outputs: dict[str, Any] | None = None
    ) -> None:
        """Mark a run finished and release its worker."""
        await self.flush()
        await self.conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(status=status.value, error=error, finished_at=utcnow(), outputs=outputs, owner=None)
        )

    async def finish_run_from(self, run_id: str, expected: RunStatus, status: RunStatus, error: str | None) -> bool:
        """Finish a run only if it is still in `expected` status (no worker holds it); False otherwise."""
        await self.flush()
        result = await self.conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id, runs.c.status == expected.value)
            .values(status=status.value, error=error, finished_at=utcnow(), owner=None, heartbeat_at=None)
        )
        return bool(result.rowcount)

    async def set_run_owner(self, run_id: str, status: RunStatus, owner: str | None) -> None:
        """Move a run to a non-final status held by `owner` (None: no worker holds it)."""
        await self.flush()
        now = utcnow() if owner is not None else None
        await self.conn.execute(
            sa.update(runs).where(runs.c.id == run_id).values(status=status.value, owner=owner, heartbeat_at=now)
        )

    async def heartbeat(self, run_id: str, owner: str) -> bool:
        """Refresh a run's heartbeat; False when `owner` no longer holds it (the reaper gave it to another)."""
        await self.flush()
        result = await self.conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id, runs.c.owner == owner, runs.c.status == RunStatus.RUNNING.value)
            .values(heartbeat_at=utcnow())
        )
        return bool(result.rowcount)

    async def stale_runs(self, before: datetime, limit: int = 100) -> list[tuple[str, datetime | None]]:
        """Running runs whose worker has not refreshed them since `before`: (id, last heartbeat)."""
        await self.flush()
        query = (
            sa.select(runs.c.id, runs.c.heartbeat_at)
            .where(
                runs.c.status == RunStatus.RUNNING.value,
                sa.or_(runs.c.heartbeat_at.is_(None), runs.c.heartbeat_at < before),
            )
            .order_by(runs.c.created_at)
            .limit(limit)
        )
        return [(row[0], _utc(row[1])) for row in await self.conn.execute(query)]

    async def claim_run(self, run_id: str, owner: str, *, seen_heartbeat: datetime | None) -> int | None:
        """Take a stale run over if its heartbeat is still `seen_heartbeat`; its resume count, or None if lost."""
        await self.flush()
        condition = runs.c.heartbeat_at.is_(None) if seen_heartbeat is None else runs.c.heartbeat_at == seen_heartbeat
        result = await self.conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING.value, condition)
            .values(owner=owner, heartbeat_at=utcnow(), resumes=runs.c.resumes + 1)
            .returning(runs.c.resumes)
        )
        value = result.scalar_one_or_none()
        return None if value is None else int(value)

    async def run_ids(self, status: RunStatus, *, limit: int = 100) -> list[str]:
        """Ids of runs in a status, oldest first."""
        await self.flush()
        query = sa.select(runs.c.id).where(runs.c.status == status.value).order_by(runs.c.created_at).limit(limit)
        return [row[0] for row in await self.conn.execute(query)]

    async def acquire_entity_lock(self, entity: str, run_id: str) -> str:
        """Hold the containment lock on an entity for a run; returns the run that holds it (maybe another)."""
        stmt = self._insert(entity_locks).on_conflict_do_nothing(index_elements=["entity"])
        await self.conn.execute(stmt, [{"entity": entity, "run_id": run_id, "acquired_at": utcnow()}])
        holder = await self.conn.execute(sa.select(entity_locks.c.run_id).where(entity_locks.c.entity == entity))
        return str(holder.scalar_one())

    async def release_entity_lock(self, entity: str, run_id: str) -> None:
        """Release an entity's lock if this run holds it."""
        await self.conn.execute(
            sa.delete(entity_locks).where(entity_locks.c.entity == entity, entity_locks.c.run_id == run_id)
        )

    async def next_pending_run(self, entity: str) -> str | None:
        """The oldest run queued behind an entity's lock."""
        await self.flush()
        query = (
            sa.select(runs.c.id)
            .where(runs.c.status == RunStatus.PENDING.value, sa.func.lower(runs.c.entity) == entity)
            .order_by(runs.c.created_at, runs.c.id)
            .limit(1)
        )
        return (await self.conn.execute(query)).scalar_one_or_none()

    async def destructive_calls_since(self, since: datetime, *, excluding: str | None = None) -> int:
        """Destructive action calls started since `since`, other than the one keyed `excluding`.

        Serialised, so that counting and recording the next call happen as one step across workers.
        """
        await self.flush()
        await self._lock("destructive")
        query = sa.select(sa.func.count()).where(steps.c.destructive.is_(True), steps.c.started_at >= since)
        if excluding is not None:
            query = query.where(steps.c.idempotency_key != excluding)
        return int((await self.conn.execute(query)).scalar_one())

    async def expired_waits(self, now: datetime) -> list[str]:
        """Waiting runs with an approval request past its expiry."""
        await self.flush()
        query = (
            sa.select(steps.c.run_id)
            .join(runs, runs.c.id == steps.c.run_id)
            .where(
                runs.c.status == RunStatus.WAITING.value,
                steps.c.status == RunStatus.WAITING.value,
                steps.c.expires_at < now,
            )
            .distinct()
        )
        return [row[0] for row in await self.conn.execute(query)]

    async def get_control(self, name: str) -> Any:
        """An engine control's value (e.g. the kill switch), or None when never set; read once per transaction."""
        if name not in self._controls:
            self._controls[name] = (
                await self.conn.execute(sa.select(controls.c.value).where(controls.c.name == name))
            ).scalar_one_or_none()
        return self._controls[name]

    async def set_control(self, name: str, value: Any, by: str) -> None:
        """Set an engine control."""
        row = {"name": name, "value": value, "updated_by": by, "updated_at": utcnow()}
        self._controls.pop(name, None)
        statement = upserts.upsert(self._dialect, controls, ("name",), ("value", "updated_by", "updated_at"))
        await upserts.write(self.conn, statement, [row])

    async def record_approval(
        self, run_id: str, step_id: str, approver: str, decision: str, plan_hash: str, comment: str | None
    ) -> bool:
        """Record one person's decision on a step's plan; False if they already decided."""
        stmt = self._insert(approvals).on_conflict_do_nothing().returning(approvals.c.approver)
        row = {
            "run_id": run_id,
            "step_id": step_id,
            "approver": approver,
            "decision": decision,
            "plan_hash": plan_hash,
            "comment": comment,
            "at": utcnow(),
        }
        return (await self.conn.execute(stmt, [row])).first() is not None

    async def approvals_for(self, run_id: str, step_id: str) -> list[dict[str, Any]]:
        """Decisions recorded on a step, oldest first."""
        query = (
            sa.select(approvals)
            .where(approvals.c.run_id == run_id, approvals.c.step_id == step_id)
            .order_by(approvals.c.at)
        )
        return [{**row, "at": _utc(row["at"])} for row in (await self.conn.execute(query)).mappings()]

    async def findings_since(self, since: datetime, limit: int = 10_000) -> list[Finding]:
        """Findings created since `since`, oldest first."""
        query = sa.select(findings).where(findings.c.created_at >= since).order_by(findings.c.created_at).limit(limit)
        return [_finding(row) for row in (await self.conn.execute(query)).mappings()]

    async def save_step(self, run_id: str, step: StepRecord) -> None:
        """Insert or update a step record."""
        await self.flush()
        values = _step_values(step)
        statement = upserts.upsert(self._dialect, steps, ("run_id", "step_id"), tuple(values))
        await upserts.write(self.conn, statement, [{"run_id": run_id, "step_id": step.step_id, **values}])

    async def get_run(self, run_id: str) -> Run | None:
        """A run with its steps in order."""
        await self.flush()
        row = (await self.conn.execute(sa.select(runs).where(runs.c.id == run_id))).mappings().first()
        if row is None:
            return None
        run = _run(row)
        step_rows = await self.conn.execute(sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.position))
        run.steps = [_step(s) for s in step_rows.mappings()]
        return run

    async def list_runs(
        self,
        *,
        limit: int = 50,
        finding_id: str | None = None,
        status: RunStatus | None = None,
        hide: sa.Select[Any] | None = None,
    ) -> list[Run]:
        """Runs, newest first, each with its steps; `hide` selects ids to leave out."""
        await self.flush()
        query = sa.select(runs.c.id).order_by(runs.c.created_at.desc(), runs.c.id).limit(limit)
        if hide is not None:
            query = query.where(runs.c.id.not_in(hide))
        if finding_id is not None:
            query = query.where(runs.c.finding_id == finding_id)
        if status is not None:
            query = query.where(runs.c.status == status.value)
        ids = [row[0] for row in await self.conn.execute(query)]
        found = [await self.get_run(run_id) for run_id in ids]
        return [run for run in found if run is not None]

    # audit ----------------------------------------------------------------------------------------
    async def audit(
        self, actor: str, action: str, subject: str | None = None, details: dict[str, Any] | None = None
    ) -> AuditRecord:
        """Append an entry to the hash-chained audit log, secrets masked (`custodes.redaction`).

        The first entry of a transaction takes the chain's lock (PostgreSQL: an advisory transaction lock;
        SQLite: the write lock every transaction takes up front) and reads the head; later entries of the same
        transaction chain onto the entry before them without reading again.
        """
        await self.flush()
        prev = await self._audit_tail()
        at = utcnow()
        actor, subject, body = redact(actor), redact(subject), redact(details or {})
        digest = audit_hash(prev, at, actor, action, subject, body, self._audit_key)
        self._audit_head = digest
        result = await self.conn.execute(
            sa.insert(audit_log).returning(audit_log.c.seq),
            [
                {
                    "at": at,
                    "actor": actor,
                    "action": action,
                    "subject": subject,
                    "details": body,
                    "prev_hash": prev,
                    "hash": digest,
                }
            ],
        )
        return AuditRecord(int(result.scalar_one()), at, actor, action, subject, body, prev, digest)

    async def audit_entries(self, *, after_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Audit entries in order, after a sequence number."""
        await self.flush()
        result = await self.conn.execute(
            sa.select(audit_log).where(audit_log.c.seq > after_seq).order_by(audit_log.c.seq).limit(limit)
        )
        return [
            AuditRecord(
                int(r["seq"]),
                _required_utc(r["at"]),
                r["actor"],
                r["action"],
                r["subject"],
                dict(r["details"]),
                r["prev_hash"],
                r["hash"],
            )
            for r in result.mappings()
        ]

    async def verify_audit(self, page: int = 5000, *, remember: Iterable[int] = ()) -> AuditVerification:
        """Recompute the audit chain; report the first entry whose hash or link does not match.

        With an audit key, every entry from the first one written with the key on must carry its HMAC (an entry
        with a plain hash after it was inserted or rewritten by someone without the key); entries before it may be
        plain (written before the key was configured). The hashes of the `remember`ed sequence numbers are
        returned, to compare with checkpoints kept outside the store.
        """
        key, wanted = self._audit_key, set(remember)
        prev, after, checked, keyed, unkeyed = GENESIS_HASH, 0, 0, False, 0
        hashes: dict[int, str] = {}
        while True:
            entries = await self.audit_entries(after_seq=after, limit=page)
            for entry in entries:
                if entry.prev_hash != prev:
                    return AuditVerification(False, checked, entry.seq, "its link to the previous entry is broken")
                fields = (entry.prev_hash, entry.at, entry.actor, entry.action, entry.subject, entry.details)
                if key is not None and hmac.compare_digest(audit_hash(*fields, key), entry.hash):
                    keyed = True
                elif not keyed and audit_hash(*fields) == entry.hash:
                    unkeyed += 1
                else:
                    reason = "its content does not match its hash"
                    if key is None:
                        reason += " (if the log is keyed, set database.audit_key)"
                    elif keyed:
                        reason += " (not signed with the audit key)"
                    return AuditVerification(False, checked, entry.seq, reason)
                if entry.seq in wanted:
                    hashes[entry.seq] = entry.hash
                prev, after, checked = entry.hash, entry.seq, checked + 1
            if len(entries) < page:
                return AuditVerification(True, checked, head_seq=after, head_hash=prev, unkeyed=unkeyed, hashes=hashes)

    # connector status ---------------------------------------------------------------------------
    async def get_connector_status(self, connector: str) -> ConnectorStatus | None:
        """One connector's status, or None when it has never run."""
        row = (
            (await self.conn.execute(sa.select(connector_status).where(connector_status.c.connector == connector)))
            .mappings()
            .first()
        )
        return None if row is None else _connector_status(row)

    async def list_connector_status(self) -> list[ConnectorStatus]:
        """Every connector's status, by name."""
        result = await self.conn.execute(sa.select(connector_status).order_by(connector_status.c.connector))
        return [_connector_status(row) for row in result.mappings()]

    async def save_connector_status(self, status: ConnectorStatus) -> None:
        """Insert or replace a connector's status."""
        status.updated_at = utcnow()
        values = {
            "kind": status.kind,
            "events_total": status.events_total,
            "last_round_events": status.last_round_events,
            "events_per_second": status.events_per_second,
            "newest_event": status.newest_event,
            "last_success": status.last_success,
            "last_error": status.last_error,
            "last_error_at": status.last_error_at,
            "consecutive_failures": status.consecutive_failures,
            "updated_at": status.updated_at,
        }
        statement = upserts.upsert(self._dialect, connector_status, ("connector",), tuple(values))
        await upserts.write(self.conn, statement, [{"connector": status.connector, **values}])

    # correlation state ----------------------------------------------------------------------------
    async def load_correlation_state(self) -> tuple[dict[str, float], list[CorrelationGroupRecord]]:
        """Every correlation clock (event time, POSIX seconds) and every group, least recently used first."""
        clock_rows = await self.conn.execute(sa.select(correlation_clocks.c.correlation_id, correlation_clocks.c.clock))
        clocks = {row.correlation_id: float(row.clock) for row in clock_rows}
        result = await self.conn.execute(
            sa.select(correlation_groups).order_by(correlation_groups.c.position, correlation_groups.c.group_key)
        )
        groups = [
            CorrelationGroupRecord(row["correlation_id"], row["group_key"], dict(row["state"]), int(row["position"]))
            for row in result.mappings()
        ]
        return clocks, groups

    async def save_correlation_state(
        self,
        clocks: Mapping[str, float],
        groups: Sequence[CorrelationGroupRecord],
        deleted: Sequence[tuple[str, str]],
    ) -> None:
        """Upsert clocks and groups and delete the (correlation id, group key) pairs in `deleted`."""
        now = utcnow()
        if clocks:
            await upserts.write(
                self.conn,
                upserts.upsert(self._dialect, correlation_clocks, ("correlation_id",), ("clock", "updated_at")),
                [{"correlation_id": key, "clock": clock, "updated_at": now} for key, clock in clocks.items()],
            )
        if groups:
            await upserts.write(
                self.conn,
                upserts.upsert(
                    self._dialect,
                    correlation_groups,
                    ("correlation_id", "group_key"),
                    ("state", "position", "updated_at"),
                ),
                [
                    {
                        "correlation_id": group.correlation_id,
                        "group_key": group.group_key,
                        "state": group.state,
                        "position": group.position,
                        "updated_at": now,
                    }
                    for group in groups
                ],
            )
        if deleted:
            pairs = sa.tuple_(correlation_groups.c.correlation_id, correlation_groups.c.group_key)
            await self.conn.execute(sa.delete(correlation_groups).where(pairs.in_(list(deleted))))

    async def delete_correlation_state(self, correlation_ids: Sequence[str]) -> None:
        """Forget the clocks and groups of these correlation rules."""
        ids = list(correlation_ids)
        await self.conn.execute(sa.delete(correlation_groups).where(correlation_groups.c.correlation_id.in_(ids)))
        await self.conn.execute(sa.delete(correlation_clocks).where(correlation_clocks.c.correlation_id.in_(ids)))

    # checkpoints ----------------------------------------------------------------------------------
    async def get_checkpoint(self, connector: str) -> dict[str, Any] | None:
        """A connector's saved position, or None when it has never run."""
        value = (
            await self.conn.execute(sa.select(checkpoints.c.value).where(checkpoints.c.connector == connector))
        ).scalar_one_or_none()
        return None if value is None else dict(value)

    async def save_checkpoint(self, connector: str, value: dict[str, Any]) -> None:
        """Save a connector's position (commit it with the batch it covers)."""
        statement = upserts.upsert(self._dialect, checkpoints, ("connector",), ("value", "updated_at"))
        await upserts.write(self.conn, statement, [{"connector": connector, "value": value, "updated_at": utcnow()}])


class Store:
    """An engine plus migrations; hands out transactions."""

    def __init__(self, engine: AsyncEngine, settings: DatabaseSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.audit_key = None if settings.audit_key is None else settings.audit_key.reveal().encode()
        self.group = GroupCommit(self.transaction)
        """Commits the small transactions of concurrent callers together (the playbook engine's transitions)."""

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    @classmethod
    async def open(cls, settings: DatabaseSettings, *, migrate_schema: bool = True) -> Store:
        """Connect, and bring the schema up to date; connection problems are ConfigErrors that say what to do."""
        engine = _engine(settings)
        store = cls(engine, settings)
        try:
            async with _first_connection_lock(engine):
                if migrate_schema:
                    await store.migrate()
                else:
                    async with engine.connect():
                        pass
        except (OperationalError, DBAPIError, OSError) as exc:
            await engine.dispose()
            reason = str(getattr(exc, "orig", exc)).splitlines()[0]
            raise ConfigError(
                f"cannot open the store at {make_url(settings.url).render_as_string(hide_password=True)}: {reason}",
                hint="check database.url (or CUSTODES_DATABASE_URL) and that the database is reachable",
            ) from None
        return store

    async def migrate(self) -> None:
        """Apply pending Alembic migrations; on PostgreSQL, processes starting together take turns."""
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await transaction_lock(conn, lock_key("migrations", self.settings.schema_name))
                if self.settings.schema_name:
                    await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.settings.schema_name}"'))
            await conn.run_sync(migrate.upgrade)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A transaction that commits (after sending its staged writes) when the block ends without an exception."""
        async with self.engine.begin() as conn:
            tx = Transaction(conn, self.audit_key, self.settings.schema_name)
            yield tx
            await tx.flush()
        for callback in tx.committed:
            callback()

    async def apply_retention(self) -> int:
        """Delete events older than `event_retention_days` (none when unset); return how many."""
        days = self.settings.event_retention_days
        if days is None:
            return 0
        async with self.transaction() as tx:
            return await tx.purge_events(utcnow() - timedelta(days=days))

    async def close(self) -> None:
        """Release every connection."""
        await self.engine.dispose()


async def drop_schema(url: str, schema: str) -> None:
    """Remove a PostgreSQL schema and everything in it: the schema of a store kept apart (`schema_name`), as a test or
    a bench gives each of its stores."""
    engine = create_async_engine(make_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


def _engine(settings: DatabaseSettings) -> AsyncEngine:
    url = make_url(settings.url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, echo=settings.echo, async_creator=creator(url, timeout=30, cached_statements=512), **upserts.JSON_CODEC
        )
        sa_event.listen(engine.sync_engine, "connect", partial(_sqlite_pragmas, settings))
        sa_event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    connect_args: dict[str, Any] = {}  # PostgreSQL, the one other store `DatabaseSettings.url` admits
    if settings.schema_name:
        connect_args["server_settings"] = {"search_path": settings.schema_name}
    return create_async_engine(
        url, echo=settings.echo, connect_args=connect_args, pool_pre_ping=True, **upserts.JSON_CODEC
    )


@asynccontextmanager
async def _first_connection_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """Processes opening one SQLite file take turns until its schema (and so its WAL header) is written.

    SQLite persists `journal_mode=WAL` only with the first write: connections that open a new, empty file together
    may disagree on the journal mode and then lock by different protocols, so neither excludes the other.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock = await asyncio.to_thread(os.open, f"{database}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)  # closing the descriptor releases the lock


def _sqlite_pragmas(settings: DatabaseSettings, dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={settings.sqlite_synchronous}")
    cursor.execute(f"PRAGMA cache_size=-{settings.sqlite_cache_mib * 1024}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # Take the write lock up front so concurrent writers queue instead of failing on upgrade.
    conn.connection.driver_connection.begin("BEGIN IMMEDIATE")


def _event(row: Any) -> Event:
    return Event(
        id=row["id"],
        time=_required_utc(row["time"]),
        source=row["source"],
        logsource=LogSource(row["product"], row["service"], row["category"]),
        raw=dict(row["raw"]),
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        outcome=Outcome(row["outcome"]),
        src_ip=row["src_ip"],
        bytes=row["bytes"],
        warnings=list(row["warnings"]),
    )


def _connector_status(row: Any) -> ConnectorStatus:
    return ConnectorStatus(
        connector=row["connector"],
        kind=row["kind"],
        events_total=int(row["events_total"]),
        last_round_events=int(row["last_round_events"]),
        events_per_second=float(row["events_per_second"]),
        newest_event=_utc(row["newest_event"]),
        last_success=_utc(row["last_success"]),
        last_error=row["last_error"],
        last_error_at=_utc(row["last_error_at"]),
        consecutive_failures=int(row["consecutive_failures"]),
        updated_at=_utc(row["updated_at"]),
    )


def _finding_row(f: Finding) -> dict[str, Any]:
    return {
        "id": f.id,
        "dedup_key": f.dedup_key,
        "detector": f.detector,
        "rule_id": f.rule_id,
        "title": f.title,
        "description": f.description,
        "severity": int(f.severity),
        "entity": f.entity,
        "source": f.source,
        "tags": f.tags,
        "event_ids": f.event_ids,
        "count": f.count,
        "status": f.status.value,
        "first_seen": f.first_seen,
        "last_seen": f.last_seen,
        "created_at": utcnow(),
    }


def _finding(row: Any) -> Finding:
    return Finding(
        id=row["id"],
        dedup_key=row["dedup_key"],
        detector=row["detector"],
        rule_id=row["rule_id"],
        title=row["title"],
        severity=Severity(row["severity"]),
        entity=row["entity"],
        event_ids=list(row["event_ids"]),
        tags=list(row["tags"]),
        first_seen=_required_utc(row["first_seen"]),
        last_seen=_required_utc(row["last_seen"]),
        source=row["source"],
        count=row["count"],
        status=FindingStatus(row["status"]),
        description=row["description"],
    )


def _run(row: Any) -> Run:
    return Run(
        id=row["id"],
        playbook=row["playbook"],
        playbook_version=row["playbook_version"],
        status=RunStatus(row["status"]),
        created_at=_required_utc(row["created_at"]),
        finding_id=row["finding_id"],
        entity=row["entity"],
        dry_run=row["dry_run"],
        error=row["error"],
        finished_at=_utc(row["finished_at"]),
        requested_by=row["requested_by"],
        parent_run_id=row["parent_run_id"],
        inputs=dict(row["inputs"]),
        trigger=dict(row["trigger"]),
        definition=dict(row["definition"]),
        outputs=None if row["outputs"] is None else dict(row["outputs"]),
        owner=row["owner"],
        heartbeat_at=_utc(row["heartbeat_at"]),
        resumes=row["resumes"],
    )


def _step_values(step: StepRecord) -> dict[str, Any]:
    return {
        "position": step.position,
        "action": step.action,
        "arguments": step.arguments,
        "status": step.status.value,
        "idempotency_key": step.idempotency_key,
        "result": step.result,
        "error": step.error,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "attempt": step.attempt,
        "target": step.target,
        "destructive": step.destructive,
        "plan": step.plan,
        "plan_hash": step.plan_hash,
        "expires_at": step.expires_at,
    }


def _step(row: Any) -> StepRecord:
    return StepRecord(
        step_id=row["step_id"],
        position=row["position"],
        action=row["action"],
        arguments=dict(row["arguments"]),
        status=RunStatus(row["status"]),
        idempotency_key=row["idempotency_key"],
        result=None if row["result"] is None else dict(row["result"]),
        error=row["error"],
        started_at=_utc(row["started_at"]),
        finished_at=_utc(row["finished_at"]),
        attempt=row["attempt"],
        target=row["target"],
        destructive=row["destructive"],
        plan=None if row["plan"] is None else list(row["plan"]),
        plan_hash=row["plan_hash"],
        expires_at=_utc(row["expires_at"]),
    )
