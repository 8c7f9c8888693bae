"""Everything a running Custodes needs, built from settings once: store, rules, playbooks, runner, pipeline."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

import aiohttp

from custodes.config import Settings, missing_paths
from custodes.detections.scoring.service import ScoringService
from custodes.detections.sigma.correlation import Correlator
from custodes.detections.sigma.enrichment import EventContext
from custodes.detections.sigma.loader import RuleOptions, load_rules
from custodes.detections.sigma.overrides import unknown_overrides
from custodes.detections.sigma.routing import RoutedEngine
from custodes.detections.sigma.ruleset import RuleSet
from custodes.errors import ConfigError
from custodes.hold import EventTimeHold
from custodes.pipeline import Pipeline
from custodes.playbooks.loader import LoadedPlaybook, load_playbooks
from custodes.playbooks.runner import Runner
from custodes.responder import catalog
from custodes.store import Store
from custodes.timewindow import TimeWindow
from custodes.toggles import load_disabled


@dataclass(slots=True)
class Services:
    """The wired-up application; close it (or use `async with`) to release connections."""

    settings: Settings
    store: Store
    rules: RuleSet
    playbooks: list[LoadedPlaybook]
    http: aiohttp.ClientSession
    pipeline: Pipeline

    @property
    def runner(self) -> Runner:
        """The playbook engine."""
        return self.pipeline.runner

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        """Load rules and playbooks (failing on the first bad file set), then open the store and HTTP session."""
        missing = missing_paths(settings)
        if missing is not None:
            raise missing
        options = RuleOptions.from_settings(settings.detection)
        rules = load_rules(settings.detection.rules, options=options)
        problems = unknown_overrides(settings.detection.overrides, rules.known)
        if problems:
            raise ConfigError(problems, hint="fix or remove the override; `custodes rules lint` lists the rules")
        playbooks = load_playbooks(settings.playbooks.paths, catalog, secrets=settings.playbooks.secrets)
        async with AsyncExitStack() as opened:  # what opened is closed again if a later part fails
            store = await Store.open(settings.database)
            opened.push_async_callback(store.close)
            timeout = aiohttp.ClientTimeout(total=settings.responder.http_timeout_seconds)
            http = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)
            opened.push_async_callback(http.close)
            runner = Runner(
                store, catalog, settings.responder, http, playbooks=playbooks, engine=settings.playbooks, app=settings
            )
            engine = RoutedEngine.load(
                settings.detection.rules,
                settings.sources,
                unprocessed=rules,
                options=options,
                context=EventContext.from_settings(settings),
            )
            limits = settings.detection.correlation
            correlator = Correlator(
                [loaded.ruleset for loaded in engine.engines.values()],
                max_groups=limits.max_groups,
                max_events_per_group=limits.max_events_per_group,
            )
            pipeline = Pipeline(
                store,
                engine,
                playbooks,
                runner,
                dedup_window=timedelta(seconds=settings.detection.dedup_window_seconds),
                correlator=correlator,
                window=TimeWindow.from_settings(settings.ingest),
                hold=EventTimeHold(timedelta(hours=settings.ingest.max_hold_hours)),
                cases=settings.cases,
            )
            if settings.scoring.enabled:
                pipeline.scoring = await ScoringService.open(settings.scoring, store)
                await pipeline.restore_held()
            pipeline.disabled_playbooks, pipeline.disabled_rules = await load_disabled(store)
            opened.pop_all()
            return cls(settings, store, rules, playbooks, http, pipeline)

    async def close(self) -> None:
        """Close the HTTP session and the store."""
        await self.http.close()
        await self.store.close()

    async def __aenter__(self) -> Services:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
