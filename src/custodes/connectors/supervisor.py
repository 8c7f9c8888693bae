"""The connector supervisor of `custodes serve`: one task per configured connector, started and stopped by name.

Every enabled entry under ``connectors:`` starts with the service; each of its connectors (an Entra entry has
one per feed, a Google Workspace entry one per application) polls on the entry's interval with its checkpoint
and backs off while its source fails (`ConnectorRuntime.loop`). An entry with ``enabled: false`` is built (so
its configuration is checked) but waits for `start`. Start and stop come from the REST API
(``POST /api/connectors/{name}/start|stop``), which `custodes connectors start|stop` calls; a stop lasts until
a start or the next restart of the service. A running connector is a live source: its watermark
holds behaviour scoring's dates open while it lags (custodes.hold, bounded by `ingest.max_hold_hours`).
Stopping lets the batch under way commit for up to `grace_seconds`, then cancels it (its transaction rolls
back, so its checkpoint is not moved either).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Self

import aiohttp

from custodes.config import Settings
from custodes.connectors import registry, sdk
from custodes.connectors.runtime import ConnectorRuntime, Scheduled

log = logging.getLogger(__name__)

State = Literal["running", "stopped"]


@dataclass(slots=True)
class Entry:
    """One configured entry and the tasks polling its connectors."""

    name: str
    kind: str
    scheduled: list[Scheduled]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def state(self) -> State:
        """Running while any of its tasks is."""
        return "running" if any(not task.done() for task in self.tasks) else "stopped"


class UnknownConnector(KeyError):
    """No configured connector has this name."""


class ConnectorSupervisor:
    """Runs the configured connectors of one process; see the module docstring."""

    def __init__(
        self, runtime: ConnectorRuntime, entries: list[Entry], autostart: set[str], *, grace_seconds: float = 10.0
    ) -> None:
        self.runtime = runtime
        self.grace_seconds = grace_seconds
        self.entries = {entry.name: entry for entry in entries}
        self.autostart = autostart

    @classmethod
    def from_settings(
        cls, settings: Settings, runtime: ConnectorRuntime, http: aiohttp.ClientSession, *, grace_seconds: float = 10.0
    ) -> Self:
        """Build every configured entry (a ConfigError names the first bad one); enabled ones start with `start_all`."""
        entries = [
            Entry(name, entry.kind, registry.build(name, entry, settings, http))
            for name, entry in settings.connectors.items()
        ]
        enabled = {name for name, entry in settings.connectors.items() if entry.enabled}
        return cls(runtime, entries, enabled, grace_seconds=grace_seconds)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries.values())

    def entry(self, name: str) -> Entry:
        """A configured entry by name; UnknownConnector names the configured ones."""
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none configured"
            raise UnknownConnector(f"no connector {name!r} is configured (configured: {known})") from None

    def start_all(self) -> None:
        """Start every enabled entry."""
        for name in sorted(self.autostart):
            self.start(name)

    def start(self, name: str) -> State:
        """Start an entry's connectors (nothing to do when they run); the entry's state after."""
        entry = self.entry(name)
        if entry.state == "running":
            return "running"
        entry.stop = asyncio.Event()
        for item in entry.scheduled:
            self.runtime.pipeline.hold.join(item.connector.name)
        entry.tasks = [
            asyncio.create_task(self._run(item, entry.stop), name=f"connector:{item.connector.name}")
            for item in entry.scheduled
        ]
        log.info("connector %s started", name, extra={"connectors": [i.connector.name for i in entry.scheduled]})
        return entry.state  # an inventory-only entry (aws_iam) has nothing to run

    async def stop(self, name: str) -> State:
        """Stop an entry's connectors once their rounds under way have committed."""
        entry = self.entry(name)
        entry.stop.set()
        await self._finish(entry.tasks)
        self._leave(entry)
        await self.runtime.pipeline.release_held(run_playbooks=self.runtime.run_playbooks)
        log.info("connector %s stopped", name)
        return "stopped"

    async def close(self) -> None:
        """Stop everything and close the clients that hold connections."""
        for entry in self:
            entry.stop.set()
        await self._finish([task for entry in self for task in entry.tasks])
        for entry in self:
            self._leave(entry)
            for item in entry.scheduled:
                await sdk.close(item.connector)

    def _leave(self, entry: Entry) -> None:
        """A stopped entry's connectors hold scoring's dates open no more (the next batch, or `release_held`,
        releases what only they held)."""
        for item in entry.scheduled:
            self.runtime.pipeline.hold.leave(item.connector.name)

    async def _finish(self, tasks: list[asyncio.Task[None]]) -> None:
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=self.grace_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, item: Scheduled, stop: asyncio.Event) -> None:
        try:
            await self.runtime.loop(item, stop)
        except Exception:  # the loop itself keeps going on poll errors; anything else is a bug worth a trace
            log.exception("connector %s stopped on an unexpected error", item.connector.name)
