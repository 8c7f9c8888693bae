"""Each playbook's cap on the runs its findings and webhook records start in any rolling hour.

A storm of findings about distinct people (a Sigma rule on failed sign-ins during a password spray of random
names, say) would otherwise start one run each: a chat message, a ticket and a case apiece. Past the cap an owed
start stays in the outbox, unclaimable until the oldest run of the hour is an hour old, and starts then: none is
dropped. Runs the service started itself (findings, webhook records, schedule slots; not children) count; runs
started by hand count for nothing and are never held.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from custodes.model import utcnow
from custodes.playbooks.schema import Playbook
from custodes.store import Store

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)


class StartCap:
    """Says when a playbook may start another run, and holds back the starts that must wait."""

    def __init__(self, store: Store, default: int, actor: str) -> None:
        self.store = store
        self.default = default
        """`playbooks.max_runs_per_hour`, for playbooks that set none (0: no cap)."""
        self.actor = actor
        self.held: Counter[str] = Counter()
        """Starts held back since this process started, by playbook."""
        self._full: dict[str, tuple[int, datetime]] = {}
        """Playbook -> (its cap, when a run of its full hour turns an hour old): no slot frees before."""

    def limit(self, playbook: Playbook) -> int:
        """The most runs the playbook's triggers may start in an hour; 0 for no cap."""
        return self.default if playbook.max_runs_per_hour is None else playbook.max_runs_per_hour

    async def full_until(self, playbook: Playbook) -> datetime | None:
        """When the playbook may start a run again; None when it may now."""
        cap = self.limit(playbook)
        if cap == 0:
            return None
        now = utcnow()
        known = self._full.get(playbook.name)
        if known is not None and known[0] == cap and now < known[1]:
            return known[1]
        async with self.store.transaction() as tx:
            count, oldest = await tx.runs_started(playbook.name, now - HOUR, self.actor)
            if count < cap or oldest is None:
                self._full.pop(playbook.name, None)
                return None
            until = oldest + HOUR
            self._full[playbook.name] = (cap, until)
            await tx.audit(
                self.actor,
                "playbook.capped",
                playbook.name,
                {"max_runs_per_hour": cap, "started_in_last_hour": count, "until": until.isoformat()},
            )
        log.warning(
            "playbook %s started %d runs in the last hour (max_runs_per_hour %d): its next starts wait in the "
            "outbox until %s",
            playbook.name,
            count,
            cap,
            until.isoformat(timespec="seconds"),
        )
        return until

    async def hold(self, playbook: str, subjects: list[str], until: datetime) -> None:
        """Leave owed starts of the playbook (the findings or records they are for) in the outbox until `until`, in
        one transaction."""
        async with self.store.transaction() as tx:
            await tx.hold_starts(playbook, subjects, until)
        self.held[playbook] += len(subjects)
