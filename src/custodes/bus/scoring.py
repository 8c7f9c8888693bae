"""Behaviour scoring of a cluster: one runner at a time (a PostgreSQL advisory lock of the store's schema) re-scores
every entity from the shared store in event-time order whenever its events or findings changed, as `custodes replay`
settles, so day closing, peer statistics and the top k see every partition's events, and the scores are those one
process settles.

It re-reads the stored events each time: exact, but its cost grows with what the store keeps (docs/performance.md)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from custodes.detections.scoring.engine import DETECTOR
from custodes.model import Finding
from custodes.pipeline import Pipeline
from custodes.store.locks import holding
from custodes.store.tables import events, findings


async def fingerprint(pipeline: Pipeline) -> tuple[Any, ...]:
    """What scoring depends on, summed up: events stored, the newest, and the non-scoring findings' counts."""
    async with pipeline.store.transaction() as tx:
        stored = (await tx.conn.execute(sa.select(sa.func.count(), sa.func.max(events.c.ingested_at)))).one()
        counted = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(findings.c.count), 0))
        raised = (await tx.conn.execute(counted.where(findings.c.detector != DETECTOR))).one()
    return (*stored, *raised)


async def rescore(pipeline: Pipeline, last: tuple[Any, ...] | None) -> tuple[tuple[Any, ...] | None, list[Finding]]:
    """Re-score when the store changed since `last` and no other runner is at it; (what was scored, the new scoring
    findings, filed into cases and owed their playbook starts in the transaction that records them)."""
    scoring = pipeline.scoring
    if scoring is None:
        return last, []
    store = pipeline.store
    async with holding(store, "rescoring", wait=False) as held:
        if not held:
            return last, []
        seen = await fingerprint(pipeline)
        if seen == last:
            return last, []
        await scoring.rescore(store)
        async with store.transaction() as tx:
            await scoring.save(tx)
            unseen = [f for f in scoring.engine.take_findings() if await tx.get_finding(f.id) is None]
            new, _, _ = await pipeline.record(tx, unseen)
            await pipeline.follow_up(tx, new)
        return seen, new
