"""Playbooks and rules switched on or off at run time (through the API), kept in the store.

The pipeline holds the disabled names as sets, so applying a toggle costs a set lookup per finding or playbook.
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from custodes.model import utcnow
from custodes.store import Store, Transaction
from custodes.store.tables import toggles

Kind = Literal["playbook", "rule"]


async def set_toggle(tx: Transaction, kind: Kind, name: str, *, enabled: bool, by: str) -> None:
    """Record that a playbook or rule is enabled or disabled."""
    dialect = postgresql if tx.conn.dialect.name == "postgresql" else sqlite
    now = utcnow()
    stmt = dialect.insert(toggles).values(kind=kind, name=name, enabled=enabled, updated_by=by, updated_at=now)
    await tx.conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["kind", "name"], set_={"enabled": enabled, "updated_by": by, "updated_at": now}
        )
    )


async def disabled(tx: Transaction, kind: Kind) -> set[str]:
    """The names of this kind recorded as disabled."""
    query = sa.select(toggles.c.name).where(toggles.c.kind == kind, sa.not_(toggles.c.enabled))
    return set((await tx.conn.execute(query)).scalars())


async def load_disabled(store: Store) -> tuple[set[str], set[str]]:
    """(disabled playbooks, disabled rules) as the store records them."""
    async with store.transaction() as tx:
        return await disabled(tx, "playbook"), await disabled(tx, "rule")
