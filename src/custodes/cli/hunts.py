"""`custodes hunt ...`: list the hunts, run one now over a time range."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from custodes.cli.common import ConfigOption, JsonOption, console, err, run, settings_from, styled
from custodes.cli.root import app
from custodes.errors import ConfigError
from custodes.model import utcnow

if TYPE_CHECKING:  # imported where used: `custodes --help` and other commands start without them
    from custodes.hunts.records import HuntRun

hunt_app = typer.Typer(help="Scheduled hunts: Sigma rules over a time window of a SIEM or CloudTrail.")
app.add_typer(hunt_app, name="hunt")

TimeOption = Annotated[str | None, typer.Option(help="ISO 8601 time, e.g. 2025-03-01T00:00:00Z.")]


def _time(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option}: not an ISO 8601 time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@hunt_app.command("list")
def list_hunts(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the hunts under `hunts.paths`: schedule, lookback, source and rule selection."""

    from custodes.hunts.definition import load_hunts

    def work() -> None:
        settings = settings_from(config)
        loaded = load_hunts(settings.hunts.paths, settings)
        rows = [
            {
                "name": item.hunt.name,
                "enabled": item.hunt.enabled,
                "schedule": item.hunt.schedule,
                "timezone": item.hunt.timezone,
                "lookback_seconds": item.hunt.lookback.total_seconds(),
                "connector": item.hunt.source.connector,
                "kind": settings.connectors[item.hunt.source.connector].kind
                if item.hunt.source.connector in settings.connectors
                else None,
                "rules": item.hunt.rules.model_dump(mode="json"),
                "file": str(item.file),
            }
            for item in loaded
        ]
        if as_json:
            console.print_json(orjson.dumps(rows).decode())
            return
        table = Table("hunt", "enabled", "schedule", "lookback", "source", "rules", "file")
        for item, row in zip(loaded, rows, strict=True):
            hunt = item.hunt
            chosen = ", ".join(hunt.rules.ids + [f"tag:{tag}" for tag in hunt.rules.tags]) or "all"
            where = ", ".join(map(str, hunt.rules.paths)) or "detection.rules"
            table.add_row(
                hunt.name,
                "yes" if hunt.enabled else "no",
                f"{hunt.schedule or '-'} ({hunt.timezone})",
                f"{hunt.lookback.total_seconds():g} s",
                f"{hunt.source.connector} ({row['kind'] or 'not configured'})",
                f"{chosen} from {where}",
                str(item.file),
            )
        console.print(table)

    run(work)


@hunt_app.command("run")
def run_hunt(
    name: Annotated[str, typer.Argument(help="The hunt's name.")],
    start: Annotated[str | None, typer.Option("--from", help="Window start (default: --to less the lookback).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Window end, exclusive (default: now).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a hunt now over [--from, --to): findings are stored and trigger playbooks, and the run is recorded."""
    from custodes.hunts.definition import load_hunts
    from custodes.hunts.runner import HuntRunner
    from custodes.services import Services

    async def work() -> None:
        settings = settings_from(config)
        loaded = load_hunts(settings.hunts.paths, settings)
        until = _time(end, "--to") if end is not None else utcnow()
        async with await Services.open(settings) as services:
            runner = HuntRunner(settings, services.pipeline, loaded)
            hunt = runner.hunt(name)
            since = _time(start, "--from") if start is not None else until - hunt.lookback
            if since >= until:
                raise ConfigError("--from must be before --to")
            plan = runner.plan(name)
            columns = (
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=err, transient=True, disable=as_json or not err.is_terminal) as bar:
                task = bar.add_task(f"hunt {name}", total=max(plan.steps, 1))
                steps: list[str] = []

                def progress(step: str, scanned: int) -> None:
                    if step not in steps:
                        steps.append(step)
                    bar.update(task, completed=len(steps) - 1, description=f"{step}: {scanned} events read")

                result = await runner.run(name, since, until, progress=progress)
                bar.update(task, completed=max(plan.steps, 1))
        assert result is not None  # an ad-hoc run claims no slot
        _report(result, as_json)
        if result.status == "failed":
            raise typer.Exit(1)

    run(work)


def _report(result: HuntRun, as_json: bool) -> None:
    if as_json:
        console.print_json(orjson.dumps(result.as_json()).decode())
        return
    console.print(
        Text.assemble(
            "hunt ",
            (result.hunt, "bold"),
            f" {result.status}: [{result.window_start.isoformat()}, {result.window_end.isoformat()}), "
            f"{result.events_scanned} events read, {len(result.findings)} findings",
        )
    )
    table = Table("rule", "how", "query or reason")
    for item in result.pushed_down:
        table.add_row(str(item["title"]), "pushed down", str(item["query"]))
    for item in result.in_process:
        table.add_row(str(item["title"]), "in process", str(item["reason"]))
    console.print(table)
    if result.error:
        err.print(styled("error:", "red", f" {result.error}"), highlight=False)
