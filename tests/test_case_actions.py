"""Playbooks open, update and close cases through the case actions, and a run's undo takes each change back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from custodes.cases import book
from custodes.config import PlaybookSettings, ResponderSettings
from custodes.model import RunStatus
from custodes.playbooks.loader import load_playbooks
from custodes.playbooks.runner import Runner
from custodes.responder import catalog
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


@pytest.fixture
async def engine(store: Store, tmp_path: Path) -> AsyncIterator[Runner]:
    (tmp_path / "open.yml").write_text(OPEN)
    (tmp_path / "close.yml").write_text(CLOSE)
    loaded = load_playbooks([tmp_path], catalog)
    async with aiohttp.ClientSession() as http:
        yield Runner(store, catalog, ResponderSettings(), http, playbooks=loaded, engine=PlaybookSettings())


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
