"""A literal condition every event a rule matches satisfies: what the index files rules under."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Requirement:
    """At least one alternative holds for every event the rule matches.

    `exact` holds (field, folded text) pairs; `contains` holds (field, folded substring) pairs where a field of
    None means any string in the event (keywords).
    """

    exact: frozenset[tuple[str, str]] = frozenset()
    contains: frozenset[tuple[str | None, str]] = frozenset()

    @property
    def only_exact(self) -> bool:
        """Whether every alternative is an exact value (the cheapest to look up)."""
        return not self.contains

    @property
    def fields(self) -> frozenset[str]:
        """The fields of the exact alternatives."""
        return frozenset(name for name, _ in self.exact)

    def __or__(self, other: Requirement) -> Requirement:
        return Requirement(self.exact | other.exact, self.contains | other.contains)

    def __len__(self) -> int:
        return len(self.exact) + len(self.contains)
