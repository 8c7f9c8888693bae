"""A case's legal hold on S3 evidence (moto in server mode, real boto3): escalation sets the Object Lock legal hold
on every object, retention refuses the bundle, and lifting the hold clears it (unless another case still holds the
bundle), records it in the chain of custody, and lets retention delete the bundle."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from conftest import custody_whats, moto_client
from custodes.cases import book
from custodes.cases.book import CaseError
from custodes.cases.hold import hold_bundles, lift_hold, prune_evidence
from custodes.config import CaseSettings, EvidenceSettings, ResponderSettings, S3EvidenceStore
from custodes.responder import catalog
from custodes.responder.registry import ActionContext
from custodes.store import Store

ALICE = "alice@example.com"


@pytest.fixture
async def bucket(store: Store, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, str]]:
    monkeypatch.setenv("EVIDENCE_AWS_KEY", "testing")
    monkeypatch.setenv("EVIDENCE_AWS_SECRET", "testing-secret")
    name = f"held-{store.dialect}-{os.getpid()}-{id(store) % 10_000}"
    s3 = moto_client("s3", moto_url)
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    yield s3, name


def evidence_settings(moto_url: str, bucket: str) -> EvidenceSettings:
    s3 = S3EvidenceStore.model_validate(
        {
            "bucket": bucket,
            "prefix": "cases",
            "endpoint_url": moto_url,
            "access_key_id": "env:EVIDENCE_AWS_KEY",
            "secret_access_key": "env:EVIDENCE_AWS_SECRET",
            "retention_mode": "GOVERNANCE",
            "retention_days": 1,
        }
    )
    return EvidenceSettings(s3=s3)


async def escalated_case(store: Store, title: str) -> str:
    async with store.transaction() as tx:
        case = await book.open_case(tx, CaseSettings(), actor="api:analyst", title=title, subject=ALICE)
        await book.update(tx, CaseSettings(), case["id"], "api:analyst", status="escalated_legal", reason="counsel")
    return str(case["id"])


def holds(s3: Any, bucket: str, prefix: str) -> set[str]:
    """The Object Lock legal hold states of a bundle's files (custody records added later are not held)."""
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"] if "/custody/" not in o["Key"]
    ]
    return {s3.head_object(Bucket=bucket, Key=key).get("ObjectLockLegalHoldStatus", "OFF") for key in keys}


async def test_lifting_a_hold_clears_object_lock_and_lets_retention_delete(
    store: Store, bucket: tuple[Any, str], moto_url: str
) -> None:
    s3, name = bucket
    evidence = evidence_settings(moto_url, name)
    now = datetime.now(UTC)
    async with aiohttp.ClientSession() as http:
        ctx = ActionContext(ResponderSettings(evidence=evidence), http, "hold/1", store=store, actor="analyst")
        spec = catalog.get("evidence.collect")
        made = await spec.fn(
            ctx, **spec.validate({"entity": ALICE, "since": now - timedelta(days=1), "until": now, "reason": "x"})
        )
    ident, prefix = str(made["bundle_id"]), f"cases/{made['bundle_id']}/"
    assert holds(s3, name, prefix) == {"OFF"}, "the bucket's settings place no hold of their own"

    first, second = await escalated_case(store, "Exfiltration"), await escalated_case(store, "Same person, HR")
    assert await hold_bundles(store, evidence, first, "api:analyst", "counsel") == [ident]
    assert await hold_bundles(store, evidence, second, "api:analyst", "HR") == [ident]
    assert holds(s3, name, prefix) == {"ON"}
    pruned = await prune_evidence(store, evidence, timedelta(0), "custodes:retention")
    assert pruned.refused == {ident: [first, second]} and pruned.deleted == []

    with pytest.raises(CaseError) as no_reason:
        await lift_hold(store, evidence, first, "api:legal", "  ")
    assert no_reason.value.field == "reason"
    assert await lift_hold(store, evidence, first, "api:legal", "matter settled") == [ident]
    assert holds(s3, name, prefix) == {"ON"}, "the other case still holds the bundle"
    assert (await prune_evidence(store, evidence, timedelta(0), "custodes:retention")).refused == {ident: [second]}

    assert await lift_hold(store, evidence, second, "api:legal", "HR done") == [ident]
    assert holds(s3, name, prefix) == {"OFF"}
    whats = custody_whats(f"s3://{name}/{prefix[:-1]}", evidence)
    assert whats.count(f"legal hold placed (case {first})") == 1
    assert f"legal hold lifted (case {first})" in whats and whats[-1] == f"legal hold lifted (case {second})"
    with pytest.raises(CaseError) as twice:
        await lift_hold(store, evidence, second, "api:legal", "again")
    assert twice.value.code == "conflict"
    async with store.transaction() as tx:
        kinds = [e["kind"] for e in await book.timeline(tx, second)]
        case = await book.get_case(tx, second)
    assert kinds[-2:] == ["hold_lifted", "bundle_released"]
    assert case is not None and case["restricted"] and not case["legal_hold"]

    pruned = await prune_evidence(store, evidence, timedelta(0), "custodes:retention")
    assert pruned.deleted == [ident] and pruned.refused == {}
    assert "Contents" not in s3.list_objects_v2(Bucket=name, Prefix=prefix)
