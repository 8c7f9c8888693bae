"""Secrets in playbooks: `{{ secrets.NAME }}` resolves a configured reference; its value is masked everywhere
Custodes writes anything down (step records, results, errors, outputs, audit entries, logs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from custodes.config import Secret

MASK = "***"


class Redactor:
    """Replaces every occurrence of known secret values with ``***`` inside strings, lists and mappings."""

    def __init__(self, secrets: Mapping[str, Secret]) -> None:
        self._values = sorted({s.reveal() for s in secrets.values() if s.reveal()}, key=len, reverse=True)

    def __call__(self, value: Any) -> Any:
        if not self._values:
            return value
        return self._mask(value)

    def _mask(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._values:
                if secret in value:
                    value = value.replace(secret, MASK)
            return value
        if isinstance(value, list | tuple):
            return [self._mask(item) for item in value]
        if isinstance(value, dict):
            return {key: self._mask(item) for key, item in value.items()}
        return value

    def text(self, value: str) -> str:
        """A string with secrets masked."""
        return str(self(value))


def secrets_context(secrets: Mapping[str, Secret]) -> dict[str, str]:
    """The `secrets` expression variable: name -> revealed value (only for rendering action arguments)."""
    return {name: secret.reveal() for name, secret in secrets.items()}
