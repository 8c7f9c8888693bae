"""The connector supervisor of `custodes serve`: a vendor outage shows as failures and lag, backs off, and
recovers by itself with nothing lost; start and stop by entry name; disabled entries wait for a start; the
scheduled inventory collection and access review."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from connector_support import services, stored_raw
from custodes.config import ConnectorSettings, Secret, Settings
from custodes.connectors.runtime import ConnectorRuntime, backoff
from custodes.connectors.supervisor import ConnectorSupervisor, UnknownConnector
from custodes.inventory.schedule import review_loop
from custodes.sandbox import okta
from custodes.sandbox.server import running
from custodes.server.metrics import ConnectorCollector, Metrics
from custodes.services import Services

__all__ = ["services"]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never: {what}")


def test_backoff_doubles_up_to_its_ceiling() -> None:
    assert [backoff(0.5, n, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff(5.0, 10_000, 300.0) == 300.0


async def test_an_outage_backs_off_then_recovers_with_nothing_lost(services: Services, tmp_path: Path) -> None:
    state = okta.OktaState(token="sup-token")
    async with running(okta.create_app(state)) as url:
        settings = Settings(
            connectors={
                "okta": ConnectorSettings(
                    kind="okta",
                    interval_seconds=0.2,
                    max_backoff_seconds=0.4,
                    credentials={"token": Secret("sup-token", "env:T")},
                    options={"base_url": url, "page_size": 5, "retry": {"attempts": 1, "backoff": 0.01}},
                ),
                "spare": ConnectorSettings(
                    kind="file_tail", enabled=False, options={"path": str(tmp_path / "none.log"), "parser": "json"}
                ),
            }
        )
        runtime = ConnectorRuntime(services.pipeline, failure_backoff=0.1)
        supervisor = ConnectorSupervisor.from_settings(settings, runtime, services.http, grace_seconds=5)
        metrics = Metrics()
        metrics.registry.register(ConnectorCollector(supervisor))
        for n in range(6):
            state.add_log_event(actor=f"u{n}@example.com", published=time.time() - 30 + n)
        supervisor.start_all()
        try:
            assert supervisor.entry("spare").state == "stopped" and supervisor.entry("okta").state == "running"

            async def stored(count: int) -> bool:
                return len(await stored_raw(services, "okta")) == count

            await eventually(lambda: stored(6), "the first events")
            state.fail_next(8, status=503)
            for n in range(6, 10):
                state.add_log_event(actor=f"u{n}@example.com", published=time.time() - 10 + n)

            async def failing() -> bool:
                return runtime.errors.get("okta", 0) >= 3

            await eventually(failing, "the outage to be seen")
            text = metrics.render().decode()
            assert 'custodes_connector_errors_total{connector="okta"}' in text
            assert 'custodes_connector_lag_seconds{connector="okta"}' in text

            async def recovered() -> bool:  # a round's events are stored before the round ends and resets the count
                return await stored(10) and runtime.statuses["okta"].consecutive_failures == 0

            await eventually(recovered, "the recovery")
            status = runtime.statuses["okta"]
            assert status.last_error is not None and "503" in status.last_error
            assert await supervisor.stop("okta") == "stopped"
            state.add_log_event(actor="late@example.com", published=time.time() - 1)
            await asyncio.sleep(0.5)
            assert len(await stored_raw(services, "okta")) == 10
            assert supervisor.start("okta") == "running"
            await eventually(lambda: stored(11), "the event after the restart")
            with pytest.raises(UnknownConnector, match="configured: okta, spare"):
                supervisor.entry("nope")
        finally:
            await supervisor.close()
        assert all(entry.state == "stopped" for entry in supervisor)


async def test_serve_collects_the_inventory_and_reviews_access_on_its_schedule(services: Services) -> None:
    state = okta.OktaState(token="inv-token")
    state.add_user("ann@example.com")
    state.add_user("bob@example.com")
    state.assign_role("bob@example.com", "SUPER_ADMIN")
    async with running(okta.create_app(state)) as url:
        services.settings.connectors = {
            "okta": ConnectorSettings(
                kind="okta", credentials={"token": Secret("inv-token", "env:T")}, options={"base_url": url}
            )
        }
        services.settings.access_review.schedule_seconds = 0.2
        stop = asyncio.Event()
        loop = asyncio.create_task(review_loop(services, stop))

        async def reviewed_twice() -> bool:
            async with services.store.transaction() as tx:
                entries = [e for e in await tx.audit_entries() if e.action == "access.review"]
            return len(entries) >= 2

        try:
            await eventually(reviewed_twice, "two scheduled reviews")
        finally:
            stop.set()
            await asyncio.wait_for(loop, 10)
    async with services.store.transaction() as tx:
        entry = next(e for e in await tx.audit_entries() if e.action == "access.review")
    assert entry.actor == "custodes:serve" and entry.details["accounts"] == 2
    assert entry.details["privileged_without_mfa"] == 1 and entry.details["failed"] == {}
