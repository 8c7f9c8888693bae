"""Splunk: export searches (``/services/search/v2/jobs/export``, ``output_mode=json``) over time windows.

Each poll reads ``[cursor - overlap, now - settle)`` in windows of `window_seconds`, oldest window first. A
window is read whole (an export stream cannot resume) and committed as one batch with the cursor moved to its
end, so a crash repeats at most one window, and the store keeps nothing twice. A window with more than
`max_window_results` results is not held whole: its export is closed there and the window halved until one
fits (down to `SMALLEST_WINDOW`, read whole); a window holding at most half the bound lets the next one
double, back up to `window_seconds`. Results are identified by index and ``_cd`` (bucket and offset), or by a
hash of time, host, source and ``_raw`` when ``_cd`` is absent; ids within `overlap` of the cursor are kept in
the checkpoint so the overlap re-read sends nothing twice.
splunk-sdk is synchronous, so calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import AsyncIterator, Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import splunklib.binding as binding
import splunklib.client as splunk_client
import splunklib.results as splunk_results
from pydantic import Field

from custodes.config import Section
from custodes.connectors.base import Batch
from custodes.connectors.envelope import iso_millis, parse_time, to_event
from custodes.connectors.exports import raw_record
from custodes.connectors.retry import RetryPolicy, SourceError, Transient, call
from custodes.connectors.runtime import RangeBackfill, recent_ids
from custodes.model import Event, stable_id, utcnow
from custodes.responder.http import retry_delay
from custodes.sources import SourceSettings


class SplunkOptions(Section):
    """Options of a `splunk` connector (`connectors.<name>.options`)."""

    host: str
    port: int = Field(default=8089, ge=1, le=65535)
    scheme: str = Field(default="https", pattern="^https?$")
    search: str = Field(description="the search, e.g. 'search index=auth sourcetype=okta'")
    window_seconds: float = Field(default=300.0, gt=0, description="one export per window")
    max_window_results: int = Field(
        default=50_000, ge=1, description="a window with more results is halved until one fits (memory per window)"
    )
    overlap_seconds: float = Field(default=300.0, ge=0, description="re-read this far behind the cursor")
    settle_seconds: float = Field(default=60.0, ge=0, description="leave the newest seconds for the next poll")
    start: datetime | None = Field(default=None, description="first poll starts here (default: 1 hour ago)")
    raw_json: bool = Field(
        default=True, description="a _raw holding the vendor record (JSON, sudo/sshd/su, auditd) is read as it"
    )
    timeout_seconds: float = Field(default=60.0, gt=0)
    verify: bool = True


SMALLEST_WINDOW = timedelta(milliseconds=1)
"""The narrowest window an export is halved to (the precision of the times sent): read whole, however many."""


class _WindowTooLarge(Exception):
    """A window's export passed `max_window_results`: read again in halves."""


def _transient(error: Exception) -> Exception:
    """Classify a splunk-sdk failure."""
    if isinstance(error, binding.AuthenticationError):
        return SourceError("login refused (check the connector's credentials)")
    if isinstance(error, binding.HTTPError):
        if error.status == 429 or error.status >= 500:
            headers = {str(k): str(v) for k, v in error.headers}
            return Transient(f"HTTP {error.status}", retry_delay(error.status, headers, now=utcnow().timestamp()))
        return SourceError(str(error)[:300])
    if isinstance(error, OSError | http.client.HTTPException | ValueError):
        return Transient(type(error).__name__)
    return error


@dataclass
class SplunkConnector:
    """Export searches over time windows; see the module docstring for the cursor."""

    name: str
    source: str
    settings: SourceSettings
    connect: Callable[[], Any]
    options: SplunkOptions
    _: KW_ONLY
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], datetime] = utcnow
    _service: Any = field(default=None, init=False, repr=False)

    def _export(
        self, earliest: datetime, latest: datetime, limit: int | None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        if self._service is None:
            self._service = self.connect()
        stream = self._service.jobs.export(
            self.options.search,
            earliest_time=f"{earliest.timestamp():.3f}",
            latest_time=f"{latest.timestamp():.3f}",
            output_mode="json",
        )
        found: list[dict[str, Any]] = []
        notes: list[str] = []
        try:
            for item in splunk_results.JSONResultsReader(stream):
                if isinstance(item, dict):
                    found.append(item)
                    if limit is not None and len(found) > limit:
                        raise _WindowTooLarge
                elif isinstance(item, splunk_results.Message):
                    if item.type in ("FATAL", "ERROR"):
                        raise SourceError(f"splunk search: {item.type}: {item.message}")
                    notes.append(f"splunk search {item.type}: {item.message}")
        finally:
            stream.close()
        return found, notes

    async def _window(
        self, earliest: datetime, latest: datetime, limit: int | None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        async def attempt() -> tuple[list[dict[str, Any]], list[str]]:
            try:
                return await asyncio.to_thread(self._export, earliest, latest, limit)
            except (SourceError, _WindowTooLarge):
                raise
            except Exception as error:
                classified = _transient(error)
                if isinstance(classified, Transient) and isinstance(error, OSError | http.client.HTTPException):
                    self._service = None
                raise classified from None

        return await call("splunk export", attempt, self.policy)

    def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """The windows from the cursor (less the overlap) to now (less the settle time)."""
        state = checkpoint or {}
        cursor = parse_time(state["cursor"]) if "cursor" in state else None
        start = (cursor or self.options.start or self.clock() - timedelta(hours=1)) - timedelta(
            seconds=self.options.overlap_seconds
        )
        end = self.clock() - timedelta(seconds=self.options.settle_seconds)
        seen = {str(k): float(v) for k, v in dict(state.get("seen", {})).items()}
        return self._read(start, end, seen, cursor)

    def backfill(self, start: datetime, end: datetime) -> SplunkBackfill:
        """A connector reading `[start, end)` once, under its own checkpoint name."""
        return SplunkBackfill(self, start, end)

    async def _read(
        self, start: datetime, end: datetime, seen: dict[str, float], cursor: datetime | None, *, final: bool = False
    ) -> AsyncIterator[Batch]:
        step = timedelta(seconds=self.options.window_seconds)
        overlap = self.options.overlap_seconds
        low, span = start, step
        while low < end:
            high = min(low + span, end)
            limit = self.options.max_window_results if high - low > SMALLEST_WINDOW else None
            try:
                results, notes = await self._window(low, high, limit)
            except _WindowTooLarge:
                span = max(SMALLEST_WINDOW, (high - low) / 2)
                continue
            if 2 * len(results) <= self.options.max_window_results:  # room for twice as long: grow back
                span = min(step, span * 2)
            events: list[Event] = []
            for result in reversed(results):
                key, event = self._event(result)
                if key in seen:
                    continue
                seen[key] = event.time.timestamp()
                events.append(event)
            cursor = high if cursor is None else max(cursor, high)
            floor = cursor.timestamp() - overlap
            seen = recent_ids(seen, floor)
            state: dict[str, Any] = {"cursor": iso_millis(cursor), "seen": dict(seen)}
            if final and high >= end:
                state["done"] = True
            yield Batch(events, state, notes)
            low = high

    def _event(self, result: dict[str, Any]) -> tuple[str, Event]:
        cd = result.get("_cd")
        if cd:
            key = f"{result.get('index', '')}:{cd}"
        else:
            key = stable_id(result.get("_time"), result.get("host"), result.get("source"), result.get("_raw"))
        record = raw_record(result) if self.options.raw_json else result
        event = to_event(record, self.settings, self.source)
        event.id = stable_id(self.source, key)
        # A record without a time of its own (generic, or a JSON _raw that carries none) has Splunk's _time.
        if any("no time field" in w for w in event.warnings):
            event.warnings = [w for w in event.warnings if "no time field" not in w]
            try:
                event.time = parse_time(result.get("_time"))
            except ValueError:
                event.warnings.append(f"_time: unreadable time {result.get('_time')!r}; using ingestion time")
        return key, event


class SplunkBackfill(RangeBackfill[SplunkConnector]):
    """One read of a fixed range of a Splunk connector; it resumes from its own checkpoint."""

    async def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """The windows after `checkpoint`; nothing once the range was read."""
        state = checkpoint or {}
        if state.get("done"):
            return
        cursor = parse_time(state["cursor"]) if "cursor" in state else None
        seen = {str(k): float(v) for k, v in dict(state.get("seen", {})).items()}
        async for batch in self.parent._read(cursor or self.start, self.end, seen, cursor, final=True):
            yield batch


def build(
    name: str, source: str, settings: SourceSettings, options: dict[str, Any], credentials: dict[str, str]
) -> SplunkConnector:
    """A `splunk` connector from configuration: credentials `username` and `password`, or `token`."""
    opts = SplunkOptions.model_validate(options)
    auth: dict[str, Any]
    if "token" in credentials:
        auth = {"splunkToken": credentials["token"]}
    elif "username" in credentials and "password" in credentials:
        auth = {"username": credentials["username"], "password": credentials["password"], "autologin": True}
    else:
        raise ValueError("a splunk connector needs credentials 'token', or 'username' and 'password'")

    def connect() -> Any:
        handler = binding.handler(timeout=opts.timeout_seconds, verify=opts.verify)
        return splunk_client.connect(host=opts.host, port=opts.port, scheme=opts.scheme, handler=handler, **auth)

    return SplunkConnector(name, source, settings, connect, opts)
