"""A record with an absurd time (year 2500, 9999, 0001) is kept with a warning and never moves a clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from typer.testing import CliRunner

from custodes.cli import app
from custodes.config import DatabaseSettings, IngestSettings, Settings
from custodes.connectors.files import FileConnector
from custodes.model import Event, LogSource
from custodes.server.serve import serving
from custodes.services import Services
from custodes.timewindow import OUT_OF_WINDOW, TimeWindow

ABSURD = ["2500-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z"]
NORMAL = "2026-11-19T02:03:40Z"


def okta(uuid: str, published: str) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "published": published,
        "eventType": "user.session.start",
        "actor": {"alternateId": "erin@example.com"},
        "outcome": {"result": "SUCCESS"},
    }


def settings_for(database: DatabaseSettings, tmp_path: Path) -> Settings:
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "rules").mkdir(exist_ok=True)
    settings = Settings.model_validate(
        {
            "detection": {"rules": [str(tmp_path / "rules")]},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "webhooks": {
                "okta": {
                    "kind": "okta_event_hook",
                    "source": "okta",
                    "auth": {"scheme": "header", "header": "Authorization", "secret": "env:T_OKTA_HOOK"},
                },
                "alerts": {
                    "kind": "generic",
                    "root": "items",
                    "auth": {"scheme": "bearer", "secret": "env:T_OKTA_HOOK"},
                    "alert_fields": {"id": "alert_id", "title": "name", "entity": "who", "time": "at"},
                },
            },
        }
    )
    settings.database = database
    return settings


@pytest.fixture
async def server(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Services]]:
    monkeypatch.setenv("T_OKTA_HOOK", "hook-secret-0123456789")
    async with (
        await Services.open(settings_for(database, tmp_path)) as services,
        serving(services, "127.0.0.1", 0) as url,
    ):
        yield url, services


async def post(url: str, body: Any, auth: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers={"Authorization": auth}) as answer:
        return answer.status, await answer.json()


async def stored(services: Services, ids: list[str]) -> list[Event]:
    async with services.store.transaction() as tx:
        return await tx.get_events(ids)


def assert_kept_with_warning(events: list[Event]) -> None:
    assert len(events) == len(ABSURD)
    for event in events:
        assert any(w.startswith(OUT_OF_WINDOW) for w in event.warnings), event.warnings
        assert datetime.now(UTC) - timedelta(minutes=5) < event.time <= datetime.now(UTC)
        assert event.raw["published"] in ABSURD


async def test_absurd_times_through_the_webhook_are_kept_and_move_no_clock(server: tuple[str, Services]) -> None:
    url, services = server
    status, body = await post(
        f"{url}/webhooks/okta", {"data": {"events": [okta("n-1", NORMAL)]}}, "hook-secret-0123456789"
    )
    assert status == 202
    scoring = services.pipeline.scoring
    assert scoring is not None
    clock = (scoring.engine.watermark, scoring.engine.closed_through)
    assert clock[0] == datetime(2026, 11, 19, 2, 3, 40, tzinfo=UTC)
    delivery = {"data": {"events": [okta(f"a-{i}", when) for i, when in enumerate(ABSURD)]}}
    status, body = await post(f"{url}/webhooks/okta", delivery, "hook-secret-0123456789")
    assert status == 202 and body["stored"] == len(ABSURD)
    assert_kept_with_warning(await stored(services, body["event_ids"]))
    assert (scoring.engine.watermark, scoring.engine.closed_through) == clock
    assert scoring.engine.untimed == len(ABSURD)
    assert services.pipeline.out_of_window["okta"] == len(ABSURD)
    alert = {"items": [{"alert_id": "x-1", "name": "Old alert", "who": "erin@example.com", "at": "0001-01-01"}]}
    status, body = await post(f"{url}/webhooks/alerts", alert, "Bearer hook-secret-0123456789")
    assert status == 400 and body["error"]["code"] == "invalid_time"  # an alert's own declared time is checked
    status, body = await post(
        f"{url}/webhooks/okta", {"data": {"events": [okta("n-2", NORMAL)]}}, "hook-secret-0123456789"
    )
    assert status == 202 and body["stored"] == 1
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as answer:
        text = await answer.text()
    assert 'custodes_events_out_of_window{source="okta"} 4.0' in text


async def test_absurd_times_through_replay_are_kept_and_move_no_clock(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_OKTA_HOOK", "hook-secret-0123456789")
    path = tmp_path / "okta.ndjson"
    records = [okta("n-1", NORMAL), *(okta(f"a-{i}", when) for i, when in enumerate(ABSURD)), okta("n-2", NORMAL)]
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    settings = settings_for(database, tmp_path)
    async with await Services.open(settings) as services:
        report = await services.pipeline.replay(FileConnector("r", "okta", settings.source("okta"), [path]), close=True)
        assert report.stored == len(records) and report.warnings == len(ABSURD)
        scoring = services.pipeline.scoring
        assert scoring is not None
        assert scoring.engine.watermark == datetime(2026, 11, 19, 2, 3, 40, tzinfo=UTC)
        assert scoring.engine.closed_through == datetime(2026, 11, 19).toordinal()
        async with services.store.transaction() as tx:
            events = await tx.events_in_time_order()
        assert_kept_with_warning([e for e in events if e.warnings])
    config = tmp_path / "custodes.yaml"
    config.write_bytes(orjson.dumps({"database": database.model_dump(mode="json", exclude_none=True)}))
    result = await asyncio.to_thread(CliRunner().invoke, app, ["connectors", "late", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output) == [
        {"source": "okta", "out_of_window": len(ABSURD), "late_for_scoring": 0, "held": 0}
    ]


def test_the_window_is_configurable() -> None:
    window = TimeWindow.from_settings(IngestSettings(max_future_skew_hours=1, earliest_time=datetime(2020, 1, 1)))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = Event("e", now + timedelta(hours=2), "s", LogSource(), {})
    assert window.clamp([event], [], now) == 1 and event.time == now
    assert window.accepts(now + timedelta(minutes=59), now) and not window.accepts(
        datetime(2019, 12, 31, tzinfo=UTC), now
    )
