"""Injected error answers for simulators whose faults hit whatever request comes next (`pathfaults` matches by
method and path instead): a 429 (with the seconds to wait) or a 5xx, in the order injected."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StatusFault:
    """One injected answer: its status, and the ``Retry-After`` seconds a 429 carries."""

    status: int
    retry_after: int


@dataclass(slots=True)
class StatusFaults:
    """The injected answers not given yet, oldest first."""

    _pending: deque[StatusFault] = field(default_factory=deque)

    def add(self, count: int, status: int, retry_after: int) -> None:
        """Answer the next `count` requests with `status`; only a 429 or a 5xx may be injected (ValueError)."""
        if status != 429 and not 500 <= status <= 599:
            raise ValueError("an injected fault is a 429 or a 5xx status")
        self._pending.extend(StatusFault(status, retry_after) for _ in range(count))

    def take(self) -> StatusFault | None:
        """The next injected answer, used up; None when none is pending."""
        return self._pending.popleft() if self._pending else None
