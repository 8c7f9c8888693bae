"""Playbooks open, update and close cases through the case actions, and a run's undo takes each change back (an
escalation's restriction and legal hold too)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from conftest import custody_whats
from custodes.cases import book
from custodes.cases.hold import prune_evidence
from custodes.config import EvidenceSettings, PlaybookSettings, ResponderSettings
from custodes.model import RunStatus
from custodes.playbooks.loader import LoadedPlaybook, load_playbooks
from custodes.playbooks.runner import Runner
from custodes.responder import catalog
from custodes.responder.evidence import recorded_bundle
from custodes.responder.registry import ActionContext
from custodes.store import Store

OPEN = """\
name: open-case
trigger: {manual: true}
inputs:
  user: {type: string, required: true}
steps:
  - id: open
    uses: case.open
    with: {subject: "{{ inputs.user }}", title: "Mass download by {{ inputs.user }}", priority: high}
  - id: investigate
    uses: case.update
    with: {case: "{{ inputs.user }}", status: investigating, assignee: ann}
"""
CLOSE = """\
name: close-case
trigger: {manual: true}
inputs:
  user: {type: string, required: true}
steps:
  - id: close
    uses: case.close
    with: {case: "{{ inputs.user }}", disposition: benign, reason: "handover before leaving"}
"""
ESCALATE = """\
name: escalate-case
trigger: {manual: true}
inputs:
  user: {type: string, required: true}
steps:
  - id: escalate
    uses: case.update
    with: {case: "{{ inputs.user }}", status: escalated_legal, need_to_know: [lee], reason: "counsel asked"}
"""


@pytest.fixture
async def engine(store: Store, tmp_path: Path) -> AsyncIterator[Runner]:
    (tmp_path / "open.yml").write_text(OPEN)
    (tmp_path / "close.yml").write_text(CLOSE)
    (tmp_path / "escalate.yml").write_text(ESCALATE)
    loaded = load_playbooks([tmp_path], catalog)
    settings = ResponderSettings(evidence=EvidenceSettings(directory=tmp_path / "evidence"))
    async with aiohttp.ClientSession() as http:
        yield Runner(store, catalog, settings, http, playbooks=loaded, engine=PlaybookSettings())


def playbook(engine: Runner, name: str) -> LoadedPlaybook:
    return next(p for p in engine.playbooks.values() if p.playbook.name == name)


async def case_of(store: Store, subject: str) -> dict[str, object]:
    async with store.transaction() as tx:
        rows = await book.list_cases(tx, principal="", subject=subject, include_restricted=True)
    assert len(rows) == 1
    return rows[0]


async def test_playbooks_open_update_and_close_a_case_and_undo_each(engine: Runner, store: Store) -> None:
    opener, closer = (
        next(p for p in engine.playbooks.values() if p.playbook.name == n) for n in ("open-case", "close-case")
    )
    opened = await engine.start_manual(opener, {"user": "alice@example.com"}, requested_by="ann")
    assert opened.status is RunStatus.SUCCEEDED, opened.error
    case = await case_of(store, "alice@example.com")
    assert case["status"] == "investigating" and case["assignee"] == "ann" and case["priority"] == "high"
    assert case["first_triaged_at"] is not None

    closed = await engine.start_manual(closer, {"user": "alice@example.com"}, requested_by="ann")
    assert closed.status is RunStatus.SUCCEEDED, closed.error
    case = await case_of(store, "alice@example.com")
    assert case["status"] == "closed" and case["disposition"] == "benign"

    [reopened] = await engine.undo(closed.id, "lead")
    assert reopened.action == "case.revert" and reopened.status is RunStatus.SUCCEEDED
    case = await case_of(store, "alice@example.com")
    assert case["status"] == "investigating" and case["disposition"] is None and case["closed_at"] is None

    undone = await engine.undo(opened.id, "lead")
    assert [step.action for step in undone] == ["case.revert", "case.withdraw"]
    case = await case_of(store, "alice@example.com")
    assert case["status"] == "closed" and case["disposition"] is None
    async with store.transaction() as tx:
        kinds = [event["kind"] for event in await book.timeline(tx, str(case["id"]))]
    assert kinds[0] == "opened" and kinds[-1] == "withdrawn"
    assert (await engine.undo(opened.id, "lead"))[0].attempt == 1, "undoing again changes nothing more"


async def test_undoing_an_escalation_lifts_its_restriction_and_legal_hold(engine: Runner, store: Store) -> None:
    person = "alice@example.com"
    assert (await engine.start_manual(playbook(engine, "open-case"), {"user": person}, requested_by="ann")).status
    now = datetime.now(UTC)
    collect = catalog.get("evidence.collect")
    ctx = ActionContext(engine.settings, engine.http, "bundle/1", store=store, actor="ann")
    window = {"entity": person, "since": now - timedelta(days=1), "until": now, "reason": "INC-7"}
    made = await collect.fn(ctx, **collect.validate(window))
    bundle = str(made["bundle_id"])

    escalated = await engine.start_manual(playbook(engine, "escalate-case"), {"user": person}, requested_by="ann")
    assert escalated.status is RunStatus.SUCCEEDED, escalated.error
    case = await case_of(store, person)
    assert case["status"] == "escalated_legal" and case["restricted"] and case["legal_hold"]
    async with store.transaction() as tx:
        assert sorted(await book.access_list(tx, str(case["id"]))) == ["ann", "lee"]
        row = await recorded_bundle(tx, bundle)
    assert row is not None
    settings = engine.settings.evidence
    whats = custody_whats(row["location"], settings)
    assert whats[-1] == f"legal hold placed (case {case['id']})", "the playbook's escalation holds the evidence"
    assert (await prune_evidence(store, settings, timedelta(0), "retention")).refused == {bundle: [case["id"]]}

    [reverted] = await engine.undo(escalated.id, "lead")
    assert reverted.action == "case.revert" and reverted.status is RunStatus.SUCCEEDED, reverted.error
    case = await case_of(store, person)
    assert case["status"] == "investigating" and not case["restricted"] and not case["legal_hold"]
    whats = custody_whats(row["location"], settings)
    assert whats[-1] == f"legal hold lifted (case {case['id']})"
    async with store.transaction() as tx:
        kinds = [event["kind"] for event in await book.timeline(tx, str(case["id"]))]
    assert kinds[-4:] == ["hold_lifted", "bundle_released", "updated", "unrestricted"]
    assert (await prune_evidence(store, settings, timedelta(0), "retention")).deleted == [bundle]
