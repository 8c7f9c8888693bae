"""Evidence preservation: an entity's events, findings, scores and runs for a time window, as a sealed bundle.

A bundle is a folder (a local directory, or a prefix in an S3 bucket with Object Lock) holding the collected
files, ``manifest.json`` with the SHA-256 and size of each file, and a chain of custody under ``custody/``:
one JSON record per access (who, when, what, why), each carrying the hash of the record before it, the first
one the hash of the manifest. Files are never rewritten (local files are read-only and created exclusively; S3
objects are written under retention and optionally a legal hold), so `verify` can prove a bundle unchanged and
name each file that differs. Bundles are recorded in the store, which keeps the manifest hash as an
independent anchor.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import sqlalchemy as sa
from botocore.exceptions import BotoCoreError, ClientError

from custodes.config import DatabaseSettings, EvidenceSettings, S3EvidenceStore
from custodes.connectors.sessions import sessions_from
from custodes.model import json_bytes, stable_id, utcnow
from custodes.responder import recordings as recorded
from custodes.responder.registry import ActionContext, ActionError, action
from custodes.responder.s3 import s3_client
from custodes.store import Store, Transaction
from custodes.store.tables import events, evidence_bundles, findings, runs, scoring_scores, steps

if TYPE_CHECKING:
    from custodes.responder.siem import SiemRecords

MANIFEST = "manifest.json"
CUSTODY = "custody/"
GENESIS = "0" * 64
_JSON = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


class BundleLocation(Protocol):
    """Where a bundle's files live; names are relative, '/'-separated. Writes never replace a file."""

    @property
    def url(self) -> str:
        """The bundle's address: an absolute path or ``s3://bucket/prefix``."""

    def put(self, name: str, data: bytes) -> None:
        """Write a new file; ActionError when it already exists."""

    def get(self, name: str) -> bytes | None:
        """A file's bytes, or None when it is missing."""

    def names(self) -> list[str]:
        """Every file of the bundle, sorted."""


class LocalBundle:
    """A bundle in a local directory: files created exclusively and made read-only."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def url(self) -> str:
        return str(self.root)

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        if not path.resolve().is_relative_to(self.root):
            raise ActionError(f"{name!r} would be written outside the bundle {self.url}; nothing was written")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except FileExistsError:
            raise ActionError(f"{name} already exists in {self.url}; evidence is never rewritten") from None
        path.chmod(0o444)

    def get(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())


class S3Bundle:
    """A bundle under a prefix of an S3 bucket with Object Lock: every object written with retention."""

    def __init__(self, client: Any, bucket: str, prefix: str, lock: S3EvidenceStore | None) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.lock = lock

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.rstrip('/')}"

    def put(self, name: str, data: bytes) -> None:
        key = self.prefix + name
        if self._exists(key):
            raise ActionError(f"{name} already exists in {self.url}; evidence is never rewritten")
        extra: dict[str, Any] = {}
        if self.lock is not None:
            extra["ObjectLockMode"] = self.lock.retention_mode
            extra["ObjectLockRetainUntilDate"] = utcnow() + timedelta(days=self.lock.retention_days)
            if self.lock.legal_hold:
                extra["ObjectLockLegalHoldStatus"] = "ON"
        self._call("put_object", Bucket=self.bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256", **extra)

    def get(self, name: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
        except ClientError as error:
            if _s3_code(error) in {"NoSuchKey", "404"}:
                return None
            raise _s3_error(error) from None
        except BotoCoreError as error:
            raise ActionError(f"S3: {type(error).__name__}", code="connection_error", retryable=True) from None
        body: bytes = response["Body"].read()
        return body

    def names(self) -> list[str]:
        found: list[str] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("list_objects_v2", Bucket=self.bucket, Prefix=self.prefix, **extra)
            found += [item["Key"][len(self.prefix) :] for item in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(found)

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _s3_code(error) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise _s3_error(error) from None
        except BotoCoreError as error:
            raise ActionError(f"S3: {type(error).__name__}", code="connection_error", retryable=True) from None
        return True

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as error:
            raise _s3_error(error) from None
        except BotoCoreError as error:
            raise ActionError(f"S3: {type(error).__name__}", code="connection_error", retryable=True) from None


def _s3_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _s3_error(error: ClientError) -> ActionError:
    details = error.response.get("Error", {})
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    code = str(details.get("Code") or f"http_{status}")
    return ActionError(f"S3: {code}: {details.get('Message') or 'request refused'}", code=code, retryable=status >= 500)


def checkpoint_objects(database: DatabaseSettings) -> S3Bundle | None:
    """The locked S3 objects that hold audit checkpoints (`database.audit_checkpoint_s3`), if configured."""
    locked = database.audit_checkpoint_s3
    return None if locked is None else S3Bundle(s3_client(locked), locked.bucket, locked.prefix, locked)


def open_bundle(address: str, settings: EvidenceSettings) -> BundleLocation:
    """A bundle by address: ``s3://bucket/prefix`` (connection from `settings.s3`) or a local directory."""
    if address.startswith("s3://"):
        bucket, _, prefix = address.removeprefix("s3://").partition("/")
        if not bucket:
            raise ActionError(f"{address!r}: an S3 bundle address is s3://bucket/prefix", code="invalid_argument")
        configured = settings.s3 is not None and settings.s3.bucket == bucket
        config = settings.s3 if settings.s3 is not None else S3EvidenceStore(bucket=bucket)
        return S3Bundle(s3_client(config), bucket, prefix, config if configured else None)
    if Path(address).is_file():
        raise ActionError(
            f"{address!r} is a file: a bundle is a directory (with its {MANIFEST}) or s3://bucket/prefix",
            code="invalid_argument",
        )
    return LocalBundle(Path(address))


def bundle_for(settings: EvidenceSettings, bundle_id: str) -> BundleLocation:
    """Where a new bundle with this id goes: the configured S3 bucket, else the evidence directory."""
    if settings.s3 is not None:
        config = settings.s3
        return S3Bundle(s3_client(config), config.bucket, config.prefix.strip("/") + "/" + bundle_id, config)
    return LocalBundle(settings.directory / bundle_id)


def sha256(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_JSON | orjson.OPT_INDENT_2) + b"\n"


# chain of custody --------------------------------------------------------------------------------


def custody_hash(entry: dict[str, Any]) -> str:
    """The hash of a custody record: SHA-256 of its canonical JSON without its own `hash`."""
    return sha256(orjson.dumps({k: v for k, v in entry.items() if k != "hash"}, option=_JSON))


def custody_entries(bundle: BundleLocation) -> list[tuple[str, dict[str, Any] | None]]:
    """The custody records in order, as (file name, record or None when unreadable)."""
    entries: list[tuple[str, dict[str, Any] | None]] = []
    for name in bundle.names():
        if not name.startswith(CUSTODY):
            continue
        raw = bundle.get(name)
        try:
            value = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            value = None
        entries.append((name, value if isinstance(value, dict) else None))
    return entries


def append_custody(bundle: BundleLocation, *, who: str, what: str, why: str, **details: Any) -> dict[str, Any]:
    """Add a record to the bundle's chain of custody (a new file; earlier records are never touched)."""
    existing = custody_entries(bundle)
    previous = existing[-1][1] if existing else None
    entry: dict[str, Any] = {
        "seq": len(existing) + 1,
        "at": utcnow().isoformat(),
        "who": who,
        "what": what,
        "why": why,
        **details,
        "prev_hash": str(previous.get("hash", "")) if previous else GENESIS,
    }
    entry["hash"] = custody_hash(entry)
    bundle.put(f"{CUSTODY}{entry['seq']:06d}.json", _dumps(entry))
    return entry


# verification ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Verification:
    """What `verify` found: every file checked, and one line per problem (empty when the bundle is intact)."""

    url: str
    manifest_sha256: str | None = None
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    custody: int = 0
    found: bool = True
    """False when nothing at all is at the location (a wrong path, or a bundle removed whole)."""

    @property
    def ok(self) -> bool:
        """True when nothing differs from what was sealed."""
        return not self.problems


def verify_bundle(bundle: BundleLocation, *, expected_manifest: str | None = None) -> Verification:
    """Recompute every hash of a bundle against its manifest and check its chain of custody.

    `expected_manifest` is the manifest hash recorded elsewhere (the store) when known.
    """
    report = Verification(bundle.url)
    raw = bundle.get(MANIFEST)
    if raw is None and not bundle.names():
        report.found = False
        recorded = (
            ""
            if expected_manifest is None
            else f" (the store recorded a bundle here, manifest sha256 {expected_manifest})"
        )
        report.problems.append(f"no evidence bundle at {bundle.url}{recorded}")
        return report
    if raw is None:
        report.problems.append(f"{MANIFEST}: missing (not a bundle, or the manifest was removed)")
        return report
    report.manifest_sha256 = sha256(raw)
    if expected_manifest is not None and report.manifest_sha256 != expected_manifest:
        report.problems.append(
            f"{MANIFEST}: changed (the store recorded sha256 {expected_manifest}, found {report.manifest_sha256})"
        )
    try:
        manifest = orjson.loads(raw)
        listed: dict[str, Any] = dict(manifest["files"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        report.problems.append(f"{MANIFEST}: unreadable (not the JSON manifest Custodes writes)")
        return report
    present = bundle.names()
    for name, meta in sorted(listed.items()):
        data = bundle.get(name)
        report.checked.append(name)
        if data is None:
            report.problems.append(f"{name}: missing")
            continue
        actual = sha256(data)
        if actual != meta.get("sha256"):
            report.problems.append(
                f"{name}: changed (sha256 expected {meta.get('sha256')}, found {actual}; "
                f"{meta.get('bytes')} bytes expected, {len(data)} found)"
            )
    for name in present:
        if name != MANIFEST and name not in listed and not name.startswith(CUSTODY):
            report.problems.append(f"{name}: not in the manifest (added after sealing)")
    _verify_custody(bundle, report)
    return report


def _verify_custody(bundle: BundleLocation, report: Verification) -> None:
    entries = custody_entries(bundle)
    report.custody = len(entries)
    if not entries:
        report.problems.append(f"{CUSTODY}: the chain of custody is missing")
        return
    first_name, first = entries[0]
    if first is not None and first.get("manifest_sha256") != report.manifest_sha256:
        report.problems.append(f"{first_name}: the first custody record seals a different manifest")
    previous = GENESIS
    for position, (name, entry) in enumerate(entries, start=1):
        if entry is None:
            report.problems.append(f"{name}: unreadable custody record")
            return
        if entry.get("seq") != position or entry.get("prev_hash") != previous:
            report.problems.append(f"{name}: the chain of custody is broken here (a record removed or inserted)")
            return
        if custody_hash(entry) != entry.get("hash"):
            report.problems.append(f"{name}: custody record changed (its hash does not match its content)")
            return
        previous = str(entry["hash"])


# collection --------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def _collect(
    tx: Transaction, entity: str, since: datetime, until: datetime, limit: int
) -> dict[str, list[dict[str, Any]]]:
    """The entity's rows for the window, read in one transaction (one consistent snapshot)."""
    event_query = (
        sa.select(events)
        .where(events.c.actor == entity, events.c.time >= since, events.c.time <= until)
        .order_by(events.c.time, events.c.id)
        .limit(limit + 1)
    )
    event_rows = [dict(row) for row in (await tx.conn.execute(event_query)).mappings()]
    if len(event_rows) > limit:
        raise ActionError(
            f"{entity} has more than {limit} events between {since.isoformat()} and {until.isoformat()}: "
            "narrow the window or raise responder.evidence.max_events",
            code="too_large",
        )
    finding_query = (
        sa.select(findings)
        .where(findings.c.entity == entity, findings.c.last_seen >= since, findings.c.first_seen <= until)
        .order_by(findings.c.first_seen, findings.c.id)
    )
    score_query = (
        sa.select(scoring_scores)
        .where(
            scoring_scores.c.entity == entity,
            scoring_scores.c.day >= since.date(),
            scoring_scores.c.day <= until.date(),
        )
        .order_by(scoring_scores.c.day)
    )
    run_query = (
        sa.select(runs)
        .where(runs.c.entity == entity, runs.c.created_at >= since, runs.c.created_at <= until)
        .order_by(runs.c.created_at, runs.c.id)
    )
    run_rows = [dict(row) for row in (await tx.conn.execute(run_query)).mappings()]
    run_ids = [row["id"] for row in run_rows]
    step_rows: list[dict[str, Any]] = []
    if run_ids:
        step_query = sa.select(steps).where(steps.c.run_id.in_(run_ids)).order_by(steps.c.run_id, steps.c.position)
        step_rows = [dict(row) for row in (await tx.conn.execute(step_query)).mappings()]
    for run in run_rows:
        run["steps"] = [s for s in step_rows if s["run_id"] == run["id"]]
    return {
        "events": event_rows,
        "findings": [dict(row) for row in (await tx.conn.execute(finding_query)).mappings()],
        "scores": [dict(row) for row in (await tx.conn.execute(score_query)).mappings()],
        "runs": run_rows,
    }


def _ndjson(rows: list[dict[str, Any]]) -> bytes:
    """One JSON line per row (`model.json_bytes`: an event nested deeper than orjson writes is written too)."""
    return b"".join(json_bytes(row, _JSON) + b"\n" for row in rows)


def _files(collected: dict[str, list[dict[str, Any]]]) -> dict[str, bytes]:
    return {
        "events.ndjson": _ndjson(collected["events"]),
        "findings.json": _dumps(collected["findings"]),
        "scores.json": _dumps(collected["scores"]),
        "runs.json": _dumps(collected["runs"]),
    }


def seal(
    bundle: BundleLocation,
    files: dict[str, bytes],
    header: dict[str, Any],
    counts: dict[str, int],
    *,
    who: str,
    why: str,
) -> str:
    """Write the files, then the manifest of their hashes, then the first custody record; return the
    manifest's hash. Files already written by an earlier, interrupted attempt are checked, not rewritten."""
    listed: dict[str, dict[str, Any]] = {}
    for name, data in files.items():
        existing = bundle.get(name)
        if existing is None:
            bundle.put(name, data)
        elif existing != data:
            raise ActionError(f"{bundle.url}: {name} exists with other content", code="conflict")
        listed[name] = {"sha256": sha256(data), "bytes": len(data), "records": counts.get(name, 0)}
    manifest = _dumps({**header, "algorithm": "sha256", "files": listed})
    existing_manifest = bundle.get(MANIFEST)
    if existing_manifest is None:
        bundle.put(MANIFEST, manifest)
    else:
        manifest = existing_manifest
    digest = sha256(manifest)
    if not custody_entries(bundle):
        append_custody(bundle, who=who, what="collected", why=why, manifest_sha256=digest)
    return digest


async def recorded_bundle(tx: Transaction, bundle_id: str) -> dict[str, Any] | None:
    """A bundle's row in the store, or None."""
    query = sa.select(evidence_bundles).where(evidence_bundles.c.id == bundle_id)
    row = (await tx.conn.execute(query)).mappings().first()
    return None if row is None else dict(row)


async def bundle_by_location(tx: Transaction, location: str) -> dict[str, Any] | None:
    """A bundle's row by its address, or None."""
    query = sa.select(evidence_bundles).where(evidence_bundles.c.location == location)
    row = (await tx.conn.execute(query)).mappings().first()
    return None if row is None else dict(row)


async def list_bundles(
    tx: Transaction, *, entity: str | None = None, limit: int = 100, hide: sa.Select[Any] | None = None
) -> list[dict[str, Any]]:
    """Recorded bundles, newest first; `hide` selects ids to leave out."""
    query = sa.select(evidence_bundles).order_by(evidence_bundles.c.created_at.desc()).limit(limit)
    if hide is not None:
        query = query.where(evidence_bundles.c.id.not_in(hide))
    if entity is not None:
        query = query.where(evidence_bundles.c.entity == entity)
    return [dict(row) for row in (await tx.conn.execute(query)).mappings()]


def _store(ctx: ActionContext) -> Store:
    if ctx.store is None:
        raise ActionError("this action needs the store; run it from a playbook run", code="not_configured")
    return ctx.store


def _describe(row: dict[str, Any], *, changed: bool) -> dict[str, Any]:
    return {
        "changed": changed,
        "bundle_id": row["id"],
        "location": row["location"],
        "manifest_sha256": row["manifest_sha256"],
        "files": row["files"],
    }


async def _from_siems(ctx: ActionContext, entity: str, since: datetime, until: datetime) -> list[SiemRecords]:
    """The entity's records from each configured SIEM (`responder.evidence.siem`), read one after another."""
    # Imported here: the connectors import this package (its shared HTTP client), so not at module load.
    from custodes.responder import siem

    sources = ctx.settings.evidence.siem
    if not sources:
        return []
    if ctx.app is None:
        raise ActionError("evidence from the SIEM needs the whole configuration (connectors)", code="not_configured")
    # The store's window includes `until`; the SIEMs read [since, until + 1 ms), their resolution.
    end = until + timedelta(milliseconds=1)
    limit = ctx.settings.evidence.max_events
    return [await siem.read(ctx.app, source, entity, since, end, limit) for source in sources]


@action(
    "evidence.collect",
    plan="preserve the events, findings, scores and runs of {entity} from {since} to {until} as evidence",
    target="entity",
)
async def collect(ctx: ActionContext, *, entity: str, since: datetime, until: datetime, reason: str) -> dict[str, Any]:
    """Collect an entity's events, findings, risk scores and playbook runs for a window into a sealed bundle,
    with the entity's records from each SIEM configured under ``responder.evidence.siem``, its privileged
    sessions (``sessions.json``) and the recordings of those that can be read (``recordings/``, see
    `custodes.responder.recordings`).

    The bundle (files, a SHA-256 manifest and a chain of custody) goes to the configured S3 bucket with
    Object Lock, else to the local evidence directory, and is recorded in the store. A replayed step (same
    idempotency key) finds its bundle and reports ``changed: false``.
    """
    entity, reason = entity.strip(), reason.strip()
    since, until = _utc(since), _utc(until)
    if not entity or not reason:
        raise ActionError("evidence.collect needs an entity and a reason", code="invalid_argument")
    if since >= until:
        raise ActionError("`since` must be before `until`", code="invalid_argument")
    settings = ctx.settings.evidence
    bundle_id = stable_id("evidence", ctx.idempotency_key)
    if ctx.dry_run:
        where = f"s3://{settings.s3.bucket}" if settings.s3 is not None else str(settings.directory)
        queried = "".join(f", with records from {source.connector}" for source in settings.siem)
        return {
            "changed": False,
            "dry_run": True,
            "would": f"write evidence bundle {bundle_id} for {entity} to {where}{queried}",
        }
    store = _store(ctx)
    async with store.transaction() as tx:
        known = await recorded_bundle(tx, bundle_id)
        if known is not None:
            return _describe(known, changed=False)
        collected = await _collect(tx, entity, since, until, settings.max_events)
    from_siems = await _from_siems(ctx, entity, since, until)
    files = _files(collected)
    counts = {f"{kind}{'.ndjson' if kind == 'events' else '.json'}": len(rows) for kind, rows in collected.items()}
    for read in from_siems:
        files[f"siem/{read.connector}.ndjson"] = _ndjson(read.records)
        counts[f"siem/{read.connector}.ndjson"] = len(read.records)
    sessions = sessions_from(collected["events"])
    recordings = [
        found
        for found in await asyncio.gather(*(asyncio.to_thread(recorded.fetch, s, settings) for s in sessions))
        if found is not None
    ]
    if sessions:
        files["sessions.json"] = _dumps([session.to_json() for session in sessions])
        counts["sessions.json"] = len(sessions)
    for recording in recordings:
        files.update(recording.files)
    created = utcnow()
    who = ctx.actor
    header = {
        "bundle": bundle_id,
        "entity": entity,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "reason": reason,
        "created_at": created.isoformat(),
        "created_by": who,
        "run_id": ctx.run_id,
        "idempotency_key": ctx.idempotency_key,
        "scores_included": True,
        "siem": [
            {"connector": read.connector, "query": read.query, "records": len(read.records)} for read in from_siems
        ],
        "recordings": [recording.summary() for recording in recordings],
    }
    bundle = await asyncio.to_thread(bundle_for, settings, bundle_id)
    digest = await asyncio.to_thread(seal, bundle, files, header, counts, who=who, why=reason)
    row = {
        "id": bundle_id,
        "entity": entity,
        "since": since,
        "until": until,
        "reason": reason,
        "location": bundle.url,
        "manifest_sha256": digest,
        "files": counts,
        "created_by": who,
        "run_id": ctx.run_id,
        "created_at": created,
    }
    async with store.transaction() as tx:
        if await recorded_bundle(tx, bundle_id) is not None:
            return _describe(row, changed=False)
        await tx.conn.execute(sa.insert(evidence_bundles), [row])
        await tx.audit(
            who,
            "evidence.collected",
            ctx.run_id,
            {"bundle": bundle_id, "entity": entity, "location": bundle.url, "manifest_sha256": digest},
        )
    return _describe(row, changed=True)


async def verify_recorded(
    store: Store | None, bundle: BundleLocation, *, who: str, why: str, record_access: bool = True
) -> Verification:
    """Verify a bundle (against the store's manifest hash when it knows the bundle) and, when asked,
    append the access to its chain of custody and the audit log."""
    expected: str | None = None
    if store is not None:
        async with store.transaction() as tx:
            known = await bundle_by_location(tx, bundle.url)
        expected = None if known is None else str(known["manifest_sha256"])
    report = await asyncio.to_thread(verify_bundle, bundle, expected_manifest=expected)
    if record_access and report.manifest_sha256 is not None:
        outcome = "intact" if report.ok else "tampered"
        await asyncio.to_thread(append_custody, bundle, who=who, what=f"verified: {outcome}", why=why)
        if store is not None:
            async with store.transaction() as tx:
                await tx.audit(who, "evidence.verified", bundle.url, {"ok": report.ok, "problems": report.problems})
    return report
