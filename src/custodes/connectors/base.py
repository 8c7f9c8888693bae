"""What every connector is: an async source of event batches, each with the checkpoint that covers it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from custodes.model import Event


@dataclass(slots=True)
class Batch:
    """Events and the checkpoint to commit in the same transaction as them."""

    events: list[Event]
    checkpoint: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


class Connector(Protocol):
    """A source of events that resumes from a checkpoint."""

    name: str

    def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """Yield batches after `checkpoint` (None: from the beginning)."""
        ...
