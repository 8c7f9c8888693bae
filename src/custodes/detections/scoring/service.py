"""Behaviour scoring inside the pipeline: the engine kept in memory, its state persisted in the ingest transaction.

`ScoringService.ingest` runs inside `Pipeline.ingest`'s transaction: it feeds the batch's new events and findings to
the engine, raises threshold findings as soon as an open day crosses it, and writes the changed entity baselines,
the engine's clock and every final day score (with its contributions) in the same transaction as the events.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from custodes.cases import feedback
from custodes.config import ScoringSettings
from custodes.detections.scoring.baselines import EntityState
from custodes.detections.scoring.engine import DETECTOR, ScoringEngine
from custodes.detections.scoring.identity import IdentityResolver, load_directory, zone_warning
from custodes.detections.scoring.privacy import Pseudonymizer
from custodes.detections.scoring.risk import Contribution, DayScore
from custodes.errors import ConfigError, CustodesError
from custodes.model import Event, Finding, utcnow
from custodes.store import Store, Transaction, upserts
from custodes.store.tables import (
    entities,
    events,
    scoring_meta,
    scoring_scores,
    scoring_scores_staged,
    scoring_state,
)

KEY_META = "pseudonym_key"
INDEX_META = "pseudonym_index"
"""The fingerprint of the key the stored entity pseudonyms were computed with."""
INDEX_BATCH = 5_000
SCORE_ROWS = 5_000
"""Day scores turned into rows at a time as they are written."""
RESEAT_PAGE = 5_000
"""Stored records read at a time when the seats are rebuilt after a start (`ScoringService.reseat`)."""
DIRECTORY_REFRESH_SECONDS = 10.0
"""How often a scoring service looks whether the directory's files changed (a `stat` of each): a new export counts
from the batch after, at most this long after it was written."""
FEEDBACK_REFRESH_SECONDS = 1.0
"""How often a batch reads the feedback on causes again (given in the API, maybe in another process); it counts
from the next day closed, so a second's delay changes no score."""
log = logging.getLogger(__name__)
CLOCK_META = "clock"
HOLD_META = "hold"


async def _meta(tx: Transaction, key: str) -> Any:
    return (await tx.conn.execute(sa.select(scoring_meta.c.value).where(scoring_meta.c.key == key))).scalar()


async def _set_meta(tx: Transaction, key: str, value: Any) -> None:
    statement = upserts.upsert(tx.conn.dialect.name, scoring_meta, ("key",), ("value", "updated_at"))
    await upserts.write(tx.conn, statement, [{"key": key, "value": value, "updated_at": utcnow()}])


async def pseudonymizer_for(settings: ScoringSettings, store: Store) -> Pseudonymizer:
    """The key of `scoring.pseudonym_key` (a secret reference); else the key file `scoring.pseudonym_key_file`,
    outside the store, generated when missing (a key an older version kept in the store is moved there); else, only
    with `scoring.pseudonym_key_in_store`, a key generated once and kept in the store."""
    if settings.pseudonym_key is not None:
        return Pseudonymizer(settings.pseudonym_key.reveal().encode())
    async with store.transaction() as tx:
        stored = await _meta(tx, KEY_META)
        if settings.pseudonym_key_in_store:
            if stored is None:
                stored = secrets.token_hex(32)
                await _set_meta(tx, KEY_META, stored)
            return Pseudonymizer(bytes.fromhex(str(stored)))
        key = _key_file(Path(settings.pseudonym_key_file), None if stored is None else str(stored))
        if stored is not None:
            await tx.conn.execute(sa.delete(scoring_meta).where(scoring_meta.c.key == KEY_META))
            log.warning("the pseudonym key was moved out of the store to %s", settings.pseudonym_key_file)
    return Pseudonymizer(bytes.fromhex(key))


def _key_file(path: Path, moved: str | None) -> str:
    """The hex key in `path`, created (exclusively, mode 0600) with `moved` or a new key when it does not exist."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return _read_key(path)
    with os.fdopen(handle, "w") as file:
        file.write((moved or secrets.token_hex(32)) + "\n")
        file.flush()
        os.fsync(file.fileno())
    return _read_key(path)


def _read_key(path: Path) -> str:
    text = path.read_text(encoding="utf-8").strip()
    try:
        bytes.fromhex(text)
    except ValueError:
        raise ConfigError.at(path, "not a pseudonym key (hex)", hint="remove it to generate a new key") from None
    if len(text) < 32:
        raise ConfigError.at(path, "the pseudonym key is too short (at least 16 bytes, as hex)")
    return text


async def entity_for_pseudonym(store: Store, pseudonymizer: Pseudonymizer, pseudonym: str) -> str | None:
    """The stored entity a pseudonym stands for, by the pseudonym stored beside each entity (indexed): entities
    without one yet (or with one from another key) get theirs first, each computed once, a batch per transaction
    (so that webhook writes wait on no long transaction)."""
    fingerprint = pseudonymizer.fingerprint
    async with store.transaction() as tx:
        if await _meta(tx, INDEX_META) != fingerprint:
            await tx.conn.execute(sa.update(entities).values(pseudonym=None))
            await _set_meta(tx, INDEX_META, fingerprint)
    while True:
        async with store.transaction() as tx:
            missing = [
                row[0]
                for row in await tx.conn.execute(
                    sa.select(entities.c.id).where(entities.c.pseudonym.is_(None)).limit(INDEX_BATCH)
                )
            ]
            if missing:
                await tx.conn.execute(
                    sa.update(entities)
                    .where(entities.c.id == sa.bindparam("b_id"))
                    .values(pseudonym=sa.bindparam("b_p")),
                    [{"b_id": name, "b_p": pseudonymizer(name)} for name in missing],
                )
        if len(missing) < INDEX_BATCH:
            break
    async with store.transaction() as tx:
        wanted = pseudonym.strip().lower()
        found = await tx.conn.execute(sa.select(entities.c.id).where(entities.c.pseudonym == wanted).limit(1))
        return found.scalar_one_or_none()


def resolver_for(settings: ScoringSettings, pseudonymizer: Pseudonymizer | None) -> IdentityResolver:
    """An identity resolver from the configured directory and mappings."""
    people = load_directory(settings.directory) if settings.directory is not None else []
    if (warning := zone_warning(people, settings.default_timezone)) is not None:
        log.warning("%s", warning)
    resolver = IdentityResolver(people, settings.identities, pseudonymizer if settings.pseudonymise else None)
    if resolver.shared:
        names = sorted(resolver.shared)
        log.warning(
            "%d names in the directory are claimed by two or more people; events under each go to the last listed "
            "(`custodes directory check` lists them): %s%s",
            len(names),
            ", ".join(names[:5]),
            " ..." if len(names) > 5 else "",
        )
    return resolver


def _directory_stamp(path: Path | None) -> tuple[tuple[str, int, int, int], ...]:
    """What changes when the directory at `path` (a file, or a folder of files) is written or replaced."""
    if path is None:
        return ()
    try:
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        stamps = []
        for file in files:
            info = file.stat()
            stamps.append((file.name, info.st_ino, info.st_size, info.st_mtime_ns))
    except OSError:
        return (("", 0, 0, 0),)
    return tuple(stamps)


def directory_source(settings: ScoringSettings, pseudonymizer: Pseudonymizer) -> tuple[Any, ...]:
    """What `resolver_for` reads: the directory's files as they stand now (one `stat` each), the identity settings
    and the pseudonym key. Equal sources give equal resolvers."""
    return (
        settings.directory,
        _directory_stamp(settings.directory),
        settings.identities.model_dump_json(),
        settings.default_timezone,
        settings.pseudonymise and pseudonymizer.fingerprint,
    )


_current: tuple[Any, IdentityResolver] | None = None
"""The resolver `current_resolver` last read from the directory, with its `directory_source`."""


async def current_resolver(settings: ScoringSettings, store: Store, service: ScoringService | None) -> IdentityResolver:
    """The directory's people and how names map to entity keys: the scoring service's in a process that scores,
    else the one last read while its `directory_source` is unchanged (a process that only answers the API does not
    read a large directory again for each request). Callers only read it."""
    global _current
    if service is not None:
        return service.engine.resolver
    pseudonymizer = await pseudonymizer_for(settings, store)
    source = directory_source(settings, pseudonymizer)
    if _current is None or _current[0] != source:
        _current = (source, await asyncio.to_thread(resolver_for, settings, pseudonymizer))
    return _current[1]


@dataclass(slots=True)
class DirectoryStatus:
    """What the scoring service holds of the directory: its people, when it was read (Unix time), the reads of a
    changed directory that failed since start, and the last one's error while the change stays unread."""

    people: int
    read_at: float
    failed_reads: int = 0
    error: str | None = None


class ScoringService:
    """The engine, its persistence and its findings for the pipeline."""

    def __init__(self, settings: ScoringSettings, engine: ScoringEngine, pseudonymizer: Pseudonymizer) -> None:
        self.settings = settings
        self.engine = engine
        self.pseudonymizer = pseudonymizer
        self._saved_clock: dict[str, Any] | None = None
        """The engine's clock as last committed: unchanged, it is not written again."""
        self._replace: tuple[str, int] | None = None
        """After `rescore`: its run and the day scores it staged; the next `save` replaces the stored baselines and
        scores with them."""
        self._stale = False
        """A transaction that changed the state failed: the next batch reloads it from the store."""
        self._seated = False
        """Whether the engine's seats (who is at which machine, held in memory only) were read from the stored
        records since this process started (`reseat`), or made by a re-score."""
        self._feedback_read = -math.inf
        """When (`time.monotonic`) the feedback on causes was last read from the store."""
        self._directory = directory_source(settings, pseudonymizer)
        """The `directory_source` the engine's resolver was read from (or a read of which failed)."""
        self._directory_checked = time.monotonic()
        self.directory = DirectoryStatus(engine.resolver.population, time.time())

    @classmethod
    async def open(cls, settings: ScoringSettings, store: Store) -> ScoringService:
        """Load the directory, the pseudonym key and every persisted baseline."""
        pseudonymizer = await pseudonymizer_for(settings, store)
        service = cls(settings, new_engine(settings, resolver_for(settings, pseudonymizer)), pseudonymizer)
        async with store.transaction() as tx:
            await service.load(tx)
        return service

    def invalidate(self) -> None:
        """Forget the in-memory state (a transaction that changed it failed): the next batch reloads it."""
        self._stale = True

    async def read_feedback(self, tx: Transaction) -> None:
        """Read the analyst feedback on entities' causes into the engine (given or revoked in any process)."""
        self.engine.model.feedback = await feedback.causes(tx)
        self._feedback_read = time.monotonic()

    async def follow_directory(self) -> None:
        """Read the directory again when its files changed (a new export written or moved over it) and give it to
        the engine (`ScoringEngine.adopt`): new hires, notice dates, departures, moves and time zones count without
        a restart. Looked at once every `DIRECTORY_REFRESH_SECONDS` at most (a batch, a cluster's re-score, a
        receiver routing events by person). An export that cannot be read is logged, and scoring keeps the directory
        it has until the files change again."""
        if time.monotonic() - self._directory_checked < DIRECTORY_REFRESH_SECONDS:
            return
        self._directory_checked = time.monotonic()
        source = directory_source(self.settings, self.pseudonymizer)
        if source == self._directory:
            return
        self._directory = source
        try:
            resolver = await asyncio.to_thread(resolver_for, self.settings, self.pseudonymizer)
        except CustodesError as exc:
            log.error("the directory changed but cannot be read; scoring keeps the one it read before: %s", exc)
            self.directory.failed_reads += 1
            self.directory.error = str(exc)
            return
        self.engine.adopt(resolver)
        self.directory.people, self.directory.read_at, self.directory.error = resolver.population, time.time(), None
        log.info("the directory changed: read again, %d people", resolver.population)

    async def load(self, tx: Transaction) -> None:
        """Replace the engine with one holding the committed baselines, clock and feedback, and the seats the engine
        before it held (what they were noted from is stored, or will be fed again)."""
        engine = new_engine(self.settings, self.engine.resolver)
        engine.on_ranking, engine.machines = self.engine.on_ranking, self.engine.machines
        for row in (await tx.conn.execute(sa.select(scoring_state))).mappings():
            engine.states[row["entity"]] = EntityState.from_json(row["entity"], dict(row["state"]))
        clock = await _meta(tx, CLOCK_META)
        if clock:
            engine.watermark = None if clock["watermark"] is None else datetime.fromisoformat(clock["watermark"])
            engine.closed_through = clock["closed_through"]
            engine.days_closed = int(clock["days_closed"])
            engine.top = set(clock["top"])
            engine.late_by_source.update(clock.get("late", {}))
            if engine.closed_through is not None:
                engine._schedule()
        if engine.states:
            engine.align()
            engine.refresh_groups()
        self.engine, self._saved_clock, self._stale, self._replace = engine, clock, False, None
        await self.read_feedback(tx)

    async def ingest(self, tx: Transaction, events: Sequence[Event], findings: Sequence[Finding]) -> list[Finding]:
        """Score a committed-with-this-transaction batch; return the scoring findings to record.

        The caller calls `invalidate` when the transaction fails, so what this batch changed in memory is
        dropped with it (reloaded from the store before the next batch) instead of drifting from the store."""
        return await self.feed(tx, [*events, *findings])

    async def feed(self, tx: Transaction, items: Sequence[Event | Finding]) -> list[Finding]:
        """Score events and findings in the order given (as `ingest`); the scoring findings to record."""
        if self._stale:
            await self.load(tx)
        elif time.monotonic() - self._feedback_read >= FEEDBACK_REFRESH_SECONDS:
            await self.read_feedback(tx)
        if not self._seated:
            await self.reseat(tx)
        await self.follow_directory()
        touched: set[str] = set()
        for item in items:
            key = self.engine.observe(item) if isinstance(item, Event) else self.engine.add_finding(item)
            if key is not None:
                touched.add(key)
        self.engine.provisional(touched)
        await self.save(tx)
        return self.engine.take_findings()

    async def reseat(self, tx: Transaction) -> int:
        """Note who is at which machine from the stored records of the hours a seat can last before the watermark
        (`ScoringEngine.seat_horizon`): the first batch scored after a start gives a drive that names only
        its machine to the person there, as before the restart. Read once a process, by the first batch it scores;
        the number of records read."""
        engine, read, started = self.engine, 0, time.monotonic()
        if (horizon := engine.seat_horizon()) is not None:
            after = (horizon, "")
            while True:
                batch = await tx.events_in_time_order(after, RESEAT_PAGE)
                for event in batch:
                    engine.reseat(event)
                read += len(batch)
                if len(batch) < RESEAT_PAGE:
                    break
                after = (batch[-1].time, batch[-1].id)
            log.info("seats read from the last %d stored records in %.1f s", read, time.monotonic() - started)
        self._seated = True
        return read

    async def save(self, tx: Transaction) -> None:
        """Write changed baselines (bounded), the clock and new day scores."""
        engine = self.engine
        now = utcnow()
        if self._replace is not None:
            engine.dirty = set(engine.states)
            await tx.conn.execute(sa.delete(scoring_state))
            await tx.conn.execute(sa.delete(scoring_scores))
            await self._unstage(tx, *self._replace)
            tx.committed.append(lambda: setattr(self, "_replace", None))
        rows = []
        for key in sorted(engine.dirty):
            state = engine.states.get(key)
            if state is None:
                continue
            body = state.to_json()
            size = len(orjson.dumps(body))
            while size > self.settings.max_state_bytes and shrink(state):
                body = state.to_json()
                size = len(orjson.dumps(body))
            rows.append({"entity": key, "kind": state.kind, "state": body, "bytes": size, "updated_at": now})
        engine.dirty.clear()
        if rows:
            columns = ("kind", "state", "bytes", "updated_at")
            statement = upserts.upsert(tx.conn.dialect.name, scoring_state, ("entity",), columns)
            await upserts.write(tx.conn, statement, rows)
        await write_scores(tx, engine.take_scores(), now)
        clock = {
            "watermark": None if engine.watermark is None else engine.watermark.isoformat(),
            "closed_through": engine.closed_through,
            "days_closed": engine.days_closed,
            "top": sorted(engine.top),
            "late": dict(sorted(engine.late_by_source.items())),
        }
        if clock != self._saved_clock:
            await _set_meta(tx, CLOCK_META, clock)
            tx.committed.append(lambda: setattr(self, "_saved_clock", clock))

    async def flush(self, tx: Transaction) -> list[Finding]:
        """Close every open day now (end of a replay) and persist; the scoring findings raised."""
        self.engine.flush()
        await self.save(tx)
        return self.engine.take_findings()

    async def rescore(self, store: Store, page: int = 5000) -> None:
        """Recompute every day score and baseline from the stored events and findings in event-time order.

        The result is that of an in-order run whatever order the events arrived in (a replay out of order, a
        source replayed after another, a backfill). Late-event counts carry over; the findings raised are kept
        for `take_findings`; the caller persists with `save` (old state and scores are replaced).

        The day scores are staged in the store page by page as they are made (`scoring_scores_staged`, under a run
        of their own), so memory holds the baselines and not the history; `save` moves them in its transaction."""
        await self.follow_directory()
        old = self.engine
        run = uuid.uuid4().hex
        engine = new_engine(self.settings, old.resolver)
        engine.late_by_source = old.late_by_source
        engine.untimed = old.untimed
        async with store.transaction() as tx:
            pending = await tx.findings_by_time(exclude_detector=DETECTOR)
            engine.model.feedback = await feedback.causes(tx)
        index = 0
        after: tuple[datetime, str] | None = None
        while True:
            async with store.transaction() as tx:
                batch = await tx.events_in_time_order(after, page)
            touched: set[str] = set()
            for event in batch:
                while index < len(pending) and pending[index].last_seen <= event.time:
                    key = engine.add_finding(pending[index])
                    touched.update(() if key is None else (key,))
                    index += 1
                key = engine.observe(event)
                touched.update(() if key is None else (key,))
            engine.provisional(touched)
            if scores := engine.take_scores():
                async with store.transaction() as tx:
                    await write_scores(tx, scores, utcnow(), run=run)
            if len(batch) < page:
                break
            after = (batch[-1].time, batch[-1].id)
        for finding in pending[index:]:
            engine.add_finding(finding)
        async with store.transaction() as tx:
            staged = await tx.conn.execute(sa.select(sa.func.count()).where(scoring_scores_staged.c.run == run))
            self._replace = (run, int(staged.scalar_one()))
        self.engine, self._seated = engine, True  # its seats were noted from every stored record
        self._saved_clock = None

    async def _unstage(self, tx: Transaction, run: str, staged: int) -> None:
        """Move a re-score's staged day scores into `scoring_scores` and empty the stage (runs that failed
        included); refuse when another re-score emptied it meanwhile (the next batch reloads the store)."""
        mine = scoring_scores_staged.c.run == run
        present = await tx.conn.execute(sa.select(sa.func.count()).where(mine))
        if present.scalar_one() != staged:
            self._replace = None
            self.invalidate()
            raise CustodesError(
                "another re-score of this store ran meanwhile and replaced this one's staged day scores",
                hint="nothing was changed; the store holds the other re-score's result, or re-score again",
            )
        names = [column.name for column in scoring_scores.c]
        staged_columns = sa.select(*(scoring_scores_staged.c[name] for name in names)).where(mine)
        await tx.conn.execute(sa.insert(scoring_scores).from_select(names, staged_columns))
        await tx.conn.execute(sa.delete(scoring_scores_staged))


async def held_since(tx: Transaction) -> tuple[bool, datetime | None]:
    """Whether a live-source hold was under way when last committed, and its release cursor."""
    value = await _meta(tx, HOLD_META)
    if not value:
        return False, None
    return bool(value["holding"]), None if value["cursor"] is None else datetime.fromisoformat(value["cursor"])


async def held_by_source(tx: Transaction) -> dict[str, int]:
    """Stored events a live-source hold keeps from scoring (after its release cursor), by source."""
    holding, cursor = await held_since(tx)
    if not holding:
        return {}
    query = sa.select(events.c.source, sa.func.count()).group_by(events.c.source)
    if cursor is not None:
        query = query.where(events.c.time > cursor)
    return {row[0]: int(row[1]) for row in await tx.conn.execute(query)}


async def save_hold(tx: Transaction, holding: bool, cursor: datetime | None) -> None:
    """Persist the live-source hold's state (see custodes.hold)."""
    await _set_meta(tx, HOLD_META, {"holding": holding, "cursor": None if cursor is None else cursor.isoformat()})


async def late_by_source(tx: Transaction) -> dict[str, int]:
    """Events that arrived for a date scoring had already closed, by source, as last committed."""
    clock = await _meta(tx, CLOCK_META)
    return {} if not clock else {str(k): int(v) for k, v in clock.get("late", {}).items()}


def new_engine(settings: ScoringSettings, resolver: IdentityResolver) -> ScoringEngine:
    """An empty engine; the organisation's domains are those of the directory's people."""
    return ScoringEngine(settings, resolver)


def shrink(state: EntityState) -> bool:
    """Halve the largest first-seen memory (oldest values first); False when nothing is left to drop."""
    if not state.seen:
        return False
    kind = max(state.seen, key=lambda k: len(state.seen[k]))
    values = state.seen[kind]
    if len(values) <= 1:
        return False
    keep = sorted(values.items(), key=lambda item: item[1], reverse=True)[: len(values) // 2]
    state.seen[kind] = dict(keep)
    return True


async def write_scores(tx: Transaction, scores: Sequence[DayScore], now: datetime, *, run: str | None = None) -> None:
    """Upsert day scores, `SCORE_ROWS` rows at a time: into `scoring_scores`, or staged under a re-score's `run`."""
    table, keys = (
        (scoring_scores, ("entity", "day")) if run is None else (scoring_scores_staged, ("run", "entity", "day"))
    )
    statement = upserts.upsert(tx.conn.dialect.name, table, keys, ("risk", "points", "place", "detail", "event_ids"))
    for start in range(0, len(scores), SCORE_ROWS):
        rows = [score_row(score, now, run=run) for score in scores[start : start + SCORE_ROWS]]
        await upserts.write(tx.conn, statement, rows)


def score_row(score: DayScore, now: datetime, *, run: str | None = None) -> dict[str, Any]:
    """A day score as stored (staged, with a re-score's `run`)."""
    detail = score.to_json()
    return {
        **({} if run is None else {"run": run}),
        "entity": score.entity,
        "day": score.day,
        "risk": score.risk,
        "points": score.points,
        "place": score.place,
        "detail": detail,
        "event_ids": score.event_ids,
        "created_at": now,
    }


async def entity_scores(tx: Transaction, entity: str, *, day: date | None = None, limit: int = 7) -> list[DayScore]:
    """An entity's stored day scores, newest first."""
    query = sa.select(scoring_scores).where(scoring_scores.c.entity == entity)
    if day is not None:
        query = query.where(scoring_scores.c.day == day)
    query = query.order_by(scoring_scores.c.day.desc()).limit(limit)
    return [day_score(dict(row["detail"]), row["place"]) for row in (await tx.conn.execute(query)).mappings()]


def day_score(detail: dict[str, Any], place: int | None = None) -> DayScore:
    """A DayScore back from its stored form (and its stored review place)."""
    contributions = [
        Contribution(
            feature=c["feature"],
            value=float(c["value"]),
            usual=float(c["usual"]),
            peer_usual=float(c["peer_usual"]),
            points=float(c["points"]),
            occurrence_bits=float(c["occurrence_bits"]),
            magnitude_sd=float(c["magnitude_sd"]),
            last_seen_days_ago=c["last_seen_days_ago"],
            history_days=int(c["history_days"]),
            event_ids=list(c["event_ids"]),
            days=int(c.get("days", 1)),
            share=float(c.get("share", 1.0)),
            hits=int(c.get("hits", 0)),
        )
        for c in detail["contributions"]
    ]
    return DayScore(
        entity=detail["entity"],
        kind=detail["kind"],
        day=date.fromisoformat(detail["day"]),
        points=float(detail["points"]),
        risk=float(detail["risk"]),
        contributions=contributions,
        modifiers={k: float(v) for k, v in detail["modifiers"].items()},
        watchlists=list(detail["watchlists"]),
        sigma=[(str(a), str(b), float(c)) for a, b, c in detail["sigma"]],
        place=place,
    )
