"""The store on SQLite and PostgreSQL: migrations, events, findings dedup, runs, audit chain, checkpoints."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError

from custodes.config import DatabaseSettings
from custodes.errors import ConfigError
from custodes.model import (
    Event,
    Finding,
    FindingStatus,
    LogSource,
    Run,
    RunStatus,
    Severity,
    StepRecord,
    utcnow,
)
from custodes.store import Store, audit_hash
from custodes.store.tables import metadata

T0 = datetime(2026, 11, 19, 2, 0, tzinfo=UTC)


def event(ident: str, actor: str = "alice@example.com", minutes: int = 0) -> Event:
    return Event(
        id=ident,
        time=T0 + timedelta(minutes=minutes),
        source="okta",
        logsource=LogSource("okta", "okta"),
        raw={"uuid": ident, "nested": {"list": [1, 2]}},
        actor=actor,
        action="user.session.start",
    )


def finding(ident: str, event_id: str, minutes: int = 0, key: str = "k1") -> Finding:
    at = T0 + timedelta(minutes=minutes)
    return Finding(
        id=ident,
        dedup_key=key,
        detector="sigma",
        rule_id="r1",
        title="Rule one",
        severity=Severity.MEDIUM,
        entity="alice@example.com",
        event_ids=[event_id],
        tags=["attack.t1078"],
        first_seen=at,
        last_seen=at,
        source="okta",
    )


async def test_migrations_create_exactly_the_schema(store: Store) -> None:
    async with store.engine.connect() as conn:
        diffs = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    assert diffs == []


async def test_events_are_stored_raw_and_deduplicated(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.insert_events([event("e1"), event("e1"), event("e2")]) == {"e1", "e2"}
    async with store.transaction() as tx:
        assert await tx.insert_events([event("e2"), event("e3")]) == {"e3"}
        stored = await tx.get_events(["e1", "e3"])
        assert await tx.count_events() == 3
    assert [e.id for e in stored] == ["e1", "e3"]
    assert stored[0].raw == {"uuid": "e1", "nested": {"list": [1, 2]}}
    assert stored[0].time == T0 and stored[0].time.tzinfo is not None


async def test_a_failed_transaction_stores_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.insert_events([event("e1")])
            await tx.save_checkpoint("c", {"pos": 1})
            raise RuntimeError("crash between fetch and commit")
    async with store.transaction() as tx:
        assert await tx.count_events() == 0
        assert await tx.get_checkpoint("c") is None


async def test_event_retention_purges_old_events(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.insert_events([event("old", minutes=0), event("new", minutes=120)])
        assert await tx.purge_events(T0 + timedelta(minutes=60)) == 1
        assert [e.id for e in await tx.get_events(["old", "new"])] == ["new"]
    assert await store.apply_retention() == 0
    recent = Event(id="recent", time=utcnow(), source="okta", logsource=LogSource("okta", "okta"), raw={})
    async with store.transaction() as tx:
        await tx.insert_events([recent])
    store.settings.event_retention_days = 1
    assert await store.apply_retention() == 1
    async with store.transaction() as tx:
        assert [e.id for e in await tx.get_events(["new", "recent"])] == ["recent"]


async def test_findings_merge_within_the_window_only(store: Store) -> None:
    window = timedelta(hours=1)
    async with store.transaction() as tx:
        _, created = await tx.record_finding(finding("f1", "e1"), window)
        assert created
        merged, created = await tx.record_finding(finding("f2", "e2", minutes=30), window)
        assert not created and merged.id == "f1" and merged.count == 2 and merged.event_ids == ["e1", "e2"]
        again, created = await tx.record_finding(finding("f3", "e2", minutes=30), window)
        assert not created and again.count == 2
        later, created = await tx.record_finding(finding("f4", "e9", minutes=200), window)
        assert created and later.id == "f4"
        _, created = await tx.record_finding(finding("f5", "e5", key="k2"), window)
        assert created
    async with store.transaction() as tx:
        listed = await tx.list_findings(limit=10)
        assert {f.id for f in listed} == {"f1", "f4", "f5"}
        assert [f.id for f in await tx.list_findings(min_severity=Severity.HIGH)] == []
        assert len(await tx.list_findings(status=FindingStatus.OPEN)) == 3
        stored = await tx.get_finding("f1")
    assert stored is not None and stored.count == 2 and stored.first_seen == T0


async def test_findings_page_by_cursor(store: Store) -> None:
    async with store.transaction() as tx:
        for index in range(5):
            await tx.record_finding(finding(f"f{index}", f"e{index}", key=f"k{index}"), timedelta(0))
    seen: list[str] = []
    before = None
    while True:
        async with store.transaction() as tx:
            page = await tx.list_findings(limit=2, before=before)
            if not page:
                break
            seen += [f.id for f in page]
            created = await tx.finding_created_at(page[-1].id)
            assert created is not None
            before = (created, page[-1].id)
    assert sorted(seen) == [f"f{i}" for i in range(5)] and len(seen) == 5


async def test_findings_by_time_after_a_moment_are_selected_by_the_store(store: Store) -> None:
    async with store.transaction() as tx:
        for index in range(4):
            found = finding(f"f{index}", f"e{index}", minutes=10 * index, key=f"k{index}")
            await tx.record_finding(found, timedelta(0))
        assert [f.id for f in await tx.findings_by_time(exclude_detector="scoring")] == ["f0", "f1", "f2", "f3"]
        after = await tx.findings_by_time(exclude_detector="scoring", after=T0 + timedelta(minutes=10))
        assert [f.id for f in after] == ["f2", "f3"]  # strictly after
        assert await tx.findings_by_time(exclude_detector="sigma") == []


async def test_runs_are_created_once_per_playbook_and_finding(store: Store) -> None:
    run = Run(
        id="run1",
        playbook="p",
        playbook_version="1",
        status=RunStatus.RUNNING,
        created_at=utcnow(),
        finding_id="f1",
        entity="alice",
    )
    async with store.transaction() as tx:
        assert await tx.create_run(run)
        assert not await tx.create_run(
            Run(
                id="run2",
                playbook="p",
                playbook_version="1",
                status=RunStatus.RUNNING,
                created_at=utcnow(),
                finding_id="f1",
            )
        )
        step = StepRecord(
            step_id="s1",
            position=0,
            action="notify.webhook",
            arguments={"text": "hi"},
            status=RunStatus.RUNNING,
            idempotency_key="idem-1",
            started_at=utcnow(),
        )
        await tx.save_step("run1", step)
        step.status, step.result = RunStatus.SUCCEEDED, {"delivered": True}
        await tx.save_step("run1", step)
        await tx.finish_run("run1", RunStatus.SUCCEEDED)
    async with store.transaction() as tx:
        stored = await tx.get_run("run1")
        assert await tx.get_run("run2") is None
        assert [r.id for r in await tx.list_runs(finding_id="f1")] == ["run1"]
    assert stored is not None and stored.status is RunStatus.SUCCEEDED and stored.finished_at is not None
    assert [(s.step_id, s.status, s.result) for s in stored.steps] == [("s1", RunStatus.SUCCEEDED, {"delivered": True})]


async def test_audit_log_is_a_hash_chain(store: Store) -> None:
    async with store.transaction() as tx:
        for index in range(3):
            await tx.audit("analyst", "finding.update", f"f{index}", {"status": "closed", "n": index})
    async with store.transaction() as tx:
        entries = await tx.audit_entries()
    assert [e.seq for e in entries] == [1, 2, 3]
    previous = "0" * 64
    for entry in entries:
        assert entry.prev_hash == previous
        assert entry.hash == audit_hash(
            entry.prev_hash, entry.at, entry.actor, entry.action, entry.subject, entry.details
        )
        previous = entry.hash


async def test_checkpoints_and_entities(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.get_checkpoint("okta") is None
        await tx.save_checkpoint("okta", {"next": "a"})
        await tx.save_checkpoint("okta", {"next": "b"})
        await tx.touch_entities({"alice": (T0, T0 + timedelta(hours=1))})
        await tx.touch_entities({"alice": (T0 - timedelta(hours=1), T0)})
    async with store.transaction() as tx:
        assert await tx.get_checkpoint("okta") == {"next": "b"}
        [alice] = await tx.list_entities()
    assert alice["id"] == "alice"
    assert alice["first_seen"] == T0 - timedelta(hours=1)
    assert alice["last_seen"] == T0 + timedelta(hours=1)


async def test_reopening_a_migrated_store_is_a_no_op(database: DatabaseSettings) -> None:
    for _ in range(2):
        opened = await Store.open(database)
        async with opened.transaction() as tx:
            await tx.insert_events([event("e1")])
        await opened.close()


async def test_an_unreachable_database_is_a_config_error() -> None:
    settings = DatabaseSettings(url="postgresql+asyncpg://nobody@127.0.0.1:1/none")
    with pytest.raises(ConfigError, match="cannot open the store at postgresql"):
        await Store.open(settings)


def test_an_unsupported_url_is_refused_by_the_settings() -> None:
    with pytest.raises(ValidationError, match="scheme 'mysql' is not a store Custodes opens"):
        DatabaseSettings(url="mysql://root@localhost/test")


async def test_raw_records_keep_values_json_libraries_disagree_on(store: Store) -> None:
    odd = Event(
        id="odd",
        time=T0,
        source="splunk",
        logsource=LogSource("splunk"),
        raw={"huge": 2**70, "unicode": "naïve ☃", "nested": {"1": [None, True, 1.5]}},
    )
    async with store.transaction() as tx:
        await tx.insert_events([odd])
    async with store.transaction() as tx:
        [stored] = await tx.get_events(["odd"])
    assert stored.raw == odd.raw


async def test_processes_starting_together_migrate_once(database: DatabaseSettings) -> None:
    opened = await asyncio.gather(*(Store.open(database) for _ in range(4)))
    try:
        async with opened[0].transaction() as tx:
            assert await tx.insert_events([event("together")]) == {"together"}
    finally:
        await asyncio.gather(*(store.close() for store in opened))


async def test_new_sqlite_files_opened_together_agree_on_wal(tmp_path: Path) -> None:
    # Without taking turns, about one round in thirty saw two writers at once or "database is locked".
    for round_ in range(12):
        settings = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / str(round_)}.db")
        opened = await asyncio.gather(*(Store.open(settings) for _ in range(8)))
        try:
            async with opened[-1].engine.connect() as conn:
                assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one() == "wal"
        finally:
            await asyncio.gather(*(store.close() for store in opened))


async def test_sqlite_durability_is_configurable(tmp_path: Path) -> None:
    for setting, expected in (("FULL", 2), ("NORMAL", 1)):
        opened = await Store.open(
            DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / setting}.db", sqlite_synchronous=setting)
        )
        try:
            async with opened.engine.connect() as conn:
                assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar_one() == expected
                assert (await conn.exec_driver_sql("PRAGMA cache_size")).scalar_one() == -64 * 1024
        finally:
            await opened.close()
