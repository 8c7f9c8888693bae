"""Load Sigma rule files through pySigma and compile them, recording why a rule was rejected."""

from __future__ import annotations

import copy
import dataclasses
import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import yaml
from sigma import exceptions as sigma_errors
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.filters import SigmaFilter
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations.placeholder import ValueListPlaceholderTransformation
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule, SigmaRuleBase
from sigma.types import Placeholder, SigmaRegularExpression, SigmaString

from custodes.config import DetectionSettings, RuleOverride
from custodes.detections.sigma.compiler import CompiledRule, UnsupportedRuleError
from custodes.detections.sigma.correlation import compile_correlation
from custodes.detections.sigma.lowering import compile_rule
from custodes.detections.sigma.overrides import apply_override, suppression
from custodes.detections.sigma.ruleset import Rejection, RuleSet, rule_files
from custodes.model import Severity

# Where in a rule document each kind of pySigma error points (first matching class in the error's MRO).
_ERROR_KEYS: Final[dict[type[Exception], tuple[str, ...]]] = {
    sigma_errors.SigmaConditionError: ("detection", "condition"),
    sigma_errors.SigmaDetectionError: ("detection",),
    sigma_errors.SigmaModifierError: ("detection",),
    sigma_errors.SigmaValueError: ("detection",),
    sigma_errors.SigmaLogsourceError: ("logsource",),
    sigma_errors.SigmaIdentifierError: ("id",),
    sigma_errors.SigmaTitleError: ("title",),
    sigma_errors.SigmaLevelError: ("level",),
    sigma_errors.SigmaStatusError: ("status",),
    sigma_errors.SigmaDateError: ("date",),
    sigma_errors.SigmaModifiedError: ("modified",),
    sigma_errors.SigmaTagError: ("tags",),
    sigma_errors.SigmaRelatedError: ("related",),
    sigma_errors.SigmaAuthorError: ("author",),
    sigma_errors.SigmaDescriptionError: ("description",),
    sigma_errors.SigmaReferencesError: ("references",),
    sigma_errors.SigmaFalsePositivesError: ("falsepositives",),
    sigma_errors.SigmaFieldsError: ("fields",),
    sigma_errors.SigmaLicenseError: ("license",),
    sigma_errors.SigmaNameError: ("name",),
    sigma_errors.SigmaScopeError: ("scope",),
    sigma_errors.SigmaTaxonomyError: ("taxonomy",),
    UnsupportedRuleError: ("detection",),
}


@dataclass(frozen=True, slots=True)
class RuleOptions:
    """Local adjustments applied while loading: `|expand` placeholder values and per-rule overrides."""

    placeholders: Mapping[str, Sequence[str | int | float]] = field(default_factory=dict)
    overrides: Mapping[str, RuleOverride] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: DetectionSettings) -> RuleOptions:
        """The options `detection.placeholders` and `detection.overrides` give."""
        return cls(settings.placeholders, settings.overrides)


def load_rules(
    paths: Sequence[Path], *, pipeline: ProcessingPipeline | None = None, options: RuleOptions | None = None
) -> RuleSet:
    """Load every `*.yml`/`*.yaml` rule under `paths` (files or folders), applying `pipeline` to each rule.

    Filters apply to the rules they name (by id or name) and whose logsource they cover, before `pipeline`;
    correlation rules refer to rules by id or name, across files. Never raises for bad input: unreadable
    files, invalid YAML, invalid rules and rules using features the matcher does not support are recorded in
    `RuleSet.rejections` with a reason and, when known, a position.
    """
    ruleset = RuleSet()
    parsed = _Parsed()
    with _collector_paused():
        for path in rule_files(paths, ruleset):
            _FileLoader(path, ruleset, parsed).load()
        _Builder(ruleset, parsed, pipeline, options or RuleOptions()).build()
    return ruleset


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: loading builds a large graph of long-lived objects, which it would
    otherwise scan again and again (about 40 % of the time of loading the whole SigmaHQ corpus)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _RuleYamlLoader(yaml.CSafeLoader):
    """PyYAML's C safe loader, refusing duplicate keys (as pySigma's own loader does) with their position."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in keys
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            keys.add(key)
        return super().construct_mapping(node, deep)


@dataclass(slots=True)
class _Parsed:
    """Everything read from the rule files, with the file each item came from."""

    rules: list[tuple[_FileLoader, SigmaRule]] = field(default_factory=list)
    correlations: list[tuple[_FileLoader, SigmaCorrelationRule]] = field(default_factory=list)
    filters: list[tuple[_FileLoader, SigmaFilter]] = field(default_factory=list)


class _FileLoader:
    """Parses one rule file into `_Parsed`, rejecting what cannot be parsed; knows positions in the file."""

    def __init__(self, path: Path, ruleset: RuleSet, parsed: _Parsed) -> None:
        self.path = path
        self.ruleset = ruleset
        self.parsed = parsed
        self.locator = _Locator("")

    def reject(self, reason: str, rule: SigmaRuleBase | None = None, position: tuple[int, int] | None = None) -> None:
        line, column = position or (None, None)
        rule_id = str(rule.id) if rule is not None and rule.id is not None else None
        title = (rule.title or None) if rule is not None else None
        self.ruleset.rejections.append(Rejection(self.path, rule_id, title, reason, line, column))

    def load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.reject(f"cannot read the file: {exc}")
            return
        try:
            documents = list(yaml.load_all(text, Loader=_RuleYamlLoader))
        except yaml.YAMLError as exc:
            self.reject(f"invalid YAML: {_yaml_problem(exc)}", position=_yaml_position(exc))
            return
        self.locator = _Locator(text)

        mappings: list[dict[str, Any]] = []
        for index, document in enumerate(documents):
            if isinstance(document, dict):
                mappings.append(document)
            elif document is not None:
                kind = type(document).__name__
                self.reject(
                    f"YAML document {index + 1} is a {kind}, not a mapping",
                    None,
                    self.locator.document(index),
                )
        if not mappings:
            if all(document is None for document in documents):
                self.reject("the file contains no Sigma rule")
            return

        try:
            collection = SigmaCollection.from_dicts(
                mappings,
                collect_errors=True,
                source=SigmaRuleLocation(self.path),
                collect_filters=True,
                resolve_references=False,
            )
        except Exception as exc:  # pySigma raises on some malformed structures even when collecting errors
            self.reject(f"invalid rule: {_message(exc)}", None, self.locator.document(0))
            return

        item_errors = {id(error) for item in [*collection.rules, *collection.filters] for error in item.errors}
        for error in collection.errors:
            if id(error) not in item_errors:  # a collection-level problem, such as an unknown action
                self.reject(_message(error))
        for item in [*collection.rules, *collection.filters]:
            self.ruleset.known.update(_references(item))
        for sigma_filter in collection.filters:
            if sigma_filter.errors:
                self.reject_errors(sigma_filter, ("filter",))
            else:
                self.parsed.filters.append((self, sigma_filter))
        for rule in collection.rules:
            if isinstance(rule, SigmaCorrelationRule):
                if rule.errors:
                    self.reject_errors(rule, ("correlation",))
                else:
                    self.parsed.correlations.append((self, rule))
            elif isinstance(rule, SigmaRule):
                if rule.errors:
                    self.reject_errors(rule, ())
                else:
                    self.parsed.rules.append((self, rule))

    def reject_errors(self, rule: SigmaRuleBase, keys: tuple[str, ...]) -> None:
        reason = "; ".join(_message(error) for error in rule.errors)
        position = self.locator.for_error(rule, rule.errors[0]) if not keys else None
        self.reject(reason, rule, position or self.locator.find(rule, keys))

    def compile(self, rule: SigmaRule, pipelines: Sequence[ProcessingPipeline]) -> CompiledRule | None:
        """Apply `pipelines` and compile; None (after recording why) when the rule cannot be used."""
        for pipeline in pipelines:
            try:
                pipeline.apply(rule)
            except Exception as exc:  # third-party transformations may fail in any way
                self.reject(f"processing pipeline failed: {_message(exc)}", rule, self.locator.for_error(rule, exc))
                return None
        unresolved = _placeholders(rule.detection.detections.values())
        if unresolved:
            names = ", ".join(f"%{name}%" for name in unresolved)
            reason = f"unresolved placeholder {names} (give the values in detection.placeholders)"
            where = UnsupportedRuleError(reason, next(iter(unresolved.values())))
            self.reject(reason, rule, self.locator.for_error(rule, where))
            return None
        try:
            return compile_rule(rule)
        except (SigmaError, UnsupportedRuleError) as exc:
            self.reject(_message(exc), rule, self.locator.for_error(rule, exc))
            return None


class _Builder:
    """Applies filters, compiles rules and correlations, and applies overrides, across all parsed files."""

    def __init__(
        self, ruleset: RuleSet, parsed: _Parsed, pipeline: ProcessingPipeline | None, options: RuleOptions
    ) -> None:
        self.ruleset = ruleset
        self.parsed = parsed
        self.options = options
        self.pipeline = pipeline
        self.pipelines = [p for p in (_placeholder_pipeline(options.placeholders), pipeline) if p is not None]
        self.seen: dict[str, Path] = {}
        self.by_reference: dict[str, SigmaRule | SigmaCorrelationRule] = {}
        self.compiled: dict[int, str] = {}  # id() of a parsed rule -> its compiled id

    def build(self) -> None:
        items: list[SigmaRule | SigmaCorrelationRule] = [rule for _, rule in self.parsed.rules]
        items.extend(correlation for _, correlation in self.parsed.correlations)
        for item in items:
            for reference in _references(item):
                self.by_reference.setdefault(reference, item)
        failed = self.apply_filters()
        rules: list[CompiledRule] = []
        disabled: set[str] = set()
        for loader, rule in self.parsed.rules:
            if id(rule) in failed:
                continue
            compiled = loader.compile(rule, self.pipelines)
            if compiled is not None and self.unique(loader, rule, compiled.id):
                self.compiled[id(rule)] = compiled.id
                override = self.override(rule, compiled.id)
                if override is not None:
                    compiled = apply_override(compiled, override)
                    if not override.enabled:
                        disabled.add(compiled.id)
                rules.append(compiled)
        for loader, parsed in self.parsed.correlations:
            self.load_correlation(loader, parsed)
        referenced = {rule_id for correlation in self.ruleset.correlations for rule_id in correlation.rules}
        for correlation in self.ruleset.correlations:
            if not correlation.generate:
                self.ruleset.silent.update(correlation.rules)
        self.ruleset.silent.update(disabled & referenced)
        self.ruleset.rules.extend(rule for rule in rules if rule.id not in disabled - referenced)

    def apply_filters(self) -> set[int]:
        """Add each filter's conditions to the rules it applies to; the ids of rules a filter broke."""
        failed: set[int] = set()
        for loader, sigma_filter in self.parsed.filters:
            targets = sigma_filter.filter.rules
            if not isinstance(targets, str):
                unknown = [ref.reference for ref in targets if _normal(ref.reference) not in self.ruleset.known]
                if unknown:
                    reason = f"the filter refers to unknown rule(s): {', '.join(unknown)}"
                    loader.reject(reason, sigma_filter, loader.locator.find(sigma_filter, ("filter", "rules")))
                    continue
            for rule_loader, rule in self.parsed.rules:
                if id(rule) in failed or not _filter_applies(sigma_filter, rule):
                    continue
                try:
                    copy.deepcopy(sigma_filter).apply_on_rule(rule)
                except Exception as exc:  # a filter condition pySigma cannot combine with the rule's
                    reason = f"filter {sigma_filter.title!r} cannot be applied: {_message(exc)}"
                    rule_loader.reject(reason, rule, rule_loader.locator.find(rule, ("detection", "condition")))
                    failed.add(id(rule))
        return failed

    def load_correlation(self, loader: _FileLoader, rule: SigmaCorrelationRule) -> None:
        position = loader.locator.find(rule, ("correlation",))
        if self.pipeline is not None:  # maps group-by and alias field names as it maps the base rules' fields
            try:
                self.pipeline.apply(rule)
            except Exception as exc:  # third-party transformations may fail in any way
                loader.reject(f"processing pipeline failed: {_message(exc)}", rule, position)
                return
        try:
            compiled = compile_correlation(rule, self.resolve)
        except (SigmaError, UnsupportedRuleError) as exc:
            loader.reject(_message(exc), rule, position)
            return
        override = self.override(rule, compiled.id)
        if override is not None:
            if not override.enabled:
                return
            compiled = dataclasses.replace(
                compiled,
                level=Severity.parse(override.level) if override.level is not None else compiled.level,
                suppressed=suppression(override.suppress),
            )
        if self.unique(loader, rule, compiled.id):
            self.ruleset.correlations.append(compiled)

    def override(self, rule: SigmaRuleBase, rule_id: str) -> RuleOverride | None:
        """The override for a rule, named by its compiled id, its id as written or its name."""
        for key in (rule_id, *_references(rule)):
            override = self.options.overrides.get(key)
            if override is not None:
                return override
        return None

    def resolve(self, reference: str) -> str:
        """The compiled id of the base rule `reference` names; UnsupportedRuleError saying why there is none."""
        target = self.by_reference.get(_normal(reference))
        if target is None:
            if _normal(reference) in self.ruleset.known:
                raise UnsupportedRuleError(f"refers to rule {reference!r}, which was rejected")
            raise UnsupportedRuleError(f"refers to unknown rule {reference!r}")
        if isinstance(target, SigmaCorrelationRule):
            raise UnsupportedRuleError(
                f"refers to correlation rule {reference!r}: correlations of correlations are not supported"
            )
        compiled = self.compiled.get(id(target))
        if compiled is None:
            raise UnsupportedRuleError(f"refers to rule {reference!r}, which was rejected")
        return compiled

    def unique(self, loader: _FileLoader, rule: SigmaRuleBase, rule_id: str) -> bool:
        first = self.seen.get(rule_id)
        if first is not None:
            reason = f"duplicate rule id {rule_id} (first loaded from {first})"
            loader.reject(reason, rule, loader.locator.find(rule, ("id",)))
            return False
        self.seen[rule_id] = loader.path
        return True


def _normal(reference: str) -> str:
    """A rule reference as looked up: a UUID in canonical form, a name as written."""
    try:
        return str(UUID(reference))
    except ValueError:
        return reference


def _references(rule: SigmaRuleBase) -> list[str]:
    """The strings other rules (and overrides) may use to name `rule`: its id and its name."""
    return [reference for reference in (str(rule.id) if rule.id is not None else None, rule.name) if reference]


def _filter_applies(sigma_filter: SigmaFilter, rule: SigmaRule) -> bool:
    if rule.logsource not in sigma_filter.logsource:
        return False
    targets = sigma_filter.filter.rules
    if isinstance(targets, str):
        return targets.lower() == "any"
    names = set(_references(rule))
    return any(_normal(reference.reference) in names for reference in targets)


def _placeholder_pipeline(values: Mapping[str, Sequence[str | int | float]]) -> ProcessingPipeline | None:
    if not values:
        return None
    transformation = ValueListPlaceholderTransformation(include=list(values))
    return ProcessingPipeline(
        name="custodes placeholders",
        items=[ProcessingItem(transformation, identifier="custodes_placeholders")],
        vars={name: list(items) for name, items in values.items()},
    )


def _placeholders(detections: Iterable[SigmaDetection | SigmaDetectionItem]) -> dict[str, str | None]:
    """The placeholders left in detection values, in order of appearance, each with the field it is used on."""
    names: dict[str, str | None] = {}
    pending = list(detections)
    while pending:
        item = pending.pop(0)
        if isinstance(item, SigmaDetection):
            pending.extend(item.detection_items)
            continue
        for value in item.value:
            text = value.regexp if isinstance(value, SigmaRegularExpression) else value
            if isinstance(text, SigmaString):
                for part in text.s:
                    if isinstance(part, Placeholder):
                        names.setdefault(part.name, item.field)
    return names


def _message(exc: BaseException) -> str:
    """The error message without pySigma's appended source path."""
    if isinstance(exc, SigmaError | UnsupportedRuleError) and exc.args:
        return str(exc.args[0])
    return f"{type(exc).__name__}: {exc}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [part for part in (exc.context, exc.problem) if part]
        return ", ".join(parts) if parts else str(exc)
    return str(exc)


def _yaml_position(exc: yaml.YAMLError) -> tuple[int, int] | None:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return mark.line + 1, mark.column + 1
    return None


class _Locator:
    """Finds positions in a rule file; the file is composed into YAML nodes only when a problem needs one."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._documents: list[yaml.Node] | None = None

    def _nodes(self) -> list[yaml.Node]:
        if self._documents is None:
            try:
                self._documents = list(yaml.compose_all(self._text, Loader=yaml.CSafeLoader))
            except yaml.YAMLError:
                self._documents = []
        return self._documents

    def document(self, index: int) -> tuple[int, int] | None:
        """Start of the `index`-th YAML document."""
        nodes = self._nodes()
        return _start(nodes[index]) if 0 <= index < len(nodes) else None

    def for_error(self, rule: SigmaRuleBase, exc: BaseException) -> tuple[int, int] | None:
        """Position of the part of `rule` that `exc` is about."""
        source = getattr(exc, "source", None)
        if isinstance(source, SigmaRuleLocation) and source.line is not None:
            return source.line, source.char or 1
        if isinstance(exc, UnsupportedRuleError) and exc.field is not None:
            position = self._field_key(rule, exc.field)
            if position is not None:
                return position
        for kind in type(exc).__mro__:
            keys = _ERROR_KEYS.get(kind)
            if keys is not None:
                return self.find(rule, keys)
        return self.find(rule, ())

    def find(self, rule: SigmaRuleBase, keys: tuple[str, ...]) -> tuple[int, int] | None:
        """Position of the key path `keys` in the document defining `rule` (or of the closest parent)."""
        node = self._rule_document(rule)
        if node is None:
            return None
        position = _start(node)
        for key in keys:
            if not isinstance(node, yaml.MappingNode):
                break
            entry = next(((k, v) for k, v in node.value if k.value == key), None)
            if entry is None:
                break
            position = _start(entry[0])
            node = entry[1]
        return position

    def _field_key(self, rule: SigmaRuleBase, name: str) -> tuple[int, int] | None:
        """Position of the first detection key for field `name` (with or without modifiers)."""
        document = self._rule_document(rule)
        detection = mapping_child(document, "detection") if document is not None else None
        pending = [detection] if detection is not None else []
        while pending:
            node = pending.pop(0)
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key.value, str) and key.value.split("|")[0] == name:
                        return _start(key)
                    pending.append(value)
            elif isinstance(node, yaml.SequenceNode):
                pending.extend(node.value)
        return None

    def _rule_document(self, rule: SigmaRuleBase) -> yaml.Node | None:
        mappings = [node for node in self._nodes() if isinstance(node, yaml.MappingNode)]
        wanted = ("id", str(rule.id)) if rule.id is not None else ("title", rule.title)
        for node in mappings:
            if any(k.value == wanted[0] and getattr(v, "value", None) == wanted[1] for k, v in node.value):
                return node
        return mappings[0] if len(mappings) == 1 else None


def mapping_child(node: yaml.Node, key: str) -> yaml.Node | None:
    """The value node under `key` when `node` is a YAML mapping that has it, else None."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            if key_node.value == key:
                return value  # type: ignore[no-any-return]
    return None


def _start(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1
