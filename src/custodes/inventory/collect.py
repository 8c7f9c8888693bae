"""Collecting the inventory of every configured connector of an inventory kind (``entra``, ``okta``,
``aws_iam``) and storing it: one source failing keeps its previous inventory and never blocks the others."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp

from custodes.config import ConnectorSettings, Settings
from custodes.connectors import registry
from custodes.connectors.okta import OktaLogOptions
from custodes.errors import CustodesError, describe
from custodes.inventory import aws, entra, okta, store
from custodes.inventory.model import Snapshot
from custodes.store import Store

log = logging.getLogger(__name__)

KINDS = ("entra", "okta", "aws_iam")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one connector's collection did: accounts stored and warnings kept, or the error."""

    connector: str
    kind: str
    accounts: int = 0
    warnings: int = 0
    error: str | None = None


async def collect_one(name: str, entry: ConnectorSettings, http: aiohttp.ClientSession) -> Snapshot:
    """The inventory of one configured connector (ConfigError for bad settings)."""
    if entry.kind == "entra":
        return await entra.collect(name, registry.entra_client(name, entry, http))
    if entry.kind == "okta":
        options = registry.options(name, entry, OktaLogOptions)
        return await okta.collect(name, okta.OktaReader(http, registry.credential(name, entry, "token"), options))
    if entry.kind == "aws_iam":
        iam_options = registry.options(name, entry, aws.IamOptions)
        credentials = {key: secret.reveal() for key, secret in entry.credentials.items()}
        return await aws.collect(name, aws.IamReader(iam_options, credentials))
    raise CustodesError(f"connectors.{name}.kind: {entry.kind!r} has no inventory (kinds: {', '.join(KINDS)})")


async def collect_configured(
    settings: Settings, target: Store, http: aiohttp.ClientSession, only: list[str] | None = None
) -> list[Outcome]:
    """Collect every enabled inventory connector (or those named in `only`) and store what was collected."""
    chosen = {
        name: entry
        for name, entry in settings.connectors.items()
        if entry.enabled and entry.kind in KINDS and (not only or name in only)
    }
    unknown = sorted(set(only or []) - set(chosen))
    if unknown:
        raise CustodesError(f"not an enabled inventory connector: {', '.join(unknown)} (kinds: {', '.join(KINDS)})")
    snapshots: list[Snapshot] = []
    outcomes: list[Outcome] = []
    for name, entry in chosen.items():
        try:
            snapshot = await collect_one(name, entry, http)
        except CustodesError:
            raise
        except Exception as error:  # one failing source must not lose the others' inventory
            log.warning("%s: inventory collection failed: %s", name, describe(error))
            outcomes.append(Outcome(name, entry.kind, error=describe(error)))
            continue
        for account in snapshot.accounts:
            for warning in account.warnings:
                log.warning("%s: %s: %s", name, account.login or account.native_id, warning)
        snapshots.append(snapshot)
        warned = sum(len(account.warnings) for account in snapshot.accounts) + len(snapshot.warnings)
        outcomes.append(Outcome(name, entry.kind, len(snapshot.accounts), warned))
    await store.save(target, snapshots, settings)
    return outcomes
