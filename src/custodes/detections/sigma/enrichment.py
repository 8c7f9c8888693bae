"""Custodes' enrichment namespace: what rules may know about an event beyond its raw record.

Sigma has no time of day and no HR state, so before matching the rules that name a `custodes.*` field the
engine gives them a view of the record with one more key, `custodes`, computed from the event's time and its
actor's entry in the people directory (`scoring.directory`, resolved as behaviour scoring resolves actors; for a
record the machine itself logs, a removable drive recognised, the entry of the person its machine is assigned to)::

    custodes:
      person: jdoe@example.com     # directory id of the actor, null when the directory does not know them
      timezone: Europe/Berlin      # the person's time zone, else scoring.default_timezone
      local_time: "2026-11-21T23:41:07+01:00"
      local_hour: 23               # 0-23, in that time zone
      local_weekday: sat           # mon tue wed thu fri sat sun
      off_hours: true              # outside detection.enrichment's working hours and days
      watchlists: [departing]      # the person's watchlists that day (see below), sorted
      days_to_departure: 9         # days from the local date to the departure date; null when none is known

`watchlists` holds the directory's watchlists in force that day (`privileged`, `contractor`, ...), `on_notice`
and `departing` from the notice date on, and `departing` whenever a departure date lies ahead. The view is a
shallow copy: the stored raw record never holds `custodes`. Rules that name no `custodes.*` field never see it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from custodes.connectors import windows
from custodes.detections.scoring.observation import name_of
from custodes.detections.scoring.winlog import account_of

if TYPE_CHECKING:
    from custodes.config import EnrichmentSettings, IdentitySettings, Settings
    from custodes.detections.scoring.identity import IdentityResolver, Person
    from custodes.model import Event

ENRICHMENT_FIELD: Final = "custodes"
ENRICHMENT_PREFIX: Final = ENRICHMENT_FIELD + "."
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEPARTING: Final = "departing"
ON_NOTICE: Final = "on_notice"


class EventContext:
    """Computes the `custodes` object of events: local time, working hours, watchlists, departure."""

    def __init__(
        self,
        *,
        resolver: IdentityResolver | None = None,
        default_timezone: str = "UTC",
        start_hour: int = 8,
        end_hour: int = 18,
        working_days: Iterable[str] = WEEKDAYS[:5],
    ) -> None:
        self.resolver = resolver
        self.default_zone = _zone(default_timezone) or ZoneInfo("UTC")
        self.start_hour = start_hour
        self.end_hour = end_hour
        self.working_days = frozenset(day.lower()[:3] for day in working_days)
        self._zones: dict[str, ZoneInfo | None] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> EventContext:
        """The context `scoring` (directory, identities, default time zone) and `detection.enrichment` give."""
        scoring = settings.scoring
        return cls.create(
            settings.detection.enrichment,
            default_timezone=scoring.default_timezone,
            people=_people(scoring.directory) if scoring.directory is not None else (),
            identities=scoring.identities,
        )

    @classmethod
    def create(
        cls,
        hours: EnrichmentSettings,
        *,
        default_timezone: str = "UTC",
        people: Iterable[Person] = (),
        identities: IdentitySettings | None = None,
    ) -> EventContext:
        """A context over `people` (resolved with `identities`) and the working hours of `hours`."""
        from custodes.config import IdentitySettings
        from custodes.detections.scoring.identity import IdentityResolver

        resolver = IdentityResolver(people, identities or IdentitySettings())
        return cls(
            resolver=resolver,
            default_timezone=default_timezone,
            start_hour=hours.start_hour,
            end_hour=hours.end_hour,
            working_days=hours.working_days,
        )

    def context(self, event: Event, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `custodes` object for `event` (`record`: its view as rules see it). Its person is the actor's entry;
        where the actor is no person but the machine itself (a computer account, SYSTEM, or none, as a removable
        drive recognised, Windows 6416, mounted, Defender's `UsbDriveMounted`, or attached, a Linux kernel's line),
        the entry of the person the directory assigns the record's machine to."""
        person = self._person(event.actor)
        if person is None and record is not None and (event.actor is None or account_of(event.actor) is None):
            person = self._owner(record)
        zone = (self._zone_named(person.timezone) if person is not None else None) or self.default_zone
        moment = event.time if event.time.tzinfo is not None else event.time.replace(tzinfo=UTC)
        local = moment.astimezone(zone)
        day = local.date()
        weekday = WEEKDAYS[local.weekday()]
        departure = person.departure_date if person is not None else None
        return {
            "person": person.id if person is not None else None,
            "timezone": str(zone.key),
            "local_time": local.isoformat(),
            "local_hour": local.hour,
            "local_weekday": weekday,
            "off_hours": weekday not in self.working_days or not self.start_hour <= local.hour < self.end_hour,
            "watchlists": _watchlists(person, day) if person is not None else [],
            "days_to_departure": (departure - day).days if departure is not None else None,
        }

    def view(self, event: Event, record: dict[str, Any]) -> dict[str, Any]:
        """The record rules with `custodes.*` fields are matched against: `record`, the event's as rules see it
        (`fields.match_view`), with the event's context (a copy; `event.raw` is untouched)."""
        view = dict(record)
        view[ENRICHMENT_FIELD] = self.context(event, record)
        return view

    def _owner(self, record: dict[str, Any]) -> Person | None:
        """The directory's entry of the person a record's machine is assigned to (`hosts`), if any."""
        if self.resolver is None:
            return None
        host = record.get("host")  # ECS's object, or a syslog line's machine
        machine = name_of(record.get("DeviceName")) or windows.computer(record)
        if machine is None:
            machine = name_of(host.get("name")) if isinstance(host, dict) else name_of(host)
        key = None if machine is None else self.resolver.host_owner(machine)
        return None if key is None else self.resolver.person(key)

    def _person(self, actor: str | None) -> Person | None:
        if actor is None or self.resolver is None:
            return None
        key, _ = self.resolver.resolve(actor)
        return self.resolver.person(key)

    def _zone_named(self, name: str | None) -> ZoneInfo | None:
        if not name:
            return None
        if name not in self._zones:
            self._zones[name] = _zone(name)
        return self._zones[name]


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _watchlists(person: Person, day: date) -> list[str]:
    names = set(person.watchlists_on(day))
    if person.notice_date is not None and person.notice_date <= day:
        names.update((ON_NOTICE, DEPARTING))
    if person.departure_date is not None and person.departure_date >= day:
        names.add(DEPARTING)
    return sorted(names)


def _people(path: Path) -> list[Person]:
    from custodes.detections.scoring.identity import load_directory

    return load_directory(path)
