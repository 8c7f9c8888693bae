"""`custodes audit ...`: the hash-chained audit log."""

from __future__ import annotations

from typing import Any

import typer

from custodes.cli.app import app
from custodes.cli.common import ConfigOption, console, err, run, settings_from

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(config: ConfigOption = None) -> None:
    """Recompute the audit chain; exit 1 naming the first entry that was changed, removed or inserted."""
    from custodes.store import Store

    async def work() -> Any:
        store = await Store.open(settings_from(config).database)
        try:
            async with store.transaction() as tx:
                report = await tx.verify_audit()
        finally:
            await store.close()
        if not report.ok:
            err.print(
                f"[red]tampered:[/red] audit entry {report.broken_seq}: {report.reason} "
                f"({report.checked} entries before it verified)",
                highlight=False,
            )
            raise typer.Exit(1)
        console.print(f"audit log intact: {report.checked} entries verified")

    run(work)
