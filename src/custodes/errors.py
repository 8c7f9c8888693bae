"""User-facing errors that carry where the problem is (file, line, column or field path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Location:
    """Where a problem is: a file, and when known a 1-based line and column or a field path."""

    file: str | None = None
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        text = ":".join(parts)
        return f"{text} ({self.field})" if self.field else text


@dataclass(frozen=True, slots=True)
class Problem:
    """One located problem in user input."""

    location: Location
    message: str

    def __str__(self) -> str:
        unlocated = self.location == Location()
        return self.message if unlocated else f"{self.location}: {self.message}"


class CustodesError(Exception):
    """An error caused by user input or the environment, shown to the user without a traceback."""

    def __init__(self, problems: list[Problem] | str, *, hint: str | None = None) -> None:
        self.problems = [Problem(Location(), problems)] if isinstance(problems, str) else problems
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = "\n".join(str(problem) for problem in self.problems)
        return f"{text}\n  hint: {self.hint}" if self.hint else text

    @classmethod
    def at(
        cls,
        file: str | Path,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        hint: str | None = None,
    ) -> CustodesError:
        """One problem at a file position."""
        return cls([Problem(Location(str(file), line, column), message)], hint=hint)


class ConfigError(CustodesError):
    """The configuration file or an environment override is missing or invalid."""


MAX_ERROR_CHARS = 500


def describe(error: BaseException) -> str:
    """An error as one safe line: its type and message (messages of our HTTP layer never carry secrets)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    line = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return line[:MAX_ERROR_CHARS]
