"""`custodes inventory collect` (accounts, groups, roles, MFA from Entra ID, Okta and AWS IAM) and
`custodes access review` (dormant accounts, privileged accounts without MFA, unused access, SoD conflicts)."""

from __future__ import annotations

import getpass
import sys
from datetime import UTC, datetime
from typing import Annotated

import orjson
import typer
from rich.table import Table
from rich.text import Text

from custodes.cli.common import ConfigOption, JsonOption, console, run, settings_from
from custodes.cli.root import app
from custodes.durations import MAX_DAYS

inventory_app = typer.Typer(help="Identity inventory from Entra ID, Okta and AWS IAM.", no_args_is_help=True)
access_app = typer.Typer(help="Access reviews over the identity inventory.", no_args_is_help=True)
app.add_typer(inventory_app, name="inventory")
app.add_typer(access_app, name="access")


def _day(value: datetime | None) -> str:
    return "never" if value is None else value.astimezone(UTC).date().isoformat()


@inventory_app.command("collect")
def collect(
    config: ConfigOption = None,
    only: Annotated[
        list[str] | None, typer.Option("--connector", help="Only this configured connector (repeatable).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Read users, groups, roles, last sign-in and MFA state from every entra, okta and aws_iam connector."""
    import aiohttp

    from custodes.inventory.collect import collect_configured
    from custodes.store import Store

    async def work() -> None:
        settings = settings_from(config)
        store = await Store.open(settings.database)
        try:
            async with aiohttp.ClientSession() as http:
                outcomes = await collect_configured(settings, store, http, only)
        finally:
            await store.close()
        rows = [
            {"connector": o.connector, "kind": o.kind, "accounts": o.accounts, "warnings": o.warnings, "error": o.error}
            for o in outcomes
        ]
        if as_json:
            sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        else:
            table = Table(title="Identity inventory")
            for column in ("connector", "kind", "accounts", "warnings", "error"):
                table.add_column(column, justify="right" if column in ("accounts", "warnings") else "left")
            for o in outcomes:
                error = Text(o.error, style="red") if o.error else ""
                table.add_row(o.connector, o.kind, str(o.accounts), str(o.warnings), error)
            console.print(table)
        if any(o.error for o in outcomes):
            raise typer.Exit(1)

    run(work)


@access_app.command("review")
def review(
    config: ConfigOption = None,
    dormant_days: Annotated[
        int | None,
        typer.Option("--dormant-days", min=1, max=MAX_DAYS, help="Dormant after this many days without sign-in."),
    ] = None,
    unused_days: Annotated[
        int | None, typer.Option("--unused-days", min=1, max=MAX_DAYS, help="Access unused for this many days.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Dormant accounts, privileged accounts without MFA, access unused in N days and SoD conflicts; the counts
    are recorded in the audit log (`access.review`), the evidence of reviews done."""
    from custodes.inventory import review as reviewing
    from custodes.inventory.store import load_accounts
    from custodes.model import utcnow
    from custodes.store import Store

    async def work() -> None:
        settings = settings_from(config)
        store = await Store.open(settings.database)
        try:
            accounts = await load_accounts(store)
            result = reviewing.review(
                accounts, settings.access_review, utcnow(), dormant_days=dormant_days, unused_days=unused_days
            )
            async with store.transaction() as tx:
                figures = {**result.figures(), "accounts": len(accounts)}
                await tx.audit(f"cli:{getpass.getuser()}", "access.review", None, figures)
        finally:
            await store.close()
        if as_json:
            sys.stdout.write(orjson.dumps(result.to_json()).decode() + "\n")
            return
        console.print(f"{len(accounts)} accounts reviewed as of {result.as_of.isoformat(timespec='seconds')}")
        dormant = Table(title=f"Dormant accounts (no sign-in for {result.dormant_days} days)")
        for column in ("entity", "account", "login", "last activity", "idle days", "privileged"):
            dormant.add_column(column)
        for d in result.dormant:
            idle = "-" if d.idle_days is None else str(d.idle_days)
            mark = Text("yes", style="red") if d.privileged else "no"
            dormant.add_row(d.entity, d.account, d.login or "", _day(d.last_activity), idle, mark)
        no_mfa = Table(title="Privileged accounts without MFA")
        for column in ("entity", "account", "login", "privileges", "mfa"):
            no_mfa.add_column(column)
        for p in result.privileged_without_mfa:
            state = "unknown" if p.mfa is None else "no"
            no_mfa.add_row(p.entity, p.account, p.login or "", ", ".join(p.privileges), state)
        unused = Table(title=f"Access not used for {result.unused_days} days")
        for column in ("entity", "account", "kind", "access", "last used", "idle days"):
            unused.add_column(column)
        for u in result.unused_access:
            idle = "-" if u.idle_days is None else str(u.idle_days)
            unused.add_row(u.entity, u.account, u.kind, u.grant, _day(u.last_used), idle)
        sod = Table(title="Separation-of-duty conflicts")
        for column in ("entity", "roles", "held through"):
            sod.add_column(column)
        for c in result.sod_conflicts:
            through = "; ".join(f"{role}: {', '.join(accounts)}" for role, accounts in c.held_by.items())
            sod.add_row(c.entity, " + ".join(c.roles), through)
        for table in (dormant, no_mfa, unused, sod):
            console.print(table)
        if result.warnings:
            console.print(f"{len(result.warnings)} accounts carry vendor data warnings (see --json)", style="yellow")

    run(work)
