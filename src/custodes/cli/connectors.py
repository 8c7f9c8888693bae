"""`custodes connectors ...`: each pull connector's health, start and stop in the running service, one round or a
backfill of a time range on demand."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import orjson
import typer
from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text

from custodes.cli.common import ConfigOption, JsonOption, console, err, run, settings_from
from custodes.cli.root import app
from custodes.config import Settings, resolve_secret
from custodes.errors import CustodesError, describe
from custodes.model import utcnow

if TYPE_CHECKING:  # the pipeline and the store (SQLAlchemy) are imported only by the commands that use them
    from custodes.connectors.base import Batch
    from custodes.connectors.runtime import Progress
    from custodes.pipeline import IngestReport
    from custodes.store import ConnectorStatus

connectors_app = typer.Typer(
    help="Pull connectors: status, start and stop in `custodes serve`, poll once, backfill.", no_args_is_help=True
)
app.add_typer(connectors_app, name="connectors")
ConnectorArgument = Annotated[str, typer.Argument(help="Configured connector (connectors.<name>).")]


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
def status(
    name: Annotated[
        str | None, typer.Argument(help="Only this configured connector (and its feeds, e.g. NAME/signins).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per connector: lag behind its newest event, events/s of the last round, and the last error (read from
    the store, so it works whether or not `custodes serve` runs)."""
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
                "connector": configured,
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
            for configured, entry in sorted(settings.connectors.items())
            if configured not in known
        ]
        if name is not None:
            if name not in settings.connectors and name not in known:
                raise CustodesError(_unknown(name, settings.connectors))
            rows = [row for row in rows if row["connector"] == name or row["connector"].startswith(f"{name}/")]
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
                error = Text.assemble((error, "red"), f" ({row['consecutive_failures']}x)")
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
    name: ConnectorArgument,
    start: Annotated[str, typer.Option("--from", help="Start of the range (ISO 8601; UTC unless it says).")],
    end: Annotated[str, typer.Option("--to", help="End of the range (ISO 8601).")],
    config: ConfigOption = None,
    playbooks: Annotated[bool, typer.Option(help="Run triggered playbooks.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Read a time range of one connector now; running the same range again resumes, then does nothing."""
    from custodes.connectors import registry, sdk
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
            raise CustodesError(_unknown(name, settings.connectors))
        async with await Services.open(settings) as services:
            scheduled = registry.build(name, entry, settings, services.http)
            ranged = [item.connector for item in scheduled if isinstance(item.connector, Backfillable)]
            if not ranged:
                raise CustodesError(f"connector {name!r} ({entry.kind}) cannot backfill a time range")
            runtime = ConnectorRuntime(services.pipeline, run_playbooks=playbooks)
            report = IngestReport()
            with time_progress(first, last, quiet=as_json) as advance:
                for connector in ranged:
                    try:
                        report.add(await runtime.backfill(connector, first, last, progress=advance))
                    except CustodesError:
                        raise
                    except Exception as exc:
                        raise failure(name, connector.name, exc) from None
                    finally:
                        await sdk.close(connector)
            if report.stored:
                report.add(await services.pipeline.settle(run_playbooks=playbooks))
        summary = {
            "connector": name,
            "from": _when(first),
            "to": _when(last),
            **_counts(report),
        }
        if as_json:
            sys.stdout.write(orjson.dumps(summary).decode() + "\n")
            return
        _print_table(f"Backfill {name}", [summary])

    run(work)


REFUSED = ("http_401", "http_403", "unauthorized", "forbidden", "access_denied")


def failure(entry: str, connector: str, error: Exception) -> CustodesError:
    """A connector's failure as one line, with what to check: its credentials when the source refused them,
    else its options (address) and the source's health."""
    code = str(getattr(error, "code", "")).lower()
    text = describe(error)
    if code in REFUSED or " 401" in text or " 403" in text:
        hint = f"the source refused the credential: check connectors.{entry}.credentials (and its permissions)"
    else:
        hint = f"check connectors.{entry}.options (the address) and that the source is up"
    return CustodesError(f"{connector}: {text}", hint=hint)


def _unknown(name: str, configured: Mapping[str, object]) -> str:
    return f"unknown connector {name!r} (configured under connectors: {', '.join(sorted(configured)) or 'none'})"


@contextmanager
def time_progress(first: datetime, last: datetime, *, quiet: bool) -> Iterator[Progress]:
    """A Rich progress bar over [first, last): each committed batch advances it to its newest event (ranges are
    read oldest first by most sources; a newest-first source jumps to the end with its last page)."""
    span = (last - first).total_seconds()
    bar = RichProgress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[events]} events"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet or not err.is_terminal,
        transient=True,
    )
    with bar:
        task = bar.add_task("backfill", total=span, events=0)
        seen = 0

        def advance(batch: Batch, report: IngestReport) -> None:
            nonlocal seen
            seen += report.received
            newest = max((event.time for event in batch.events), default=None)
            if newest is not None:
                bar.update(task, completed=min(span, max(0.0, (newest - first).total_seconds())))
            bar.update(task, events=seen)

        yield advance
        bar.update(task, completed=span)


def _service(url: str | None, settings: Settings) -> str:
    if url:
        return url.rstrip("/")
    host = settings.server.host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{settings.server.port}"  # noqa: S104


async def _call_service(method: str, url: str, token: str, path: str) -> dict[str, Any]:
    """One REST call to the running service; its refusal or absence becomes one clear error line."""
    import aiohttp

    try:
        presented = resolve_secret(token).reveal()
    except ValueError as exc:
        raise CustodesError(
            f"--token: {exc}", hint="an API token of server.api_tokens, as env:NAME or file:/path"
        ) from None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        try:
            async with http.request(method, url + path, headers={"Authorization": f"Bearer {presented}"}) as answer:
                body = await answer.read()
                status = answer.status
        except aiohttp.ClientError as exc:
            raise CustodesError(
                f"cannot reach custodes serve at {url}: {describe(exc)}",
                hint="start `custodes serve`, or give its address with --url or CUSTODES_URL",
            ) from None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if status >= 400 or not isinstance(document, dict):
        message = document.get("message") if isinstance(document, dict) else None
        raise CustodesError(f"{url}{path}: HTTP {status}: {message or body[:200].decode(errors='replace')}")
    return document


TOKEN_REFERENCE = "env:CUSTODES_API_TOKEN"  # noqa: S105 - a reference to the token, not one
UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="CUSTODES_URL", help="The running service (default: http://server.host:server.port)."),
]
TokenOption = Annotated[
    str,
    typer.Option("--token", help="An admin API token of server.api_tokens, as a reference: env:NAME or file:/path."),
]


def _control_command(action: str, doc: str) -> None:
    """Register `custodes connectors <action>`, which has the running service (through its REST API) `action` a
    connector; `doc` is the command's help."""

    def command(
        name: ConnectorArgument,
        config: ConfigOption = None,
        url: UrlOption = None,
        token: TokenOption = TOKEN_REFERENCE,
        as_json: JsonOption = False,
    ) -> None:
        async def work() -> None:
            settings = settings_from(config)
            base = _service(url, settings)
            answer = await _call_service("POST", base, token, f"/api/connectors/{quote(name, safe='')}/{action}")
            if as_json:
                sys.stdout.write(orjson.dumps(answer).decode() + "\n")
                return
            console.print(f"{answer['name']} ({answer['kind']}): {answer['state']} - {', '.join(answer['connectors'])}")

        run(work)

    command.__doc__ = doc
    connectors_app.command(action)(command)


_control_command(
    "start", "Start a connector in the running `custodes serve` (through its REST API; needs an admin token)."
)
_control_command(
    "stop",
    """Stop a connector in the running `custodes serve` once its batch under way is committed; it stays stopped
    until `start` or a restart of the service (set `enabled: false` to keep it off).""",
)


@connectors_app.command("poll")
def poll(
    name: ConnectorArgument,
    config: ConfigOption = None,
    playbooks: Annotated[bool, typer.Option(help="Run triggered playbooks.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Run one round of a connector now, from its checkpoint (any kind, e.g. drain a CloudTrail SQS queue once);
    do not run it while `custodes serve` polls the same connector."""
    from custodes.connectors import registry, sdk
    from custodes.connectors.runtime import ConnectorRuntime
    from custodes.services import Services

    async def work() -> None:
        settings = settings_from(config)
        entry = settings.connectors.get(name)
        if entry is None:
            raise CustodesError(_unknown(name, settings.connectors))
        rows = []
        async with await Services.open(settings) as services:
            runtime = ConnectorRuntime(services.pipeline, run_playbooks=playbooks)
            for item in registry.build(name, entry, settings, services.http):
                try:
                    report = await runtime.poll(item.connector, kind=entry.kind)
                except CustodesError:
                    raise
                except Exception as exc:
                    raise failure(name, item.connector.name, exc) from None
                finally:
                    await sdk.close(item.connector)
                rows.append({"connector": item.connector.name, **_counts(report)})
        if as_json:
            sys.stdout.write(orjson.dumps(rows).decode() + "\n")
            return
        _print_table(f"Poll {name}", rows)

    run(work)


@connectors_app.command("late")
def late(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Per source: events stored with an absurd time (kept with their ingestion time and a warning) and events
    behaviour scoring received after their date had closed (a replay or backfill re-scores those days), and events
    held from scoring while a slower live source catches up."""
    from custodes.detections.scoring.service import held_by_source, late_by_source
    from custodes.store import Store
    from custodes.timewindow import OUT_OF_WINDOW

    async def work() -> None:
        settings = settings_from(config)
        store = await Store.open(settings.database)
        try:
            async with store.transaction() as tx:
                absurd = await tx.count_warned_events(OUT_OF_WINDOW)
                scoring = await late_by_source(tx)
                held = await held_by_source(tx)
        finally:
            await store.close()
        rows = [
            {
                "source": source,
                "out_of_window": absurd.get(source, 0),
                "late_for_scoring": scoring.get(source, 0),
                "held": held.get(source, 0),
            }
            for source in sorted(set(absurd) | set(scoring) | set(held))
        ]
        if as_json:
            sys.stdout.write(orjson.dumps(rows).decode() + "\n")
            return
        if not rows:
            console.print("No late, held or out-of-window events.")
            return
        _print_table("Late, held and out-of-window events", rows)

    run(work)


def _counts(report: IngestReport) -> dict[str, int]:
    """What a round or a backfill did, as the connector commands print it."""
    return {
        "received": report.received,
        "stored": report.stored,
        "duplicates": report.duplicates,
        "new_findings": len(report.new_findings),
    }


def _print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Rows of one shape as a Rich table: a column per key, counts aligned right."""
    table = Table(title=title)
    for key in rows[0] if rows else ("connector",):
        table.add_column(
            key.replace("_", " "), justify="left" if key in ("connector", "source", "from", "to") else "right"
        )
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    console.print(table)
