"""Validation of the graph and guards (located), lint, the published JSON Schema, and playbook test files:
the shipped playbooks' own tests pass, and a wrong expectation fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.errors import CustodesError
from custodes.playbooks.loader import lint, load_playbooks
from custodes.playbooks.schema import json_schema
from custodes.playbooks.testing import cases_file_for, run_tests
from custodes.responder import catalog

ROOT = Path(__file__).resolve().parents[1]
BASE = """\
name: graph
trigger: {manual: true}
steps:
  - id: a
    needs: [c]
    uses: notify.webhook
    with: {channel: soc, text: a}
  - id: b
    needs: [a, ghost]
    uses: notify.webhook
    on_error: {goto: nowhere}
    with: {channel: soc, text: "{{ item }}"}
  - id: c
    needs: [b]
    uses: okta.suspend_user
    with: {user: x}
"""


def test_graph_and_guard_problems_are_located(tmp_path: Path) -> None:
    path = tmp_path / "graph.yml"
    path.write_text(BASE)
    with pytest.raises(CustodesError) as caught:
        load_playbooks([path], catalog)
    text = str(caught.value)
    assert f"{path}:9:16 (steps.1.needs.1): needs names an unknown step 'ghost'" in text
    assert f"{path}:11:22 (steps.1.on_error.goto): unknown step 'nowhere'" in text
    assert f"{path}:5:5 (steps.0.needs): steps a -> b -> c -> a form a cycle" in text
    assert f"{path}:15:11 (steps.2.uses): okta.suspend_user is destructive: give the step an approval" in text
    assert "unknown variable 'item'" in text


def test_lint_warns_about_unattended_destruction(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text(
        "name: p\ntrigger:\n  findings: {}\nsteps:\n  - id: s\n    if: entity is not none\n"
        "    uses: okta.suspend_user\n    on_error: continue\n    with: {user: '{{ entity }}'}\n"
    )
    [item] = load_playbooks([path], catalog)
    warnings = [str(w) for w in lint(item, catalog)]
    assert f"{path}:1:1 (name): no description: say what the playbook is for" in warnings
    assert f"{path}:3:3 (trigger.findings): the trigger matches every finding" in warnings
    assert f"{path}:7:11 (steps.0.uses): okta.suspend_user runs without approval" in warnings
    assert f"{path}:8:5 (steps.0.on_error): a failed destructive step is ignored" in warnings


def test_the_committed_json_schema_is_current() -> None:
    committed = (ROOT / "docs" / "playbook.schema.json").read_text()
    assert committed == json_schema(), "run: custodes playbook schema > docs/playbook.schema.json"
    assert '"approval"' in committed and '"for_each"' in committed and '"needs"' in committed


async def test_every_shipped_playbook_has_passing_tests() -> None:
    loaded = load_playbooks([ROOT / "playbooks"], catalog)
    names = {item.playbook.name for item in loaded}
    assert names >= {
        "departing-employee-data-theft",
        "compromised-account",
        "privileged-self-escalation",
        "mass-download",
        "logging-tampering",
    }
    tested = 0
    for item in loaded:
        file = cases_file_for(item.file)
        assert file is not None, item.file
        results = await run_tests(file, loaded, catalog)
        assert [r.failures for r in results if not r.ok] == []
        tested += len(results)
    assert tested >= 20


async def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    loaded = load_playbooks([ROOT / "playbooks"], catalog)
    file = tmp_path / "x.tests.yaml"
    file.write_text(
        "playbook: mass-download\ncases:\n  - name: wrong\n    finding: {severity: high, entity: a@b.c}\n"
        "    approve: {suspend: [lead]}\n    results: {okta.suspend_user: {changed: true}}\n    expect:\n"
        "      status: failed\n      not_called: [okta.suspend_user]\n"
        "      calls: [{action: okta.suspend_user, with: {user: z@b.c}}]\n"
    )
    [result] = await run_tests(file, loaded, catalog)
    assert result.failures[0].startswith("run status is succeeded, expected failed")
    assert "okta.suspend_user was called" in result.failures
    assert any(f.startswith("no call okta.suspend_user with {'user': 'z@b.c'}") for f in result.failures)
