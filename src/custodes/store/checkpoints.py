"""Checkpoints of the audit chain's head kept outside the store, so that removing the newest entries (which leaves
a chain that is valid in itself) or rewriting the whole chain is caught by the next verification.

Each `custodes audit verify` that finds the chain intact appends one JSON line to `database.audit_checkpoint`:
the head's sequence number and hash, when, and how many entries were verified; with
`database.audit_checkpoint_s3`, it also writes it as a new object locked in S3 (Object Lock), which nobody can
change or delete before its retention ends. A later verification requires every
checkpointed entry to be present with the same hash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson

from custodes.errors import CustodesError
from custodes.model import utcnow
from custodes.store.database import AuditVerification, Store


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The chain's head as one verification found it."""

    seq: int
    hash: str
    at: str
    entries: int


class ObjectStore(Protocol):
    """Write-once objects under a prefix (an S3 bucket with Object Lock: `responder.evidence.S3Bundle`)."""

    @property
    def url(self) -> str:
        """Where the objects are, for messages."""

    def put(self, name: str, data: bytes) -> None:
        """Write a new object."""

    def get(self, name: str) -> bytes | None:
        """An object's bytes, or None when it is missing."""

    def names(self) -> list[str]:
        """Every object's name, sorted."""


def _parse(line: bytes, where: Path | str, number: int) -> Checkpoint:
    try:
        item = orjson.loads(line)
        return Checkpoint(int(item["seq"]), str(item["hash"]), str(item["at"]), int(item["entries"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise CustodesError.at(where, "not an audit checkpoint", line=number, column=1) from None


def read_checkpoints(path: Path, objects: ObjectStore | None = None) -> list[Checkpoint]:
    """Every checkpoint in the file (none when it does not exist yet) and in the object store, if any."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        lines = []
    except OSError as exc:
        raise CustodesError.at(path, f"cannot read the audit checkpoints: {exc.strerror}") from None
    found = [_parse(line, path, number) for number, line in enumerate(lines, start=1) if line.strip()]
    for name in objects.names() if objects is not None else []:
        data = objects.get(name) if objects is not None else None
        if data is not None:
            found.append(_parse(data, f"{objects.url}/{name}" if objects is not None else name, 1))
    return found


def append_checkpoint(path: Path, report: AuditVerification, objects: ObjectStore | None = None) -> Checkpoint:
    """Append the verified head to the file (created with its folder when missing, synced to disk) and write it
    as a new object to the object store, if any."""
    checkpoint = Checkpoint(report.head_seq, report.head_hash, utcnow().isoformat(), report.checked)
    line = orjson.dumps(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        handle.write(line + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    if objects is not None:
        stamp = checkpoint.at.replace(":", "").replace("-", "")
        objects.put(f"{checkpoint.seq:020d}-{stamp}.json", line)
    return checkpoint


async def verify_checkpointed(
    store: Store, path: Path, objects: ObjectStore | None = None
) -> tuple[AuditVerification, list[str]]:
    """Verify the chain and compare it with every checkpoint (the file's and the object store's): (the chain's
    verification, checkpoint problems). When both are clean, the head is checkpointed."""
    checkpoints = read_checkpoints(path, objects)
    async with store.transaction() as tx:
        report = await tx.verify_audit(remember={checkpoint.seq for checkpoint in checkpoints})
    if not report.ok:
        return report, []
    problems = []
    for checkpoint in checkpoints:
        found = report.hashes.get(checkpoint.seq)
        if found is None:
            problem = (
                f"entry {checkpoint.seq}, the head checkpointed at {checkpoint.at}, is gone: the log now ends at "
                f"entry {report.head_seq} (entries were removed from its end)"
            )
        elif found != checkpoint.hash:
            problem = f"entry {checkpoint.seq} differs from its checkpoint of {checkpoint.at} (the log was rewritten)"
        else:
            continue
        if problem not in problems:
            problems.append(problem)
    if not problems and report.checked:
        append_checkpoint(path, report, objects)
    return report, problems
