"""`custodes playbook ...`: validate, lint, plan, run, test and back-test response playbooks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from custodes.cli.common import (
    ConfigOption,
    JsonOption,
    TokenOption,
    console,
    days_within,
    err,
    identify,
    run,
    settings_from,
    styled,
)
from custodes.cli.root import app
from custodes.errors import CustodesError

playbook_app = typer.Typer(help="Work with response playbooks.", no_args_is_help=True)
app.add_typer(playbook_app, name="playbook")

PathsArgument = Annotated[list[Path], typer.Argument(help="Playbook files or folders.")]
InputOption = Annotated[list[str], typer.Option("--input", "-i", help="An input as name=value (repeatable).")]
EntityOption = Annotated[str | None, typer.Option(help="The entity (person) the run is about.")]


def _load(paths: list[Path]) -> Any:
    from custodes.playbooks.loader import load_playbooks
    from custodes.responder import catalog

    loaded = load_playbooks(paths, catalog)
    if not loaded:
        raise CustodesError(f"no playbooks found under {', '.join(str(p) for p in paths)}")
    return loaded


def _pick(loaded: Any, name: str | None) -> Any:
    if name is None:
        if len(loaded) != 1:
            raise CustodesError("several playbooks are loaded: name one with --name")
        return loaded[0]
    for item in loaded:
        if item.playbook.name == name:
            return item
    raise CustodesError(f"no playbook named {name!r} (loaded: {', '.join(i.playbook.name for i in loaded)})")


@playbook_app.command("validate")
def playbook_validate(paths: PathsArgument, config: ConfigOption = None) -> None:
    """Check playbooks: schema, actions, arguments, step graph, expressions; each error at file:line:column.

    With --config, also the secrets, webhook receivers and notify channels they name against that configuration."""

    def work() -> None:
        loaded = _load(paths)
        if config is not None:
            from custodes.playbooks.loader import load_playbooks, unconfigured_channels
            from custodes.responder import catalog

            settings = settings_from(config)
            loaded = load_playbooks(paths, catalog, secrets=settings.playbooks.secrets, receivers=settings.webhooks)
            problems = unconfigured_channels(loaded, settings.responder.channels)
            if problems:
                raise CustodesError(problems, hint="add the channel under responder.channels, or fix the step")
        for item in loaded:
            console.print(styled("ok", "green", f" {item.file} ({item.playbook.name} v{item.playbook.version})"))

    run(work)


@playbook_app.command("lint")
def playbook_lint(paths: PathsArgument) -> None:
    """Validate, then warn about what works but deserves a second look (exit 1 on warnings)."""
    from custodes.playbooks.loader import lint
    from custodes.responder import catalog

    def work() -> None:
        warnings = [problem for item in _load(paths) for problem in lint(item, catalog)]
        for problem in warnings:
            err.print(styled("warning:", "yellow", f" {problem}"), highlight=False, soft_wrap=True)
        console.print(f"{len(warnings)} warning(s)")
        if warnings:
            raise typer.Exit(1)

    run(work)


@playbook_app.command("schema")
def playbook_schema() -> None:
    """Print the playbook JSON Schema (for editor completion; docs/playbook.schema.json is the same)."""
    from custodes.playbooks.schema import json_schema

    sys.stdout.write(json_schema())


@playbook_app.command("plan")
def playbook_plan(
    paths: PathsArgument,
    name: Annotated[str | None, typer.Option(help="The playbook, when PATHS hold several.")] = None,
    entity: EntityOption = None,
    inputs: InputOption = [],  # noqa: B006 (Typer reads the default)
    severity: Annotated[str, typer.Option(help="Severity of the finding to plan for.")] = "high",
    rule: Annotated[str, typer.Option(help="Rule id of the finding to plan for.")] = "manual",
    as_json: JsonOption = False,
) -> None:
    """Show exactly what a playbook would do to whom, calling nothing (a dry run on a scratch store)."""
    from custodes.model import Finding, Severity, utcnow
    from custodes.playbooks.testing import describe_only, parse_inputs, scratch_runner
    from custodes.responder import catalog

    async def work() -> None:
        loaded = _load(paths)
        item = _pick(loaded, name)
        now = utcnow()
        finding = Finding("plan", "plan", "plan", rule, rule, Severity.parse(severity), entity, [], [], now, now)
        async with scratch_runner(catalog, loaded, describe_only) as runner:
            result = await runner.start_manual(
                item, dict(parse_inputs(inputs)), requested_by="plan", finding=finding, dry_run=True
            )
        plan = [
            {
                "step": s.step_id,
                "status": s.status.value,
                "would": (s.result or {}).get("would"),
                "target": s.target,
                "error": s.error,
            }
            for s in result.steps
        ]
        if as_json:
            sys.stdout.write(orjson.dumps(plan).decode() + "\n")
            return
        for entry in plan:
            what = entry["would"] or entry["error"] or ""
            console.print(f"{entry['step']:<24} {entry['status']:<10} {what}", highlight=False)

    run(work)


@playbook_app.command("run")
def playbook_run(
    name: Annotated[str, typer.Argument(help="The playbook to start (its trigger must allow manual runs).")],
    config: ConfigOption = None,
    entity: EntityOption = None,
    inputs: InputOption = [],  # noqa: B006 (Typer reads the default)
    token: TokenOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Describe actions instead of doing them.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Start a playbook by hand, as your API token (analyst role), and drive it until it finishes or waits for
    approval."""
    from custodes.cli.runs import print_run
    from custodes.playbooks.testing import parse_inputs
    from custodes.services import Services

    async def work() -> None:
        settings = settings_from(config)
        person = identify(settings, token, "analyst")[0]
        async with await Services.open(settings) as services:
            item = _pick(services.playbooks, name)
            if not item.playbook.trigger.manual:
                raise CustodesError(f"{name} cannot be started by hand: its trigger has no 'manual: true'")
            result = await services.runner.start_manual(
                item, dict(parse_inputs(inputs)), requested_by=person, entity=entity, dry_run=dry_run
            )
        print_run(result, as_json)

    run(work)


@playbook_app.command("test")
def playbook_test(paths: PathsArgument) -> None:
    """Run the test cases in each playbook's `<name>.tests.yaml` (no network; exit 1 if any fails)."""
    from custodes.playbooks.testing import cases_file_for, run_tests
    from custodes.responder import catalog

    async def work() -> None:
        loaded = _load(paths)
        files = sorted({f for f in (cases_file_for(item.file) for item in loaded) if f is not None})
        if not files:
            raise CustodesError("no <playbook>.tests.yaml files next to the playbooks")
        failed = total = 0
        for file in files:
            for result in await run_tests(file, loaded, catalog):
                total += 1
                if result.ok:
                    console.print(styled("PASS", "green", f" {file.name}: {result.name}"), highlight=False)
                    continue
                failed += 1
                console.print(styled("FAIL", "red", f" {file.name}: {result.name}"), highlight=False)
                for failure in result.failures:
                    console.print(f"    {failure}", highlight=False)
        console.print(f"{total - failed} passed, {failed} failed")
        if failed:
            raise typer.Exit(1)

    run(work)


@playbook_app.command("backtest")
def playbook_backtest(
    paths: PathsArgument,
    config: ConfigOption = None,
    name: Annotated[str | None, typer.Option(help="The playbook, when PATHS hold several.")] = None,
    days: Annotated[float, typer.Option(callback=days_within, help="How many days of stored findings to replay.")] = 30,
    as_json: JsonOption = False,
) -> None:
    """Replay stored findings through a draft playbook in dry run: which steps would fire, against whom, how often."""
    from custodes.playbooks.testing import backtest
    from custodes.responder import catalog
    from custodes.store import Store

    async def work() -> None:
        loaded = _load(paths)
        item = _pick(loaded, name)
        store = await Store.open(settings_from(config).database)
        try:
            report = await backtest(store, item, catalog, days=days, playbooks=loaded)
        finally:
            await store.close()
        steps: dict[str, dict[str, Any]] = {
            sid: {"fired": f.fired, "skipped": f.skipped, "failed": f.failed, "targets": dict(f.targets)}
            for sid, f in report.steps.items()
        }
        if as_json:
            out = {"findings": report.findings, "matched": report.matched, "runs": dict(report.runs), "steps": steps}
            sys.stdout.write(orjson.dumps(out).decode() + "\n")
            return
        console.print(f"{report.findings} finding(s) in {days:g} day(s); {report.matched} would trigger the playbook")
        table = Table("step", "fired", "skipped", "failed", "against (most often)")
        for sid, row in steps.items():
            top = ", ".join(f"{t} x{n}" for t, n in sorted(row["targets"].items(), key=lambda kv: -kv[1])[:5])
            table.add_row(sid, str(row["fired"]), str(row["skipped"]), str(row["failed"]), top)
        console.print(table)

    run(work)
