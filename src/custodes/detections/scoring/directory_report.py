"""What a directory export holds for behaviour scoring, and what it would change against the directory in use:
`custodes directory check` reads an export before it is moved over the live one (which scoring follows by itself,
docs/scoring.md)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from custodes.config import ScoringSettings
from custodes.detections.scoring.baselines import MIN_PEERS
from custodes.detections.scoring.identity import PERSON, IdentityResolver, Person, time_zone


@dataclass(slots=True)
class Changes:
    """People the export adds, drops, moves (department or title), puts in another time zone, or gives a notice
    date that the directory in use does not have."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    rezoned: list[str] = field(default_factory=list)
    on_notice: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DirectoryReport:
    """Counts over an export's entries, and the entries scoring would read other than intended."""

    people: int
    services: int
    departments: int
    peer_groups: int
    thin_groups: int
    """Peer groups (department and title) of fewer than `MIN_PEERS` people: their people are compared with their
    department's, or everyone's, instead."""
    no_department: int
    watchlists: dict[str, int]
    """People on each watchlist on the day checked (`departing` from notice dates)."""
    unknown_zones: list[str]
    """`id: 'zone'` of people whose time zone is neither an IANA nor a Windows name (their days are the default
    zone's)."""
    shared_names: dict[str, list[str]]
    """A name (id or alias, as matched) two or more people claim -> their ids: events under it go to one of them."""
    changes: Changes | None = None


def check(
    people: list[Person], settings: ScoringSettings, today: date, live: list[Person] | None = None
) -> DirectoryReport:
    """Report on `people` as scoring would read them (identity settings included); against `live`, the directory in
    use, what they would change."""
    resolver = IdentityResolver(people, settings.identities)
    persons = [p for p in people if p.kind == PERSON]
    groups = Counter(p.peer_group for p in persons)
    watched = Counter(name for p in persons for name in p.watchlists_on(today))
    return DirectoryReport(
        people=len(persons),
        services=len(people) - len(persons),
        departments=len({p.department for p in persons if p.department}),
        peer_groups=len(groups),
        thin_groups=sum(1 for size in groups.values() if size < MIN_PEERS),
        no_department=sum(1 for p in persons if not p.department),
        watchlists=dict(sorted(watched.items())),
        unknown_zones=[f"{p.id}: {p.timezone!r}" for p in people if p.timezone and time_zone(p.timezone) is None],
        shared_names={name: sorted(ids) for name, ids in sorted(resolver.shared.items())},
        changes=None if live is None else _changes(people, live),
    )


def _changes(people: list[Person], live: list[Person]) -> Changes:
    before = {p.id: p for p in live}
    after = {p.id: p for p in people}
    changes = Changes(added=sorted(after.keys() - before.keys()), removed=sorted(before.keys() - after.keys()))
    for ident in sorted(after.keys() & before.keys()):
        old, new = before[ident], after[ident]
        if old.peer_group != new.peer_group:
            changes.moved.append(ident)
        if time_zone(old.timezone) != time_zone(new.timezone):
            changes.rezoned.append(ident)
        if new.notice_date is not None and new.notice_date != old.notice_date:
            changes.on_notice.append(ident)
    return changes
