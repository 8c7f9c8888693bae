"""The playbook engine: graph, for_each, retry, approvals on a hashed plan, guardrails, undo, secrets, entity
locks, sub-playbooks, the audit chain; actions against the Okta and chat simulators over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from custodes.config import PlaybookSettings, ResponderSettings
from custodes.errors import CustodesError
from custodes.model import RunStatus
from custodes.playbooks.loader import LoadedPlaybook, load_playbooks
from custodes.playbooks.runner import EngineError, Runner
from custodes.responder import catalog, http
from custodes.responder.registry import ActionContext, Registry
from custodes.sandbox import chat, okta
from custodes.sandbox.server import running
from custodes.store import Store
from custodes.store.tables import audit_log


@dataclass
class World:
    org: okta.OktaState
    room: chat.ChatState
    settings: ResponderSettings
    session: aiohttp.ClientSession


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "retry_policy", http.RetryPolicy(attempts=1, max_wait=0.01, backoff=0.001))


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    org, room = okta.OktaState(token="tok"), chat.ChatState()
    for login in ("alice@example.com", "bob@example.com", "ceo@example.com"):
        org.add_user(login)
    async with (
        running(okta.create_app(org)) as okta_url,
        running(chat.create_app(room)) as chat_url,
        aiohttp.ClientSession() as session,
    ):
        monkeypatch.setenv("T_OKTA", "tok")
        monkeypatch.setenv("T_HOOK", f"{chat_url}/hooks/soc")
        monkeypatch.setenv("T_API_KEY", "sk-live-7d1e9a")
        settings = ResponderSettings.model_validate(
            {
                "okta": {"base_url": okta_url, "token": "env:T_OKTA"},
                "channels": {"soc": {"url": "env:T_HOOK"}},
                "protected_accounts": ["ceo@example.com"],
            }
        )
        yield World(org, room, settings, session)


def load(tmp_path: Path, *texts: str) -> list[LoadedPlaybook]:
    for index, text in enumerate(texts):
        (tmp_path / f"p{index}.yml").write_text(text)
    return load_playbooks([tmp_path], catalog)


def runner(store: Store, world: World, loaded: list[LoadedPlaybook], **engine: Any) -> Runner:
    settings = PlaybookSettings.model_validate({"secrets": {"api_key": "env:T_API_KEY"}, **engine})
    return Runner(store, catalog, world.settings, world.session, playbooks=loaded, engine=settings)


def texts(world: World) -> list[str]:
    return [m["text"] for m in world.room.messages_for("soc")]


GRAPH = """\
name: graph
trigger: {manual: true}
inputs:
  users: {type: list, required: true}
steps:
  - id: suspend_all
    if: inputs.users | length > 0
    uses: okta.suspend_user
    for_each: inputs.users
    concurrency: 2
    on_error: continue
    with: {user: "{{ item }}"}
  - id: after_all
    needs: [suspend_all, tell]
    uses: notify.webhook
    with: {channel: soc, text: all}
  - id: after_any
    needs: [suspend_all, tell]
    join: any
    uses: notify.webhook
    with: {channel: soc, text: "any {{ steps.suspend_all.result.count }}"}
  - id: tell
    uses: notify.webhook
    with: {channel: soc, text: "key {{ secrets.api_key }}"}
outputs:
  suspended: >-
    {{ steps.suspend_all.result['items'] | reject('none') | selectattr('changed') | map(attribute='login') | list }}
"""


async def test_graph_for_each_joins_outputs_and_secrets(tmp_path: Path, store: Store, world: World) -> None:
    loaded = load(tmp_path, GRAPH)
    users = ["alice@example.com", "nobody@example.com", "bob@example.com"]
    run = await runner(store, world, loaded).start_manual(loaded[0], {"users": users}, requested_by="ann")
    steps = {s.step_id: s for s in run.steps}
    assert [s for s in steps if s.startswith("suspend_all[")] == [f"suspend_all[{i}]" for i in range(3)]
    assert steps["suspend_all"].status is RunStatus.FAILED and "1 of 3 items failed" in (
        steps["suspend_all"].error or ""
    )
    assert steps["suspend_all[1]"].error is not None and "E0000007" in steps["suspend_all[1]"].error
    assert steps["after_all"].status is RunStatus.SKIPPED and steps["after_any"].status is RunStatus.SUCCEEDED
    assert run.status is RunStatus.SUCCEEDED and run.outputs == {"suspended": ["alice@example.com", "bob@example.com"]}
    assert [s.step_id for s in run.steps if "[" not in s.step_id][:1] == ["suspend_all"]
    assert texts(world) == ["key sk-live-7d1e9a", "any 3"]  # the secret reaches the chat system ...
    async with store.transaction() as tx:
        stored = await tx.get_run(run.id)
        audit = await tx.audit_entries()
    assert stored is not None and stored.steps[-1].arguments["text"] == "key ***"  # ... and nothing else
    assert "sk-live-7d1e9a" not in str([e.details for e in audit]) + str([s.arguments for s in stored.steps])


RETRY = """\
name: retry
trigger: {manual: true}
steps:
  - id: tell
    uses: notify.webhook
    retry: {attempts: 3, backoff: 0.01, on: [retryable]}
    with: {channel: soc, text: hello}
  - id: broken
    uses: notify.webhook
    retry: {attempts: 3, backoff: 0.01}
    on_error: {goto: cleanup}
    with: {channel: nowhere, text: x}
  - id: never
    uses: notify.webhook
    with: {channel: soc, text: never}
  - id: cleanup
    uses: notify.webhook
    with: {channel: soc, text: "cleanup after {{ steps.broken.error }}"}
"""


async def test_retry_with_backoff_and_goto_handler(tmp_path: Path, store: Store, world: World) -> None:
    loaded = load(tmp_path, RETRY)
    world.room.fail_next(2, status=503)
    run = await runner(store, world, loaded).start_manual(loaded[0], {}, requested_by="ann")
    steps = {s.step_id: s for s in run.steps}
    assert steps["tell"].status is RunStatus.SUCCEEDED and steps["tell"].attempt == 3
    assert world.room.attempts["soc"] == 4
    assert steps["broken"].attempt == 1  # not_configured is not a retryable error
    assert run.status is RunStatus.FAILED and "never" not in steps
    assert texts(world)[-1].startswith("cleanup after unknown notify channel 'nowhere'")


APPROVAL = """\
name: approve
trigger: {manual: true}
inputs:
  user: {type: string, required: true}
steps:
  - id: suspend
    uses: okta.suspend_user
    approval: {approvers: [lead, cio, ann], count: 2, expires_after: 1h}
    with: {user: "{{ inputs.user }}"}
  - id: tell
    uses: notify.webhook
    with: {channel: soc, text: "{{ steps.suspend.status }}"}
"""


async def test_approval_applies_to_the_hashed_plan_with_separation_of_duties(
    tmp_path: Path, store: Store, world: World
) -> None:
    loaded = load(tmp_path, APPROVAL)
    engine = runner(store, world, loaded)
    run = await engine.start_manual(loaded[0], {"user": "alice@example.com"}, requested_by="ann")
    assert run.status is RunStatus.WAITING and world.org.mutations() == [] and world.org.requests == []
    [step] = run.steps
    assert step.plan is not None and step.plan[0]["description"] == "suspend alice@example.com in Okta"
    assert step.plan_hash is not None
    for person, digest, message in [
        ("ann", step.plan_hash, "separation of duties"),
        ("eve", step.plan_hash, "not an approver"),
        ("lead", "0" * 64, "plan hash does not match"),
    ]:
        with pytest.raises(EngineError, match=message):
            await engine.decide(run.id, "suspend", person, approve=True, plan_hash=digest)
    half = await engine.decide(run.id, "suspend", "lead", approve=True, plan_hash=step.plan_hash[:12])
    assert half.status is RunStatus.WAITING and world.org.mutations() == []
    with pytest.raises(EngineError, match="already decided"):
        await engine.decide(run.id, "suspend", "lead", approve=True, plan_hash=step.plan_hash)
    done = await engine.decide(run.id, "suspend", "cio", approve=True, plan_hash=step.plan_hash)
    assert done.status is RunStatus.SUCCEEDED and len(world.org.mutations()) == 1
    assert texts(world) == ["succeeded"]
    denied = await engine.start_manual(loaded[0], {"user": "bob@example.com"}, requested_by="ann")
    denied_hash = denied.steps[0].plan_hash
    assert denied_hash is not None and denied_hash != step.plan_hash
    result = await engine.decide(denied.id, "suspend", "cio", approve=False, plan_hash=denied_hash)
    assert result.status is RunStatus.FAILED and "denied by cio" in (result.error or "")
    async with store.transaction() as tx:
        actions = [e.action for e in await tx.audit_entries()]
    assert actions.count("approval.requested") == 2 and actions.count("approval.granted") == 2
    assert "approval.denied" in actions


async def test_expired_approvals_and_entity_lock_queue(tmp_path: Path, store: Store, world: World) -> None:
    loaded = load(tmp_path, APPROVAL.replace("expires_after: 1h", "expires_after: 0.5, on_expiry: skip"))
    engine = runner(store, world, loaded)
    first = await engine.start_manual(loaded[0], {"user": "alice@example.com"}, requested_by="ann", entity="Alice")
    second = await engine.start_manual(loaded[0], {"user": "alice@example.com"}, requested_by="ann", entity="alice")
    assert first.status is RunStatus.WAITING and second.status is RunStatus.PENDING
    assert (await engine.resume(second.id)).status is RunStatus.PENDING  # still behind the first
    import asyncio

    await asyncio.sleep(0.6)
    touched = {r.id: r.status for r in await engine.reap()}
    assert touched[first.id] is RunStatus.SUCCEEDED  # the expired step was skipped, the run went on
    async with store.transaction() as tx:
        after = await tx.get_run(first.id)
        queued = await tx.get_run(second.id)
    assert after is not None and after.steps[0].status is RunStatus.SKIPPED
    assert queued is not None and queued.status is RunStatus.WAITING  # started once the lock was free
    assert world.org.mutations() == []


GUARDED = """\
name: guarded
trigger: {manual: true}
inputs:
  user: {type: string, required: true}
steps:
  - id: suspend
    if: "true"
    uses: okta.suspend_user
    with: {user: "{{ inputs.user }}"}
"""


async def test_guardrails_protected_kill_switch_cap_dry_run_and_undo(
    tmp_path: Path, store: Store, world: World
) -> None:
    loaded = load(tmp_path, GUARDED.replace("name: guarded", "name: guarded\nentity_lock: false"))
    engine = runner(store, world, loaded, max_destructive_per_hour=1)
    protected = await engine.start_manual(loaded[0], {"user": "CEO@example.com"}, requested_by="ann")
    assert "protected_account" in (protected.error or "") and world.org.requests == []
    await engine.set_kill_switch(True, "ann")
    stopped = await engine.start_manual(loaded[0], {"user": "alice@example.com"}, requested_by="ann")
    assert "kill_switch" in (stopped.error or "") and world.org.requests == []
    await engine.set_kill_switch(False, "ann")
    dry = await engine.start_manual(loaded[0], {"user": "alice@example.com"}, requested_by="ann", dry_run=True)
    assert dry.steps[0].result == {"changed": False, "dry_run": True, "would": "suspend alice@example.com in Okta"}
    done = await engine.start_manual(loaded[0], {"user": "alice@example.com"}, requested_by="ann")
    capped = await engine.start_manual(loaded[0], {"user": "bob@example.com"}, requested_by="ann")
    assert done.status is RunStatus.SUCCEEDED and "rate_cap" in (capped.error or "")
    assert len(world.org.mutations()) == 1
    [undone] = await engine.undo(done.id, "lead")
    assert undone.status is RunStatus.SUCCEEDED and undone.action == "okta.unsuspend_user"
    assert world.org.find_user("alice@example.com")["status"] == "ACTIVE"  # type: ignore[index]
    [again] = await engine.undo(done.id, "lead")
    assert again.attempt == 1 and len(world.org.mutations()) == 2  # undoing again repeats nothing


async def test_a_generic_guard_covers_every_destructive_action(store: Store, world: World, tmp_path: Path) -> None:
    registry = Registry()
    called: list[str] = []

    @registry.action("test.lock", destructive=True, target="account", plan="lock {account}")
    async def lock(ctx: ActionContext, *, account: str) -> dict[str, Any]:
        called.append(account)
        return {"changed": True}

    text = "name: g\ntrigger: {manual: true}\nsteps:\n  - id: a\n    if: 'true'\n    uses: test.lock\n"
    (tmp_path / "g.yml").write_text(text + "    with: {account: ceo@example.com}\n")
    [item] = load_playbooks([tmp_path / "g.yml"], registry)
    run = await Runner(store, registry, world.settings, world.session).start_manual(item, {}, requested_by="x")
    assert run.status is RunStatus.FAILED and "protected_account" in (run.error or "") and called == []


SUB = """\
name: child
version: 3
trigger: {manual: true}
inputs:
  user: {type: string, required: true}
steps:
  - id: tell
    uses: notify.webhook
    with: {channel: soc, text: "child for {{ inputs.user }}"}
outputs:
  said: "child for {{ inputs.user }}"
"""
PARENT = """\
name: parent
trigger: {manual: true}
steps:
  - id: call
    playbook: child@3
    with: {user: alice}
  - id: echo
    uses: notify.webhook
    with: {channel: soc, text: "{{ steps.call.result.outputs.said }}"}
"""


async def test_sub_playbooks_are_pinned_and_pass_outputs(tmp_path: Path, store: Store, world: World) -> None:
    loaded = load(tmp_path, SUB, PARENT)
    parent = next(item for item in loaded if item.playbook.name == "parent")
    run = await runner(store, world, loaded).start_manual(parent, {}, requested_by="ann")
    assert run.status is RunStatus.SUCCEEDED and texts(world) == ["child for alice", "child for alice"]
    with pytest.raises(CustodesError, match=r"p1.yml:5:15 \(steps.0.playbook\): no playbook child@2 is loaded"):
        load(tmp_path, SUB, PARENT.replace("child@3", "child@2"))


async def test_audit_verify_detects_an_edited_row(tmp_path: Path, store: Store, world: World) -> None:
    loaded = load(tmp_path, GUARDED)
    await runner(store, world, loaded).start_manual(loaded[0], {"user": "alice@example.com"}, requested_by="ann")
    async with store.transaction() as tx:
        report = await tx.verify_audit()
    assert report.ok and report.checked >= 4
    async with store.transaction() as tx:
        await tx.conn.execute(sa.update(audit_log).where(audit_log.c.seq == 2).values(actor="mallory"))
    async with store.transaction() as tx:
        tampered = await tx.verify_audit()
    assert not tampered.ok and tampered.broken_seq == 2 and tampered.checked == 1
