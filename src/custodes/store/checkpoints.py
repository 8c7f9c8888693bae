"""Checkpoints of the audit chain's head kept outside the store, so that removing the newest entries (which leaves
a chain that is valid in itself) or rewriting the whole chain is caught by the next verification.

Each `custodes audit verify` that finds the chain intact appends one JSON line to `database.audit_checkpoint`:
the head's sequence number and hash, when, and how many entries were verified. A later verification requires every
checkpointed entry to be present with the same hash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """Every checkpoint in the file, oldest first (none when the file does not exist yet)."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CustodesError.at(path, f"cannot read the audit checkpoints: {exc.strerror}") from None
    found = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            found.append(Checkpoint(int(item["seq"]), str(item["hash"]), str(item["at"]), int(item["entries"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise CustodesError.at(path, "not an audit checkpoint line", line=number, column=1) from None
    return found


def append_checkpoint(path: Path, report: AuditVerification) -> Checkpoint:
    """Append the verified head to the file (created with its folder when missing), synced to disk."""
    checkpoint = Checkpoint(report.head_seq, report.head_hash, utcnow().isoformat(), report.checked)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        handle.write(orjson.dumps(checkpoint) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return checkpoint


async def verify_checkpointed(store: Store, path: Path) -> tuple[AuditVerification, list[str]]:
    """Verify the chain and compare it with every checkpoint: (the chain's verification, checkpoint problems).
    When both are clean, the head is checkpointed."""
    checkpoints = read_checkpoints(path)
    async with store.transaction() as tx:
        report = await tx.verify_audit(remember={checkpoint.seq for checkpoint in checkpoints})
    if not report.ok:
        return report, []
    problems = []
    for checkpoint in checkpoints:
        found = report.hashes.get(checkpoint.seq)
        if found is None:
            problems.append(
                f"entry {checkpoint.seq}, the head checkpointed at {checkpoint.at}, is gone: the log now ends at "
                f"entry {report.head_seq} (entries were removed from its end)"
            )
        elif found != checkpoint.hash:
            problems.append(
                f"entry {checkpoint.seq} differs from its checkpoint of {checkpoint.at} (the log was rewritten)"
            )
    if not problems and report.checked:
        append_checkpoint(path, report)
    return report, problems
