"""Evidence preservation: collect into a sealed bundle (local directory, or S3 with Object Lock on moto),
verify it, detect tampering file by file, keep the chain of custody, record and list bundles in the store."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from conftest import moto_client
from custodes.cli import app
from custodes.config import DatabaseSettings, EvidenceSettings, ResponderSettings, S3EvidenceStore
from custodes.model import Event, Finding, LogSource, Run, RunStatus, Severity
from custodes.responder import catalog
from custodes.responder.evidence import (
    LocalBundle,
    append_custody,
    open_bundle,
    verify_bundle,
    verify_recorded,
)
from custodes.responder.registry import ActionContext, ActionError
from custodes.store import Store
from custodes.store.tables import evidence_bundles, scoring_scores

T0 = datetime(2026, 11, 19, 2, 0, tzinfo=UTC)
ALICE = "alice@example.com"
runner = CliRunner()


async def seed(store: Store) -> None:
    """Alice's events inside and outside the window, a finding, a run, a day score; Bob's event."""
    rows = [
        Event(
            id=f"e{i}",
            time=T0 + timedelta(hours=i * 10),
            source="okta",
            logsource=LogSource("okta", "okta"),
            raw={"uuid": f"e{i}", "eventType": "user.session.start"},
            actor=ALICE,
            action="user.session.start",
        )
        for i in range(4)
    ]
    rows.append(
        Event(
            id="bob1",
            time=T0,
            source="okta",
            logsource=LogSource("okta", "okta"),
            raw={"uuid": "bob1"},
            actor="bob@example.com",
        )
    )
    finding = Finding(
        id="f1",
        dedup_key="k1",
        detector="sigma",
        rule_id="r1",
        title="Mass download",
        severity=Severity.HIGH,
        entity=ALICE,
        event_ids=["e0"],
        tags=["attack.t1530"],
        first_seen=T0,
        last_seen=T0,
        source="okta",
    )
    run = Run(
        id="run1",
        playbook="contain-insider",
        playbook_version="1",
        status=RunStatus.SUCCEEDED,
        created_at=T0 + timedelta(hours=1),
        entity=ALICE,
    )
    async with store.transaction() as tx:
        await tx.insert_events(rows)
        await tx.record_finding(finding, timedelta(hours=1))
        await tx.create_run(run)
        await tx.conn.execute(
            sa.insert(scoring_scores),
            [
                {
                    "entity": ALICE,
                    "day": date(2026, 11, 19),
                    "risk": 87.5,
                    "points": 12.0,
                    "detail": {"entity": ALICE, "risk": 87.5},
                    "event_ids": ["e0"],
                    "created_at": T0,
                }
            ],
        )


def context(store: Store, session: aiohttp.ClientSession, settings: ResponderSettings, key: str) -> ActionContext:
    return ActionContext(settings, session, key, run_id="run1", store=store, actor="analyst@example.com")


async def collect(ctx: ActionContext, **overrides: Any) -> dict[str, Any]:
    spec = catalog.get("evidence.collect")
    arguments = {
        "entity": ALICE,
        "since": "2026-11-19T00:00:00Z",
        "until": "2026-11-20T00:00:00Z",
        "reason": "INC-42 departing employee",
        **overrides,
    }
    result: dict[str, Any] = await spec.fn(ctx, **spec.validate(arguments))
    return result


async def test_collect_writes_a_sealed_bundle_once(
    store: Store, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await seed(store)
    settings = ResponderSettings(evidence=EvidenceSettings(directory=tmp_path / "evidence"))
    ctx = context(store, session, settings, "run1/preserve")
    result = await collect(ctx)

    assert result["changed"] is True
    assert result["files"] == {"events.ndjson": 3, "findings.json": 1, "scores.json": 1, "runs.json": 1}
    root = Path(result["location"])
    events = [orjson.loads(line) for line in (root / "events.ndjson").read_bytes().splitlines()]
    assert [e["id"] for e in events] == ["e0", "e1", "e2"]  # e3 is after the window, bob1 is not alice's
    assert events[0]["raw"] == {"uuid": "e0", "eventType": "user.session.start"}
    assert orjson.loads((root / "scores.json").read_bytes())[0]["risk"] == 87.5
    assert orjson.loads((root / "runs.json").read_bytes())[0]["id"] == "run1"
    manifest = orjson.loads((root / "manifest.json").read_bytes())
    assert manifest["entity"] == ALICE and manifest["reason"] == "INC-42 departing employee"
    assert set(manifest["files"]) == {"events.ndjson", "findings.json", "scores.json", "runs.json"}
    custody = orjson.loads((root / "custody" / "000001.json").read_bytes())
    assert custody["who"] == "analyst@example.com" and custody["what"] == "collected"
    assert custody["manifest_sha256"] == result["manifest_sha256"]
    assert not os.access(root / "events.ndjson", os.W_OK) or os.geteuid() == 0
    assert (root / "events.ndjson").stat().st_mode & 0o222 == 0

    report = verify_bundle(LocalBundle(root), expected_manifest=result["manifest_sha256"])
    assert report.ok, report.problems
    assert report.checked == ["events.ndjson", "findings.json", "runs.json", "scores.json"]

    again = await collect(ctx)  # a replayed step: same idempotency key
    assert again["changed"] is False and again["bundle_id"] == result["bundle_id"]
    assert len(list((tmp_path / "evidence").iterdir())) == 1
    async with store.transaction() as tx:
        count = (await tx.conn.execute(sa.select(sa.func.count()).select_from(evidence_bundles))).scalar_one()
        audit = [entry.action for entry in await tx.audit_entries()]
    assert count == 1
    assert audit.count("evidence.collected") == 1


async def test_collect_checks_arguments_and_dry_run_writes_nothing(
    store: Store, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    settings = ResponderSettings(evidence=EvidenceSettings(directory=tmp_path / "evidence"))
    with pytest.raises(ActionError, match="before") as caught:
        await collect(context(store, session, settings, "k"), since="2026-11-21T00:00:00Z")
    assert caught.value.code == "invalid_argument"
    dry = ActionContext(settings, session, "k", dry_run=True, store=store)
    result = await collect(dry)
    assert result["dry_run"] is True and "write evidence bundle" in result["would"]
    assert not (tmp_path / "evidence").exists()
    small = ResponderSettings(evidence=EvidenceSettings(directory=tmp_path / "evidence", max_events=2))
    await seed(store)
    with pytest.raises(ActionError, match="more than 2 events") as caught:
        await collect(context(store, session, small, "k2"))
    assert caught.value.code == "too_large"


def make_writable(path: Path) -> None:
    path.chmod(0o644)


async def test_verify_names_each_changed_file_and_appends_custody(
    store: Store, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await seed(store)
    settings = ResponderSettings(evidence=EvidenceSettings(directory=tmp_path / "evidence"))
    result = await collect(context(store, session, settings, "run1/preserve"))
    bundle = LocalBundle(Path(result["location"]))

    intact = await verify_recorded(store, bundle, who="carol", why="court request")
    assert intact.ok and intact.custody == 1  # verified before this access was appended
    records = [name for name in bundle.names() if name.startswith("custody/")]
    assert records == ["custody/000001.json", "custody/000002.json"]
    second = orjson.loads(bundle.get("custody/000002.json") or b"")
    assert second["who"] == "carol" and second["why"] == "court request" and second["what"] == "verified: intact"

    events = bundle.root / "events.ndjson"
    make_writable(events)
    events.write_bytes(events.read_bytes().replace(b'"e1"', b'"eX"'))
    (bundle.root / "planted.txt").write_text("added later")
    tampered = await verify_recorded(store, bundle, who="carol", why="second look")
    assert not tampered.ok
    assert len(tampered.problems) == 2
    assert tampered.problems[0].startswith("events.ndjson: changed (sha256 expected ")
    assert tampered.problems[1] == "planted.txt: not in the manifest (added after sealing)"


async def test_a_rewritten_manifest_or_custody_record_is_caught(
    store: Store, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await seed(store)
    settings = ResponderSettings(evidence=EvidenceSettings(directory=tmp_path / "evidence"))
    result = await collect(context(store, session, settings, "run1/preserve"))
    bundle = LocalBundle(Path(result["location"]))
    append_custody(bundle, who="dave", what="copied", why="review")

    record = bundle.root / "custody" / "000002.json"
    make_writable(record)
    record.write_bytes(record.read_bytes().replace(b'"dave"', b'"erin"'))
    report = verify_bundle(bundle)
    assert report.problems == ["custody/000002.json: custody record changed (its hash does not match its content)"]

    # a consistent forgery of files and manifest still differs from the store's record of the manifest
    findings = bundle.root / "findings.json"
    make_writable(findings)
    findings.write_bytes(b"[]\n")
    manifest_path = bundle.root / "manifest.json"
    manifest = orjson.loads(manifest_path.read_bytes())
    manifest["files"]["findings.json"]["sha256"] = hashlib.sha256(b"[]\n").hexdigest()
    make_writable(manifest_path)
    manifest_path.write_bytes(orjson.dumps(manifest))
    forged = verify_bundle(bundle, expected_manifest=result["manifest_sha256"])
    assert forged.problems[0].startswith("manifest.json: changed (the store recorded sha256 ")
    assert "custody/000001.json: the first custody record seals a different manifest" in forged.problems


def write_config(tmp_path: Path, database: DatabaseSettings, evidence: Path) -> Path:
    config = tmp_path / "custodes.yaml"
    body: dict[str, Any] = {
        "database": {"url": database.url, "schema_name": database.schema_name},
        "responder": {"evidence": {"directory": str(evidence)}},
    }
    config.write_bytes(orjson.dumps(body))
    return config


async def test_cli_verify_and_list(
    store: Store, database: DatabaseSettings, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    await seed(store)
    settings = ResponderSettings(evidence=EvidenceSettings(directory=tmp_path / "evidence"))
    result = await collect(context(store, session, settings, "run1/preserve"))
    config = write_config(tmp_path, database, tmp_path / "evidence")
    location = result["location"]

    ok = await asyncio.to_thread(
        runner.invoke, app, ["evidence", "verify", location, "--by", "frank", "-c", str(config)]
    )
    assert ok.exit_code == 0, ok.output
    assert "bundle intact: 4 files match manifest" in ok.output

    listed = await asyncio.to_thread(runner.invoke, app, ["evidence", "list", "--json", "-c", str(config)])
    assert listed.exit_code == 0, listed.output
    rows = orjson.loads(listed.output)
    assert [(r["id"], r["entity"], r["location"]) for r in rows] == [(result["bundle_id"], ALICE, location)]

    runs_file = Path(location) / "runs.json"
    make_writable(runs_file)
    runs_file.write_bytes(runs_file.read_bytes() + b" ")
    bad = await asyncio.to_thread(
        runner.invoke, app, ["evidence", "verify", location, "--by", "frank", "--json", "-c", str(config)]
    )
    assert bad.exit_code == 1
    report = orjson.loads(bad.output)
    assert report["ok"] is False
    assert [p.split(":")[0] for p in report["problems"]] == ["runs.json"]

    missing = tmp_path / "no-such-bundle"
    gone = await asyncio.to_thread(
        runner.invoke, app, ["evidence", "verify", str(missing), "--by", "frank", "-c", str(config)]
    )
    assert gone.exit_code == 1
    assert f"not found: no evidence bundle at {missing}" in " ".join(gone.output.split())
    assert "tampered" not in gone.output
    for address, said in ((str(runs_file), "is a file: a bundle is a directory"), ("s3:///x", "s3://bucket/prefix")):
        refused = await asyncio.to_thread(runner.invoke, app, ["evidence", "verify", address, "-c", str(config)])
        assert refused.exit_code == 2 and said in " ".join(refused.output.split()), refused.output
        assert "Traceback" not in refused.output and "ActionError" not in refused.output


# S3 with Object Lock on moto in server mode ------------------------------------------------------


@pytest.fixture
def aws_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVIDENCE_AWS_KEY", "testing")
    monkeypatch.setenv("EVIDENCE_AWS_SECRET", "testing-secret")


def s3_settings(moto_url: str, bucket: str) -> S3EvidenceStore:
    return S3EvidenceStore.model_validate(
        {
            "bucket": bucket,
            "prefix": "cases",
            "endpoint_url": moto_url,
            "access_key_id": "env:EVIDENCE_AWS_KEY",
            "secret_access_key": "env:EVIDENCE_AWS_SECRET",
            "retention_mode": "COMPLIANCE",
            "retention_days": 30,
            "legal_hold": True,
        }
    )


async def test_s3_bundle_is_locked_and_verifiable(
    store: Store, session: aiohttp.ClientSession, moto_url: str, aws_keys: None, tmp_path: Path
) -> None:
    bucket = f"evidence-{store.dialect}-{os.getpid()}-{id(store) % 10_000}"
    s3 = moto_client("s3", moto_url)
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    await seed(store)
    settings = ResponderSettings(evidence=EvidenceSettings(s3=s3_settings(moto_url, bucket)))
    result = await collect(context(store, session, settings, "run1/preserve"))
    location = result["location"]
    assert location == f"s3://{bucket}/cases/{result['bundle_id']}"
    prefix = f"cases/{result['bundle_id']}/"

    head = s3.head_object(Bucket=bucket, Key=prefix + "events.ndjson")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockLegalHoldStatus"] == "ON"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=29)
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=prefix + "events.ndjson", VersionId=head["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"

    again = await collect(context(store, session, settings, "run1/preserve"))
    assert again["changed"] is False

    bundle = open_bundle(location, settings.evidence)
    report = await verify_recorded(store, bundle, who="carol", why="audit")
    assert report.ok, report.problems
    assert f"{prefix}custody/000002.json" in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]

    # overwriting makes a new version; the locked original survives and verify names the file
    s3.put_object(Bucket=bucket, Key=prefix + "findings.json", Body=b"[]")
    tampered = await verify_recorded(store, bundle, who="carol", why="audit")
    assert [p.split(":")[0] for p in tampered.problems] == ["findings.json"]
    versions = s3.list_object_versions(Bucket=bucket, Prefix=prefix + "findings.json")["Versions"]
    assert len(versions) == 2
