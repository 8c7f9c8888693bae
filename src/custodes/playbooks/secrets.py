"""Secrets in playbooks: `{{ secrets.NAME }}` resolves a configured reference; its value is masked everywhere
Custodes writes anything down (by `custodes.redaction`, which knows every resolved secret)."""

from __future__ import annotations

from collections.abc import Mapping

from custodes.config import Secret


def secrets_context(secrets: Mapping[str, Secret]) -> dict[str, str]:
    """The `secrets` expression variable: name -> revealed value (only for rendering action arguments)."""
    return {name: secret.reveal() for name, secret in secrets.items()}
