"""Behaviour scoring in the pipeline: streaming updates persisted with the events, pseudonymised findings that
trigger the normal findings path, explanations from the store, and audited re-identification."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from custodes.cases import feedback
from custodes.cases.book import CaseError
from custodes.cli import app
from custodes.config import DatabaseSettings, ScoringSettings, Settings
from custodes.detections.scoring import service as service_module
from custodes.detections.scoring.identity import Person
from custodes.detections.scoring.privacy import is_pseudonym
from custodes.detections.scoring.service import ScoringService, entity_scores
from custodes.errors import CustodesError
from custodes.model import utcnow
from custodes.services import Services
from custodes.store import Store
from custodes.store.cases import feedback as feedback_table
from custodes.store.tables import scoring_scores, scoring_scores_staged, scoring_state
from test_scoring_engine import START, ecs, normal_day, person, theft_day

runner = CliRunner()


def directory(tmp_path: Path) -> Path:
    people: list[Person] = [person(i) for i in range(30)]
    path = tmp_path / "people.json"
    path.write_bytes(orjson.dumps([p.to_json() for p in people]))
    return path


def scoring_settings(tmp_path: Path) -> ScoringSettings:
    return ScoringSettings(directory=directory(tmp_path), warmup_days=5, max_state_bytes=8192)


async def test_streaming_scores_persist_and_resume(store: Store, tmp_path: Path) -> None:
    settings = scoring_settings(tmp_path)
    service = await ScoringService.open(settings, store)
    rng = random.Random(5)
    for day in range(12):
        async with store.transaction() as tx:
            await service.ingest(tx, [e for i in range(30) for e in normal_day(rng, i, day)], [])
    reopened = await ScoringService.open(settings, store)
    assert reopened.engine.closed_through == service.engine.closed_through
    assert reopened.engine.states.keys() == service.engine.states.keys()
    key = reopened.engine.resolver.resolve("user7")[0]
    assert is_pseudonym(key)
    assert reopened.engine.states[key].active_days == service.engine.states[key].active_days
    found = []
    for day in range(12, 24):
        events = [e for i in range(30) for e in normal_day(rng, i, day)]
        if day == 22:
            events += theft_day(7, day)
        async with store.transaction() as tx:
            found += await reopened.ingest(tx, sorted(events, key=lambda e: e.time), [])
    assert [f.entity for f in found] == [key]
    assert found[0].detector == "scoring" and "user7" not in (found[0].description or "") + found[0].title
    async with store.transaction() as tx:
        scores = await entity_scores(tx, key, limit=30)
        sizes = [row[0] for row in await tx.conn.execute(sa.select(scoring_state.c.bytes))]
    assert max(sizes) <= settings.max_state_bytes
    theft = next(s for s in scores if s.day == (START + timedelta(days=22)).date())
    assert {"usb_files", "cloud_upload"} <= {c.feature for c in theft.contributions}
    assert all(c.event_ids for c in theft.contributions if c.feature in ("usb_files", "cloud_upload"))


async def test_pipeline_records_scoring_findings_and_cli_explains_them(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "playbooks").mkdir()
    settings = Settings.model_validate(
        {
            "database": database.model_dump(),
            "detection": {"rules": [str(tmp_path / "rules")]},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "scoring": {"directory": str(directory(tmp_path)), "warmup_days": 5},
            "server": {
                "api_tokens": [
                    {"name": "viewer", "token": "env:T1"},
                    {"name": "dpo", "token": "env:T2", "role": "privacy_officer"},
                ]
            },
        },
        context={"environ": {"T1": "viewer-token-0123456789", "T2": "dpo-token-0123456789"}},
    )
    rng = random.Random(5)
    async with await Services.open(settings) as services:
        new = []
        for day in range(24):
            events = [e for i in range(30) for e in normal_day(rng, i, day)]
            if day == 22:
                events += theft_day(7, day)
            report = await services.pipeline.ingest(sorted(events, key=lambda e: e.time))
            new += report.new_findings
        scoring = [f for f in new if f.detector == "scoring"]
        assert len(scoring) == 1 and is_pseudonym(scoring[0].entity or "")
        async with services.store.transaction() as tx:
            stored = await tx.list_findings(entity=scoring[0].entity)
        assert [f.id for f in stored] == [scoring[0].id]
    config = tmp_path / "custodes.yaml"
    config.write_text(
        f"database: {orjson.dumps(database.model_dump()).decode()}\n"
        f"scoring: {{directory: {directory(tmp_path)}, warmup_days: 5}}\n"
        "server: {api_tokens: [{name: viewer, token: 'env:T1'}, {name: dpo, token: 'env:T2', role: privacy_officer}, "
        "{name: ann, token: 'env:T3', role: analyst}]}\n"
    )
    env = {"T1": "viewer-token-0123456789", "T2": "dpo-token-0123456789", "T3": "analyst-token-0123456789"}
    explained = await asyncio.to_thread(
        runner.invoke, app, ["entity", "explain", "CORP\\user7", "--days", "3", "-c", str(config)], env=env
    )
    assert explained.exit_code == 0, explained.output
    assert "first files written to USB" in explained.output and "upload to personal cloud" in explained.output
    assert "user7" not in explained.output.replace("CORP\\user7", "")
    for line in explained.output.splitlines():  # a long sentence wraps under its own start, within the width
        assert line.startswith((scoring[0].entity or "", "  - ", "    ")) and len(line) <= 80, line
    for bad in (["CORP\\user7", "--days", "0"], [" "]):
        refused_args = await asyncio.to_thread(runner.invoke, app, ["entity", "explain", *bad, "-c", str(config)])
        assert refused_args.exit_code == 2 and "Invalid value for" in refused_args.output, refused_args.output
    cause = ["--finding", scoring[0].id, "--cause", "usb_files", "--verdict", "expected", "--reason", "backups"]
    given = await asyncio.to_thread(
        runner.invoke,
        app,
        ["feedback", "give", *cause, "--token", "env:T3", "-c", str(config)],
        env=env | {"COLUMNS": "200"},
    )
    assert given.exit_code == 0 and "suppress the scoring cause usb_files for this person" in given.output, given.output
    for scope, code, said in (
        ("department", 0, "suppress the scoring cause cloud_upload for department Finance"),
        ("team", 2, "scope: 'team' is not one of person, peers, department"),
    ):
        scoped = ["--finding", scoring[0].id, "--cause", "cloud_upload", "--scope", scope, *cause[4:]]
        given = await asyncio.to_thread(
            runner.invoke,
            app,
            ["feedback", "give", *scoped, "--token", "env:T3", "-c", str(config)],
            env=env | {"COLUMNS": "200"},
        )
        assert given.exit_code == code and said in given.output, given.output
    listed = await asyncio.to_thread(
        runner.invoke, app, ["feedback", "list", "--token", "env:T3", "-c", str(config)], env=env | {"COLUMNS": "200"}
    )
    assert listed.exit_code == 0 and "cause usb_files" in listed.output, listed.output
    assert "cause cloud_upload for department Finance" in listed.output, listed.output
    pseudonym = scoring[0].entity or ""
    refused = await asyncio.to_thread(
        runner.invoke,
        app,
        ["entity", "reidentify", pseudonym, "--reason", "case 12", "--token", "env:T1", "-c", str(config)],
        env=env,
    )
    assert refused.exit_code == 2 and "refused" in refused.output
    allowed = await asyncio.to_thread(
        runner.invoke,
        app,
        ["entity", "reidentify", pseudonym, "--reason", "case 12", "--token", "env:T2", "-c", str(config)],
        env=env,
    )
    assert allowed.exit_code == 0 and allowed.output.strip() == "user7@corp.example"
    store = await Store.open(database)
    try:
        async with store.transaction() as tx:
            audit = [a for a in await tx.audit_entries() if a.action == "scoring.reidentify"]
    finally:
        await store.close()
    assert [(a.details["role"], a.details["allowed"]) for a in audit] == [("viewer", False), ("privacy_officer", True)]
    assert all(a.subject == pseudonym and a.details["reason"] == "case 12" for a in audit)


async def test_the_clock_is_written_when_it_changes_and_again_after_a_rollback(store: Store, tmp_path: Path) -> None:
    settings = scoring_settings(tmp_path)
    service = await ScoringService.open(settings, store)
    rng = random.Random(11)
    day_one = normal_day(rng, 1, 0)
    writes: list[str] = []

    def statement(_conn: object, _cursor: object, sql: str, *_rest: object) -> None:
        if "INSERT INTO scoring_meta" in sql:
            writes.append(sql)

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", statement)
    try:
        async with store.transaction() as tx:
            await service.ingest(tx, day_one[:1], [])
        assert len(writes) == 1  # a new watermark
        async with store.transaction() as tx:
            await service.ingest(tx, [], [])
        assert len(writes) == 1  # nothing changed, nothing written
        later = [e for e in day_one if e.time > day_one[0].time][:1]
        try:
            async with store.transaction() as tx:
                await service.ingest(tx, later, [])
                raise RuntimeError("the batch fails after scoring")
        except RuntimeError:
            pass
        assert len(writes) == 2
        async with store.transaction() as tx:
            await service.ingest(tx, [], [])
        assert len(writes) == 3  # the rolled-back clock is written again
    finally:
        sa.event.remove(store.engine.sync_engine, "before_cursor_execute", statement)
    reopened = await ScoringService.open(settings, store)
    assert reopened.engine.watermark == service.engine.watermark


async def test_services_that_fail_to_open_close_what_they_opened(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken scoring directory, read after the store and the HTTP session are open, once left both open
    ("Unclosed client session" on every such failed command)."""
    (tmp_path / "people.json").write_text('[{"id": "a@example.com", ')
    settings = Settings.model_validate(
        {
            "database": database.model_dump(),
            "detection": {"rules": [str(tmp_path)]},
            "playbooks": {"paths": [str(tmp_path)]},
            "scoring": {"directory": str(tmp_path / "people.json")},
        }
    )
    closed: list[Store] = []
    store_close = Store.close

    async def recorded(store: Store) -> None:
        closed.append(store)
        await store_close(store)

    sessions: list[aiohttp.ClientSession] = []
    session = aiohttp.ClientSession

    def made(**options: Any) -> aiohttp.ClientSession:
        sessions.append(session(**options))
        return sessions[-1]

    monkeypatch.setattr(Store, "close", recorded)
    monkeypatch.setattr(aiohttp, "ClientSession", made)
    with pytest.raises(CustodesError, match=r"people\.json:1:\d+: invalid JSON"):
        await Services.open(settings)
    assert len(sessions) == 1 and sessions[0].closed and len(closed) == 1


async def stored_org(store: Store, days: int = 14) -> list[Any]:
    """Thirty people's ordinary days, user7's theft on the last, stored as events (not yet scored)."""
    rng = random.Random(9)
    events = [e for day in range(days) for i in range(30) for e in normal_day(rng, i, day)] + theft_day(7, days - 1)
    async with store.transaction() as tx:
        await tx.insert_events(events)
    return events


async def stored_scores(store: Store) -> dict[tuple[str, Any], tuple[float, float, int | None]]:
    async with store.transaction() as tx:
        rows = await tx.conn.execute(sa.select(scoring_scores))
        return {(r.entity, r.day): (r.risk, r.points, r.place) for r in rows}


async def staged_rows(store: Store) -> int:
    async with store.transaction() as tx:
        return int((await tx.conn.execute(sa.select(sa.func.count()).select_from(scoring_scores_staged))).scalar_one())


def row_of(key: tuple[str, Any]) -> dict[str, Any]:
    return {"entity": key[0], "day": key[1], "points": 0.0, "detail": {}, "event_ids": [], "created_at": utcnow()}


async def test_a_rescore_stages_its_day_scores_page_by_page_and_its_save_moves_them(
    store: Store, tmp_path: Path
) -> None:
    settings = scoring_settings(tmp_path)
    events = await stored_org(store)
    streamed = await ScoringService.open(settings, store)
    ordered = sorted(events, key=lambda e: (e.time, e.id))
    for start in range(0, len(ordered), 500):  # as the re-score's pages: provisional findings at the same points
        async with store.transaction() as tx:
            await streamed.ingest(tx, ordered[start : start + 500], [])
    expected = await stored_scores(store)
    assert len(expected) > 300
    async with store.transaction() as tx:
        await tx.conn.execute(sa.delete(scoring_scores))  # what a replay into a stale store would hold
        await tx.conn.execute(sa.insert(scoring_scores), [{**row_of(k), "risk": 99.0} for k in list(expected)[:5]])
    service = await ScoringService.open(settings, store)
    await service.rescore(store, page=500)
    assert service.engine.take_scores() == []  # every closed day is in the store, not in memory
    assert await staged_rows(store) == len(expected)
    assert {v[0] for v in (await stored_scores(store)).values()} == {99.0}  # nothing replaced before the save
    async with store.transaction() as tx:
        await service.save(tx)
    assert await stored_scores(store) == expected
    assert await staged_rows(store) == 0


async def test_a_rescore_whose_stage_another_emptied_changes_nothing_and_reloads(store: Store, tmp_path: Path) -> None:
    settings = scoring_settings(tmp_path)
    await stored_org(store)
    first, second = await ScoringService.open(settings, store), await ScoringService.open(settings, store)
    await first.rescore(store, page=500)
    await second.rescore(store, page=500)
    async with store.transaction() as tx:
        await second.save(tx)
    saved = await stored_scores(store)
    with pytest.raises(CustodesError, match="another re-score"):
        async with store.transaction() as tx:
            await first.save(tx)
    assert await stored_scores(store) == saved  # the failed save's transaction changed nothing
    async with store.transaction() as tx:
        await first.ingest(tx, [], [])  # reloads the committed state; replaces nothing
    assert await stored_scores(store) == saved
    assert first.engine.states.keys() == second.engine.states.keys()


async def rescored_org(store: Store, settings: ScoringSettings) -> tuple[ScoringService, dict[Any, Any]]:
    """`stored_org` re-scored and saved: the service, and the day scores stored."""
    await stored_org(store)
    service = await ScoringService.open(settings, store)
    await service.rescore(store, page=500)
    async with store.transaction() as tx:
        await service.save(tx)
    return service, await stored_scores(store)


async def test_a_failed_rescore_leaves_the_store_and_the_next_save_clears_its_stage(
    store: Store, tmp_path: Path
) -> None:
    settings = scoring_settings(tmp_path)
    service, saved = await rescored_org(store, settings)
    failing = await ScoringService.open(settings, store)
    pages = 0
    original = store.transaction

    def failing_transaction() -> Any:
        nonlocal pages
        pages += 1
        if pages == 6:
            raise OSError("the store went away")
        return original()

    store.transaction = failing_transaction  # type: ignore[method-assign]
    try:
        with pytest.raises(OSError):
            await failing.rescore(store, page=500)
    finally:
        store.transaction = original  # type: ignore[method-assign]
    assert await staged_rows(store) > 0 and await stored_scores(store) == saved
    async with store.transaction() as tx:
        await failing.ingest(tx, [], [])  # the failed re-score replaced nothing in memory either
    assert await stored_scores(store) == saved
    await service.rescore(store, page=500)
    async with store.transaction() as tx:
        await service.save(tx)
    assert await stored_scores(store) == saved and await staged_rows(store) == 0


async def test_a_reload_after_a_rescore_drops_its_pending_replacement(store: Store, tmp_path: Path) -> None:
    settings = scoring_settings(tmp_path)
    service, saved = await rescored_org(store, settings)
    await service.rescore(store, page=500)
    service.invalidate()  # a batch failed before the re-score was saved: the next one reloads the store
    async with store.transaction() as tx:
        await service.ingest(tx, [], [])
    assert await stored_scores(store) == saved
    assert await staged_rows(store) > 0  # left to the next re-score's save


@pytest.mark.parametrize("scope", ["person", "department"])
async def test_feedback_on_a_cause_reaches_the_days_it_covers_in_the_store_and_a_rescore_keeps_them(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scope: str
) -> None:
    monkeypatch.setattr(service_module, "FEEDBACK_REFRESH_SECONDS", 0.0)  # each batch reads it (a second apart live)
    service = await ScoringService.open(scoring_settings(tmp_path), store)
    key = service.engine.resolver.resolve("user7")[0]
    rng = random.Random(5)
    thefts = [(START + timedelta(days=day)).date() for day in (22, 25)]
    raised = []
    for day in range(28):
        events = [e for i in range(30) for e in normal_day(rng, i, day)]
        events += theft_day(7, day) if (START + timedelta(days=day)).date() in thefts else []
        async with store.transaction() as tx:
            await tx.insert_events(events)
            raised += await service.ingest(tx, sorted(events, key=lambda e: e.time), [])
        if day == 23:  # the analyst looks at the first theft's finding: the person's USB writes are expected
            finding = next(f for f in raised if f.entity == key)
            async with store.transaction() as tx:
                kind, pattern = feedback.pattern_of(finding, "usb_files")
                given = await feedback.give(
                    tx,
                    actor="t",
                    entity=key,
                    pattern=pattern,
                    kind=kind,
                    scope=scope,
                    scope_name=feedback.scope_of(service.engine.resolver, key, kind, scope),
                    verdict="expected",
                    reason="backups",
                )
                with pytest.raises(CaseError, match=r"cause: 'print' is not a cause of .*\(its causes are .*usb_files"):
                    feedback.pattern_of(finding, "print")
                given_at = START + timedelta(days=23, hours=12)  # as if given then, in the data's own time
                await tx.conn.execute(sa.update(feedback_table).values(created_at=given_at))

    async def theft_days() -> dict[Any, tuple[set[str], dict[str, float]]]:
        async with store.transaction() as tx:
            days = [(await entity_scores(tx, key, day=day))[0] for day in thefts]
        return {s.day: ({c.feature for c in s.contributions}, s.modifiers) for s in days}

    streamed = await theft_days()
    first, second = (streamed[day] for day in thefts)
    assert "usb_files" in first[0] and not any(name.startswith("feedback:") for name in first[1])
    assert "usb_files" not in second[0] and second[1][f"feedback:usb_files:{given['id']}"] > 0
    await service.rescore(store, page=500)
    async with store.transaction() as tx:
        await service.save(tx)
    assert await theft_days() == streamed, "a re-score applies the feedback to the days it covered, as live"


def export(path: Path, people: list[Person]) -> None:
    """Write a directory export beside `path` and move it over (as a scheduled export does)."""
    written = path.with_suffix(".tmp")
    written.write_bytes(orjson.dumps([p.to_json() for p in people]))
    written.replace(path)


def failed_signin(user: str, day: int) -> Any:
    record = {"category": ["authentication"], "action": "logon-failed", "outcome": "failure"}
    return ecs(user, START + timedelta(days=day, hours=8), "authentication", "logon-failed", event=record)


async def test_the_scoring_service_follows_a_new_directory_export_without_a_restart(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(service_module, "DIRECTORY_REFRESH_SECONDS", 0.0)
    settings = scoring_settings(tmp_path)
    assert settings.directory is not None
    service = await ScoringService.open(settings, store)
    rng = random.Random(3)
    async with store.transaction() as tx:
        await service.ingest(
            tx, [e for i in range(30) for e in normal_day(rng, i, 0)] + [failed_signin("user30", 0)], []
        )
    key = service.engine.resolver.resolve("user7")[0]
    assert (service.engine.states[key].group, service.engine.strangers["endpoint"]) == ("Finance/Analyst", 1)

    moved = Person(
        id="user7@corp.example",
        department="Legal",
        title="Counsel",
        timezone="America/New_York",
        aliases=["user7"],
        notice_date=(START + timedelta(days=1)).date(),
    )
    people = [person(i) for i in range(30)]
    export(settings.directory, [*people[:7], moved, *people[8:], person(30)])
    async with store.transaction() as tx:
        await service.ingest(tx, [*normal_day(rng, 7, 1), failed_signin("user30", 1)], [])
    state = service.engine.states[key]
    assert (state.group, state.department, state.tz.key) == ("Legal/Counsel", "Legal", "America/New_York")
    assert service.engine.watchlists(key, (START + timedelta(days=1)).date()) == ["departing"]
    hire = service.engine.resolver.resolve("user30")[0]
    assert hire in service.engine.states and service.engine.strangers["endpoint"] == 1  # the new hire is a person

    reopened = await ScoringService.open(settings, store)  # what moved was stored with the batch
    assert reopened.engine.states[key].group == "Legal/Counsel"

    (settings.directory.parent / "broken.json").write_text('[{"id": ')
    (settings.directory.parent / "broken.json").replace(settings.directory)
    before = service.engine.resolver
    async with store.transaction() as tx:
        await service.ingest(tx, normal_day(rng, 7, 2), [])
    assert service.engine.resolver is before and service.engine.states[key].group == "Legal/Counsel"
    assert "the directory changed but cannot be read; scoring keeps the one it read before" in caplog.text
    assert "invalid JSON" in caplog.text

    export(settings.directory, people)  # back in Finance while no process scores: a restart takes it
    restarted = await ScoringService.open(settings, store)
    assert restarted.engine.states[key].group == "Finance/Analyst" and key in restarted.engine.dirty


async def test_a_re_score_reads_a_changed_directory_first(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster re-scores from the store (`bus/scoring.py`): it takes a new export as a batch does."""
    settings = scoring_settings(tmp_path)
    assert settings.directory is not None
    await stored_org(store)
    service = await ScoringService.open(settings, store)
    monkeypatch.setattr(service_module, "DIRECTORY_REFRESH_SECONDS", 0.0)
    export(settings.directory, [person(i, "Legal" if i == 7 else "Finance") for i in range(30)])
    await service.rescore(store)
    key = service.engine.resolver.resolve("user7")[0]
    assert service.engine.states[key].department == "Legal"
    assert service.engine.states[service.engine.resolver.resolve("user8")[0]].department == "Finance"
