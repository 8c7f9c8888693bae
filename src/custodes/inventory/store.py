"""Storing inventory snapshots: one entity per person across sources, accounts and grants in their own tables.

A snapshot replaces everything stored before for its connector, in one transaction. Accounts map to entities
through the scoring engine's identity resolver (directory, aliases, domain rules, service patterns), extended
with the people this inventory itself knows: an account's e-mail or login (Entra UPN, Okta login, an IAM user's
``email`` tag), else a unique local part (the IAM user ``alice`` is ``alice@corp.com``). Accounts that look like
services (service patterns, or IAM users without console access or an e-mail tag) are entities of kind
``service``. Each entity's ``attributes.inventory`` lists its accounts; other attributes are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from custodes.config import Settings
from custodes.detections.scoring.identity import SERVICE, IdentityResolver, Person
from custodes.detections.scoring.service import resolver_for
from custodes.inventory.model import Account, Grant, Snapshot
from custodes.store import Store, Transaction
from custodes.store.tables import entities, identity_accounts, identity_grants

CHUNK = 500


def account_id(connector: str, native_id: str) -> str:
    """The stored id of an account: its connector and the vendor's id."""
    return f"{connector}:{native_id}"


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _names(account: Account) -> list[str]:
    return [name for name in (account.email, account.login) if name]


class IdentityMapper:
    """Account -> (entity id, kind), across every source of one inventory."""

    def __init__(self, resolver: IdentityResolver, accounts: Iterable[Account]) -> None:
        self.resolver = resolver
        for account in accounts:
            names = _names(account)
            if account.service or not names or "@" not in names[0]:
                continue
            key, kind = resolver.resolve(names[0])
            if kind == SERVICE:
                continue
            if resolver.person(key) is None:
                resolver.add(Person(id=key, display_name=account.display_name, aliases=names))

    def map(self, account: Account) -> tuple[str, str]:
        """The entity id and kind of an account."""
        names = _names(account) or [account.native_id]
        key, kind = self.resolver.resolve(names[0])
        person = self.resolver.person(key)
        if person is not None:
            return key, person.kind
        return key, SERVICE if account.service or kind == SERVICE else kind


def _account_row(account: Account, collected_at: datetime) -> dict[str, Any]:
    return {
        "id": account_id(account.connector, account.native_id),
        "connector": account.connector,
        "provider": account.provider,
        "native_id": account.native_id,
        "entity": account.entity,
        "kind": SERVICE if account.service else "person",
        "login": account.login,
        "display_name": account.display_name,
        "status": account.status,
        "enabled": account.enabled,
        "created": account.created,
        "last_sign_in": account.last_sign_in,
        "mfa": account.mfa,
        "attributes": {**account.attributes, "email": account.email},
        "warnings": account.warnings,
        "collected_at": collected_at,
    }


def _grant_rows(account: Account) -> list[dict[str, Any]]:
    owner = account_id(account.connector, account.native_id)
    unique = {(grant.kind, grant.name): grant for grant in account.grants}
    return [
        {
            "account_id": owner,
            "kind": grant.kind,
            "name": grant.name,
            "privileged": grant.privileged,
            "created": grant.created,
            "last_used": grant.last_used,
            "attributes": grant.attributes,
        }
        for grant in unique.values()
    ]


async def _stored_accounts(tx: Transaction, where: Any = None) -> list[Account]:
    query = sa.select(identity_accounts)
    if where is not None:
        query = query.where(where)
    rows = list((await tx.conn.execute(query.order_by(identity_accounts.c.id))).mappings())
    grants: dict[str, list[Grant]] = {}
    for chunk in _chunks([row["id"] for row in rows]):
        found = await tx.conn.execute(
            sa.select(identity_grants)
            .where(identity_grants.c.account_id.in_(chunk))
            .order_by(identity_grants.c.kind, identity_grants.c.name)
        )
        for grant in found.mappings():
            grants.setdefault(grant["account_id"], []).append(
                Grant(
                    grant["kind"],
                    grant["name"],
                    grant["privileged"],
                    _utc(grant["created"]),
                    _utc(grant["last_used"]),
                    dict(grant["attributes"]),
                )
            )
    accounts = []
    for row in rows:
        attributes = dict(row["attributes"])
        email = attributes.pop("email", None)
        accounts.append(
            Account(
                provider=row["provider"],
                native_id=row["native_id"],
                login=row["login"],
                display_name=row["display_name"],
                email=email,
                status=row["status"],
                enabled=row["enabled"],
                created=_utc(row["created"]),
                last_sign_in=_utc(row["last_sign_in"]),
                mfa=row["mfa"],
                service=row["kind"] == SERVICE,
                grants=grants.get(row["id"], []),
                attributes=attributes,
                warnings=list(row["warnings"]),
                entity=row["entity"],
                connector=row["connector"],
            )
        )
    return accounts


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def load_accounts(store: Store) -> list[Account]:
    """Every stored account with its grants."""
    async with store.transaction() as tx:
        return await _stored_accounts(tx)


async def _refresh_entities(tx: Transaction, ids: set[str], now: datetime) -> None:
    """Rewrite `attributes.inventory` of these entities from the stored accounts (creating missing entities)."""
    for chunk in _chunks(sorted(ids)):
        accounts = await _stored_accounts(tx, identity_accounts.c.entity.in_(chunk))
        existing = {
            row["id"]: row
            for row in (await tx.conn.execute(sa.select(entities).where(entities.c.id.in_(chunk)))).mappings()
        }
        for entity in chunk:
            mine = [account for account in accounts if account.entity == entity]
            inventory = {
                "accounts": [account_id(a.connector, a.native_id) for a in mine],
                "providers": sorted({a.provider for a in mine}),
                "privileged": any(a.privileged for a in mine),
                "collected_at": now.isoformat(),
            }
            row = existing.get(entity)
            if row is None:
                if not mine:
                    continue
                await tx.conn.execute(
                    sa.insert(entities).values(
                        id=entity,
                        kind=SERVICE if all(a.service for a in mine) else "person",
                        display_name=next((a.display_name for a in mine if a.display_name), entity),
                        attributes={"inventory": inventory},
                        first_seen=now,
                        last_seen=now,
                    )
                )
                continue
            attributes = {key: value for key, value in dict(row["attributes"]).items() if key != "inventory"}
            if mine:
                attributes["inventory"] = inventory
            await tx.conn.execute(sa.update(entities).where(entities.c.id == entity).values(attributes=attributes))


async def save(store: Store, snapshots: Sequence[Snapshot], settings: Settings) -> None:
    """Replace the stored inventory of each snapshot's connector, map accounts to entities, in one transaction."""
    if not snapshots:
        return
    collected = {snapshot.connector for snapshot in snapshots}
    now = max(snapshot.collected_at for snapshot in snapshots)
    async with store.transaction() as tx:
        others = await _stored_accounts(tx, identity_accounts.c.connector.notin_(collected))
        fresh = []
        for snapshot in snapshots:
            for account in snapshot.accounts:
                account.connector = snapshot.connector
                fresh.append(account)
        mapper = IdentityMapper(resolver_for(settings.scoring, None), [*others, *fresh])
        for account in fresh:
            account.entity, kind = mapper.map(account)
            account.service = kind == SERVICE
        before = {
            row[0]
            for row in await tx.conn.execute(
                sa.select(identity_accounts.c.entity).where(identity_accounts.c.connector.in_(collected))
            )
        }
        old = sa.select(identity_accounts.c.id).where(identity_accounts.c.connector.in_(collected))
        await tx.conn.execute(sa.delete(identity_grants).where(identity_grants.c.account_id.in_(old)))
        await tx.conn.execute(sa.delete(identity_accounts).where(identity_accounts.c.connector.in_(collected)))
        by_connector = {snapshot.connector: snapshot.collected_at for snapshot in snapshots}
        unique = {account_id(a.connector, a.native_id): a for a in fresh}
        rows = [_account_row(a, by_connector[a.connector]) for a in unique.values()]
        for chunk in _chunks(rows):
            await tx.conn.execute(sa.insert(identity_accounts), list(chunk))
        grants = [row for account in unique.values() for row in _grant_rows(account)]
        for chunk in _chunks(grants):
            await tx.conn.execute(sa.insert(identity_grants), list(chunk))
        await _refresh_entities(tx, before | {str(a.entity) for a in fresh}, now)
