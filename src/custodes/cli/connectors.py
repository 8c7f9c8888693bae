"""`custodes connectors ...`: each pull connector's health, and backfills of a time range on demand."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from custodes.cli.app import app
from custodes.cli.common import ConfigOption, JsonOption, console, run, settings_from
from custodes.errors import CustodesError
from custodes.model import utcnow
from custodes.store import ConnectorStatus

connectors_app = typer.Typer(help="Pull connectors: status, backfill.", no_args_is_help=True)
app.add_typer(connectors_app, name="connectors")


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def status_json(status: ConnectorStatus, now: datetime) -> dict[str, Any]:
    """One connector's status as plain JSON (lag in seconds)."""
    lag = status.lag(now)
    return {
        "connector": status.connector,
        "kind": status.kind,
        "lag_seconds": None if lag is None else round(lag.total_seconds(), 1),
        "events_per_second": round(status.events_per_second, 1),
        "events_total": status.events_total,
        "last_round_events": status.last_round_events,
        "newest_event": _when(status.newest_event),
        "last_success": _when(status.last_success),
        "last_error": status.last_error,
        "last_error_at": _when(status.last_error_at),
        "consecutive_failures": status.consecutive_failures,
    }


def _lag_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@connectors_app.command("status")
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Per connector: lag behind its newest event, events/s of the last round, and the last error."""
    from custodes.store import Store

    async def work() -> None:
        settings = settings_from(config)
        store = await Store.open(settings.database)
        try:
            async with store.transaction() as tx:
                statuses = await tx.list_connector_status()
        finally:
            await store.close()
        now = utcnow()
        rows = [status_json(item, now) for item in statuses]
        known = {row["connector"] for row in rows}
        rows += [
            {
                "connector": name,
                "kind": entry.kind,
                "lag_seconds": None,
                "events_per_second": 0.0,
                "events_total": 0,
                "last_round_events": 0,
                "newest_event": None,
                "last_success": None,
                "last_error": None,
                "last_error_at": None,
                "consecutive_failures": 0,
            }
            for name, entry in sorted(settings.connectors.items())
            if name not in known
        ]
        if as_json:
            sys.stdout.write(orjson.dumps(rows).decode() + "\n")
            return
        table = Table(title="Connectors")
        for column in ("connector", "kind", "lag", "events/s", "events", "last success", "last error"):
            table.add_column(column, justify="right" if column in ("lag", "events/s", "events") else "left")
        for row in rows:
            failing = row["consecutive_failures"] > 0
            error = row["last_error"] or ""
            if failing:
                error = f"[red]{error}[/red] ({row['consecutive_failures']}x)"
            table.add_row(
                row["connector"],
                row["kind"],
                _lag_text(row["lag_seconds"]),
                f"{row['events_per_second']:.1f}",
                str(row["events_total"]),
                row["last_success"] or "never",
                error,
            )
        console.print(table)

    run(work)


def _parse_when(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CustodesError(f"{option}: not an ISO 8601 time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@connectors_app.command("backfill")
def backfill(
    name: Annotated[str, typer.Argument(help="Configured connector (connectors.<name>).")],
    start: Annotated[str, typer.Option("--from", help="Start of the range (ISO 8601; UTC unless it says).")],
    end: Annotated[str, typer.Option("--to", help="End of the range (ISO 8601).")],
    config: ConfigOption = None,
    playbooks: Annotated[bool, typer.Option(help="Run triggered playbooks.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Read a time range of one connector now; running the same range again resumes, then does nothing."""
    from custodes.connectors import registry
    from custodes.connectors.runtime import Backfillable, ConnectorRuntime
    from custodes.pipeline import IngestReport
    from custodes.services import Services

    async def work() -> None:
        settings = settings_from(config)
        first, last = _parse_when(start, "--from"), _parse_when(end, "--to")
        if last <= first:
            raise CustodesError("--to must be after --from")
        entry = settings.connectors.get(name)
        if entry is None:
            known = ", ".join(sorted(settings.connectors)) or "none configured"
            raise CustodesError(f"unknown connector {name!r} (configured: {known})")
        async with await Services.open(settings) as services:
            scheduled = registry.build(name, entry, settings, services.http)
            ranged = [item.connector for item in scheduled if isinstance(item.connector, Backfillable)]
            if not ranged:
                raise CustodesError(f"connector {name!r} ({entry.kind}) cannot backfill a time range")
            runtime = ConnectorRuntime(services.pipeline, run_playbooks=playbooks)
            report = IngestReport()
            for connector in ranged:
                report.add(await runtime.backfill(connector, first, last))
            if report.stored:
                report.add(await services.pipeline.settle(run_playbooks=playbooks))
        summary = {
            "connector": name,
            "from": _when(first),
            "to": _when(last),
            "received": report.received,
            "stored": report.stored,
            "duplicates": report.duplicates,
            "new_findings": len(report.new_findings),
        }
        if as_json:
            sys.stdout.write(orjson.dumps(summary).decode() + "\n")
            return
        table = Table(title=f"Backfill {name}")
        for key in summary:
            table.add_column(key.replace("_", " "))
        table.add_row(*(str(value) for value in summary.values()))
        console.print(table)

    run(work)


@connectors_app.command("late")
def late(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Per source: events stored with an absurd time (kept with their ingestion time and a warning) and events
    behaviour scoring received after their date had closed (a replay or backfill re-scores those days)."""
    from custodes.detections.scoring.service import late_by_source
    from custodes.store import Store
    from custodes.timewindow import OUT_OF_WINDOW

    async def work() -> None:
        settings = settings_from(config)
        store = await Store.open(settings.database)
        try:
            async with store.transaction() as tx:
                absurd = await tx.count_warned_events(OUT_OF_WINDOW)
                scoring = await late_by_source(tx)
        finally:
            await store.close()
        rows = [
            {"source": source, "out_of_window": absurd.get(source, 0), "late_for_scoring": scoring.get(source, 0)}
            for source in sorted(set(absurd) | set(scoring))
        ]
        if as_json:
            sys.stdout.write(orjson.dumps(rows).decode() + "\n")
            return
        if not rows:
            console.print("No late or out-of-window events.")
            return
        table = Table(title="Late and out-of-window events")
        for key in rows[0]:
            table.add_column(key.replace("_", " "), justify="left" if key == "source" else "right")
        for row in rows:
            table.add_row(*(str(value) for value in row.values()))
        console.print(table)

    run(work)
