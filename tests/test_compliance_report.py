"""Compliance evidence reports: every figure checked against a seeded store (SQLite and PostgreSQL), empty
periods, bad arguments, escaping, the PDF read back, and the API (roles, errors, audit)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa
from pypdf import PdfReader
from typer.testing import CliRunner

from custodes.cli import app
from custodes.config import DatabaseSettings, Settings
from custodes.errors import CustodesError
from custodes.model import utcnow
from custodes.reports.catalogue import catalogue, parse_catalogue
from custodes.reports.compliance import build, render
from custodes.reports.measures import MEASURES, Period, Source
from custodes.server.serve import serving
from custodes.services import Services
from custodes.store import Store
from custodes.store.cases import case_members, cases
from custodes.store.database import AuditRecord
from custodes.store.tables import audit_log, events, findings, identity_accounts, identity_grants, runs, steps

HOSTILE = "<script>alert('x')</script>&\u03a9"


def _account(ident: str, entity: str, login: str, enabled: bool, at: datetime) -> dict[str, Any]:
    return {
        "id": ident,
        "connector": "okta",
        "provider": "okta",
        "native_id": ident,
        "entity": entity,
        "kind": "person",
        "login": login,
        "display_name": None,
        "status": "ACTIVE" if enabled else "SUSPENDED",
        "enabled": enabled,
        "created": None,
        "last_sign_in": None,
        "mfa": True,
        "attributes": {},
        "warnings": [],
        "collected_at": at,
    }


def _event(ident: str, actor: str, at: datetime) -> dict[str, Any]:
    return {
        "id": ident,
        "time": at,
        "source": "okta",
        "actor": actor,
        "action": "user.session.start",
        "outcome": "success",
        "raw": {},
        "warnings": [],
        "ingested_at": at,
    }


def _finding(ident: str, severity: int, status: str, at: datetime) -> dict[str, Any]:
    return {
        "id": ident,
        "dedup_key": ident,
        "detector": "sigma",
        "rule_id": "r",
        "title": "t",
        "severity": severity,
        "entity": "alice@example.com",
        "tags": [],
        "event_ids": [],
        "count": 1,
        "status": status,
        "first_seen": at,
        "last_seen": at,
        "created_at": at,
    }


def _case(ident: str, priority: str, status: str, opened: datetime, **times: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "subject": "alice@example.com",
        "title": "case",
        "status": status,
        "disposition": times.pop("disposition", None),
        "priority": priority,
        "due_at": times.get("due_at"),
        "opened_by": "analyst",
        "opened_at": opened,
        "first_triaged_at": times.get("triaged"),
        "closed_at": times.get("closed"),
        "updated_at": opened,
        "legal_hold": times.get("hold", False),
    }


def _run(ident: str, status: str, at: datetime, *, dry: bool = False) -> dict[str, Any]:
    return {
        "id": ident,
        "playbook": "contain",
        "playbook_version": "1",
        "finding_id": ident,
        "status": status,
        "dry_run": dry,
        "created_at": at,
    }


def _step(run: str, step: str, action: str, status: str, *, destructive: bool = False) -> dict[str, Any]:
    return {
        "run_id": run,
        "step_id": step,
        "position": 0,
        "action": action,
        "arguments": {},
        "status": status,
        "idempotency_key": f"{run}-{step}",
        "destructive": destructive,
    }


async def seed(store: Store, now: datetime, action: str = "okta.suspend_user") -> datetime:
    """Rows inside the last 30 days and before them; returns the time of the last access review."""
    recent, old = now - timedelta(days=2), now - timedelta(days=60)
    async with store.transaction() as tx:
        conn = tx.conn
        await conn.execute(
            sa.insert(identity_accounts),
            [
                _account("a1", "alice@example.com", "alice@example.com", True, now),
                _account("a6", "alice@example.com", "alice.admin", True, now),
                _account("a2", "bob@example.com", "bob", True, now),
                _account("a3", "carol@example.com", "carol@example.com", True, now),
                _account("a4", "dave@example.com", "dave@example.com", False, now),
                _account("a5", "erin@example.com", "erin@example.com", True, now),
            ],
        )
        grants = [("a1", True), ("a6", True), ("a2", True), ("a3", True), ("a4", True), ("a5", False)]
        await conn.execute(
            sa.insert(identity_grants),
            [
                {"account_id": a, "kind": "role", "name": "admin" if p else "staff", "privileged": p, "attributes": {}}
                for a, p in grants
            ],
        )
        await conn.execute(
            sa.insert(events),
            [
                _event("e1", "alice@example.com", recent),
                _event("e2", "bob", recent),
                _event("e3", "carol@example.com", old),
                _event("e4", "dave@example.com", recent),
            ],
        )
        await conn.execute(
            sa.insert(findings),
            [
                _finding("f1", 3, "open", recent),
                _finding("f2", 2, "acknowledged", recent),
                _finding("f3", 1, "open", recent),
                _finding("f4", 4, "closed", old),
            ],
        )
        c1, c2, c3 = now - timedelta(days=2), now - timedelta(days=3), now - timedelta(days=1)
        c5 = now - timedelta(days=10)
        hour = timedelta(hours=1)
        await conn.execute(
            sa.insert(cases),
            [
                _case(
                    "c1",
                    "high",
                    "closed",
                    c1,
                    due_at=c1 + 4 * hour,
                    triaged=c1 + hour,
                    closed=now - timedelta(days=1),
                    disposition="malicious",
                    hold=True,
                ),
                _case("c2", "medium", "escalated_hr", c2, due_at=c2 + 24 * hour, triaged=c2 + 30 * hour),
                _case("c3", "critical", "new", c3, due_at=c3 + hour),
                _case("c4", "low", "closed", old, closed=now - timedelta(days=5), disposition="benign"),
                _case("c5", "low", "investigating", c5, triaged=c5 + 2 * hour),
                _case("c6", "low", "new", recent, due_at=now + 4 * hour),
            ],
        )
        await conn.execute(
            sa.insert(case_members),
            [{"case_id": "c1", "kind": "finding", "ref": "f1", "added_by": "a", "added_at": c1}],
        )
        await conn.execute(
            sa.insert(runs),
            [
                _run("r1", "succeeded", recent),
                _run("r2", "failed", recent),
                _run("r3", "succeeded", recent, dry=True),
                _run("r4", "succeeded", old),
            ],
        )
        await conn.execute(
            sa.insert(steps),
            [
                _step("r1", "s1", action, "succeeded", destructive=True),
                _step("r1", "s2", "notify.chat", "succeeded"),
                _step("r2", "s1", action, "failed", destructive=True),
                _step("r3", "s1", action, "skipped", destructive=True),
                _step("r4", "s1", action, "succeeded", destructive=True),
            ],
        )
        figures = {"dormant": 2, "privileged_without_mfa": 1, "unused_access": 3, "sod_conflicts": 0}
        await tx.audit("custodes:serve", "access.review", None, {**figures, "accounts": 6, "failed": {}})
        await tx.audit("api:analyst", "finding.status", "f2", {"status": "acknowledged"})
        last = await tx.audit("cli:root", "access.review", None, {**figures, "dormant": 1, "sod_conflicts": 1})
    return last.at


def expected(now: datetime, last_review: datetime, action: str = "okta.suspend_user") -> dict[str, dict[str, Any]]:
    """The figures the seeded store must give for the last 30 days."""
    return {
        "access_reviews": {
            "reviews": 2,
            "dormant": 3,
            "privileged_without_mfa": 2,
            "unused_access": 6,
            "sod_conflicts": 1,
            "last_review_at": last_review.isoformat(),
        },
        "privileged_monitoring": {
            "privileged_accounts": 4,
            "privileged_people": 3,
            "monitored_people": 2,
            "unmonitored_people": 1,
            "coverage_percent": 66.7,
        },
        "alerts": {
            "findings": 3,
            "by_severity": {"high": 1, "low": 1, "medium": 1},
            "by_status": {"acknowledged": 1, "open": 2},
            "in_a_case": 1,
            "investigated": 2,
        },
        "cases": {
            "opened": 5,
            "by_status": {"closed": 1, "escalated_hr": 1, "investigating": 1, "new": 2},
            "by_priority": {"critical": 1, "high": 1, "low": 2, "medium": 1},
            "escalated": 1,
            "legal_hold": 1,
            "triaged": 3,
            "triaged_within_sla": 1,
            "triaged_late": 1,
            "untriaged_overdue": 1,
            "median_minutes_to_triage": 120.0,
            "mean_minutes_to_triage": 660.0,
            "closed": 2,
            "dispositions": {"benign": 1, "malicious": 1},
        },
        "containment": {
            "runs": 2,
            "dry_runs": 1,
            "runs_by_status": {"failed": 1, "succeeded": 1},
            "steps_by_action_and_outcome": {
                f"{action} failed": 1,
                f"{action} succeeded": 1,
                "notify.chat succeeded": 1,
            },
            "destructive_steps_succeeded": 1,
        },
        "audit_log": {
            "entries_in_period": 3,
            "chain_verified": True,
            "entries_verified": 3,
            "first_broken_entry": None,
            "checkpoint_problems": 0,
            "keyed": False,
            "entries_without_key": 3,
        },
    }


def settings_for(database: DatabaseSettings, tmp_path: Path) -> Settings:
    """Settings on the test store, the audit checkpoints in the test's folder."""
    return Settings(database=database.model_copy(update={"audit_checkpoint": str(tmp_path / "checkpoints.jsonl")}))


def last_days(now: datetime, days: int = 30) -> Period:
    """The last `days` days up to a minute from now (so entries audited during the test fall inside)."""
    return Period(now - timedelta(days=days), now + timedelta(minutes=1), now)


@pytest.mark.parametrize("framework", ["soc2", "iso27001", "hipaa", "cmmc", "pcidss"])
async def test_every_figure_matches_the_seeded_store(
    store: Store, database: DatabaseSettings, tmp_path: Path, framework: str
) -> None:
    now = utcnow()
    last_review = await seed(store, now)
    report = await build(Source(store, settings_for(database, tmp_path)), framework, last_days(now))
    chosen = catalogue().frameworks[framework]
    assert [control["id"] for control in report["controls"]] == [control.id for control in chosen.controls]
    needed = {name for control in chosen.controls for name in control.measures}
    want = expected(now, last_review)
    assert report["measures"] == {name: want[name] for name in needed}
    assert report["schema"] == "custodes.compliance/1" and report["framework"] == framework
    assert report["measure_titles"] == {name: catalogue().measures[name] for name in needed}


async def test_an_empty_period_counts_nothing_but_still_verifies_the_chain(
    store: Store, database: DatabaseSettings, tmp_path: Path
) -> None:
    now = utcnow()
    await seed(store, now)
    early = now - timedelta(days=400)
    report = await build(
        Source(store, settings_for(database, tmp_path)), "soc2", Period(early, early + timedelta(1), now)
    )
    figures = report["measures"]
    assert figures["access_reviews"]["reviews"] == 0 and figures["access_reviews"]["last_review_at"] is None
    assert figures["privileged_monitoring"]["privileged_accounts"] == 4
    assert figures["privileged_monitoring"]["monitored_people"] == 0
    assert figures["privileged_monitoring"]["coverage_percent"] == 0.0
    assert figures["alerts"] == {"findings": 0, "by_severity": {}, "by_status": {}, "in_a_case": 0, "investigated": 0}
    assert figures["cases"]["opened"] == 0 and figures["cases"]["median_minutes_to_triage"] is None
    assert figures["containment"]["runs"] == 0 and figures["containment"]["steps_by_action_and_outcome"] == {}
    assert figures["audit_log"]["entries_in_period"] == 0 and figures["audit_log"]["entries_verified"] == 3
    assert figures["audit_log"]["chain_verified"] is True


async def test_a_tampered_audit_log_shows_in_the_report(
    store: Store, database: DatabaseSettings, tmp_path: Path
) -> None:
    now = utcnow()
    await seed(store, now)
    async with store.transaction() as tx:
        await tx.conn.execute(sa.update(audit_log).where(audit_log.c.seq == 2).values(details={"status": "closed"}))
    report = await build(Source(store, settings_for(database, tmp_path)), "cmmc", last_days(now))
    assert report["measures"]["audit_log"]["chain_verified"] is False
    assert report["measures"]["audit_log"]["first_broken_entry"] == 2


async def test_html_escapes_and_the_pdf_reads_back(store: Store, database: DatabaseSettings, tmp_path: Path) -> None:
    now = utcnow()
    await seed(store, now, action=HOSTILE)
    report = await build(Source(store, settings_for(database, tmp_path)), "pcidss", last_days(now))
    page = render(report, "html").decode()
    assert "<script" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;\u03a9 failed" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    reader = PdfReader(io.BytesIO(render(report, "pdf")))
    text = "\n".join(page.extract_text() for page in reader.pages)
    for needle in (
        "PCI DSS v4.0",
        "Audit log written and its hash chain verified (audit_log)",
        "Log and monitor all access",
        "coverage_percent",
        "66.7",
        "chain_verified",
    ):
        assert needle in text
    assert "<script>alert('x')</script>&? failed" in text
    assert orjson.loads(render(report, "json")) == report


def test_a_catalogue_naming_an_unknown_measure_is_located() -> None:
    titles = "".join(f"  {name}: {name} title\n" for name in MEASURES)
    controls = "    controls:\n      - id: C1\n        title: t\n        measures: [nope]\n"
    with pytest.raises(CustodesError, match=r"c.yaml:14:19 \(frameworks.x.controls.0.measures\): .*unknown measure"):
        parse_catalogue(f"measures:\n{titles}frameworks:\n  x:\n    title: X\n{controls}", "c.yaml")
    with pytest.raises(CustodesError, match=r"c.yaml:1:11 \(measures\): .*must give a title to each measure"):
        parse_catalogue(f"measures: {{alerts: A}}\nframeworks:\n  x:\n    title: X\n{controls}", "c.yaml")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--framework", "sox", "--from", "2026-11-01", "--to", "2026-11-30"], "--framework: unknown framework 'sox'"),
        (["--framework", "soc2", "--from", "2026-12-01", "--to", "2026-11-30"], "--from: 2026-12-01 is not before"),
        (["--framework", "soc2", "--from", "2026-11-31", "--to", "2026-12-30"], "--from: '2026-11-31' is not an ISO"),
        (["--framework", "soc2", "--from", "2026-11-01", "--to", "2026-02-30"], "--to: '2026-02-30' is not an ISO"),
        (["--framework", "soc2", "--from", "2026-11-01", "--to", "2026-11-30", "--format", "doc"], "--format: unknown"),
    ],
)
def test_bad_arguments_give_one_line_naming_the_option(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["report", "compliance", *arguments])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr


async def _seeded(url: str, now: datetime) -> datetime:
    store = await Store.open(DatabaseSettings(url=url))
    try:
        return await seed(store, now)
    finally:
        await store.close()


async def _audited(url: str) -> list[AuditRecord]:
    store = await Store.open(DatabaseSettings(url=url))
    try:
        async with store.transaction() as tx:
            return await tx.audit_entries()
    finally:
        await store.close()


def test_the_cli_writes_the_report_and_audits_it(tmp_path: Path) -> None:
    config = tmp_path / "custodes.yaml"
    db = tmp_path / "store.db"
    config.write_text(
        f"database:\n  url: sqlite+aiosqlite:///{db}\n  audit_checkpoint: {tmp_path / 'checkpoints.jsonl'}\n"
    )
    now, url = utcnow(), f"sqlite+aiosqlite:///{db}"
    last_review = asyncio.run(_seeded(url, now))
    out = tmp_path / "report.json"
    start, end = (now - timedelta(days=30)).date().isoformat(), now.date().isoformat()
    args = ["report", "compliance", "-c", str(config), "--framework", "hipaa", "--from", start, "--to", end]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.stdout
    report = orjson.loads(out.read_bytes())
    want = expected(now, last_review)
    assert report["measures"]["cases"] == want["cases"]
    assert report["measures"]["alerts"] == want["alerts"]
    entries = asyncio.run(_audited(url))
    assert entries[-1].action == "report.compliance" and entries[-1].actor.startswith("cli:")
    assert entries[-1].details == {"framework": "hipaa", **report["period"], "format": "json"}


def test_an_out_path_that_cannot_be_written_is_one_line_before_anything_is_audited(tmp_path: Path) -> None:
    """Once 'FileNotFoundError: [Errno 2] ...', exit 1, after the report was made and audited."""
    db = tmp_path / "store.db"
    config = tmp_path / "custodes.yaml"
    config.write_text(f"database:\n  url: sqlite+aiosqlite:///{db}\n")
    out = tmp_path / "absent" / "report.pdf"
    args = ["report", "compliance", "-c", str(config), "--framework", "soc2", "--from", "2026-11-01"]
    result = CliRunner().invoke(app, [*args, "--to", "2026-11-02", "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {out}: --out: no such folder to write the report in"
    assert not db.exists()  # refused before the store was opened: nothing audited


@pytest.fixture
async def api(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Store]]:
    monkeypatch.setenv("T_ANALYST", "tok-analyst-0123456789")
    monkeypatch.setenv("T_VIEWER", "tok-viewer-0123456789")
    settings = Settings.model_validate(
        {
            "server": {
                "api_tokens": [
                    {"name": "ann", "token": "env:T_ANALYST", "role": "analyst"},
                    {"name": "vic", "token": "env:T_VIEWER", "role": "viewer"},
                ]
            }
        }
    )
    settings.database = settings_for(database, tmp_path).database
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        await seed(services.store, utcnow())
        yield url, services.store


async def test_the_api_serves_each_format_to_an_analyst_and_audits_it(api: tuple[str, Store]) -> None:
    url, store = api
    now = utcnow()
    query = {"framework": "soc2", "from": (now - timedelta(days=30)).date().isoformat(), "to": now.date().isoformat()}
    analyst = {"Authorization": "Bearer tok-analyst-0123456789"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/reports/compliance", params=query, headers=analyst) as response:
            assert response.status == 200 and response.content_type == "application/json"
            report = await response.json()
        assert report["measures"]["containment"]["runs"] == 2
        assert report["measures"]["privileged_monitoring"]["coverage_percent"] == 66.7
        for fmt, media in (("html", "text/html"), ("pdf", "application/pdf")):
            params = {**query, "format": fmt}
            async with http.get(f"{url}/api/reports/compliance", params=params, headers=analyst) as response:
                assert response.status == 200 and response.content_type == media
                body = await response.read()
        assert len(PdfReader(io.BytesIO(body)).pages) >= 1
        viewer = {"Authorization": "Bearer tok-viewer-0123456789"}
        async with http.get(f"{url}/api/reports/compliance", params=query, headers=viewer) as response:
            assert response.status == 403
        for bad, field in (
            ({"framework": "sox"}, "framework"),
            ({"to": "2026-02-30"}, "to"),
            ({"format": "doc"}, "format"),
        ):
            async with http.get(f"{url}/api/reports/compliance", params={**query, **bad}, headers=analyst) as response:
                assert response.status == 400
                assert (await response.json())["error"]["field"] == field
        inverted = {**query, "from": query["to"], "to": query["from"]}
        async with http.get(f"{url}/api/reports/compliance", params=inverted, headers=analyst) as response:
            assert response.status == 200
            assert (await response.json())["measures"]["alerts"]["findings"] == 0
        early = {**query, "from": "0001-01-01T00:00:00+05:00", "to": "9999-12-31"}
        async with http.get(f"{url}/api/reports/compliance", params=early, headers=analyst) as response:
            assert response.status == 200
            assert (await response.json())["measures"]["alerts"]["findings"] == 4
    async with store.transaction() as tx:
        entries = [entry for entry in await tx.audit_entries() if entry.action == "report.compliance"]
    assert [(entry.actor, entry.details["format"]) for entry in entries] == [
        ("api:ann", "json"),
        ("api:ann", "html"),
        ("api:ann", "pdf"),
        ("api:ann", "json"),
        ("api:ann", "json"),
    ]
