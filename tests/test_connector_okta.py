"""The Okta System Log connector over loopback HTTP against the Okta simulator, with injected faults."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from conftest import OKTA_TOKEN
from connector_support import services, stored_raw
from custodes.config import Secret
from custodes.connectors.http import links
from custodes.connectors.okta import OktaLogOptions, OktaSystemLog
from custodes.connectors.options import RetryOptions
from custodes.connectors.runtime import ConnectorRuntime
from custodes.responder.registry import ActionError
from custodes.sandbox import okta
from custodes.sandbox.pathfaults import Fault
from custodes.sandbox.server import running
from custodes.services import Services
from custodes.sources import SourceSettings

__all__ = ["services"]

SOURCE = SourceSettings(format="okta", product="okta", service="okta")
FAST = RetryOptions(attempts=8, max_wait=2.0, backoff=0.01)
Org = tuple[okta.OktaState, str]


@pytest.fixture
async def org() -> AsyncIterator[Org]:
    state = okta.OktaState(token=OKTA_TOKEN)
    async with running(okta.create_app(state)) as url:
        yield state, url


def connector(http: aiohttp.ClientSession, url: str, *, page: int = 10, timeout: float = 0.5) -> OktaSystemLog:
    options = OktaLogOptions(base_url=url, page_size=page, timeout_seconds=timeout, retry=FAST)
    return OktaSystemLog("okta-log", "okta", SOURCE, http, token=Secret(OKTA_TOKEN, "env:OKTA"), options=options)


def seed(state: okta.OktaState, count: int, start: float) -> list[str]:
    return [state.add_log_event(actor=f"user{n}@example.com", published=start + n)["uuid"] for n in range(count)]


async def uuids(services: Services) -> list[str]:
    return sorted(record["uuid"] for record in await stored_raw(services, "okta"))


async def drain(runtime: ConnectorRuntime, source: OktaSystemLog, rounds: int) -> int:
    return sum([(await runtime.poll(source, kind="okta")).stored for _ in range(rounds)])


async def test_polling_follows_next_links_and_resumes_from_the_saved_link(org: Org, services: Services) -> None:
    state, url = org
    first = seed(state, 25, time.time() - 600)
    runtime = ConnectorRuntime(services.pipeline)
    async with aiohttp.ClientSession() as http:
        source = connector(http, url)
        assert (await runtime.poll(source)).stored == 25
        assert (await runtime.poll(source)).stored == 0
        later = seed(state, 7, time.time() - 60)
        assert (await runtime.poll(source)).stored == 7
    assert await uuids(services) == sorted(first + later)
    paths = [r.query for r in state.calls("GET") if r.path == "/api/v1/logs"]
    assert "since=" in paths[0] and all("after=" in query for query in paths[1:])
    status = await runtime.status("okta-log")
    assert status is not None and status.events_total == 32 and status.consecutive_failures == 0
    assert status.newest_event is not None
    lag = status.lag(datetime.now(UTC))
    assert lag is not None and lag < timedelta(minutes=2)


async def test_every_fault_neither_loses_nor_duplicates_events(org: Org, services: Services) -> None:
    state, url = org
    expected = seed(state, 55, time.time() - 900)
    state.faults.add(Fault(status=429, retry_after=0.05, path="/api/v1/logs"))
    state.faults.add(Fault(status=500, path="/api/v1/logs", times=2))
    state.faults.add(Fault(drop=True, path="/api/v1/logs"))
    state.faults.add(Fault(delay=1.0, path="/api/v1/logs"))
    state.faults.add(Fault(status=503, path="/api/v1/logs"))
    state.empty_pages = 1
    state.repeat_pages = 2
    runtime = ConnectorRuntime(services.pipeline)
    async with aiohttp.ClientSession() as http:
        source = connector(http, url)
        assert await drain(runtime, source, rounds=4) == 55
    assert await uuids(services) == sorted(expected)
    assert state.faults.pending == [] and state.empty_pages == 0 and state.repeat_pages == 0
    assert [r.status for r in state.requests].count(429) == 1


async def test_an_outage_is_recorded_then_recovers_by_itself(org: Org, services: Services) -> None:
    state, url = org
    expected = seed(state, 12, time.time() - 300)
    state.faults.add(Fault(status=503, path="/api/v1/logs", times=FAST.attempts * 2))
    runtime = ConnectorRuntime(services.pipeline)
    async with aiohttp.ClientSession() as http:
        source = connector(http, url)
        for failures in (1, 2):
            with pytest.raises(ActionError, match=r"GET http://127\.0\.0\.1:[0-9]+: HTTP 503 after 8 attempts"):
                await runtime.poll(source)
            status = await runtime.status("okta-log")
            assert status is not None and status.consecutive_failures == failures
            assert status.last_error is not None and OKTA_TOKEN not in status.last_error
        assert await drain(runtime, source, rounds=2) == 12
    status = await runtime.status("okta-log")
    assert status is not None and status.consecutive_failures == 0 and status.last_error is not None
    assert await uuids(services) == sorted(expected)


async def test_rate_limit_headers_pause_before_the_next_request(org: Org, services: Services) -> None:
    state, url = org
    seed(state, 30, time.time() - 300)
    state.rate_limit = 2
    state.rate_window_seconds = 1.0
    runtime = ConnectorRuntime(services.pipeline)
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        assert (await runtime.poll(connector(http, url))).stored == 30
        elapsed = time.monotonic() - started
    assert all(r.status == 200 for r in state.requests), "the client waited for the reset instead of a 429"
    assert elapsed >= 0.5


async def test_backfill_reads_only_its_range_and_leaves_the_live_position(org: Org, services: Services) -> None:
    state, url = org
    base = time.time() - 3600
    inside = seed(state, 15, base)
    seed(state, 5, base + 1000)
    runtime = ConnectorRuntime(services.pipeline)
    start = datetime.fromtimestamp(base, UTC)
    async with aiohttp.ClientSession() as http:
        source = connector(http, url)
        report = await runtime.backfill(source, start, start + timedelta(seconds=15))
        assert report.stored == 15
        assert (await runtime.backfill(source, start, start + timedelta(seconds=15))).received == 0
    assert await uuids(services) == sorted(inside)
    async with services.store.transaction() as tx:
        assert await tx.get_checkpoint("okta-log") is None


async def test_bad_records_are_kept_with_warnings(org: Org, services: Services) -> None:
    state, url = org
    records: list[dict[str, Any]] = [
        {"uuid": "u-1", "published": "yesterday-ish", "eventType": "user.session.start"},
        {"uuid": "u-2", "published": "2024-01-01T00:00:00Z"},
        {"uuid": "u-3", "published": "2024-01-01T00:00:01Z", "eventType": "brand.new.type", "actor": "not-a-dict"},
    ]
    for n, record in enumerate(records):
        state.add_log_record(record, published=time.time() - 60 + n)
    runtime = ConnectorRuntime(services.pipeline)
    async with aiohttp.ClientSession() as http:
        assert (await runtime.poll(connector(http, url))).stored == 3
    stored = {r["uuid"]: r for r in await stored_raw(services, "okta")}
    assert set(stored) == {"u-1", "u-2", "u-3"}
    async with services.store.engine.connect() as conn:
        import sqlalchemy as sa

        from custodes.store.tables import events

        rows = (await conn.execute(sa.select(events.c.raw, events.c.warnings))).all()
    warnings = {dict(raw)["uuid"]: list(found) for raw, found in rows}
    assert any("unreadable time" in w for w in warnings["u-1"])
    assert any("eventType missing" in w for w in warnings["u-2"])


async def test_overlong_fields_are_dropped_with_a_warning_and_never_fail_the_batch(
    org: Org, services: Services
) -> None:
    state, url = org
    at = "2026-11-19T02:00:00Z"
    long_actor = {"uuid": "long-1", "published": at, "eventType": "e", "actor": {"alternateId": "a" * 600}}
    long_ip = {
        "uuid": "long-2",
        "published": at,
        "eventType": "e",
        "actor": {"alternateId": "user@example.com"},
        "client": {"ipAddress": "9" * 65},
    }
    expected = seed(state, 3, time.time() - 120)
    for n, record in enumerate((long_actor, long_ip)):
        state.add_log_record(record, published=time.time() - 60 + n)
    runtime = ConnectorRuntime(services.pipeline)
    async with aiohttp.ClientSession() as http:
        assert (await runtime.poll(connector(http, url))).stored == 5
    assert await uuids(services) == sorted([*expected, "long-1", "long-2"])
    async with services.store.transaction() as tx:
        stored = {e.raw["uuid"]: e for e in await tx.events_in_time_order()}
    assert stored["long-1"].actor is None and stored["long-1"].raw["actor"]["alternateId"] == "a" * 600
    assert stored["long-1"].warnings == [
        "actor.alternateId: 600 characters, more than the 512 an event's actor may have; actor dropped"
    ]
    assert stored["long-2"].src_ip is None and stored["long-2"].actor == "user@example.com"
    assert stored["long-2"].warnings == [
        "client.ipAddress: 65 characters, more than the 64 an event's src_ip may have; src_ip dropped"
    ]


def test_a_malformed_link_target_is_named() -> None:
    """Once a bare "ValueError: Invalid IPv6 URL" from the connector, with nothing saying where it came from."""
    assert links({"Link": '</api/v1/logs?after=x>; rel="next", <https://o.example/>; rel="self"'}) == {
        "next": "/api/v1/logs?after=x",
        "self": "https://o.example/",
    }
    for target in ("http://[::1", "https://o.example:99999/"):
        with pytest.raises(ValueError, match=r"the response's Link header names a malformed URL \(.*\): 'http"):
            links({"Link": f'<{target}>; rel="next"'})
