"""`custodes report compliance`: the evidence Custodes holds for a framework's controls over a period."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer

from custodes.cli.common import ConfigOption, console, run, settings_from
from custodes.cli.root import app
from custodes.errors import CustodesError

report_app = typer.Typer(help="Reports from the store.", no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("compliance")
def compliance(
    framework: Annotated[str, typer.Option("--framework", help="soc2, iso27001, hipaa, cmmc or pcidss.")],
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD) or date-time (ISO 8601, UTC).")],
    end: Annotated[str, typer.Option("--to", help="Last day, included (YYYY-MM-DD), or date-time (excluded).")],
    fmt: Annotated[str, typer.Option("--format", help="json, html or pdf.")] = "json",
    out: Annotated[
        Path | None, typer.Option("--out", dir_okay=False, help="Write the report here (default: standard output).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Each control of the framework with the figures from the store for the period: access reviews, privileged
    monitoring coverage, alerts investigated, cases and time to triage, containment actions, audit-log
    verification (docs/compliance.md). Recorded in the audit log."""
    from custodes.reports.compliance import check_format, check_framework, period_of
    from custodes.reports.produce import produce
    from custodes.store import Store

    async def work() -> None:
        check_framework(framework)
        check_format(fmt)
        period = period_of(start, end)
        if out is not None and not out.absolute().parent.is_dir():  # before the report is made and audited
            raise CustodesError.at(out.absolute(), "--out: no such folder to write the report in")
        settings = settings_from(config)
        store = await Store.open(settings.database)
        try:
            data = await produce(store, settings, framework, period, fmt, f"cli:{getpass.getuser()}")
        finally:
            await store.close()
        if out is None:
            sys.stdout.buffer.write(data)
            return
        try:
            out.write_bytes(data)
        except OSError as exc:
            raise CustodesError.at(out.absolute(), f"--out: cannot write the report: {exc.strerror}") from None
        console.print(f"compliance report ({framework}, {fmt}) written to {out}", highlight=False, soft_wrap=True)

    run(work)
