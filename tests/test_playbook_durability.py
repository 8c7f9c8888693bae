"""A worker killed mid-run (a real `python -m custodes` process) is resumed by the reaper in a new process,
and no completed side effect happens twice: checked through the simulators' own request logs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from aiohttp import web

from custodes.config import DatabaseSettings
from custodes.model import RunStatus
from custodes.playbooks.runner import AFTER_CRASH
from custodes.sandbox import chat, okta
from custodes.sandbox.server import running
from custodes.store import Store

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = """\
name: kill-test
version: 1
trigger:
  manual: true
inputs:
  user: {type: string, required: true}
steps:
  - id: tell
    uses: notify.webhook
    with: {channel: soc, text: "containing {{ inputs.user }}"}
  - id: suspend
    if: inputs.user != ''
    uses: okta.suspend_user
    with: {user: "{{ inputs.user }}"}
  - id: confirm
    needs: [suspend]
    uses: notify.webhook
    with: {channel: soc, text: "suspended: {{ steps.suspend.result.changed }}"}
"""


async def custodes(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "custodes",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def config_file(tmp_path: Path, database: DatabaseSettings, okta_url: str) -> Path:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "kill-test.yml").write_text(PLAYBOOK)
    config = {
        "database": database.model_dump(exclude_none=True),
        "detection": {"rules": []},
        "playbooks": {"paths": [str(tmp_path / "playbooks")], "stale_after_seconds": 0.2},
        "responder": {
            "okta": {"base_url": okta_url, "token": "env:T_OKTA"},
            "channels": {"soc": {"url": "env:T_HOOK"}},
        },
        "server": {"api_tokens": [{"name": "ops", "token": "env:T_OPS", "role": "analyst"}]},
    }
    path = tmp_path / "custodes.yaml"
    path.write_text(orjson.dumps(config).decode())
    return path


async def test_a_worker_killed_between_request_and_commit_resumes_without_repeating(
    tmp_path: Path, database: DatabaseSettings
) -> None:
    org, room = okta.OktaState(token="tok"), chat.ChatState()
    org.add_user("alice@example.com")
    worker: list[asyncio.subprocess.Process] = []

    @web.middleware
    async def kill_after_suspend(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if request.method == "POST" and request.path.endswith("/lifecycle/suspend") and worker:
            worker[0].send_signal(signal.SIGKILL)  # Okta made the change; the worker never hears about it
            await worker[0].wait()
        return response

    app = okta.create_app(org)
    app.middlewares.append(kill_after_suspend)
    async with running(app) as okta_url, running(chat.create_app(room)) as chat_url:
        env = {"T_OKTA": "tok", "T_HOOK": f"{chat_url}/hooks/soc", "T_OPS": "ops-token-0123456789"}
        config = str(config_file(tmp_path, database, okta_url))
        proc = await custodes(
            "playbook",
            "run",
            "kill-test",
            "-c",
            config,
            "-i",
            "user=alice@example.com",
            "--token",
            "env:T_OPS",
            env=env,
        )
        worker.append(proc)
        await asyncio.wait_for(proc.wait(), 60)
        assert proc.returncode == -signal.SIGKILL
        store = await Store.open(database)
        try:
            async with store.transaction() as tx:
                [run] = await tx.list_runs()
            assert run.status is RunStatus.RUNNING
            assert {s.step_id: s.status for s in run.steps} == {
                "tell": RunStatus.SUCCEEDED,
                "suspend": RunStatus.RUNNING,
            }
            assert org.find_user("alice@example.com")["status"] == "SUSPENDED"  # type: ignore[index]
            await asyncio.sleep(0.3)  # past stale_after_seconds: the dead worker's heartbeat is stale
            reaper = await custodes("run", "reap", "-c", config, "--json", env=env)
            out, errors = await asyncio.wait_for(reaper.communicate(), 60)
            assert reaper.returncode == 0, errors.decode()
            [reaped] = orjson.loads(out)
            assert reaped["id"] == run.id and reaped["status"] == "succeeded", reaped
            async with store.transaction() as tx:
                final = await tx.get_run(run.id)
                audit = [entry.action for entry in await tx.audit_entries() if entry.subject == run.id]
        finally:
            await store.close()
        suspends = [r for r in org.mutations() if r.path.endswith("/lifecycle/suspend")]
        assert len(suspends) == 1  # the mutation Okta completed before the kill was not sent again
        # the resumed call found alice suspended already: that was this run's change, so it counts as one
        assert [m["text"] for m in room.messages_for("soc")] == ["containing alice@example.com", "suspended: True"]
        assert final is not None and final.resumes == 1
        steps = {s.step_id: s for s in final.steps}
        assert steps["suspend"].result == {
            "changed": True,
            "after_crash": AFTER_CRASH,
            "status": "SUSPENDED",
            "user_id": org.find_user("alice@example.com")["id"],  # type: ignore[index]
            "login": "alice@example.com",
        }
        assert steps["suspend"].attempt == 2 and steps["tell"].attempt == 1
        assert "run.reaped" in audit and audit[-1] == "run.finished"
        # so undo reverts it; an undo that failed (Okta refused the token) is tried again by the next undo
        for token, outcome in (("wrong", "failed"), ("tok", "succeeded")):
            undo = await custodes(
                "run", "undo", run.id, "-c", config, "--token", "env:T_OPS", env={**env, "T_OKTA": token}
            )
            out, errors = await asyncio.wait_for(undo.communicate(), 60)
            assert undo.returncode == 0 and "undo.suspend okta.unsuspend_user" in out.decode(), errors.decode()
            assert outcome in out.decode(), out.decode()
    assert org.find_user("alice@example.com")["status"] == "ACTIVE"  # type: ignore[index]
