"""The window of event times taken as stated: an absurd time (year 2500, 9999, 0001) never moves a clock.

A record whose time falls outside [earliest, now + max future skew] keeps its stated time in `raw`, takes its
ingestion time as `Event.time` and carries a warning starting with `OUT_OF_WINDOW`; event-time clocks (behaviour
scoring's day closing, correlation windows) skip such records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from custodes.config import IngestSettings
from custodes.model import Event, Finding

OUT_OF_WINDOW = "time outside the accepted window"


def out_of_window(event: Event) -> bool:
    """Whether the event's stated time was replaced by its ingestion time for being absurd."""
    return bool(event.warnings) and any(warning.startswith(OUT_OF_WINDOW) for warning in event.warnings)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Accepted event times: from `earliest` to `future` ahead of the ingestion time."""

    earliest: datetime = datetime(1990, 1, 1, tzinfo=UTC)
    future: timedelta = timedelta(days=1)

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> TimeWindow:
        """The window of `ingest` settings."""
        return cls(settings.earliest_time, timedelta(hours=settings.max_future_skew_hours))

    def accepts(self, when: datetime, now: datetime) -> bool:
        """Whether `when` is inside the window at `now`."""
        return self.earliest <= when <= now + self.future

    def clamp(self, events: Sequence[Event], alerts: Sequence[Finding], now: datetime) -> int:
        """Give every out-of-window event its ingestion time and a warning, and bound alerts' times; the count."""
        clamped = 0
        for event in events:
            if not self.accepts(event.time, now):
                event.warnings.append(
                    f"{OUT_OF_WINDOW} ({self.earliest.date().isoformat()} to {self.future} ahead): "
                    f"stated {event.time.isoformat()}; using ingestion time"
                )
                event.time = now
                clamped += 1
        for alert in alerts:
            if not self.accepts(alert.first_seen, now):
                alert.first_seen = now
            if not self.accepts(alert.last_seen, now):
                alert.last_seen = max(now, alert.first_seen)
        return clamped
