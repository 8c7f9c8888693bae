"""What the processes of a cluster share in the store: partition state (correlation clocks and groups, with the
deliveries they cover) and the detection workers alive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from custodes.model import utcnow
from custodes.store import upserts
from custodes.store.database import CorrelationGroupRecord, Transaction
from custodes.store.tables import cluster_groups, cluster_partitions, cluster_workers


@dataclass(slots=True)
class PartitionRow:
    """A partition's committed state: `version` counts the batches committed, `deliveries` the messages."""

    version: int
    deliveries: int
    last_message: str | None
    state: dict[str, Any]


async def lock_partition(tx: Transaction, name: str) -> PartitionRow | None:
    """The partition's row, locked until the transaction ends (`FOR UPDATE` on PostgreSQL), None before its first
    batch: batches of one partition commit one after the other whichever workers run them."""
    query = sa.select(cluster_partitions).where(cluster_partitions.c.name == name).with_for_update()
    row = (await tx.conn.execute(query)).mappings().one_or_none()
    if row is None:
        return None
    return PartitionRow(int(row["version"]), int(row["deliveries"]), row["last_message"], dict(row["state"]))


async def save_partition(tx: Transaction, name: str, row: PartitionRow, worker: str) -> None:
    """Write the partition's state and the deliveries it covers (in the transaction of the batch's events), and
    which worker wrote them."""
    columns = ("version", "deliveries", "last_message", "worker", "state", "updated_at")
    values = {
        "name": name,
        "version": row.version,
        "deliveries": row.deliveries,
        "last_message": row.last_message,
        "worker": worker,
        "state": row.state,
        "updated_at": utcnow(),
    }
    await upserts.write(tx.conn, upserts.upsert(tx.conn.dialect.name, cluster_partitions, ("name",), columns), [values])


async def load_groups(tx: Transaction, partition: str) -> list[CorrelationGroupRecord]:
    """The partition's correlation groups, least recently used first."""
    table = cluster_groups
    query = sa.select(table).where(table.c.partition == partition).order_by(table.c.position, table.c.group_key)
    return [
        CorrelationGroupRecord(row["correlation_id"], row["group_key"], dict(row["state"]), int(row["position"]))
        for row in (await tx.conn.execute(query)).mappings()
    ]


async def save_groups(
    tx: Transaction, partition: str, groups: Sequence[CorrelationGroupRecord], deleted: Sequence[tuple[str, str]]
) -> None:
    """Upsert the partition's changed groups and delete its dropped ones."""
    table = cluster_groups
    if groups:
        statement = upserts.upsert(
            tx.conn.dialect.name, table, ("partition", "correlation_id", "group_key"), ("state", "position")
        )
        rows = [
            {
                "partition": partition,
                "correlation_id": g.correlation_id,
                "group_key": g.group_key,
                "state": g.state,
                "position": g.position,
            }
            for g in groups
        ]
        await upserts.write(tx.conn, statement, rows)
    for correlation_id, key in deleted:
        await tx.conn.execute(
            sa.delete(table).where(
                table.c.partition == partition, table.c.correlation_id == correlation_id, table.c.group_key == key
            )
        )


async def heartbeat(tx: Transaction, exchange: str, worker: str) -> None:
    """Record that a detection worker is alive now."""
    statement = upserts.upsert(tx.conn.dialect.name, cluster_workers, ("exchange", "worker"), ("seen_at",))
    await upserts.write(tx.conn, statement, [{"exchange": exchange, "worker": worker, "seen_at": utcnow()}])


async def live_workers(tx: Transaction, exchange: str, within: timedelta) -> list[str]:
    """The workers of this exchange seen within `within`, sorted; older rows are deleted."""
    since: datetime = utcnow() - within
    table = cluster_workers
    await tx.conn.execute(sa.delete(table).where(table.c.exchange == exchange, table.c.seen_at < since))
    query = sa.select(table.c.worker).where(table.c.exchange == exchange).order_by(table.c.worker)
    return list((await tx.conn.execute(query)).scalars())


async def leave(tx: Transaction, exchange: str, worker: str) -> None:
    """Forget a worker that stops cleanly (its partitions are reassigned at once)."""
    table = cluster_workers
    await tx.conn.execute(sa.delete(table).where(table.c.exchange == exchange, table.c.worker == worker))
