"""One redactor for everything Custodes stores or prints: step targets, arguments, results and errors, run
outputs, audit entries, log lines and API error messages.

It masks two things: every secret value of the configuration (`config.remember_secrets` runs as settings load,
and the playbook runner adds its secrets), as written and as chat markup escapes it (`custodes.markup`), and
credentials recognisable by their shape even when Custodes never saw them (a vendor error body echoing a
request): Okta `SSWS` tokens, bearer tokens, AWS access key ids and secret keys, Slack, Teams, Discord and Power
Automate webhook URLs, and passwords in URLs or query strings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from custodes.markup import ESCAPERS

MASK = "***"
MIN_KNOWN_CHARS = 8
"""Shorter secret values are not masked by value: they would mask ordinary words (their shapes still are)."""

SHAPES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(SSWS|Bearer)(\s+)[A-Za-z0-9._~+/=\-]{8,}"), rf"\1\2{MASK}"),
    (re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{16}\b"), MASK),
    (
        re.compile(
            r"(?i)(aws_secret_access_key|secret_?access_?key|SecretAccessKey)([\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}"
        ),
        rf"\1\2{MASK}",
    ),
    (re.compile(r"(https://hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s\"'<>]+"), rf"\1{MASK}"),
    (re.compile(r"(https://[A-Za-z0-9.-]*webhook\.office\.com/)[^\s\"'<>]+"), rf"\1{MASK}"),
    (re.compile(r"(https://(?:discord|discordapp)\.com/api/webhooks/)[^\s\"'<>]+"), rf"\1{MASK}"),
    (
        re.compile(r"(?i)([?&](?:sig|signature|token|access_token|api_key|apikey|key|password|secret)=)[^&\s\"'<>]+"),
        rf"\1{MASK}",
    ),
    (re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@\"'<>]*:)[^@\s/\"'<>]+@", re.IGNORECASE), rf"\1{MASK}@"),
]
"""Credential shapes and what replaces them (the scheme or prefix is kept, so a reader sees what was there)."""


class Redactor:
    """Masks known secret values and credential shapes in strings, lists and mappings (keys included)."""

    def __init__(self) -> None:
        self._values: list[str] = []

    def know(self, value: str) -> None:
        """Mask this secret value from now on, also as each chat markup escapes it (a secret a playbook puts into a
        message's text is stored so); values shorter than `MIN_KNOWN_CHARS` are not masked by value."""
        if len(value) < MIN_KNOWN_CHARS:
            return
        for spelling in {value, *(escape(value) for escape in ESCAPERS.values())} - set(self._values):
            self._values.append(spelling)
        self._values.sort(key=len, reverse=True)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            return [self(item) for item in value]
        if isinstance(value, dict):
            return {self(key) if isinstance(key, str) else key: self(item) for key, item in value.items()}
        return value

    def text(self, value: str) -> str:
        """A string with every known secret and credential shape masked."""
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, MASK)
        for pattern, replacement in SHAPES:
            value = pattern.sub(replacement, value)
        return value


REDACTOR = Redactor()
"""The process's redactor: every secret of the loaded configuration is known to it."""


def redact(value: Any) -> Any:
    """`value` with every known secret and credential shape masked (strings, lists and mappings)."""
    return REDACTOR(value)


class RedactingFilter(logging.Filter):
    """Masks secrets in a log record's message, arguments and extra fields before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = REDACTOR.text(record.getMessage())
        record.args = None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD and isinstance(value, str | dict | list):
                setattr(record, name, REDACTOR(value))
        return True


_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def redact_every_record() -> None:
    """Mask secrets in the message of every log record the process creates, whichever handler prints it (the
    command line's default stderr output included); idempotent."""
    make = logging.getLogRecordFactory()
    if isinstance(make, _RedactingFactory):
        return
    logging.setLogRecordFactory(_RedactingFactory(make))


class _RedactingFactory:
    def __init__(self, make: Callable[..., logging.LogRecord]) -> None:
        self.make = make

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.make(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit: the handler reports it as usual
            return record
        record.msg, record.args = REDACTOR.text(message), None
        return record
