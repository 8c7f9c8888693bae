"""Analyst feedback on the causes of behaviour scores: of one entity, or of everyone in its peer group or department.

A cause is a scoring feature (`catalog`); feedback on it scales its points (0: leaves it out) for the entities it
covers on each one's local days from the day it was given to the day before it was revoked, so a re-score of those
days gives what live scoring gave. A channel's feedback covers its rise over days too (`usb` covers `usb_rise`).
Feedback is stored with the rule feedback (`custodes.cases.feedback`, pattern kind `cause`); the scoring service
reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, tzinfo

CAUSE = "cause"
"""The pattern kind of feedback on a scoring cause (`feedback.pattern_kind`); rule feedback's is `rule`."""
PERSON_SCOPE, PEERS_SCOPE, DEPARTMENT_SCOPE = "person", "peers", "department"
SCOPES = (PERSON_SCOPE, PEERS_SCOPE, DEPARTMENT_SCOPE)
"""Whom feedback on a cause covers: the finding's person, everyone of their peer group (department and title), or
everyone of their department."""
CAUSE_TAG = "cause."
"""How a behaviour-scoring finding's tags name its causes: `cause.<feature>`."""


def cause_tags(features: Iterable[str]) -> list[str]:
    """The tags naming these causes."""
    return [CAUSE_TAG + feature for feature in features]


def causes_in(tags: Iterable[str]) -> list[str]:
    """The causes a finding's tags name (none for a finding not of behaviour scoring)."""
    return [tag.removeprefix(CAUSE_TAG) for tag in tags if tag.startswith(CAUSE_TAG)]


Holder = str | tuple[str, str]
"""Whom a feedback record covers: an entity key, or (scope, name) for a peer group or department."""


def holder(scope: str, entity: str, name: str | None) -> Holder:
    """Whom feedback with this scope covers: the entity, or its group by name."""
    return entity if scope == PERSON_SCOPE or name is None else (scope, name)


def holders(key: str, group: str, department: str) -> tuple[Holder, ...]:
    """What feedback about an entity is held under: its key, its peer group and its department."""
    return key, (PEERS_SCOPE, group), (DEPARTMENT_SCOPE, department)


@dataclass(frozen=True, slots=True)
class CauseFeedback:
    """One feedback record on a cause of one entity: its points times `factor` from `since` until `until`."""

    id: str
    feature: str
    factor: float
    """0 (suppress) or the down-weighting weight, below 1."""
    since: datetime
    until: datetime | None = None
    """When it was revoked (None: in force)."""

    def covers(self, zone: tzinfo, day: date) -> bool:
        """Whether it is in force on the entity's local `day` (in `zone`)."""
        if self.since.astimezone(zone).date() > day:
            return False
        return self.until is None or day < self.until.astimezone(zone).date()


def in_force(given: Iterable[CauseFeedback], zone: tzinfo, day: date) -> dict[str, tuple[float, str]]:
    """The feedback in force on the entity's `day`, by feature: (factor, feedback id); of several on one feature,
    the lowest factor counts (suppress first), as for rule feedback."""
    found: dict[str, tuple[float, str]] = {}
    for item in given:
        if item.covers(zone, day) and (item.feature not in found or item.factor < found[item.feature][0]):
            found[item.feature] = (item.factor, item.id)
    return found
