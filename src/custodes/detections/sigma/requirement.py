"""A literal condition every event a rule matches satisfies: what the index files rules under."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Requirement:
    """At least one alternative holds for every event the rule matches.

    `exact` holds (field, folded text) pairs; `contains` holds (field, folded substring) pairs where a field of
    None means any string in the event (keywords); `numbers` holds (field, number) pairs, met by a field whose
    numeric value (a number, or a numeric string, as rules compare numbers) equals the number.
    """

    exact: frozenset[tuple[str, str]] = frozenset()
    contains: frozenset[tuple[str | None, str]] = frozenset()
    numbers: frozenset[tuple[str, int | float]] = frozenset()

    @property
    def only_exact(self) -> bool:
        """Whether every alternative is an exact value or number (the cheapest to look up)."""
        return not self.contains

    @property
    def fields(self) -> frozenset[str]:
        """The fields of the exact and number alternatives."""
        return frozenset(name for name, _ in (*self.exact, *self.numbers))

    def __or__(self, other: Requirement) -> Requirement:
        return Requirement(self.exact | other.exact, self.contains | other.contains, self.numbers | other.numbers)

    def __len__(self) -> int:
        return len(self.exact) + len(self.contains) + len(self.numbers)
