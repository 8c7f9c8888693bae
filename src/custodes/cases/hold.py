"""Legal hold: a case escalated to HR or legal holds its evidence bundles (and every bundle about its person).
The hold is written in each bundle's chain of custody (and, on S3, set as an Object Lock legal hold on every
object); retention deletes refuse a held bundle and record the refusal in its custody too."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from custodes.cases import book
from custodes.config import EvidenceSettings
from custodes.model import utcnow
from custodes.responder.evidence import (
    LocalBundle,
    S3Bundle,
    append_custody,
    list_bundles,
    open_bundle,
    recorded_bundle,
)
from custodes.responder.registry import ActionError
from custodes.store.tables import evidence_bundles

if TYPE_CHECKING:
    from custodes.services import Services
    from custodes.store import Store


async def place_hold(services: Services, case_id: str, who: str, why: str) -> list[str]:
    """Hold a case's evidence: link the bundles about its person, then record the hold in each bundle's custody
    (once per case); return the ids of the bundles newly marked."""
    return await hold_bundles(services.store, services.settings.responder.evidence, case_id, who, why)


async def hold_bundles(store: Store, settings: EvidenceSettings, case_id: str, who: str, why: str) -> list[str]:
    """`place_hold` on a store and evidence settings (for the CLI and playbook actions)."""
    async with store.transaction() as tx:
        case = await book.get_case(tx, case_id)
        if case is None or not case["legal_hold"]:
            return []
        if case["subject"] is not None:
            for row in await list_bundles(tx, entity=case["subject"], limit=10_000):
                await book.link(tx, case_id, who, "evidence", str(row["id"]))
        marked = _marked(await book.timeline(tx, case_id))
        wanted = [m["ref"] for m in await book.members(tx, case_id) if m["kind"] == "evidence"]
        found = [await recorded_bundle(tx, ref) for ref in wanted if ref not in marked]
        rows = [row for row in found if row is not None]
    held: list[str] = []
    for row in rows:
        await asyncio.to_thread(_mark, str(row["location"]), settings, who, why, case_id)
        async with store.transaction() as tx:
            await book.record(tx, case_id, who, "bundle_held", {"bundle": row["id"]})
        held.append(str(row["id"]))
    return held


def _marked(events: list[dict[str, Any]]) -> set[str]:
    """The bundles marked held since the case's hold was last lifted."""
    marked: set[str] = set()
    for event in events:
        if event["kind"] == "hold_lifted":
            marked.clear()
        elif event["kind"] == "bundle_held":
            marked.add(str(event["details"].get("bundle")))
    return marked


def _object_hold(bundle: S3Bundle, status: str) -> None:
    """Set (`ON`) or clear (`OFF`) the S3 Object Lock legal hold on every object of a bundle."""
    for name in bundle.names():
        bundle._call(
            "put_object_legal_hold", Bucket=bundle.bucket, Key=bundle.prefix + name, LegalHold={"Status": status}
        )


def _mark(location: str, settings: EvidenceSettings, who: str, why: str, case_id: str) -> None:
    bundle = open_bundle(location, settings)
    append_custody(bundle, who=who, what=f"legal hold placed (case {case_id})", why=why, case=case_id)
    if isinstance(bundle, S3Bundle):
        _object_hold(bundle, "ON")


async def lift_hold(store: Store, settings: EvidenceSettings, case_id: str, who: str, why: str) -> list[str]:
    """Lift a case's legal hold: the flag (audited, on its timeline), then for each bundle it held a "legal hold
    lifted" entry in the chain of custody and, unless another case still holds the bundle, the S3 Object Lock
    legal hold cleared. Return the ids of the bundles released. CaseError when there is no hold to lift; an
    ActionError from the bundles' storage leaves the case held (lifting again retries)."""
    async with store.transaction() as tx:
        book.liftable(await book.get_case(tx, case_id), case_id, why)
        marked = _marked(await book.timeline(tx, case_id))
        held = await book.held_bundles(tx)
        found = [await recorded_bundle(tx, ref) for ref in sorted(marked)]
        rows = [row for row in found if row is not None]
    released: dict[str, list[str]] = {}
    for row in rows:
        ident = str(row["id"])
        others = [other for other in held.get(ident, []) if other != case_id]
        await asyncio.to_thread(_release, str(row["location"]), settings, who, why, case_id, others)
        released[ident] = others
    async with store.transaction() as tx:
        await book.lift_hold(tx, case_id, who, why)
        for ident, others in released.items():
            await book.record(tx, case_id, who, "bundle_released", {"bundle": ident, "still_held_by": others})
    return list(released)


def _release(location: str, settings: EvidenceSettings, who: str, why: str, case_id: str, others: list[str]) -> None:
    bundle = open_bundle(location, settings)
    if isinstance(bundle, S3Bundle) and not others:
        _object_hold(bundle, "OFF")
    append_custody(bundle, who=who, what=f"legal hold lifted (case {case_id})", why=why, case=case_id)


@dataclass(slots=True)
class Pruned:
    """What a retention pass did: bundles deleted, and those it refused because a case holds them."""

    deleted: list[str] = field(default_factory=list)
    refused: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


async def prune_evidence(store: Store, settings: EvidenceSettings, older_than: timedelta, who: str) -> Pruned:
    """Delete bundles created more than `older_than` ago, except those under legal hold: each refusal is
    recorded in the bundle's chain of custody and audited (`evidence.delete_refused`), each delete audited."""
    cutoff = utcnow() - older_than
    async with store.transaction() as tx:
        held = await book.held_bundles(tx)
        query = sa.select(evidence_bundles).where(evidence_bundles.c.created_at < cutoff)
        rows = [dict(row) for row in (await tx.conn.execute(query.order_by(evidence_bundles.c.created_at))).mappings()]
    report = Pruned()
    for row in rows:
        ident, location = str(row["id"]), str(row["location"])
        if ident in held:
            why = f"legal hold (case {', '.join(held[ident])})"
            await asyncio.to_thread(_refuse, location, settings, who, why)
            report.refused[ident] = held[ident]
            async with store.transaction() as tx:
                await tx.audit(who, "evidence.delete_refused", ident, {"cases": held[ident]})
            continue
        try:
            await asyncio.to_thread(_delete, location, settings)
        except ActionError as exc:
            report.failed[ident] = str(exc)
            continue
        async with store.transaction() as tx:
            await tx.conn.execute(sa.delete(evidence_bundles).where(evidence_bundles.c.id == ident))
            await tx.audit(who, "evidence.delete", ident, {"location": location, "older_than": str(older_than)})
        report.deleted.append(ident)
    return report


def _refuse(location: str, settings: EvidenceSettings, who: str, why: str) -> None:
    append_custody(open_bundle(location, settings), who=who, what="retention delete refused", why=why)


def _delete(location: str, settings: EvidenceSettings) -> None:
    bundle = open_bundle(location, settings)
    if isinstance(bundle, LocalBundle):
        shutil.rmtree(bundle.root, ignore_errors=False)
        return
    assert isinstance(bundle, S3Bundle)
    for name in bundle.names():
        bundle._call("delete_object", Bucket=bundle.bucket, Key=bundle.prefix + name)
