"""The live-source hold: with two file-tail connectors running under the real supervisor, one lagging, scoring
scores as a time-ordered run; a stalled source holds no longer than `ingest.max_hold_hours`, after which what it
delivers for closed dates counts as late (and shows in the API, the metrics and `connectors late`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
import sqlalchemy as sa

from custodes.config import Settings
from custodes.connectors.runtime import ConnectorRuntime
from custodes.connectors.supervisor import ConnectorSupervisor
from custodes.detections.scoring.simulate import SCENARIOS, SimulationSettings, simulate
from custodes.model import Event
from custodes.sandbox.server import running
from custodes.server.app import create_app
from custodes.services import Services
from custodes.store.tables import events
from test_connectors_cli import cli
from test_event_order import events_of, outcome, settings_for

SOURCES = ("okta", "endpoint")
TOKEN = "viewer-token-0123456789"


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("org")
    simulate(SimulationSettings(population=20, days=15, seed=5, warmup_days=5, scenarios=SCENARIOS[:2]), out)
    return out


def live_settings(org: Path, db: Path, max_hold_hours: float) -> Settings:
    settings = settings_for(org, db)
    settings.ingest.max_hold_hours = max_hold_hours
    (db.parent / "viewer.token").write_text(TOKEN)
    return Settings.model_validate(
        {
            **settings.model_dump(),
            "server": {
                "api_tokens": [{"name": "viewer", "token": f"file:{db.parent / 'viewer.token'}", "role": "viewer"}]
            },
            "connectors": {
                source: {
                    "kind": "file_tail",
                    "source": source,
                    "interval_seconds": 0.05,
                    "options": {"path": str(db.parent / f"{source}.log"), "parser": "json", "batch_lines": 400},
                }
                for source in SOURCES
            },
        }
    )


def lines_of(org: Path, source: str) -> list[bytes]:
    return [line for line in (org / f"{source}.ndjson").read_bytes().splitlines() if line.strip()]


async def stored(services: Services, source: str) -> int:
    async with services.store.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(events).where(events.c.source == source)
        return int((await conn.execute(query)).scalar_one())


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(600):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def delivered(services: Services, source: str, count: int) -> None:
    """`count` events of `source` stored, and the batches that stored them taken by the hold (which happens after
    their commit, under the lock batches feeding scoring hold)."""

    async def done() -> bool:
        return await stored(services, source) == count

    await eventually(done, f"{count} {source} events stored")
    async with services.pipeline.correlator.guarded(always=True):
        pass


def append(path: Path, lines: list[bytes]) -> None:
    with path.open("ab") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))


async def reference(org: Path, db: Path) -> dict[tuple[str, str], float]:
    """Both sources merged in event-time order, scored batch by batch."""
    settings = settings_for(org, db)
    merged = sorted((e for e in events_of(org, settings) if e.source in SOURCES), key=lambda e: (e.time, e.id))
    async with await Services.open(settings) as services:
        for start in range(0, len(merged), 500):
            await services.pipeline.ingest(merged[start : start + 500])
        return (await outcome(services))[0]


async def test_a_lagging_live_source_holds_dates_so_scores_equal_a_time_ordered_run(org: Path, tmp_path: Path) -> None:
    expected = await reference(org, tmp_path / "ref" / "store.db")
    assert len(expected) > 100
    db = tmp_path / "live" / "store.db"
    settings = live_settings(org, db, max_hold_hours=24 * 60)
    fast, slow = lines_of(org, "okta"), lines_of(org, "endpoint")
    append(db.parent / "okta.log", fast)
    (db.parent / "endpoint.log").touch()
    async with await Services.open(settings) as services:
        supervisor = ConnectorSupervisor.from_settings(settings, ConnectorRuntime(services.pipeline), services.http)
        supervisor.start_all()
        try:
            await delivered(services, "okta", len(fast))
            assert services.pipeline.event_time()["hold"]["held"]["okta"] == len(fast)
            third = len(slow) // 3 + 1
            for start in range(0, len(slow), third):  # the lagging source catches up in three steps
                append(db.parent / "endpoint.log", slow[start : start + third])
                await delivered(services, "endpoint", min(len(slow), start + third))
            for source in SOURCES:  # the sources stop: what they held is scored
                await supervisor.stop(source)
        finally:
            await supervisor.close()
        scoring = services.pipeline.scoring
        assert scoring is not None
        assert services.pipeline.event_time()["hold"]["held"] == {}
        assert dict(scoring.engine.late_by_source) == {}
        risks = (await outcome(services))[0]
    assert risks == expected


async def test_without_the_hold_the_lagging_source_is_late_and_scores_differ(org: Path, tmp_path: Path) -> None:
    """What the hold prevents: the same arrival order fed straight to scoring loses the lagging source's events."""
    expected = await reference(org, tmp_path / "ref" / "store.db")
    settings = settings_for(org, tmp_path / "direct" / "store.db")
    every = events_of(org, settings)
    async with await Services.open(settings) as services:
        for source in SOURCES:
            await services.pipeline.ingest([e for e in every if e.source == source])
        scoring = services.pipeline.scoring
        assert scoring is not None and scoring.engine.late_by_source["endpoint"] > 0
        assert (await outcome(services))[0] != expected


async def test_the_bound_releases_a_stalled_source_whose_later_events_count_late(org: Path, tmp_path: Path) -> None:
    db = tmp_path / "live" / "store.db"
    settings = live_settings(org, db, max_hold_hours=24)
    fast, slow = lines_of(org, "okta"), lines_of(org, "endpoint")
    append(db.parent / "okta.log", fast)
    (db.parent / "endpoint.log").touch()
    config = tmp_path / "custodes.yaml"
    config.write_text(f"database:\n  url: sqlite+aiosqlite:///{db}\n")
    async with await Services.open(settings) as services:
        scoring = services.pipeline.scoring
        assert scoring is not None
        supervisor = ConnectorSupervisor.from_settings(settings, ConnectorRuntime(services.pipeline), services.http)
        supervisor.start_all()
        try:
            await delivered(services, "okta", len(fast))
            hold = services.pipeline.event_time()["hold"]
            assert hold["stalled"] == ["endpoint"]
            assert hold["released_past_bound"]["endpoint"] > 0
            assert 0 < hold["held"]["okta"] < len(fast)  # only the last day (the bound) is held
            newest = max(e.time for e in events_of(org, settings) if e.source == "okta")
            assert scoring.engine.closed_through is not None
            assert scoring.engine.closed_through >= newest.date().toordinal() - 3
            late = orjson.loads(await cli("connectors", "late", "-c", str(config), "--json"))
            assert {row["source"]: row["held"] for row in late}["okta"] == hold["held"]["okta"]
            async with running(create_app(services, supervisor)) as url, aiohttp.ClientSession() as http:
                async with http.get(f"{url}/metrics") as response:
                    text = await response.text()
                assert f'custodes_events_held{{source="okta"}} {float(hold["held"]["okta"])}' in text
                assert 'custodes_events_released_past_bound{source="endpoint"}' in text
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with http.get(f"{url}/api/event-time", headers=headers) as response:
                    assert response.status == 200
                    assert (await response.json())["hold"] == orjson.loads(orjson.dumps(hold))
            append(db.parent / "endpoint.log", slow[:300])  # the stalled source comes back with early days
            await delivered(services, "endpoint", 300)
            assert scoring.engine.late_by_source["endpoint"] > 0
        finally:
            await supervisor.close()


async def test_a_restarted_service_holds_again_what_was_held(org: Path, tmp_path: Path) -> None:
    db = tmp_path / "live" / "store.db"
    settings = live_settings(org, db, max_hold_hours=24 * 60)
    fast = lines_of(org, "okta")
    append(db.parent / "okta.log", fast)
    (db.parent / "endpoint.log").touch()
    async with await Services.open(settings) as services:
        supervisor = ConnectorSupervisor.from_settings(settings, ConnectorRuntime(services.pipeline), services.http)
        supervisor.start_all()
        try:
            await delivered(services, "okta", len(fast))
        finally:
            await supervisor.close()  # the service stops: nothing held is scored early
        assert services.pipeline.event_time()["hold"]["held"] == {"okta": len(fast)}
    async with await Services.open(settings) as services:
        assert services.pipeline.event_time()["hold"]["held"] == {"okta": len(fast)}
        scoring = services.pipeline.scoring
        assert scoring is not None and scoring.engine.observed == 0
        await services.pipeline.release_held()  # no live source any more: all of it is scored, once
        assert scoring.engine.observed == len(fast)
        assert services.pipeline.event_time()["hold"]["held"] == {}
    async with await Services.open(settings) as services:
        assert services.pipeline.event_time()["hold"]["held"] == {}


def test_nothing_passes_before_a_live_source_delivers_and_a_stopped_one_holds_nothing(
    org: Path, tmp_path: Path
) -> None:
    from datetime import timedelta

    from custodes.hold import EventTimeHold

    settings = settings_for(org, tmp_path / "store.db")
    every = sorted(events_of(org, settings), key=lambda e: e.time)
    okta_events = [e for e in every if e.source == "okta"][:50]
    pushed = [e for e in every if e.source == "endpoint"][:50]
    hold = EventTimeHold(timedelta(hours=1))
    hold.join("okta")
    hold.join("endpoint")
    plan = hold.plan(None, pushed, [], newest=None)  # a webhook batch before any live source delivered
    assert plan.released == [] and plan.cursor is None
    hold.apply(plan)
    plan = hold.plan("okta", okta_events, [], newest=None)
    hold.apply(plan)
    low = okta_events[-1].time - timedelta(hours=1)  # endpoint has delivered nothing: held one hour behind
    assert plan.released == sorted((e for e in [*pushed, *okta_events] if e.time <= low), key=lambda e: e.time)
    assert hold.stalled() == ["endpoint"] and hold.cursor == low
    first = len(plan.released)
    hold.leave("endpoint")
    hold.leave("okta")  # no live source any more: the rest passes, in event-time order
    plan = hold.plan(None, [], [], newest=None)
    hold.apply(plan)
    assert hold.heap == [] and first + len(plan.released) == len(pushed) + len(okta_events)
    times = [e.time for e in plan.released if isinstance(e, Event)]
    assert len(times) == len(plan.released) and times == sorted(times)
