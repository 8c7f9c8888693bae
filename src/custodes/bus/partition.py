"""A partition's detection state: a correlator whose groups and clocks live in the partition's row of the store,
written with the deliveries they cover in the transaction of the batch's events and findings.

Each batch locks the row first (`FOR UPDATE`), so batches of one partition commit one after another whichever
worker runs them; a worker whose state was loaded at another version than the row's (another worker committed
since: the partition moved) reloads it before going on. Redelivered events are already stored, so they are not
fed again: nothing is lost or counted twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from custodes.detections.sigma.correlation import Correlator
from custodes.store.cluster import PartitionRow, lock_partition, save_partition
from custodes.store.database import CorrelationGroupRecord, Transaction


class PartitionCorrelator(Correlator):
    """The correlation state of one partition queue, kept in its row of `cluster_partitions`."""

    def __init__(self, name: str, base: Correlator, worker: str) -> None:
        """The correlations of `base` (same rules and bounds), with state of their own under `name`, run by
        `worker`."""
        super().__init__(base.rulesets, max_groups=base.max_groups, max_events_per_group=base.max_events_per_group)
        self.name = name
        self.worker = worker
        self.loaded = False
        self.version: int | None = None
        """The row's version the in-memory state is that of (None: not loaded)."""
        self.row = PartitionRow(0, 0, None, {})
        self.covering: tuple[int, str | None] = (0, None)
        """The batch under way: how many deliveries, and the last one's message id."""

    async def ensure_loaded(self, tx: Transaction) -> None:
        """Lock the partition's row; (re)load the state when it changed since it was loaded here."""
        row = await lock_partition(tx, self.name)
        self.row = row or PartitionRow(0, 0, None, {})
        if self.loaded and self.version == self.row.version:
            return
        clocks = {key: float(value) for key, value in self.row.state.get("clocks", {}).items()}
        groups = [CorrelationGroupRecord(*item) for item in self.row.state.get("groups", [])]
        self.restore(clocks, [group for group in groups if group.correlation_id in self.states])
        self.version = self.row.version

    async def save(self, tx: Transaction) -> None:
        """Write the whole state with the deliveries it now covers."""
        clocks, groups = self.snapshot()
        count, last = self.covering
        state: dict[str, Any] = {"clocks": clocks, "groups": [_group(group) for group in groups]}
        row = PartitionRow(self.row.version + 1, self.row.deliveries + count, last or self.row.last_message, state)
        await save_partition(tx, self.name, row, self.worker)
        for correlation in self.states.values():
            correlation.dirty.clear()
            correlation.clock_dirty = False

        def committed() -> None:
            self.version, self.row = row.version, row

        tx.committed.append(committed)


def _group(group: CorrelationGroupRecord) -> Sequence[Any]:
    return [group.correlation_id, group.group_key, group.state, group.position]
