"""A playbook's cap on the runs its triggers start an hour: a storm of webhook records (real HTTP) starts at most
`max_runs_per_hour` runs, the rest wait in the outbox and start once the hour allows; none is dropped, an uncapped
playbook on the same records is not held, a run started by hand is never held, and the cap is audited and shown in
/metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from custodes.config import DatabaseSettings, Settings
from custodes.errors import CustodesError
from custodes.model import utcnow
from custodes.playbooks.loader import load_playbooks
from custodes.responder import catalog
from custodes.server.serve import check_receivers, serving
from custodes.services import Services
from custodes.store import Store
from custodes.store.tables import audit_log, outbox

TOKEN = "storm-token-8d1e-0123456789"
VIEWER = "storm-viewer-4b7a-0123456789"
NOTE = """\
name: {name}
{cap}trigger:
  webhook:
    receiver: storm
    inputs: {{who: "{{{{ record.actor.alternateId }}}}"}}
inputs:
  who: {{type: string, required: true}}
steps:
  - id: note
    uses: case.note
    with: {{case: "{{{{ inputs.who }}}}", text: noted}}
"""


def record(number: int) -> dict[str, Any]:
    return {
        "uuid": f"storm-{number}",
        "eventType": "user.session.start",
        "published": "2026-11-19T02:03:40Z",
        "actor": {"alternateId": f"sprayed-{number}@example.com", "type": "User"},
        "outcome": {"result": "FAILURE"},
    }


@pytest.fixture
async def storm(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Services]]:
    monkeypatch.setenv("T_STORM_TOKEN", TOKEN)
    monkeypatch.setenv("T_STORM_VIEWER", VIEWER)
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "capped.yml").write_text(NOTE.format(name="capped", cap=""))  # the configured default: 3
    (folder / "uncapped.yml").write_text(NOTE.format(name="uncapped", cap="max_runs_per_hour: 0\n"))
    settings = Settings.model_validate(
        {
            "detection": {"rules": []},
            "playbooks": {"paths": [str(folder)], "max_runs_per_hour": 3},
            "server": {"api_tokens": [{"name": "viewer", "token": "env:T_STORM_VIEWER", "role": "viewer"}]},
            "webhooks": {
                "storm": {
                    "kind": "generic",
                    "source": "okta",
                    "auth": {"scheme": "bearer", "secret": "env:T_STORM_TOKEN"},
                }
            },
        }
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        check_receivers(services)
        yield url, services


async def settled(store: Store, wanted: dict[str, int], owed: int) -> dict[str, list[Any]]:
    """The runs by playbook once each has `wanted` finished runs and the outbox holds `owed` rows."""
    for _ in range(300):
        async with store.transaction() as tx:
            found = await tx.list_runs(limit=100)
            left = (await tx.conn.execute(sa.select(sa.func.count()).select_from(outbox))).scalar_one()
        by = {name: [run for run in found if run.playbook == name] for name in wanted}
        done = all(len(by[name]) == count and all(r.status.final for r in by[name]) for name, count in wanted.items())
        if done and left == owed:
            return by
        await asyncio.sleep(0.02)
    raise AssertionError(f"wanted {wanted} runs and {owed} owed; have {by} and {left} owed")


async def test_a_storm_starts_at_most_the_cap_and_the_rest_wait_in_the_outbox(
    storm: tuple[str, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, services = storm
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/webhooks/storm", json=[record(n) for n in range(8)], headers=headers) as r:
            assert r.status == 202 and (await r.json())["stored"] == 8
        runs = await settled(services.store, {"capped": 3, "uncapped": 8}, owed=5)
        async with http.get(f"{url}/metrics") as response:
            assert 'custodes_playbook_starts_held{playbook="capped"} 5.0' in await response.text()
        viewer = {"Authorization": f"Bearer {VIEWER}"}
        async with http.get(f"{url}/api/playbooks", headers=viewer) as response:
            listed = {p["name"]: p for p in (await response.json())["playbooks"]}
        assert {
            name: (p["max_runs_per_hour"], p["started_last_hour"], p["owed_starts"]) for name, p in listed.items()
        } == {
            "capped": (3, 3, 5),
            "uncapped": (0, 8, 0),
        }

    async with services.store.transaction() as tx:
        rows = (await tx.conn.execute(sa.select(outbox.c.playbook, outbox.c.claimed_until))).all()
        capped = (await tx.conn.execute(sa.select(audit_log).where(audit_log.c.action == "playbook.capped"))).all()
    first = min(run.created_at for run in runs["capped"])
    assert {playbook for playbook, _ in rows} == {"capped"}
    assert all(
        abs(until.replace(tzinfo=until.tzinfo or UTC) - (first + timedelta(hours=1))) < timedelta(seconds=1)
        for _, until in rows
    )
    [entry] = capped  # once for the hour it filled, not once per held start
    assert entry.subject == "capped" and entry.details["max_runs_per_hour"] == 3
    assert entry.details["started_in_last_hour"] == 3

    # A run started by hand is never held, and does not count.
    [loaded] = [item for item in services.playbooks if item.playbook.name == "capped"]
    manual = await services.runner.start_manual(loaded, {"who": "analyst-check"}, requested_by="analyst@example.com")
    assert manual.status.final and manual.error is None

    # An hour later the held starts are claimable and start, three at most again.
    later = utcnow() + timedelta(hours=1, minutes=1)

    def clock() -> datetime:
        return later

    monkeypatch.setattr("custodes.playbooks.startcap.utcnow", clock)
    monkeypatch.setattr("custodes.store.database.utcnow", clock)
    monkeypatch.setattr("custodes.playbooks.runner.utcnow", clock)
    await services.pipeline.drain()
    runs = await settled(services.store, {"capped": 7, "uncapped": 8}, owed=2)
    later += timedelta(hours=1, minutes=1)
    await services.pipeline.drain()
    runs = await settled(services.store, {"capped": 9, "uncapped": 8}, owed=0)
    started = {run.inputs["who"] for run in runs["capped"]}
    assert started == {f"sprayed-{n}@example.com" for n in range(8)} | {"analyst-check"}  # none dropped


def test_the_cap_is_validated(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(NOTE.format(name="bad", cap="max_runs_per_hour: -1\n"))
    with pytest.raises(CustodesError) as caught:
        load_playbooks([tmp_path], catalog)
    assert "bad.yml:2:20 (max_runs_per_hour)" in str(caught.value) and "max_runs_per_hour" in str(caught.value)
