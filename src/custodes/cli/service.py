"""Commands that run Custodes: serve, demo, replay."""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from custodes.cli.common import ConfigOption, JsonOption, console, run, settings_from
from custodes.cli.root import app
from custodes.config import Role
from custodes.errors import CustodesError


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.")] = None,
    role: Annotated[
        Role,
        typer.Option(
            help="all: everything in one process; receiver, worker or runner: one part of a cluster "
            "(RabbitMQ, PostgreSQL; see docs/architecture.md, Cluster)."
        ),
    ] = Role.ALL,
) -> None:
    """Serve the webhooks and the REST API until interrupted (or, with --role, one part of a cluster)."""
    from custodes.server.serve import serve_forever

    def work() -> Coroutine[Any, Any, None]:
        settings = settings_from(config)
        if host is not None:
            settings.server.host = host
        if port is not None:
            settings.server.port = port
        return serve_forever(settings, role)

    run(work)


@app.command()
def demo(
    once: Annotated[bool, typer.Option("--once", help="Print the results and exit instead of serving.")] = False,
    port: Annotated[int, typer.Option(help="API port for the demo (0 picks a free one).")] = 8080,
    project: Annotated[Path, typer.Option(help="Checkout holding detections/ and playbooks/.", file_okay=False)] = Path(
        "."
    ),
) -> None:
    """Run an insider story end to end against the sandbox: detect, suspend in Okta, notify, show results."""
    from custodes.demo.run import run_demo

    run(lambda: run_demo(project, port=port, once=once, console=console))


@app.command()
def replay(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Log files: NDJSON, JSON array, an API's or SIEM's export, auditd or syslog log, or CSV.", exists=False
        ),
    ],
    source: Annotated[str, typer.Option("--source", "-s", help="Configured source the files come from.")],
    config: ConfigOption = None,
    playbooks: Annotated[bool, typer.Option(help="Run triggered playbooks.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Replay log files through detection and response, resuming where an earlier replay stopped."""
    from custodes.connectors.files import FileConnector
    from custodes.services import Services

    async def work() -> None:
        settings = settings_from(config)
        source_settings = settings.source(source)
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise CustodesError(f"no such file: {', '.join(missing)}")
        async with await Services.open(settings) as services:
            services.pipeline.playbooks = services.pipeline.playbooks if playbooks else []
            name = "replay:" + source + ":" + ",".join(sorted(str(f.resolve()) for f in files))
            report = await services.pipeline.replay(FileConnector(name, source, source_settings, files), close=True)
        summary = {
            "received": report.received,
            "stored": report.stored,
            "duplicates": report.duplicates,
            "with_warnings": report.warnings,
            "new_findings": len(report.new_findings),
            "merged_findings": report.merged_findings,
            "runs": len(report.runs),
        }
        if as_json:
            sys.stdout.write(orjson.dumps(summary).decode() + "\n")
            return
        table = Table(title="Replay")
        for key in summary:
            table.add_column(key.replace("_", " "), justify="right")
        table.add_row(*(str(value) for value in summary.values()))
        console.print(table)

    run(work)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the configuration.", dir_okay=False)] = Path(
        "custodes.yaml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented custodes.yaml: every setting a first deployment touches, with its default."""
    from custodes.config import SHIPPED

    def work() -> None:
        if path.exists() and not force:
            raise CustodesError.at(path.absolute(), "exists already", hint="pass --force to overwrite it")
        try:
            path.write_text((SHIPPED / "custodes.yaml").read_text(encoding="utf-8"), encoding="utf-8")
        except OSError as exc:
            raise CustodesError.at(path.absolute(), f"cannot write: {exc.strerror}") from None
        console.print(
            f"wrote {path}; start with `custodes serve` (docs/configuration.md lists every setting)", soft_wrap=True
        )

    run(work)
