"""Which live worker should own each partition: rendezvous hashing, so a worker joining or leaving moves only the
partitions it gains or had."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def owner(partition: int, workers: Sequence[str]) -> str:
    """The worker that should own the partition (workers must not be empty)."""
    return max(workers, key=lambda worker: hashlib.sha256(f"{worker}/{partition}".encode()).digest())


def preferred(worker: str, workers: Sequence[str], partitions: int) -> list[int]:
    """Every partition, those `worker` should own first (the order it subscribes in)."""
    mine = [p for p in range(partitions) if owner(p, workers) == worker]
    return mine + [p for p in range(partitions) if p not in mine]
