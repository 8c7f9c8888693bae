"""`custodes rules ...`: lint, test, convert, summarise and match Sigma rules."""

from __future__ import annotations

import gc
import itertools
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from custodes.cli.common import ConfigOption, JsonOption, console, err, progress, run, source_from, styled
from custodes.cli.root import app
from custodes.errors import CustodesError

if TYPE_CHECKING:
    from custodes.detections.sigma.ruleset import RuleSet
    from custodes.sources import SourceSettings

rules_app = typer.Typer(help="Work with Sigma rules.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")

PathsArgument = Annotated[list[Path], typer.Argument(help="Rule files or folders.")]
SourceOption = Annotated[
    str | None,
    typer.Option(
        "--source",
        "-s",
        help="Configured source whose format, logsource and pipeline apply (default: rules used as written).",
    ),
]


def _write_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")


def _require(paths: Sequence[Path]) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise CustodesError(f"no such file or folder: {', '.join(missing)}")


def _source(config: Path | None, name: str | None) -> SourceSettings | None:
    return source_from(config, name) if name is not None else None


def _load(paths: Sequence[Path], source: SourceSettings | None) -> RuleSet:
    from custodes.detections.sigma.loader import load_rules
    from custodes.detections.sigma.pipelines import pipeline_named

    return load_rules(paths, pipeline=pipeline_named(source.pipeline_name) if source is not None else None)


@rules_app.command("lint")
def rules_lint(paths: PathsArgument, as_json: JsonOption = False) -> None:
    """Load rules through pySigma; list each rejected rule with its reason (exit 2 if any)."""
    from custodes.detections.sigma.loader import load_rules

    def work() -> None:
        _require(paths)
        ruleset = load_rules(paths)
        if as_json:
            out = {
                "loaded": len(ruleset.rules),
                "correlations": len(ruleset.correlations),
                "rejected": [
                    {"file": str(r.file), "line": r.line, "column": r.column, "rule_id": r.rule_id, "reason": r.reason}
                    for r in ruleset.rejections
                ],
            }
            _write_json(out)
        else:
            for rejection in ruleset.rejections:
                err.print(styled("rejected:", "yellow", f" {rejection}"), highlight=False, soft_wrap=True)
            console.print(
                f"{len(ruleset.rules)} rules and {len(ruleset.correlations)} correlation rules loaded, "
                f"{len(ruleset.rejections)} rejected"
            )
        if ruleset.rejections:
            raise typer.Exit(2)

    run(work)


@rules_app.command("test")
def rules_test(
    paths: PathsArgument,
    source: SourceOption = None,
    config: ConfigOption = None,
    require_examples: Annotated[
        bool, typer.Option("--require-examples", help="Fail for every rule that carries no examples.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the examples rules carry (`custodes: {examples: {match: [...], no_match: [...]}}`); exit 2 on failure."""
    from custodes.detections.sigma.examples import read_examples, rule_files, run_examples
    from custodes.errors import Location, Problem

    def work() -> None:
        _require(paths)
        source_settings = _source(config, source)
        ruleset = _load(paths, source_settings)
        problems: list[Problem] = []
        examples = []
        without: list[str] = []
        for file in rule_files(paths):
            found = read_examples(file)
            problems.extend(found.problems)
            examples.extend(found.examples)
            with_examples = {example.rule_id for example in found.examples}
            without.extend(f"{file}: {rule_id}" for rule_id in found.rule_ids if rule_id not in with_examples)
        problems.extend(rejection.problem() for rejection in ruleset.rejections)
        if require_examples:
            problems.extend(Problem(Location(item), "rule carries no examples") for item in without)
        results = run_examples(examples, ruleset.rules, ruleset.correlations)
        failures = [result for result in results if not result.passed]
        passed = len(results) - len(failures)
        if as_json:
            _write_json(
                {
                    "examples": len(results),
                    "passed": passed,
                    "failed": [
                        {
                            "file": str(r.example.file),
                            "line": r.example.line,
                            "rule_id": r.example.rule_id,
                            "kind": r.example.kind,
                            "message": r.message,
                        }
                        for r in failures
                    ],
                    "problems": [str(problem) for problem in problems],
                    "rules_without_examples": without,
                }
            )
        else:
            for result in failures:
                err.print(styled("FAIL", "red", f" {result.problem()}"), highlight=False, soft_wrap=True)
            for problem in problems:
                err.print(styled("error:", "red", f" {problem}"), highlight=False, soft_wrap=True)
            console.print(
                f"{passed} of {len(results)} examples passed; {len(without)} rules without examples",
                highlight=False,
            )
        if failures or problems:
            raise typer.Exit(2)

    run(work)


@rules_app.command("convert")
def rules_convert(
    paths: PathsArgument,
    target: Annotated[str, typer.Option("--target", "-t", help="lucene, esql, eql or splunk.")],
    source: SourceOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Convert rules to SIEM queries through the official pySigma backends, with the source's pipeline.

    Rules a backend cannot express exactly are listed (stderr) with the reason: Custodes matches them in process.
    """
    from custodes.detections.sigma.convert import TARGETS, convert_rules, count_rules

    def work() -> None:
        if target not in TARGETS:
            raise CustodesError(f"unknown target {target!r} (choose one of: {', '.join(TARGETS)})")
        _require(paths)
        source_settings = _source(config, source)
        converted = itertools.count(1)
        with progress("converting", count_rules(paths)) as show:
            conversions = convert_rules(paths, target, source_settings, on_rule=lambda: show(next(converted)))
        relevant = [c for c in conversions if c.applies]
        if as_json:
            _write_json(
                [
                    {
                        "rule_id": c.rule_id,
                        "title": c.title,
                        "file": str(c.file) if c.file else None,
                        "query": c.query,
                        "exact": c.exact,
                        "reason": c.reason,
                    }
                    for c in relevant
                ]
            )
        else:
            for c in relevant:
                if c.query is not None:
                    console.print(f"# {c.title} ({c.rule_id})", style="dim", highlight=False, soft_wrap=True)
                    sys.stdout.flush()
                    console.print(c.query, highlight=False, soft_wrap=True)
                if not c.exact:
                    what = "approximate" if c.query is not None else "not converted"
                    err.print(
                        styled(what, "yellow", f" {c.file or c.title}: {c.reason}; matched in process instead"),
                        highlight=False,
                        soft_wrap=True,
                    )
        exact = sum(1 for c in relevant if c.exact)
        err.print(f"{exact} of {len(relevant)} rules converted exactly", highlight=False)

    run(work)


_SPECIFICS = re.compile(r"'[^']*'|\"[^\"]*\"|\b\d+\b")


@rules_app.command("stats")
def rules_stats(
    paths: PathsArgument,
    source: SourceOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Summarise a rule set: rules by logsource, level and status, and rejections by reason."""
    from rich.table import Table

    from custodes.detections.sigma.examples import rule_files

    def work() -> None:
        _require(paths)
        ruleset = _load(paths, _source(config, source))
        statuses = _statuses(rule_files(paths))
        by_logsource = Counter(str(rule.logsource) for rule in ruleset.rules)
        by_level = Counter(rule.level.label for rule in ruleset.rules)
        by_status = Counter(statuses.get(rule.id, "none") for rule in ruleset.rules)
        by_reason = Counter(_SPECIFICS.sub("…", rejection.reason) for rejection in ruleset.rejections)
        summary = {
            "loaded": len(ruleset.rules),
            "correlations": len(ruleset.correlations),
            "rejected": len(ruleset.rejections),
            "by_logsource": dict(by_logsource.most_common()),
            "by_level": dict(by_level.most_common()),
            "by_status": dict(by_status.most_common()),
            "rejected_by_reason": dict(by_reason.most_common()),
        }
        if as_json:
            _write_json(summary)
            return
        console.print(
            f"{summary['loaded']} rules and {summary['correlations']} correlation rules loaded, "
            f"{summary['rejected']} rejected",
            highlight=False,
        )
        for title, counts in (
            ("logsource", by_logsource),
            ("level", by_level),
            ("status", by_status),
            ("rejection reason", by_reason),
        ):
            if not counts:
                continue
            table = Table(title=f"by {title}")
            table.add_column(title)
            table.add_column("rules", justify="right")
            for key, count in counts.most_common():
                table.add_row(key, str(count))
            console.print(table)

    run(work)


def _statuses(files: list[Path]) -> dict[str, str]:
    """Rule id -> declared status (read from the YAML; the compiled rule does not keep it)."""
    import yaml

    statuses: dict[str, str] = {}
    for file in files:
        try:
            documents = list(yaml.load_all(file.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # the loader reports the file as rejected
        for document in documents:
            if isinstance(document, dict) and document.get("id") is not None:
                statuses[str(document["id"])] = str(document.get("status") or "none")
    return statuses


@rules_app.command("match")
def rules_match(
    rules: Annotated[list[Path], typer.Option("--rules", "-r", help="Rule files or folders (repeatable).")],
    events: Annotated[
        Path,
        typer.Option(
            "--events",
            "-e",
            help="NDJSON, JSON array, an API's or SIEM's export, auditd or syslog log, or CSV (gzip too).",
        ),
    ],
    source: SourceOption = None,
    config: ConfigOption = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Processes sharing an uncompressed NDJSON file (default: one per core, each given 1 MiB or more).",
        ),
    ] = None,
) -> None:
    """Match a log file against rules; print one JSON object per match (rule_id, rule_title, level, line, event_id).

    Without --source every rule is tried on every record (rules used as written, logsource ignored); with it,
    records map through the source's format and rules apply by its logsource, processed by its pipeline. The
    file is streamed (memory stays bounded whatever its size); NDJSON lines holding none of the rules' literals
    are skipped undecoded, and each record is tested only against the rules whose literal values it holds.
    Compiled rule sets are cached on disk (see `CUSTODES_CACHE_DIR`).
    """
    from custodes.detections.sigma.cache import load_rules_cached
    from custodes.detections.sigma.filematch import RecordMatcher, match_file

    def work() -> None:
        _require([*rules, events])
        source_settings = _source(config, source)
        ruleset = load_rules_cached(rules, source_settings.pipeline_name if source_settings is not None else None)
        for rejection in ruleset.rejections:
            err.print(styled("rejected:", "yellow", f" {rejection}"), highlight=False, soft_wrap=True)
        matcher = RecordMatcher(ruleset, source_settings, source or "file")
        gc.freeze()  # the rules live as long as the command: collections of the records' garbage skip them
        with progress("matching", None) as show:
            matched = match_file(
                events,
                matcher,
                workers=workers,
                write=sys.stdout.write,
                warn=lambda text: err.print(styled("warning:", "yellow", f" {text}"), highlight=False, soft_wrap=True),
                progress=show,
            )
        err.print(f"{matched} matches", highlight=False)

    run(work)
