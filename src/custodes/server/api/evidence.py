"""Preserved evidence bundles: list them, and prove one unchanged."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from pydantic import Field

from custodes.cases import needtoknow
from custodes.responder.evidence import list_bundles, open_bundle, recorded_bundle, verify_recorded
from custodes.responder.registry import ActionError
from custodes.server.endpoints import ApiError, Call, Model, Names, NoInput, RevealQuery, endpoint


class BundleOut(Model):
    """An evidence bundle as recorded in the store."""

    id: str
    entity: str
    since: datetime
    until: datetime
    reason: str
    location: str = Field(description="the bundle's directory, or s3://bucket/prefix")
    manifest_sha256: str
    files: dict[str, int] = Field(description="file name -> records in it")
    created_by: str
    run_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: dict[str, Any], names: Names) -> BundleOut:
        """The API view of a recorded bundle, its person shown through `names`."""
        return cls(
            id=row["id"],
            entity=names(row["entity"]) or row["entity"],
            since=row["since"],
            until=row["until"],
            reason=row["reason"],
            location=row["location"],
            manifest_sha256=row["manifest_sha256"],
            files={str(k): int(v) for k, v in dict(row["files"]).items()},
            created_by=row["created_by"],
            run_id=row["run_id"],
            created_at=row["created_at"],
        )


class BundleList(Model):
    """Evidence bundles, newest first."""

    bundles: list[BundleOut]


class BundleQuery(RevealQuery):
    """Which bundles."""

    entity: str | None = Field(default=None, min_length=1, max_length=512, description="name or pseudonym")
    limit: int = Field(default=100, ge=1, le=1000)


class VerifyRequest(Model):
    """Why the bundle is being verified (recorded in its chain of custody)."""

    reason: str = Field(min_length=1, max_length=1000)


class VerificationOut(Model):
    """What verification found."""

    bundle: str
    location: str
    ok: bool = Field(
        description="every file matches the manifest, the manifest the store's record, and the chain holds"
    )
    manifest_sha256: str | None
    checked: list[str]
    custody_records: int
    problems: list[str]


@endpoint(
    "GET",
    "/api/evidence",
    role="viewer",
    summary="List evidence bundles",
    query=BundleQuery,
    response=BundleList,
    tags=("evidence",),
)
async def list_evidence(call: Call[BundleQuery, NoInput]) -> BundleList:
    """Bundles recorded in the store, newest first."""
    names = await call.people()
    entity = None if call.query.entity is None else await call.person(call.query.entity)
    async with call.services.store.transaction() as tx:
        rows = await list_bundles(
            tx, entity=entity, limit=call.query.limit, hide=needtoknow.hidden("evidence", call.caller)
        )
    return BundleList(bundles=[BundleOut.of(row, names) for row in rows])


@endpoint(
    "POST",
    "/api/evidence/{id}/verify",
    role="analyst",
    summary="Verify an evidence bundle",
    body=VerifyRequest,
    response=VerificationOut,
    tags=("evidence",),
    errors={502: "the bundle's storage could not be read"},
)
async def verify_evidence(call: Call[NoInput, VerifyRequest]) -> VerificationOut:
    """Recompute every SHA-256 against the manifest (and the store's record of it) and check the chain of
    custody; the access is appended to the chain and audited (`evidence.verify`)."""
    ident = call.request.match_info["id"]
    async with call.services.store.transaction() as tx:
        row = await recorded_bundle(tx, ident)
        if row is not None and await needtoknow.conceals(tx, "evidence", ident, call.caller):
            row = None
    if row is None:
        raise ApiError(404, "not_found", f"no evidence bundle {ident!r} you may see")
    try:
        bundle = await asyncio.to_thread(open_bundle, str(row["location"]), call.services.settings.responder.evidence)
        report = await verify_recorded(call.services.store, bundle, who=f"api:{call.caller}", why=call.body.reason)
    except ActionError as exc:
        await call.audit("evidence.verify", ident, {"ok": False, "error": str(exc), "reason": call.body.reason})
        raise ApiError(502, "evidence_unreachable", f"cannot read bundle {ident!r}: {exc}") from None
    await call.audit(
        "evidence.verify", ident, {"ok": report.ok, "problems": report.problems, "reason": call.body.reason}
    )
    return VerificationOut(
        bundle=ident,
        location=report.url,
        ok=report.ok,
        manifest_sha256=report.manifest_sha256,
        checked=report.checked,
        custody_records=report.custody,
        problems=report.problems,
    )
