"""Playbook triggers beyond findings: webhook records (real HTTP), cron schedules (once per slot), the entity-risk
criterion of findings triggers; and cancelling runs (engine, REST over real HTTP, entity lock release)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from custodes.config import DatabaseSettings, HuntSettings, ResponderSettings, Settings
from custodes.detections.scoring.risk import DayScore
from custodes.detections.scoring.service import score_row
from custodes.errors import ConfigError, CustodesError
from custodes.hunts.scheduler import CronScheduler
from custodes.model import Finding, RunStatus, Severity, utcnow
from custodes.playbooks.loader import LoadedPlaybook, load_playbooks
from custodes.playbooks.runner import Runner
from custodes.responder import catalog
from custodes.responder.case import notes_for
from custodes.responder.registry import ActionContext, ActionSpec
from custodes.server.serve import check_receivers, playbook_jobs, serving
from custodes.services import Services
from custodes.store import Store
from custodes.store.tables import audit_log, scoring_scores

HOOK_TOKEN = "hook-token-51c2-0123456789"
ON_HOOK = """\
name: on-hook
description: note every record of the hook receiver
trigger:
  webhook:
    receiver: hook
    inputs:
      who: "{{ record.actor.alternateId }}"
      kind: "{{ record.eventType }}"
      via: "{{ receiver }}:{{ event.source }}"
inputs:
  who: {type: string, required: true}
  kind: {type: string}
  via: {type: string}
steps:
  - id: note
    uses: case.note
    with: {case: "{{ inputs.who }}", text: "{{ inputs.kind }} via {{ inputs.via }} by {{ entity }}"}
"""
ON_OTHER = """\
name: on-other
trigger: {webhook: {receiver: other}}
steps:
  - id: note
    uses: case.note
    with: {case: other, text: "should not run"}
"""


def record(uuid: str, event_type: str, who: str = "alice@example.com") -> dict[str, Any]:
    return {
        "uuid": uuid,
        "eventType": event_type,
        "published": "2026-11-19T02:03:40Z",
        "actor": {"alternateId": who, "type": "User"},
        "outcome": {"result": "SUCCESS"},
    }


@pytest.fixture
async def hook_server(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Services]]:
    monkeypatch.setenv("T_HOOK_TOKEN", HOOK_TOKEN)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "on-hook.yml").write_text(ON_HOOK)
    (tmp_path / "playbooks" / "on-other.yml").write_text(ON_OTHER)
    receiver = {"kind": "generic", "source": "okta", "auth": {"scheme": "bearer", "secret": "env:T_HOOK_TOKEN"}}
    settings = Settings.model_validate(
        {
            "detection": {"rules": []},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "webhooks": {"hook": receiver, "other": receiver},
        }
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        check_receivers(services)
        yield url, services


async def post(url: str, body: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {HOOK_TOKEN}"}
    async with aiohttp.ClientSession() as http, http.post(f"{url}/webhooks/hook", json=body, headers=headers) as r:
        return r.status, await r.json()


async def runs_of(store: Store, playbook: str, count: int) -> list[Any]:
    """The playbook's runs once `count` of them have finished (runs start after the webhook's commit)."""
    for _ in range(200):
        async with store.transaction() as tx:
            found = [run for run in await tx.list_runs(limit=100) if run.playbook == playbook]
        if len(found) >= count and all(run.status.final for run in found):
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{playbook}: wanted {count} finished runs, have {found}")


async def test_webhook_records_start_runs_once_each_with_data_inputs(hook_server: tuple[str, Services]) -> None:
    url, services = hook_server
    status, body = await post(url, [record("u1", "user.session.start"), record("u2", "{{ 7 * 7 }}", "bob@x.io")])
    assert status == 202 and body["stored"] == 2
    runs = {run.entity: run for run in await runs_of(services.store, "on-hook", 2)}
    assert set(runs) == {"alice@example.com", "bob@x.io"}
    alice, bob = runs["alice@example.com"], runs["bob@x.io"]
    assert alice.status is RunStatus.SUCCEEDED and alice.trigger["kind"] == "webhook"
    assert alice.inputs == {"who": "alice@example.com", "kind": "user.session.start", "via": "hook:okta"}
    assert bob.inputs["kind"] == "{{ 7 * 7 }}"  # event data is never rendered
    async with services.store.transaction() as tx:
        [note] = await notes_for(tx, "bob@x.io")
    assert note["text"] == "{{ 7 * 7 }} via hook:okta by bob@x.io"
    again, repeat = await post(url, [record("u1", "user.session.start"), record("u3", "user.session.end")])
    assert again == 202 and repeat["duplicates"] == 1
    runs_after = await runs_of(services.store, "on-hook", 3)
    assert len(runs_after) == 3  # u1 did not start a second run; u3 started one
    async with services.store.transaction() as tx:
        assert [r for r in await tx.list_runs(limit=100) if r.playbook == "on-other"] == []


async def test_webhook_trigger_validation_is_located(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(
        ON_HOOK.replace("receiver: hook", "receiver: nope")
        .replace("{{ record.eventType }}", "{{ finding.id }}")
        .replace('      via: "{{ receiver }}:{{ event.source }}"\n', '      via: x\n      extra: "1"\n')
    )
    with pytest.raises(CustodesError) as caught:
        load_playbooks([tmp_path], catalog, receivers=["hook"])
    lines = [str(problem) for problem in caught.value.problems]
    assert any(
        ":5:15" in line and "no webhook receiver 'nope' is configured (configured: hook)" in line for line in lines
    )
    assert any(":8:13" in line and "unknown variable 'finding'" in line for line in lines), lines
    assert any(":10:7" in line and "'extra' is not a declared input" in line for line in lines), lines
    # without the configuration the receiver cannot be checked, the rest still is
    with pytest.raises(CustodesError) as again:
        load_playbooks([tmp_path], catalog)
    assert not any("no webhook receiver" in str(problem) for problem in again.value.problems)
    assert len(again.value.problems) == 2


async def test_serve_start_up_reports_unconfigured_receivers(database: DatabaseSettings, tmp_path: Path) -> None:
    (tmp_path / "on-hook.yml").write_text(ON_HOOK)
    settings = Settings.model_validate({"detection": {"rules": []}, "playbooks": {"paths": [str(tmp_path)]}})
    settings.database = database
    async with await Services.open(settings) as services:
        with pytest.raises(ConfigError) as caught:
            check_receivers(services)
    [problem] = caught.value.problems
    assert str(problem).startswith(f"{tmp_path / 'on-hook.yml'}:5:15")
    assert "no webhook receiver 'hook' is configured (configured: none)" in str(problem)


SCHEDULED = """\
name: every-second
trigger:
  schedule:
    cron: "* * * * * *"
    timezone: Europe/Paris
    inputs: {at: "{{ slot }}", label: "{{ playbook.name }}", fixed: 3}
inputs:
  at: {type: string, required: true}
  label: {type: string}
  fixed: {type: integer}
steps:
  - id: note
    uses: case.note
    with: {case: schedule, text: "{{ inputs.label }} {{ inputs.at }} {{ inputs.fixed }}"}
"""


def scratch_runner(store: Store, loaded: list[LoadedPlaybook], session: aiohttp.ClientSession, **kw: Any) -> Runner:
    return Runner(store, catalog, ResponderSettings(), session, playbooks=loaded, **kw)


async def test_schedule_slot_runs_once_across_workers(store: Store, tmp_path: Path) -> None:
    (tmp_path / "s.yml").write_text(SCHEDULED)
    loaded = load_playbooks([tmp_path], catalog)
    slot = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    async with aiohttp.ClientSession() as session:
        one, two = scratch_runner(store, loaded, session), scratch_runner(store, loaded, session)
        results = await asyncio.gather(one.start_scheduled(loaded[0], slot), two.start_scheduled(loaded[0], slot))
        later = await one.start_scheduled(loaded[0], slot)
    started = [run for run in results if run is not None]
    assert len(started) == 1 and later is None
    [run] = started
    assert run.status is RunStatus.SUCCEEDED and run.trigger == {
        "kind": "schedule",
        "slot": "2026-11-21T09:30:00+00:00",
        "cron": "* * * * * *",
    }
    assert run.inputs == {"at": "2026-11-21T09:30:00+00:00", "label": "every-second", "fixed": 3}


async def test_scheduler_fires_playbooks_once_per_slot_across_restarts(
    store: Store, database: DatabaseSettings, tmp_path: Path
) -> None:
    (tmp_path / "s.yml").write_text(SCHEDULED)
    loaded = load_playbooks([tmp_path], catalog)
    settings = HuntSettings(job_table=f"jobs_{tmp_path.name[-8:].replace('-', '_')}")
    async with aiohttp.ClientSession() as session:
        runner = scratch_runner(store, loaded, session)
        for _ in range(2):  # a restart keeps the stored job and its slots
            scheduler = CronScheduler(playbook_jobs(runner, loaded), settings, database)
            scheduler.start()
            await asyncio.sleep(2.6)
            await scheduler.stop()
    async with store.transaction() as tx:
        runs = await tx.list_runs(limit=100)
    slots = sorted(run.trigger["slot"] for run in runs)
    assert len(slots) >= 3 and len(set(slots)) == len(slots)
    assert all(run.status is RunStatus.SUCCEEDED and run.playbook == "every-second" for run in runs)
    times = [datetime.fromisoformat(s) for s in slots]
    assert all(t.microsecond == 0 for t in times)


async def test_schedule_trigger_validation(tmp_path: Path) -> None:
    (tmp_path / "s.yml").write_text(
        SCHEDULED.replace('cron: "* * * * * *"', 'cron: "61 * * * *"').replace("{{ slot }}", "{{ record.x }}")
    )
    with pytest.raises(CustodesError) as caught:
        load_playbooks([tmp_path], catalog)
    assert any(":4:5" in str(p) and "invalid schedule '61 * * * *'" in str(p) for p in caught.value.problems), [
        str(p) for p in caught.value.problems
    ]
    (tmp_path / "s.yml").write_text(SCHEDULED.replace('"{{ slot }}"', '"{{ record.x }}"'))
    with pytest.raises(CustodesError) as again:
        load_playbooks([tmp_path], catalog)
    [problem] = again.value.problems
    assert ":6:18" in str(problem) and "unknown variable 'record' (available: playbook, slot)" in str(problem)
    (tmp_path / "s.yml").write_text(SCHEDULED.replace('at: "{{ slot }}", ', ""))
    with pytest.raises(CustodesError) as missing:
        load_playbooks([tmp_path], catalog)
    [problem] = missing.value.problems
    assert ":3:3" in str(problem) and "required input 'at' is not given by the schedule trigger" in str(problem)


RISKY = """\
name: risky-{n}
trigger:
  findings: {{min_severity: low, min_entity_risk: {risk}}}
steps:
  - id: note
    uses: case.note
    with: {{case: "{{{{ entity }}}}", text: risky-{n}}}
"""


async def test_min_entity_risk_uses_the_scoring_risk(database: DatabaseSettings, tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(RISKY.format(n="fifty", risk=50))
    (tmp_path / "b.yml").write_text(RISKY.format(n="ninety", risk=90.5))
    settings = Settings.model_validate({"detection": {"rules": []}, "playbooks": {"paths": [str(tmp_path)]}})
    settings.database = database
    async with await Services.open(settings) as services:
        scoring = services.pipeline.scoring
        assert scoring is not None
        key = scoring.engine.resolver.resolve("alice@example.com")[0]
        score = DayScore(key, "person", date(2026, 11, 20), 80.0, 80.0, [], {}, [], [])
        async with services.store.transaction() as tx:
            await tx.conn.execute(sa.insert(scoring_scores).values(**score_row(score, utcnow())))

        def finding(entity: str) -> Finding:
            now = utcnow()
            return Finding(
                id=f"f-{entity}",
                dedup_key=f"d-{entity}",
                detector="sigma",
                rule_id="r1",
                title="t",
                severity=Severity.MEDIUM,
                entity=entity,
                event_ids=[],
                tags=[],
                first_seen=now,
                last_seen=now,
                source="okta",
            )

        assert await services.pipeline.entity_risk(finding("Alice@Example.com")) == 80.0
        runs = await services.pipeline.respond([finding("alice@example.com"), finding("bob@example.com")])
    assert [(run.playbook, run.entity) for run in runs] == [("risky-fifty", "alice@example.com")]


STEPS = """\
name: three-steps
trigger: {manual: true}
steps:
  - {id: one, uses: notify.webhook, with: {channel: soc, text: one}}
  - {id: two, uses: notify.webhook, with: {channel: soc, text: two}}
  - {id: three, uses: notify.webhook, with: {channel: soc, text: three}}
"""


async def test_cancel_a_running_run_stops_before_its_next_step(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_CHAT", "http://127.0.0.1:9/unused")
    (tmp_path / "p.yml").write_text(STEPS)
    loaded = load_playbooks([tmp_path], catalog)
    calls: list[str] = []
    in_flight, release = asyncio.Event(), asyncio.Event()

    async def invoke(spec: ActionSpec, ctx: ActionContext, arguments: dict[str, Any]) -> dict[str, Any]:
        calls.append(arguments["text"])
        if arguments["text"] == "two" and not release.is_set():
            in_flight.set()
            await release.wait()
        return {"posted": True}

    settings = ResponderSettings.model_validate({"channels": {"soc": {"url": "env:T_CHAT"}}})
    async with aiohttp.ClientSession() as session:
        runner = Runner(store, catalog, settings, session, playbooks=loaded, invoke=invoke)
        task = asyncio.create_task(runner.start_manual(loaded[0], {}, requested_by="ann", entity="alice@example.com"))
        await in_flight.wait()
        async with store.transaction() as tx:
            [running] = await tx.list_runs(limit=10)
        requested = await runner.cancel(running.id, "bob")
        assert requested.status is RunStatus.RUNNING
        release.set()
        run = await task
        assert run.status is RunStatus.CANCELLED and run.error == "cancelled by bob"
        assert calls == ["one", "two"]
        async with store.transaction() as tx:
            stored = await tx.get_run(run.id)
            actions = [row.action for row in await tx.conn.execute(sa.select(audit_log.c.action))]
        assert stored is not None and stored.status is RunStatus.CANCELLED
        assert {s.step_id: s.status for s in stored.steps} == {"one": RunStatus.SUCCEEDED, "two": RunStatus.SUCCEEDED}
        assert "run.cancel_requested" in actions and actions[-1] == "run.finished"
        # the entity lock was released: the next run for alice runs through
        again = await runner.start_manual(loaded[0], {}, requested_by="ann", entity="alice@example.com")
        assert again.status is RunStatus.SUCCEEDED
        with pytest.raises(CustodesError, match="only an unfinished run can be cancelled"):
            await runner.cancel(run.id, "bob")


TOKENS = {"viewer": "tok-v-0123456789abcdef", "analyst": "tok-a-0123456789abcdef"}
WAITS = """\
name: waits
trigger: {manual: true}
steps:
  - id: note
    uses: notify.webhook
    with: {channel: soc, text: "about {{ entity }}"}
    approval: {expires_after: 3600}
"""


@pytest.fixture
async def api(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Services]]:
    for name, token in TOKENS.items():
        monkeypatch.setenv(f"T_{name.upper()}", token)
    monkeypatch.setenv("T_CHAT", "http://127.0.0.1:9/unused")
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "waits.yml").write_text(WAITS)
    settings = Settings.model_validate(
        {
            "detection": {"rules": []},
            "playbooks": {"paths": [str(tmp_path / "pb")]},
            "responder": {"channels": {"soc": {"url": "env:T_CHAT"}}},
            "server": {
                "api_tokens": [
                    {"name": f"{name}-token", "token": f"env:T_{name.upper()}", "role": name} for name in TOKENS
                ]
            },
        }
    )
    settings.database = database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        yield url, services


async def call(url: str, path: str, who: str, json: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKENS[who]}"}
    async with aiohttp.ClientSession() as http, http.post(f"{url}{path}", json=json, headers=headers) as r:
        return r.status, await r.json()


async def test_cancel_waiting_and_pending_runs_over_http(api: tuple[str, Services]) -> None:
    url, services = api
    start = {"entity": "alice@example.com"}
    statuses = []
    ids = []
    for _ in range(3):
        status, run = await call(url, "/api/playbooks/waits/runs", "analyst", start)
        assert status == 201, run
        statuses.append(run["status"])
        ids.append(run["id"])
    assert statuses == ["waiting", "pending", "pending"]  # one run per entity: the others queue
    status, body = await call(url, f"/api/runs/{ids[0]}/cancel", "viewer", {})
    assert status == 403 and "analyst role" in body["error"]["message"]
    status, body = await call(url, f"/api/runs/{ids[2]}/cancel", "analyst", {"comment": "duplicate"})
    assert status == 200 and body["status"] == "cancelled" and body["error"] == "cancelled by api:analyst-token"
    status, body = await call(url, f"/api/runs/{ids[0]}/cancel", "analyst", {"comment": "false positive"})
    assert status == 200 and body["status"] == "cancelled"
    async with services.store.transaction() as tx:
        second = await tx.get_run(ids[1])
        third = await tx.get_run(ids[2])
        audit = [(r.actor, r.action, r.subject) for r in await tx.conn.execute(sa.select(audit_log))]
    assert second is not None and second.status is RunStatus.WAITING  # took the released lock
    assert third is not None and third.status is RunStatus.CANCELLED
    assert ("run.cancel.request", ids[0]) in [(b, c) for _, b, c in audit]
    assert ("api:analyst-token", "run.cancelled", ids[0]) in audit
    status, body = await call(url, f"/api/runs/{ids[0]}/cancel", "analyst", {})
    assert status == 409 and "cancelled" in body["error"]["message"]
    status, body = await call(url, "/api/runs/nope/cancel", "analyst", {})
    assert status == 404


def test_cli_run_cancel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import orjson
    from typer.testing import CliRunner

    from custodes.cli import app

    monkeypatch.setenv("T_CHAT", "http://127.0.0.1:9/unused")
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "waits.yml").write_text(WAITS)
    config = tmp_path / "custodes.yaml"
    config.write_text(
        f"database: {{url: 'sqlite+aiosqlite:///{tmp_path / 'store.db'}'}}\n"
        "detection: {rules: []}\n"
        f"playbooks: {{paths: ['{tmp_path / 'pb'}']}}\n"
        "responder: {channels: {soc: {url: 'env:T_CHAT'}}}\n"
        "server: {api_tokens: [{name: ann, token: 'env:T_ANN', role: analyst}, {name: bob, token: 'env:T_BOB', "
        "role: analyst}]}\n"
    )
    monkeypatch.setenv("T_ANN", "ann-token-0123456789")
    monkeypatch.setenv("T_BOB", "bob-token-0123456789")
    cli = CliRunner()
    started = cli.invoke(
        app, ["playbook", "run", "waits", "-c", str(config), "--entity", "alice", "--token", "env:T_ANN"]
    )
    assert started.exit_code == 0, started.output
    listed = cli.invoke(app, ["run", "list", "-c", str(config), "--json"])
    [run] = orjson.loads(listed.stdout)
    assert run["status"] == "waiting"
    cancelled = cli.invoke(app, ["run", "cancel", run["id"], "-c", str(config), "--token", "env:T_BOB"])
    assert cancelled.exit_code == 0, cancelled.output
    assert f"{run['id']} waits: cancelled" in cancelled.output
    again = cli.invoke(app, ["run", "cancel", run["id"], "-c", str(config), "--token", "env:T_BOB"])
    assert again.exit_code == 2 and "only an unfinished run can be cancelled" in again.output
