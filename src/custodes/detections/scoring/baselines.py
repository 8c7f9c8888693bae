"""Baselines: each entity's own history, its peer group's, its hour profile and its first-seen memory.

Daily feature values are kept as exponentially forgotten sums over the entity's active days: how many days the
feature was non-zero, and the first two moments of log(1 + value) on those days. Peer statistics pool the same
sums over a peer group (department/title, else department, else everyone), and an entity's baseline shrinks toward
its peers' while its own history is short.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from operator import add
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from custodes.detections.scoring.catalog import CHANNELS, RISE_WINDOWS

T = TypeVar("T")
NZ, S1, S2, SRAW, LAST = range(5)
USED, AMOUNT, LOGGED, LOGGED2 = range(4)
"""A channel's reference sums (`EntityState.references`): days used, amount, log(1 + amount) and its square."""
RECENT_DAYS = max(RISE_WINDOWS) - 1
"""The active days before today the longest rise window holds."""
MIN_PEERS = 5
SEEN_CAPS = {"resource": 600, "host": 40, "device": 40, "country": 30, "asn": 40}
HOURS = 48
DAMPED_WEIGHT = 0.2
OWNER_MIN_DAYS = 3.0
OWNER_LEAD = 1.5
MACHINES_CAP = 20
SCALE_LIMIT = 1e100


@dataclass(slots=True)
class DayState:
    """What an entity did on one local day so far."""

    day: int
    counts: dict[str, float] = field(default_factory=dict)
    hours: dict[int, int] = field(default_factory=dict)
    """Events by local hour (0-23), for the hours that have any."""
    evidence: dict[str, list[str]] = field(default_factory=dict)
    sigma: list[tuple[str, str, float]] = field(default_factory=list)
    events: int = 0
    owners: dict[str, str] = field(default_factory=dict)
    """Owners of other people's machines used today -> the first such event."""
    machines: set[str] = field(default_factory=set)
    """Machines (lower-case names) used today."""
    start: datetime | None = None
    end: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """Serialisable form."""
        return {
            "day": self.day,
            "counts": self.counts,
            "hours": [self.hours.get(hour, 0) for hour in range(24)],
            "evidence": self.evidence,
            "sigma": [list(s) for s in self.sigma],
            "events": self.events,
            "owners": self.owners,
            "machines": sorted(self.machines),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DayState:
        """Inverse of `to_json`."""
        return cls(
            day=int(data["day"]),
            counts={str(k): float(v) for k, v in data["counts"].items()},
            hours={hour: int(count) for hour, count in enumerate(data["hours"]) if count},
            evidence={str(k): [str(i) for i in v] for k, v in data["evidence"].items()},
            sigma=[(str(a), str(b), float(c)) for a, b, c in data["sigma"]],
            events=int(data["events"]),
            owners={str(k): str(v) for k, v in data.get("owners", {}).items()},
            machines={str(m) for m in data.get("machines", [])},
        )


@dataclass(slots=True)
class EntityState:
    """An entity's baseline and running risk."""

    key: str
    kind: str
    group: str
    department: str
    tz: ZoneInfo
    days: float = 0.0
    weekend_days: float = 0.0
    """The part of `days` that fell on weekends (the hour profile's weekend half is relative to it)."""
    active_days: int = 0
    stats: dict[str, list[float]] = field(default_factory=dict)
    """Per feature: forgotten count of days with it, sums of log(1 + value) and of its square, sum of values (each
    times `scale`), and the last day (ordinal) with it."""
    hours: list[float] = field(default_factory=lambda: [0.0] * HOURS)
    """Forgotten counts of active days with activity in each hour of the week (weekdays, then weekends), times
    `scale` (see `hour_profile`)."""
    machines: dict[str, float] = field(default_factory=dict)
    """Forgotten counts of active days on each machine (the most used ones, at most `MACHINES_CAP`), times `scale`."""
    scale: float = 1.0
    """What the forgotten sums in `stats`, `hours` and `machines` are kept multiplied by: forgetting a day divides the
    scale instead of multiplying every sum (a day costs what it holds, not what the history holds)."""
    recent: dict[int, dict[str, float]] = field(default_factory=dict)
    """The days among the last `RECENT_DAYS` active ones that moved data, oldest first: `active_days` once the day
    was folded -> data-movement channel amounts."""
    references: list[dict[str, list[float]]] = field(default_factory=lambda: [{} for _ in RISE_WINDOWS])
    """Per rise window (`RISE_WINDOWS`), per channel feature: forgotten sums over the active days before the window
    (`USED`, `AMOUNT`, `LOGGED`, `LOGGED2`, each times `scale`; see `reference_sums`), learned in full: what a rise
    over that window is judged against. A day joins a window's reference as it leaves the window."""
    reference_days: list[float] = field(default_factory=lambda: [0.0 for _ in RISE_WINDOWS])
    """Per rise window: forgotten count of the active days before it (a day without a channel counting)."""
    seen: dict[str, dict[str, int]] = field(default_factory=dict)
    visits: dict[str, int] = field(default_factory=dict)
    """Owners of other people's machines the entity used on a recent day scored for such a use (`OTHER_MACHINE`: unusual
    for it) -> that day (ordinal): what `reciprocal_host` looks up."""
    risk: float = 0.0
    risk_day: int = 0
    stages: dict[str, int] = field(default_factory=dict)
    last_finding_day: int | None = None
    reviewed_day: int | None = None
    """The last date (ordinal) the entity was ranked within the daily review budget."""
    reviewed_points: float = 0.0
    """The day's own points it was ranked there for (the strongest, while it stays under review)."""
    reviewed_features: dict[str, float] = field(default_factory=dict)
    """The features it was ranked there for, each with its strongest points on such a day (while under review)."""
    open: DayState | None = None

    def fold(self, today: DayState, forget: float, weekend: bool, damped: frozenset[str] = frozenset()) -> None:
        """Add a finished day to the history, forgetting older days by `forget` (per active day).

        Features in `damped` (the anomalous ones of a high-scoring day) count with a small weight, so a burst of
        exfiltration does not become the entity's new normal overnight.
        """
        self.days = self.days * forget + 1.0
        self.weekend_days = self.weekend_days * forget + (1.0 if weekend else 0.0)
        self.active_days += 1
        self.scale /= forget
        if self.scale > SCALE_LIMIT:
            self._rescale()
        scale = self.scale
        moved: dict[str, float] | None = None
        for name, value in today.counts.items():
            if value <= 0:
                continue
            if name in CHANNELS:
                if moved is None:
                    moved = {}
                moved[name] = value
            found = self.stats.get(name)
            if found is None:
                found = self.stats[name] = [0.0, 0.0, 0.0, 0.0, 0.0]
            values = found
            logged = math.log1p(value)
            weight = (DAMPED_WEIGHT if name in damped else 1.0) * scale
            values[NZ] += weight
            values[S1] += weight * logged
            values[S2] += weight * logged * logged
            values[SRAW] += weight * value
            values[LAST] = float(today.day)
        machines = self.machines
        for machine in today.machines:
            machines[machine] = machines.get(machine, 0.0) + scale
        if len(machines) > MACHINES_CAP:
            self.machines = dict(sorted(machines.items(), key=lambda item: -item[1])[:MACHINES_CAP])
        offset = 24 if weekend else 0
        hours = self.hours
        for hour in today.hours:
            hours[offset + hour] += scale
        self._remember(moved, forget)

    def _remember(self, moved: dict[str, float] | None, forget: float) -> None:
        """Keep a day's channel amounts among the recent days; a day leaving a rise window joins its reference."""
        active, recent = self.active_days, self.recent
        if moved is not None:
            recent[active] = moved
        for index, window in enumerate(RISE_WINDOWS):
            if active >= window:
                self.reference_days[index] = self.reference_days[index] * forget + 1.0
            leaving = recent.get(active - window + 1)
            if leaving is not None:
                _add_day(self.references[index], leaving, self.scale)
        while recent and active - (oldest := next(iter(recent))) >= RECENT_DAYS:
            del recent[oldest]

    def reference_sums(self) -> list[dict[str, list[float]]]:
        """`references` as they are (`USED`, `AMOUNT`, `LOGGED`, `LOGGED2` of each channel per window), not multiplied
        by `scale`."""
        scale = self.scale
        return [
            {name: [total / scale for total in sums] for name, sums in reference.items()}
            for reference in self.references
        ]

    def _rescale(self) -> None:
        """Bring the forgotten sums back to a scale of 1 (before the scale grows past what a float holds)."""
        self.stats = self.feature_sums()
        self.hours = self.hour_profile()
        self.machines = self.machine_days()
        self.references = self.reference_sums()
        self.scale = 1.0

    def feature_sums(self) -> dict[str, list[float]]:
        """`stats` as they are (count, sums), not multiplied by `scale`."""
        scale = self.scale
        return {
            name: [values[NZ] / scale, values[S1] / scale, values[S2] / scale, values[SRAW] / scale, values[LAST]]
            for name, values in self.stats.items()
        }

    def hour_profile(self) -> list[float]:
        """Forgotten counts of active days with activity in each hour of the week (weekdays, then weekends)."""
        scale = self.scale
        return [count / scale for count in self.hours]

    def machine_days(self) -> dict[str, float]:
        """Forgotten counts of active days on each machine."""
        scale = self.scale
        return {machine: days / scale for machine, days in self.machines.items()}

    def prune(self, today: int, memory_days: int) -> None:
        """Forget first-seen values older than `memory_days`, and keep each memory within its cap."""
        for kind, values in self.seen.items():
            stale = [v for v, day in values.items() if today - day > memory_days]
            for value in stale:
                del values[value]
            cap = SEEN_CAPS.get(kind, 100)
            if len(values) > cap:
                keep = sorted(values.items(), key=lambda item: item[1], reverse=True)[:cap]
                self.seen[kind] = dict(keep)

    def part_days(self, weekend: bool) -> float:
        """Active (forgotten) days on weekends, or on weekdays."""
        return self.weekend_days if weekend else self.days - self.weekend_days

    def usual(self, name: str) -> float:
        """The entity's average daily value of a feature over its active days."""
        values = self.stats.get(name)
        return 0.0 if values is None or self.days <= 0 else values[SRAW] / self.scale / self.days

    def share(self, name: str) -> float:
        """The share of the entity's active days with the feature (forgotten as the days are)."""
        values = self.stats.get(name)
        return 0.0 if values is None or self.days <= 0 else min(1.0, values[NZ] / self.scale / self.days)

    def to_json(self) -> dict[str, Any]:
        """Serialisable form."""
        return {
            "kind": self.kind,
            "group": self.group,
            "department": self.department,
            "tz": self.tz.key,
            "days": self.days,
            "weekend_days": self.weekend_days,
            "active_days": self.active_days,
            "stats": self.feature_sums(),
            "hours": self.hour_profile(),
            "machines": self.machine_days(),
            "recent": [[day, amounts] for day, amounts in self.recent.items()],
            "references": self.reference_sums(),
            "reference_days": self.reference_days,
            "rise_windows": list(RISE_WINDOWS),
            "seen": self.seen,
            "visits": self.visits,
            "risk": self.risk,
            "risk_day": self.risk_day,
            "stages": self.stages,
            "last_finding_day": self.last_finding_day,
            "reviewed_day": self.reviewed_day,
            "reviewed_points": self.reviewed_points,
            "reviewed_features": self.reviewed_features,
            "open": None if self.open is None else self.open.to_json(),
        }

    @classmethod
    def from_json(cls, key: str, data: dict[str, Any]) -> EntityState:
        """Inverse of `to_json`."""
        return cls(
            key=key,
            kind=str(data["kind"]),
            group=str(data["group"]),
            department=str(data["department"]),
            tz=ZoneInfo(str(data["tz"])),
            days=float(data["days"]),
            weekend_days=float(data.get("weekend_days", 0.0)),
            active_days=int(data["active_days"]),
            stats={str(k): [float(x) for x in v] for k, v in data["stats"].items()},
            hours=[float(h) for h in data["hours"]],
            machines={str(k): float(v) for k, v in data.get("machines", {}).items()},
            recent={int(day): {str(k): float(v) for k, v in kept.items()} for day, kept in data.get("recent", [])},
            references=_per_window(data.get("references", data.get("reference")), _sums, data.get("rise_windows")),
            reference_days=_per_window(data.get("reference_days"), _days, data.get("rise_windows")),
            seen={str(k): {str(a): int(b) for a, b in v.items()} for k, v in data["seen"].items()},
            visits={str(k): int(v) for k, v in data.get("visits", {}).items()},
            risk=float(data["risk"]),
            risk_day=int(data["risk_day"]),
            stages={str(k): int(v) for k, v in data["stages"].items()},
            last_finding_day=None if data.get("last_finding_day") is None else int(data["last_finding_day"]),
            reviewed_day=None if data.get("reviewed_day") is None else int(data["reviewed_day"]),
            reviewed_points=float(data.get("reviewed_points", 0.0)),
            reviewed_features=_reviewed_features(data.get("reviewed_features"), float(data.get("reviewed_points", 0))),
            open=None if data.get("open") is None else DayState.from_json(data["open"]),
        )


def _add_day(reference: dict[str, list[float]], amounts: dict[str, float], weight: float) -> None:
    """Add one day's channel amounts to a reference's sums, with `weight`."""
    for name, value in amounts.items():
        found = reference.get(name)
        if found is None:
            found = reference[name] = [0.0, 0.0, 0.0, 0.0]
        logged = math.log1p(value)
        found[USED] += weight
        found[AMOUNT] += weight * value
        found[LOGGED] += weight * logged
        found[LOGGED2] += weight * logged * logged


def _sums(stored: dict[str, Any] | None) -> dict[str, list[float]]:
    """Stored reference sums of one window."""
    return {str(k): [float(x) for x in v] for k, v in (stored or {}).items()}


def _days(stored: float | None) -> float:
    """A stored reference day count of one window."""
    return float(stored or 0.0)


STORED_WINDOWS = {2: (5, 15)}
"""The rise windows of states stored before they were stored with them, by how many there were."""


def _per_window(stored: Any, read: Callable[[Any], T], spans: Any = None) -> list[T]:
    """A stored value per rise window, each `read`. Stored for other windows (`spans`, else `STORED_WINDOWS`), each
    window takes the value of the shortest stored window at least as long (the days before a longer window are the
    days before a shorter one less a few, none inside it) and starts empty where none is as long; one value (a state
    stored before the windows were several) gives it to every window."""
    if isinstance(stored, list):
        known = tuple(spans) if isinstance(spans, list) else STORED_WINDOWS.get(len(stored), ())
        if len(known) == len(stored):
            by_span = sorted(zip(known, stored, strict=True), key=lambda pair: pair[0])
            return [read(next((value for span, value in by_span if span >= window), None)) for window in RISE_WINDOWS]
        stored = stored[0] if stored else None
    return [read(stored) for _ in RISE_WINDOWS]


def _reviewed_features(stored: Any, points: float) -> dict[str, float]:
    """Stored reviewed features: feature -> points; a list (states stored before points were kept per feature) gives
    each feature the day's points, the most it can have counted."""
    if isinstance(stored, dict):
        return {str(feature): float(value) for feature, value in stored.items()}
    return {str(feature): points for feature in stored or []}


@dataclass(frozen=True, slots=True)
class PeerFeature:
    """A peer group's view of one feature."""

    rate: float
    mean_log: float
    var_log: float
    median: float


@dataclass(slots=True)
class PeerStats:
    """Pooled feature statistics and hour profiles of peer groups."""

    features: dict[str, dict[str, PeerFeature]] = field(default_factory=dict)
    hours: dict[str, list[float]] = field(default_factory=dict)
    """Per group: the share of a member's active weekdays (weekend days) with activity in each weekday (weekend)
    hour."""
    members: dict[str, int] = field(default_factory=dict)

    def group_for(self, state: EntityState) -> str:
        """The narrowest group with enough members: department/title, department, everyone."""
        for group in (state.group, "dept:" + state.department):
            if self.members.get(group, 0) >= MIN_PEERS:
                return group
        return "*"

    def feature(self, group: str, name: str) -> PeerFeature | None:
        """A group's statistics for one feature (None: no member ever had it)."""
        return self.features.get(group, {}).get(name)


def _shares(counts: list[float], days: float) -> list[float]:
    """Counts of days as shares of `days` (none without days)."""
    return [count / days for count in counts] if days > 0 else [0.0] * len(counts)


def peer_stats(states: Iterable[EntityState]) -> PeerStats:
    """Pool the baselines of persons into group statistics."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(dict)
    means: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    days: dict[str, float] = defaultdict(float)
    hours: dict[str, list[float]] = {}
    members: dict[str, int] = defaultdict(int)
    half = HOURS // 2
    for state in states:
        if state.kind != "person" or state.days <= 0:
            continue
        # What the person adds to each of the three groups they count in, computed once: the share of their weekdays
        # (weekend days) active in each weekday (weekend) hour, and per feature the (forgotten) days with it, the
        # sums of its log amounts and squares, and its mean daily amount.
        active, profile = state.days, state.hour_profile()
        shares = _shares(profile[:half], state.part_days(False)) + _shares(profile[half:], state.part_days(True))
        own = [
            (name, values[NZ], values[S1], values[S2], values[SRAW] / active)
            for name, values in state.feature_sums().items()
        ]
        for group in (state.group, "dept:" + state.department, "*"):
            members[group] += 1
            days[group] += active
            pooled = hours.get(group)
            hours[group] = shares.copy() if pooled is None else list(map(add, pooled, shares))
            group_sums, group_means = sums[group], means[group]
            for name, nz, s1, s2, mean in own:
                acc = group_sums.get(name)
                if acc is None:
                    group_sums[name] = [nz, s1, s2]
                else:
                    acc[0] += nz
                    acc[1] += s1
                    acc[2] += s2
                group_means[name].append(mean)
    stats = PeerStats(members=dict(members))
    for group, group_sums in sums.items():
        features: dict[str, PeerFeature] = {}
        size = members[group]
        for name, (nz, s1, s2) in group_sums.items():
            if nz <= 0:
                continue
            mean = s1 / nz
            values = means[group][name] + [0.0] * (size - len(means[group][name]))
            features[name] = PeerFeature(
                rate=nz / days[group],
                mean_log=mean,
                var_log=max(s2 / nz - mean * mean, 0.0),
                median=statistics.median(values),
            )
        stats.features[group] = features
    for group, profile in hours.items():
        stats.hours[group] = [value / members[group] for value in profile]
    return stats


def machine_owners(states: Iterable[EntityState]) -> dict[str, str]:
    """Each machine's owner as usage shows it: the person with at least `OWNER_MIN_DAYS` (forgotten) active days on
    it and `OWNER_LEAD` times the days of anyone else there (administrators passing by do not share a machine; a
    pool used alike by several people has no owner)."""
    best: dict[str, tuple[float, str]] = {}
    second: dict[str, float] = defaultdict(float)
    for state in states:
        if state.kind != "person":
            continue
        for machine, days in state.machine_days().items():
            top = best.get(machine)
            if top is None or days > top[0]:
                if top is not None:
                    second[machine] = max(second[machine], top[0])
                best[machine] = (days, state.key)
            else:
                second[machine] = max(second[machine], days)
    return {
        machine: key
        for machine, (days, key) in best.items()
        if days >= OWNER_MIN_DAYS and days >= OWNER_LEAD * second[machine]
    }
