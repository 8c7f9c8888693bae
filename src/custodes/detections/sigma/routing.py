"""Route each event to rules processed with its source's pySigma pipeline.

Rules are loaded once per distinct pipeline that configured sources use (sources without a pipeline share one
load), each load wrapped in its own `SigmaEngine`; an event goes to the engine of its source's pipeline, which
then routes it by logsource as usual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from custodes.detections.sigma.compiler import CompiledRule
from custodes.detections.sigma.engine import SigmaEngine
from custodes.detections.sigma.enrichment import EventContext
from custodes.detections.sigma.loader import RuleOptions, load_rules
from custodes.detections.sigma.pipelines import NO_PIPELINE, pipeline_named
from custodes.detections.sigma.ruleset import RuleSet
from custodes.model import Event
from custodes.sources import SourceSettings


class EventMatcher(Protocol):
    """What the ingest pipeline needs from a detection engine."""

    def match(self, event: Event) -> list[CompiledRule]:
        """The rules that match the event."""
        ...


def effective_pipeline(settings: SourceSettings) -> str:
    """The pipeline name rules are processed with for a source; `none` when its choice maps nothing."""
    name = settings.pipeline_name
    return name if name != NO_PIPELINE and pipeline_named(name) is not None else NO_PIPELINE


class RoutedEngine:
    """Matches events with the rules processed by their source's pipeline; unknown sources use unprocessed rules."""

    def __init__(self, engines: Mapping[str, SigmaEngine], source_pipelines: Mapping[str, str]) -> None:
        self.engines = dict(engines)
        self.source_pipelines = dict(source_pipelines)

    @classmethod
    def load(
        cls,
        paths: Sequence[Path],
        sources: Mapping[str, SourceSettings],
        *,
        unprocessed: RuleSet | None = None,
        options: RuleOptions | None = None,
        context: EventContext | None = None,
    ) -> RoutedEngine:
        """Load `paths` once per pipeline `sources` use; `unprocessed` reuses a load made without a pipeline.

        `context` computes the enrichment namespace for rules that read `custodes.*` fields.
        """
        source_pipelines = {name: effective_pipeline(settings) for name, settings in sources.items()}
        rulesets = {NO_PIPELINE: unprocessed if unprocessed is not None else load_rules(paths, options=options)}
        for name in sorted(set(source_pipelines.values()) - {NO_PIPELINE}):
            rulesets[name] = load_rules(paths, pipeline=pipeline_named(name), options=options)
        engines = {name: SigmaEngine(ruleset, context=context) for name, ruleset in rulesets.items()}
        return cls(engines, source_pipelines)

    def engine_for(self, source: str) -> SigmaEngine:
        """The engine holding the rules for events of `source`."""
        return self.engines[self.source_pipelines.get(source, NO_PIPELINE)]

    def ruleset_for(self, source: str) -> RuleSet:
        """The rules (and rejections) as processed for `source`."""
        return self.engine_for(source).ruleset

    def match(self, event: Event) -> list[CompiledRule]:
        """The rules whose detection matches the event, processed with its source's pipeline."""
        return self.engine_for(event.source).match(event)
