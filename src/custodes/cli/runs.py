"""`custodes run ...`: look at playbook runs, approve or deny their steps, resume, reap, undo, kill switch."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table
from rich.text import Text

from custodes.cli.common import ConfigOption, JsonOption, TokenOption, console, identify, run, settings_from
from custodes.cli.root import app
from custodes.model import Run

run_app = typer.Typer(
    help="Playbook runs: list, show, approve, deny, resume, reap, undo, cancel; the kill switch.", no_args_is_help=True
)
app.add_typer(run_app, name="run")


def run_json(item: Run) -> dict[str, Any]:
    """A run and its steps as plain JSON."""
    return {
        "id": item.id,
        "playbook": f"{item.playbook}@{item.playbook_version}",
        "status": item.status.value,
        "entity": item.entity,
        "dry_run": item.dry_run,
        "requested_by": item.requested_by,
        "error": item.error,
        "outputs": item.outputs,
        "steps": [
            {
                "step": s.step_id,
                "action": s.action,
                "status": s.status.value,
                "target": s.target,
                "attempt": s.attempt,
                "arguments": s.arguments,
                "result": s.result,
                "error": s.error,
                "plan": s.plan,
                "plan_hash": s.plan_hash,
                "expires_at": s.expires_at.isoformat() if s.expires_at else None,
            }
            for s in item.steps
        ],
    }


def print_run(item: Run, as_json: bool) -> None:
    """Print a run: JSON, or a table of steps followed by any plan waiting for approval."""
    if as_json:
        sys.stdout.write(orjson.dumps(run_json(item)).decode() + "\n")
        return
    console.print(
        Text.assemble(f"run {item.id} {item.playbook}@{item.playbook_version}: ", (item.status.value, "bold"))
    )
    if item.error:
        console.print(f"  error: {item.error}", highlight=False)
    table = Table("step", "action", "status", "target", "detail")
    for s in item.steps:
        detail = s.error or (orjson.dumps(s.result).decode() if s.result else "")
        table.add_row(s.step_id, s.action, s.status.value, s.target or "", detail[:100])
    console.print(table)
    for s in item.steps:
        if s.plan_hash and s.status.value == "waiting":
            console.print(f"step {s.step_id} waits for approval of plan {s.plan_hash}:")
            for entry in s.plan or []:
                console.print(f"  - {entry['description']}", highlight=False)


def _with_runner(config: Any, body: Callable[[Any], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    from custodes.services import Services

    async def work() -> None:
        async with await Services.open(settings_from(config)) as services:
            await body(services)

    return work


def _as(config: Any, token: str | None, role: str) -> str:
    """Who a command acts as: the name of the API token presented, which must hold `role`."""
    return identify(settings_from(config), token, role)[0]


@run_app.command("list")
def run_list(config: ConfigOption = None, limit: int = 20, as_json: JsonOption = False) -> None:
    """The newest runs."""

    async def body(services: Any) -> None:
        async with services.store.transaction() as tx:
            runs = await tx.list_runs(limit=limit)
        if as_json:
            sys.stdout.write(orjson.dumps([run_json(r) for r in runs]).decode() + "\n")
            return
        table = Table("run", "playbook", "status", "entity", "created")
        for r in runs:
            table.add_row(r.id, f"{r.playbook}@{r.playbook_version}", r.status.value, r.entity or "", str(r.created_at))
        console.print(table)

    run(_with_runner(config, body))


@run_app.command("show")
def run_show(run_id: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """A run's steps, and the exact plan (with its hash) of any step waiting for approval."""
    from custodes.playbooks.runner import EngineError

    async def body(services: Any) -> None:
        async with services.store.transaction() as tx:
            found = await tx.get_run(run_id)
        if found is None:
            raise EngineError(f"no run {run_id!r}")
        print_run(found, as_json)

    run(_with_runner(config, body))


def _decide(approve: bool) -> Callable[..., None]:
    def command(
        run_id: str,
        step: str,
        plan: Annotated[str, typer.Option("--plan", help="The plan hash you reviewed (at least 12 characters).")],
        token: TokenOption = None,
        comment: Annotated[str | None, typer.Option(help="Why.")] = None,
        config: ConfigOption = None,
        as_json: JsonOption = False,
    ) -> None:
        async def body(services: Any) -> None:
            person = _as(config, token, "approver")
            result = await services.runner.decide(
                run_id, step, person, approve=approve, plan_hash=plan, comment=comment
            )
            print_run(result, as_json)

        run(_with_runner(config, body))

    command.__doc__ = (
        "Approve" if approve else "Deny"
    ) + " a waiting step's plan as your API token (approver role); the run continues once decided."
    return command


run_app.command("approve")(_decide(True))
run_app.command("deny")(_decide(False))


@run_app.command("resume")
def run_resume(run_id: str, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Continue a run whose worker stopped (or that waits on a decision already made)."""

    async def body(services: Any) -> None:
        print_run(await services.runner.resume(run_id), as_json)

    run(_with_runner(config, body))


@run_app.command("reap")
def run_reap(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Resume or fail runs whose worker stopped heartbeating; apply expired approvals; start queued runs."""

    async def body(services: Any) -> None:
        touched = await services.runner.reap()
        if as_json:
            sys.stdout.write(orjson.dumps([run_json(r) for r in touched]).decode() + "\n")
            return
        for item in touched:
            console.print(f"{item.id} {item.playbook}: {item.status.value}")
        console.print(f"{len(touched)} run(s) reaped")

    run(_with_runner(config, body))


@run_app.command("undo")
def run_undo(run_id: str, token: TokenOption = None, config: ConfigOption = None) -> None:
    """Revert a run's changes with each action's registered inverse (a false positive); analyst role."""

    async def body(services: Any) -> None:
        records = await services.runner.undo(run_id, _as(config, token, "analyst"))
        for record in records:
            console.print(f"{record.step_id} {record.action} {record.target or ''}: {record.status.value}")
        console.print(f"{len(records)} change(s) reverted" if records else "nothing to revert")

    run(_with_runner(config, body))


@run_app.command("cancel")
def run_cancel(run_id: str, token: TokenOption = None, config: ConfigOption = None) -> None:
    """Cancel a run: pending or waiting at once; running stops before its next step (the one in flight finishes);
    analyst role."""

    async def body(services: Any) -> None:
        item = await services.runner.cancel(run_id, _as(config, token, "analyst"))
        if item.status.value == "running":
            console.print(f"{item.id} {item.playbook}: running; it stops before its next step")
        else:
            console.print(f"{item.id} {item.playbook}: {item.status.value}")

    run(_with_runner(config, body))


@run_app.command("kill-switch")
def run_kill_switch(
    state: Annotated[str, typer.Argument(help="on, off or status")],
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Stop every action of every run at once (on), allow them again (off), or show it (status); on and off need
    the admin role."""
    from custodes.errors import CustodesError
    from custodes.playbooks.runner import KILL_SWITCH

    async def body(services: Any) -> None:
        if state == "status":
            async with services.store.transaction() as tx:
                value = await tx.get_control(KILL_SWITCH)
        elif state in {"on", "off"}:
            value = state == "on"
            await services.runner.set_kill_switch(value, _as(config, token, "admin"))
        else:
            raise CustodesError(f"kill-switch takes on, off or status, not {state!r}")
        console.print(f"kill switch: {'on' if value else 'off'}")

    run(_with_runner(config, body))
