"""A connector poll in its own process that can kill itself (SIGKILL) just before or just after a commit.

Usage: python connector_crash_worker.py CONFIG_JSON; the JSON names the database, the connector entry and
`crash_before` / `crash_after` (the number of the batch at which to die, counting from 1).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from custodes.config import ConnectorSettings, DatabaseSettings, Settings
from custodes.connectors import sdk
from custodes.connectors.base import Batch
from custodes.connectors.runtime import ConnectorRuntime
from custodes.services import Services


class Dying:
    """Wraps a connector; dies at the chosen batch, before its commit or after it."""

    def __init__(self, inner: Any, before: int | None, after: int | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.before = before
        self.after = after

    async def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        count = 0
        async for batch in self.inner.batches(checkpoint):
            count += 1
            if count == self.before:
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch
            if count == self.after:
                os.kill(os.getpid(), signal.SIGKILL)


async def main(spec: dict[str, Any]) -> None:
    empty = Path(spec["empty"])
    settings = Settings(database=DatabaseSettings(**spec["database"]))
    settings.detection.rules = [empty]
    settings.playbooks.paths = [empty]
    entry = ConnectorSettings.model_validate(spec["connector"], context={"environ": os.environ})
    connector = Dying(sdk.build("crashy", entry, settings), spec.get("crash_before"), spec.get("crash_after"))
    async with await Services.open(settings) as services:
        report = await ConnectorRuntime(services.pipeline).poll(connector, kind=entry.kind)
    sys.stdout.write(orjson.dumps({"stored": report.stored, "received": report.received}).decode())


if __name__ == "__main__":
    asyncio.run(main(orjson.loads(sys.argv[1])))
