"""A loaded rule set: compiled rules and correlations, and why the rules that did not load were rejected."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from custodes.detections.sigma.compiler import CompiledRule
from custodes.errors import Location, Problem

if TYPE_CHECKING:
    from custodes.detections.sigma.correlation import CompiledCorrelation

RULE_SUFFIXES: Final = frozenset({".yml", ".yaml"})

MAX_NAME_CHARS = 120
"""The most of a rejected rule's title (or id) a report repeats."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rule (or a whole file) that was not loaded, and why; line and column are 1-based when known."""

    file: Path
    rule_id: str | None
    title: str | None
    reason: str
    line: int | None = None
    column: int | None = None

    @property
    def location(self) -> Location:
        """Where the problem is, for user-facing reports."""
        return Location(str(self.file), self.line, self.column)

    def problem(self) -> Problem:
        """The rejection as a located problem, naming the rule when it is known."""
        name = self.title or self.rule_id
        if name and len(name) > MAX_NAME_CHARS:  # a title too long is a reason of its own, not to be echoed whole
            name = name[: MAX_NAME_CHARS - 3] + "..."
        return Problem(self.location, f"rule {name!r}: {self.reason}" if name else self.reason)

    def __str__(self) -> str:
        return str(self.problem())


@dataclass(slots=True)
class RuleSet:
    """Compiled rules and correlations, and the rejections collected while loading them.

    `silent` holds the ids of rules that feed correlations but raise no findings of their own (referenced by
    a correlation without `generate: true`, or disabled by an override); `known` every rule id and name read,
    loaded or not (overrides are checked against it).
    """

    rules: list[CompiledRule] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    correlations: list[CompiledCorrelation] = field(default_factory=list)
    silent: set[str] = field(default_factory=set)
    known: set[str] = field(default_factory=set)


def rule_files(paths: Sequence[Path], ruleset: RuleSet) -> Iterator[Path]:
    """The rule files under `paths` (files or folders, each folder sorted), once each; a missing path is rejected."""
    visited: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in RULE_SUFFIXES and p.is_file())
        elif path.is_file():
            found = [path]
        else:
            reason = "not a regular file (a FIFO or a device)" if path.exists() else "no such file or directory"
            ruleset.rejections.append(Rejection(path, None, None, reason))
            continue
        for file in found:
            resolved = file.resolve()
            if resolved not in visited:
                visited.add(resolved)
                yield file
