"""Push-down: convert Sigma rules to SIEM queries through the official pySigma backends, with our pipelines.

Each rule yields a `Conversion`. `exact` is False when the backend cannot express the rule (an error: no query)
or can only approximate it (a query is given, but its results differ from the Sigma semantics Custodes matches
in process); either way `reason` says why, and the hunt runner matches such rules in process instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from sigma.backends.elasticsearch.elasticsearch_eql import EqlBackend
from sigma.backends.elasticsearch.elasticsearch_esql import ESQLBackend
from sigma.backends.elasticsearch.elasticsearch_lucene import LuceneBackend
from sigma.backends.splunk.splunk import SplunkBackend
from sigma.collection import SigmaCollection
from sigma.conversion.base import Backend
from sigma.correlations import SigmaCorrelationRule, SigmaCorrelationType
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.filters import SigmaFilter
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule, SigmaRuleBase
from sigma.types import SigmaFieldReference, SigmaRegularExpression

from custodes.detections.sigma.enrichment import ENRICHMENT_FIELD, ENRICHMENT_PREFIX
from custodes.detections.sigma.pipelines import AppliesToLogSource, pipeline_named, source_logsource
from custodes.detections.sigma.ruleset import RULE_SUFFIXES
from custodes.model import LogSource
from custodes.sources import SourceSettings

Target = Literal["lucene", "esql", "eql", "splunk"]
TARGETS: Final[tuple[Target, ...]] = ("lucene", "esql", "eql", "splunk")

_BACKENDS: Final[dict[Target, Callable[..., Backend]]] = {
    "lucene": LuceneBackend,
    "esql": ESQLBackend,
    "eql": EqlBackend,
    "splunk": SplunkBackend,
}
_REGEX_ANCHORED: Final = frozenset({"lucene", "esql", "eql"})
_BUCKETED: Final = {
    "esql": "ES|QL aggregates correlations with STATS over fixed time buckets; Sigma correlation windows slide",
    "splunk": "SPL aggregates correlations with stats over fixed time buckets; Sigma correlation windows slide",
}


@dataclass(frozen=True, slots=True)
class Conversion:
    """One rule's push-down: the query (None when the backend cannot express it), whether it is exact, and why not.

    `applies` is False for a rule whose logsource does not apply to the source converted for (no query).
    """

    rule_id: str
    title: str
    file: Path | None
    query: str | None
    exact: bool
    reason: str | None = None
    applies: bool = True


def convert_rules(
    rules: Sequence[Path] | SigmaCollection,
    target: Target,
    source: SourceSettings | None = None,
    *,
    on_rule: Callable[[], None] | None = None,
) -> list[Conversion]:
    """Convert rule files (or a parsed collection) for `target` with `source`'s pipeline (none without a source).

    Rules that fail to parse are reported as conversions without a query; `on_rule` is called once per rule.
    """
    if target not in _BACKENDS:
        raise ValueError(f"unknown target {target!r} (known: {', '.join(TARGETS)})")
    failures: list[Conversion] = []
    collection = rules if isinstance(rules, SigmaCollection) else _load(rules, failures)
    pipeline_name = source.pipeline_name if source is not None else "none"
    results: list[Conversion] = list(failures)
    scope = None
    if source is not None:
        scope = AppliesToLogSource(
            source_logsource(source.format, LogSource(source.product, source.service, source.category))
        )
    backend = _BACKENDS[target](processing_pipeline=pipeline_named(pipeline_name))
    # one backend for the whole collection, correlations last: they use the queries of the rules they refer to
    ordered = sorted(collection.rules, key=lambda rule: isinstance(rule, SigmaCorrelationRule))
    for rule in ordered:
        results.append(_convert_one(rule, target, backend, scope))
        if on_rule is not None:
            on_rule()
    return results


def count_rules(paths: Sequence[Path]) -> int:
    """How many rule files `paths` hold (for progress bars)."""
    return sum(1 for _ in _files(paths))


def _files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in RULE_SUFFIXES and p.is_file())
        else:
            yield path


def _load(paths: Sequence[Path], failures: list[Conversion]) -> SigmaCollection:
    collections: list[SigmaCollection] = []
    for path in _files(paths):
        try:
            loaded = SigmaCollection.from_yaml(
                path.read_text(encoding="utf-8"),
                collect_errors=True,
                source=SigmaRuleLocation(path),
                resolve_references=False,
            )
        except Exception as exc:  # unreadable file, invalid YAML, or a structure pySigma refuses outright
            failures.append(Conversion(path.stem, path.name, path, None, False, f"cannot load: {_message(exc)}"))
            continue
        for error in loaded.errors:
            failures.append(Conversion(path.stem, path.name, path, None, False, f"invalid rule: {_message(error)}"))
        kept = [rule for rule in loaded.rules if not rule.errors]
        for rule in loaded.rules:
            if rule.errors:
                reason = "; ".join(_message(error) for error in rule.errors)
                failures.append(Conversion(_rule_id(rule), rule.title, path, None, False, f"invalid rule: {reason}"))
        collections.append(
            SigmaCollection(list[SigmaRule | SigmaCorrelationRule | SigmaFilter](kept), resolve_references=False)
        )
    merged = SigmaCollection.merge(collections, resolve_references=False)
    try:
        merged.resolve_rule_references()
    except SigmaError as exc:
        failures.append(Conversion("-", "-", None, None, False, f"correlation references: {_message(exc)}"))
    return merged


def _convert_one(
    rule: SigmaRuleBase,
    target: Target,
    backend: Backend,
    scope: AppliesToLogSource | None,
) -> Conversion:
    rule_id, file = _rule_id(rule), rule.source.path if rule.source is not None else None
    if scope is not None and isinstance(rule, SigmaRule | SigmaCorrelationRule) and not scope.match(rule):
        reason = f"logsource {_logsource(rule)} does not apply to the source ({scope.logsource})"
        return Conversion(rule_id, rule.title, file, None, False, reason, applies=False)
    approximate = _approximations(rule, target)
    try:
        if isinstance(rule, SigmaCorrelationRule):
            queries: list[Any] = backend.convert_correlation_rule(rule)
        elif isinstance(rule, SigmaRule):
            queries = backend.convert_rule(rule)
        else:
            return Conversion(rule_id, rule.title, file, None, False, f"{type(rule).__name__} cannot be converted")
    except Exception as exc:  # a backend refuses what it cannot express (a modifier, a correlation type) or fails
        # on an unusual rule: either way the rule is matched in process, and the reason is said
        return Conversion(rule_id, rule.title, file, None, False, f"{target} backend: {_message(exc)}")
    if not queries and not rule._output:
        reason = "used by correlation rules only (no `generate: true`): nothing to run on its own"
        return Conversion(rule_id, rule.title, file, None, True, reason)
    if not queries:
        return Conversion(rule_id, rule.title, file, None, False, f"{target} backend produced no query")
    text = "\n".join(str(query) for query in queries)
    return Conversion(rule_id, rule.title, file, text, not approximate, "; ".join(approximate) or None)


def _approximations(rule: SigmaRuleBase, target: Target) -> list[str]:
    """Why a query for `rule` would differ from in-process matching (empty when it would not)."""
    reasons: list[str] = []
    enriched = _enrichment_fields(rule)
    if enriched:
        reasons.append(
            f"reads Custodes' enrichment fields ({', '.join(enriched)}), computed in process: the SIEM's "
            "records do not hold them"
        )
    if isinstance(rule, SigmaCorrelationRule):
        if target in _BUCKETED:
            reasons.append(_BUCKETED[target])
        elif target == "eql" and rule.type != SigmaCorrelationType.TEMPORAL_ORDERED:
            reasons.append("EQL expresses only ordered temporal correlations (sequences)")
        return reasons
    if not isinstance(rule, SigmaRule):
        return reasons
    items = list(_detection_items(rule))
    if any(item.field is None for item in items):
        reasons.append(
            "keyword (field-less) search: the SIEM searches its default or indexed text, Custodes any string "
            "value of the record"
        )
    if target in _REGEX_ANCHORED and any(
        isinstance(value, SigmaRegularExpression) for item in items for value in item.value
    ):
        reasons.append(
            "regular expression: Elasticsearch regexps are anchored and lack Python's classes and flags; "
            "Sigma's `re` is an unanchored search"
        )
    return reasons


def _enrichment_fields(rule: SigmaRuleBase) -> list[str]:
    """The `custodes.*` fields `rule` reads, sorted (for a correlation: those of the rules it refers to)."""
    if isinstance(rule, SigmaCorrelationRule):
        referenced = [ref.rule for ref in rule.rules or () if isinstance(ref.rule, SigmaRuleBase)]
        return sorted({name for other in referenced for name in _enrichment_fields(other)})
    if not isinstance(rule, SigmaRule):
        return []
    names: set[str] = set()
    for item in _detection_items(rule):
        names.add(item.field or "")
        names.update(value.field for value in item.value if isinstance(value, SigmaFieldReference))
    return sorted(name for name in names if name == ENRICHMENT_FIELD or name.startswith(ENRICHMENT_PREFIX))


def _detection_items(rule: SigmaRule) -> Iterator[SigmaDetectionItem]:
    pending: list[SigmaDetection | SigmaDetectionItem] = list(rule.detection.detections.values())
    while pending:
        node = pending.pop()
        if isinstance(node, SigmaDetection):
            pending.extend(node.detection_items)
        else:
            yield node


def _rule_id(rule: SigmaRuleBase) -> str:
    if rule.id is not None:
        return str(rule.id)
    return rule.name or rule.title


def _logsource(rule: SigmaRule | SigmaCorrelationRule) -> str:
    if isinstance(rule, SigmaCorrelationRule):
        return "of the correlated rules"
    parts = (rule.logsource.product, rule.logsource.service, rule.logsource.category)
    return "/".join(part or "*" for part in parts)


def _message(exc: BaseException) -> str:
    if isinstance(exc, SigmaError) and exc.args:
        return str(exc.args[0])
    text = str(exc)
    return text.split(" (while converting rule")[0] if text else type(exc).__name__
