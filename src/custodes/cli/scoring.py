"""Behaviour scoring commands: `simulate`, `eval scoring`, `entity explain`, `entity reidentify`, `directory check`."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.table import Table
from rich.text import Text

from custodes.cli.common import ConfigOption, JsonOption, TokenOption, console, identify, progress, run, settings_from
from custodes.cli.root import app
from custodes.errors import CustodesError

if TYPE_CHECKING:
    from custodes.detections.scoring.evaluate import InData, ScenarioResult

eval_app = typer.Typer(help="Measure detection against labelled data.", no_args_is_help=True)
entity_app = typer.Typer(help="Entities: risk explanations and re-identification.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(entity_app, name="entity")
MISSED_REASONS = 3
"""How many of a missed incident's best day's reasons the table shows (--json has them all)."""


@app.command()
def simulate(
    out: Annotated[
        Path, typer.Argument(help="Folder for the NDJSON files, directory.json and labels.", file_okay=False)
    ],
    population: Annotated[int, typer.Option(help="People in the organisation.")] = 300,
    days: Annotated[int, typer.Option(help="Days simulated.")] = 42,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    noise: Annotated[float, typer.Option(help="Rate of benign anomalies (travel, new devices, ...), 1 = usual.")] = 1.0,
    shape: Annotated[
        str,
        typer.Option(
            help="Organisation shape: office, noisy (roaming admins, heavy USB, travel), subtle (noisy, small acts), "
            "endpoint (noisy, endpoint records only, bare directory), devices (endpoint, logons and removable media "
            "only), desktops (devices with screen unlocks, shared machines, after-hours habits, missing logons)."
        ),
    ] = "office",
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", help="Scenario to inject (repeat; default: all).")
    ] = None,
    insiders: Annotated[int | None, typer.Option(help="Incidents to inject (default: population/100).")] = None,
    warmup_days: Annotated[
        int | None, typer.Option(help="Quiet days before any incident (default: 21, or --days - 10 if shorter).")
    ] = None,
    layout: Annotated[
        str,
        typer.Option(
            help="ndjson, or cert: with --shape devices or desktops, also the CERT datasets' logon.csv, device.csv, "
            "LDAP.csv and answers/ (release sim), for `eval scoring` as on the datasets."
        ),
    ] = "ndjson",
    as_json: JsonOption = False,
) -> None:
    """Generate an organisation's raw vendor logs with insider scenarios injected, plus labels."""
    from custodes.detections.scoring.simulate import DEVICE_SHAPES, SCENARIOS, SimulationSettings, simulate

    def work() -> None:
        if layout not in ("ndjson", "cert"):
            raise CustodesError(f"unknown --layout {layout!r}: ndjson or cert")
        if layout == "cert" and shape not in DEVICE_SHAPES:
            raise CustodesError(
                f"--layout cert writes logons and devices only: use --shape {' or '.join(DEVICE_SHAPES)}"
            )
        knobs = SimulationSettings(
            population=population,
            days=days,
            seed=seed,
            noise=noise,
            shape=shape,
            scenarios=tuple(scenario) if scenario else SCENARIOS,
            insiders=insiders,
            warmup_days=min(21, max(1, days - 10)) if warmup_days is None else warmup_days,
        )
        try:
            with progress("simulating days", days) as show:
                result = simulate(knobs, out, show)
        except ValueError as exc:
            raise CustodesError(str(exc)) from None
        summary = {
            "files": [str(f) for f in result.files],
            "events": result.events,
            "people": len(result.people),
            "incidents": len({label.incident for label in result.labels}),
            "directory": str(out / "directory.json"),
            "labels": str(out / "labels.json"),
        }
        if layout == "cert":
            from custodes.detections.scoring.cert_layout import write_cert

            summary["cert"] = [str(f) for f in write_cert(result, out)]
        if as_json:
            sys.stdout.write(orjson.dumps(summary).decode() + "\n")
            return
        console.print(
            f"{sum(result.events.values())} events from {len(result.people)} people over {days} days, "
            f"{summary['incidents']} incidents; labels in {summary['labels']}"
            + ("; CERT layout: logon.csv, device.csv, LDAP.csv, answers/ (--dataset sim)" if layout == "cert" else "")
        )

    run(work)


@eval_app.command("scoring")
def eval_scoring(
    events: Annotated[list[Path], typer.Option("--events", help="Log files (any layout `replay` reads); repeat.")],
    labels: Annotated[
        Path,
        typer.Option(
            "--labels",
            help="Labels: JSON or CSV (incident, scenario, person, role, start, end), or a CERT dataset's answers "
            "(insiders.csv, or its folder with the insiders' details files).",
        ),
    ],
    directory: Annotated[Path | None, typer.Option(help="People file (default: scoring.directory).")] = None,
    budget_share: Annotated[
        float | None,
        typer.Option(help="Daily review budget as a share of people (default: scoring.review_budget)."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="With CERT answers for several releases: the one the events are from (e.g. 4.2)."),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score log files and report recall at daily budgets, percentiles, delays and false findings."""
    from custodes.detections.scoring.evaluate import evaluate, load_labels

    def work() -> None:
        settings = settings_from(config).scoring.model_copy()
        if directory is not None:
            settings.directory = directory
        settings.pseudonymise = False
        missing = [str(f) for f in [*events, labels] if not f.exists()]
        if missing:
            raise CustodesError(f"no such file: {', '.join(missing)}")
        label_warnings: list[str] = []
        rows = load_labels(labels, dataset=dataset, warnings=label_warnings)
        with progress("scoring events", None) as show:
            result = evaluate(events, rows, settings, budget_share=budget_share, progress=show)
        result.warnings[:0] = label_warnings
        for warning in result.warnings:
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
        if as_json:
            sys.stdout.write(orjson.dumps(result.to_json()).decode() + "\n")
            return
        table = Table(
            "measure", "value", title=f"{result.population} people, {result.days} days, {result.events} events"
        )
        labelled = result.malicious_user_days > 0  # without malicious user-days there is no recall to show
        for k, recall in result.recall.items():
            table.add_row(f"recall of malicious user-days, top {k}/day", f"{100 * recall:.1f}%" if labelled else "-")
        table.add_row("mean percentile of malicious user-days", f"{result.mean_percentile:.2f}" if labelled else "-")
        if (shown := result.in_data) is not None:
            held = f"of those with acts in {', '.join(shown.kinds)} records"
            table.add_row(f"recall {held}, top {result.budget}/day", f"{100 * shown.recall:.1f}%")
            table.add_row(f"mean percentile {held}", f"{shown.mean_percentile:.2f}")
        table.add_row(f"incidents caught within top {result.budget}/day", f"{result.caught}/{len(result.incidents)}")
        table.add_row(
            f"incidents any ranking could catch within top {result.budget}/day",
            f"{result.catchable}/{len(result.incidents)}",
        )
        delays = [i.delay_days for i in result.incidents if i.delay_days is not None]
        table.add_row("days from first act to detection (mean)", f"{sum(delays) / len(delays):.1f}" if delays else "-")
        table.add_row("false findings per 1,000 users per day", f"{result.false_findings_per_1000_user_days:.3f}")
        console.print(table)
        apart = result.in_data is not None  # the days with acts in the files' kinds of record, measured apart
        by_scenario = Table(
            "scenario",
            "caught",
            "malicious user-days",
            "recall",
            "mean percentile",
            *(["days with acts in the files", "their recall", "their mean percentile"] if apart else []),
            title=f"by scenario, within the top {result.budget}/day",
        )
        for s in result.scenarios:  # a scenario whose every day has acts in the files is measured there as a whole
            apart_measures = _day_measures(s.in_data or s) if apart else []
            by_scenario.add_row(s.scenario, f"{s.caught}/{s.incidents}", *_day_measures(s), *apart_measures)
        console.print(by_scenario)
        detail = Table("incident", "scenario", "caught", "best rank", "delay (days)")
        for i in result.incidents:
            delay = "-" if i.delay_days is None else str(i.delay_days)
            detail.add_row(i.incident, i.scenario, "yes" if i.caught else "no", str(i.best_rank or "-"), delay)
        console.print(detail)
        missed = [(i, i.best_day) for i in result.incidents if not i.caught and i.best_day is not None]
        if missed:
            console.print("Incidents missed: their best-ranked malicious day", style="bold")
        for i, best in missed:
            lowest, highest = best.budget_points
            console.print(
                f"{i.incident} ({i.scenario}), {best.day.isoformat()}: rank {best.rank}, {best.points:.1f} points "
                f"(risk {best.risk:.1f}); the top {result.budget} had {lowest:.1f}-{highest:.1f}",
                highlight=False,
            )
            for reason in best.reasons[:MISSED_REASONS] or ["risk carried from earlier days only"]:
                console.print(f"  - {reason}", highlight=False)

    run(work)


def _day_measures(measured: ScenarioResult | InData) -> list[str]:
    """Malicious user-days, their recall within the budget and mean percentile, as the scenario table shows them."""
    if not measured.malicious_user_days:
        return ["0", "-", "-"]
    return [str(measured.malicious_user_days), f"{100 * measured.recall:.1f}%", f"{measured.mean_percentile:.2f}"]


@entity_app.command("explain")
def entity_explain(
    user: Annotated[str, typer.Argument(help="Pseudonym, or any name of the person (login, UPN, e-mail, ...).")],
    days: Annotated[int, typer.Option(min=1, max=366, help="How many recent day scores.")] = 3,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Explain an entity's recent risk in plain sentences: features, their usual and peer values, modifiers."""
    if not user.strip():
        raise typer.BadParameter("name a person: a pseudonym, login, UPN or e-mail", param_hint="USER")
    from custodes.detections.scoring.explain import sentences
    from custodes.detections.scoring.privacy import is_pseudonym
    from custodes.detections.scoring.service import entity_scores, pseudonymizer_for, resolver_for
    from custodes.store import Store

    async def work() -> None:
        settings = settings_from(config)
        store = await Store.open(settings.database)
        try:
            pseudonymizer = await pseudonymizer_for(settings.scoring, store)
            key = user if is_pseudonym(user) else resolver_for(settings.scoring, pseudonymizer).resolve(user)[0]
            async with store.transaction() as tx:
                scores = await entity_scores(tx, key, limit=days)
        finally:
            await store.close()
        if not scores:
            raise CustodesError(f"no scores for {key}", hint="scores appear once a day of its activity has closed")
        if as_json:
            sys.stdout.write(orjson.dumps([s.to_json() for s in scores]).decode() + "\n")
            return
        for score in scores:
            heading = f"{key} {score.day}: risk {score.risk:.0f} ({score.points:.0f} points that day)"
            console.print(Text(heading, style="bold"), soft_wrap=True)
            for line in sentences(score) or ["nothing unusual"]:  # as text: a rule title is never read as markup
                wrapped = textwrap.fill(line, max(40, console.width), initial_indent="  - ", subsequent_indent="    ")
                console.print(Text(wrapped), soft_wrap=True, highlight=False)

    run(work)


@entity_app.command("reidentify")
def entity_reidentify(
    pseudonym: Annotated[str, typer.Argument(help="The pseudonym to re-identify.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")],
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Reveal the person behind a pseudonym: needs a token with a re-identification role; always audited."""
    import sqlalchemy as sa

    from custodes.detections.scoring.privacy import reidentify
    from custodes.detections.scoring.service import pseudonymizer_for, resolver_for
    from custodes.store import Store
    from custodes.store.tables import entities

    async def work() -> None:
        settings = settings_from(config)
        who, role = identify(settings, token, "viewer")
        store = await Store.open(settings.database)
        try:
            pseudonymizer = await pseudonymizer_for(settings.scoring, store)
            people = list(resolver_for(settings.scoring, None).people)
            async with store.transaction() as tx:
                stored = [row[0] for row in await tx.conn.execute(sa.select(entities.c.id))]
                allowed, name = await reidentify(
                    tx,
                    settings.scoring,
                    pseudonymizer,
                    pseudonym,
                    [*people, *stored],
                    who=f"token:{who}",
                    role=role,
                    reason=reason,
                )
        finally:
            await store.close()
        if not allowed:
            raise CustodesError(
                f"re-identification refused for role {role!r} "
                f"(allowed: {', '.join(settings.scoring.reidentify_roles)})",
                hint="the attempt is in the audit log",
            )
        if name is None:
            raise CustodesError(f"{pseudonym} matches no known person or entity")
        console.print(name, highlight=False)

    run(work)


directory_app = typer.Typer(help="The directory behaviour scoring reads.", no_args_is_help=True)
app.add_typer(directory_app, name="directory")
SHOWN = 10
"""How many names of each list `directory check` prints (--json has them all)."""


@directory_app.command("check")
def directory_check(
    export: Annotated[
        Path | None,
        typer.Argument(help="A directory export to check (default: scoring.directory, the one in use)."),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a directory export before it goes live: who scoring would read in it, names two people claim, time
    zones it cannot read, thin peer groups, and what it changes against the directory in use. Scoring reads a
    changed directory by itself (docs/scoring.md): check the new export, then move it over the old one."""
    from dataclasses import asdict
    from datetime import UTC, datetime

    from custodes.detections.scoring.directory_report import check
    from custodes.detections.scoring.identity import load_directory

    def work() -> None:
        settings = settings_from(config)
        live_path = settings.scoring.directory
        path = export or live_path
        if path is None:
            raise CustodesError("no export named and no scoring.directory configured", hint="name the export to check")
        live = load_directory(live_path) if live_path is not None and path != live_path and live_path.exists() else None
        report = check(load_directory(path), settings.scoring, datetime.now(UTC).date(), live)
        if as_json:
            sys.stdout.write(orjson.dumps(asdict(report)).decode() + "\n")
            return
        table = Table(title=f"Directory {path}")
        table.add_column("what")
        table.add_column("count", justify="right")
        rows = [
            ("people", report.people),
            ("services", report.services),
            ("departments", report.departments),
            ("peer groups (department and title)", report.peer_groups),
            ("peer groups of fewer than 5 (compared with their department instead)", report.thin_groups),
            ("people without a department", report.no_department),
            *((f"on the {name} watchlist today", count) for name, count in report.watchlists.items()),
            ("names two or more people claim", len(report.shared_names)),
            ("time zones not read (their days are the default zone's)", len(report.unknown_zones)),
        ]
        if report.changes is not None:
            rows += [
                (f"{name.replace('_', ' ')} against {live_path}", len(names))
                for name, names in asdict(report.changes).items()
            ]
        for what, count in rows:
            table.add_row(what, str(count))
        console.print(table)
        shared = [f"{name}: {', '.join(ids)}" for name, ids in report.shared_names.items()]
        for title, names in (
            ("names claimed twice (events under them go to one person)", shared),
            ("time zones not read", report.unknown_zones),
        ):
            if names:
                console.print(
                    Text(f"{title}: {'; '.join(names[:SHOWN])}{' ...' if len(names) > SHOWN else ''}", style="yellow"),
                    soft_wrap=True,
                )

    run(work)
