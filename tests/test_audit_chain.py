"""The keyed audit chain and its checkpoints outside the store: truncation and rewriting detected."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from typer.testing import CliRunner

from conftest import moto_client
from custodes.cli import app
from custodes.config import DatabaseSettings, load_settings
from custodes.store import Store, audit_hash
from custodes.store.tables import audit_log

AUDIT_KEY = "audit-key-for-tests-0123456789abcdef"


async def test_audit_verify_detects_truncation_and_rewriting(database: DatabaseSettings, tmp_path: Path) -> None:
    checkpoints = tmp_path / "outside" / "audit.jsonl"
    db = database.model_dump(exclude_none=True, mode="json") | {
        "audit_key": "env:AUDIT_KEY",
        "audit_checkpoint": str(checkpoints),
    }
    config = tmp_path / "custodes.yaml"
    config.write_text(orjson.dumps({"database": db}).decode())
    environ = {"AUDIT_KEY": AUDIT_KEY}
    settings = load_settings(config, environ=environ)
    cli = CliRunner()

    def verify() -> tuple[int, dict[str, Any]]:
        result = cli.invoke(app, ["audit", "verify", "--json", "-c", str(config)], env=environ)
        return result.exit_code, orjson.loads(result.stdout)

    store = await Store.open(settings.database)
    try:
        async with store.transaction() as tx:
            for n in range(5):
                await tx.audit("ann", "finding.update", f"f{n}", {"n": n})
        async with store.transaction() as tx:
            [first, *_] = await tx.audit_entries()
        key = AUDIT_KEY.encode()
        fields = (first.prev_hash, first.at, first.actor, first.action, first.subject, first.details)
        assert first.hash == audit_hash(*fields, key) != audit_hash(*fields)  # keyed: HMAC, not plain SHA-256
        code, report = await asyncio.to_thread(verify)
        assert code == 0 and report["ok"] and report["head"]["seq"] == 5 and report["keyed"]
        assert [orjson.loads(line)["seq"] for line in checkpoints.read_text().splitlines()] == [5]

        # the newest entries removed: the rest is a valid chain, but the checkpointed head is gone
        async with store.transaction() as tx:
            await tx.conn.execute(sa.delete(audit_log).where(audit_log.c.seq > 3))
        code, report = await asyncio.to_thread(verify)
        assert code == 1 and not report["ok"]
        assert "entry 5, the head checkpointed at" in report["problems"][0]
        assert "the log now ends at entry 3" in report["problems"][0]

        # an entry rewritten and every hash after it recomputed without the key: caught at that entry
        async with store.transaction() as tx:
            entries = await tx.audit_entries()
            prev = entries[0].hash
            for entry in entries[1:]:
                details = {"n": 99} if entry.seq == 2 else entry.details
                digest = audit_hash(prev, entry.at, entry.actor, entry.action, entry.subject, details)
                await tx.conn.execute(
                    sa.update(audit_log)
                    .where(audit_log.c.seq == entry.seq)
                    .values(details=details, prev_hash=prev, hash=digest)
                )
                prev = digest
        code, report = await asyncio.to_thread(verify)
        assert (
            code == 1
            and "audit entry 2: its content does not match its hash (not signed with the audit key)"
            in (report["problems"][0])
        )
    finally:
        await store.close()


async def test_audit_heads_are_also_checkpointed_in_s3_with_object_lock(
    database: DatabaseSettings, tmp_path: Path, moto_url: str
) -> None:
    bucket = f"audit-{database.url.split(':')[0].split('+')[0]}-{os.getpid()}"
    s3 = moto_client("s3", moto_url)
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    locked = {
        "bucket": bucket,
        "prefix": "audit/",
        "endpoint_url": moto_url,
        "access_key_id": "env:S3_KEY",
        "secret_access_key": "env:S3_SECRET",
        "retention_days": 1,
    }
    db = database.model_dump(exclude_none=True, mode="json") | {
        "audit_checkpoint": str(tmp_path / "audit.jsonl"),
        "audit_checkpoint_s3": locked,
    }
    config = tmp_path / "custodes.yaml"
    config.write_text(orjson.dumps({"database": db}).decode())
    environ = {"S3_KEY": "testing", "S3_SECRET": "testing-secret"}
    store = await Store.open(load_settings(config, environ=environ).database)
    try:
        async with store.transaction() as tx:
            for n in range(3):
                await tx.audit("ann", "finding.update", f"f{n}", {"n": n})
        ok = await asyncio.to_thread(
            CliRunner().invoke, app, ["audit", "verify", "--json", "-c", str(config)], env=environ
        )
        assert ok.exit_code == 0, ok.output
        [key] = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="audit/")["Contents"]]
        assert s3.head_object(Bucket=bucket, Key=key)["ObjectLockMode"] == "COMPLIANCE"
        # the local checkpoint file and the newest entry both removed: the locked object still tells
        (tmp_path / "audit.jsonl").unlink()
        async with store.transaction() as tx:
            await tx.conn.execute(sa.delete(audit_log).where(audit_log.c.seq == 3))
        bad = await asyncio.to_thread(
            CliRunner().invoke, app, ["audit", "verify", "--json", "-c", str(config)], env=environ
        )
        assert bad.exit_code == 1 and "entry 3, the head checkpointed at" in orjson.loads(bad.stdout)["problems"][0]
    finally:
        await store.close()
