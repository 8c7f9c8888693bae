"""`custodes migrate`: bring the store's schema up to date and exit (a deployment's migration step)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import orjson

from custodes.cli.common import ConfigOption, JsonOption, console, run, settings_from
from custodes.cli.root import app

if TYPE_CHECKING:
    import sqlalchemy as sa


def _heads(connection: sa.Connection) -> list[str]:
    from alembic.runtime.migration import MigrationContext

    return sorted(MigrationContext.configure(connection).get_current_heads())


@app.command()
def migrate(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Apply the store's pending schema migrations, print the revision it is at, and exit."""
    from custodes.store.database import Store

    async def work() -> None:
        settings = settings_from(config)
        store = await Store.open(settings.database)
        try:
            async with store.engine.connect() as conn:
                heads = await conn.run_sync(_heads)
        finally:
            await store.close()
        if as_json:
            sys.stdout.write(orjson.dumps({"revisions": heads}).decode() + "\n")
        else:
            console.print(f"the store is at revision {', '.join(heads)}")

    run(work)
