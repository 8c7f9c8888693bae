"""Advisory locks are the store schema's own: deployments sharing one PostgreSQL database in schemas of their own
never wait for each other's turns, and never skip a turn because another holds its lock; dropping one schema leaves
the others whole."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import POSTGRES_URL, _drop_schema
from custodes.bus.scoring import rescore
from custodes.config import DatabaseSettings, load_settings
from custodes.services import Services
from custodes.store import Store
from custodes.store.locks import holding, lock_key

pytestmark = pytest.mark.needs_postgres

PURPOSES = ("audit", "destructive", "migrations", "rescoring", "schedules", "topology", "connectors")


@pytest.fixture
async def schemas() -> AsyncIterator[tuple[DatabaseSettings, DatabaseSettings]]:
    """Two fresh schemas of one PostgreSQL database, dropped afterwards."""
    assert POSTGRES_URL is not None
    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    try:
        yield (
            DatabaseSettings(url=POSTGRES_URL, schema_name=names[0]),
            DatabaseSettings(url=POSTGRES_URL, schema_name=names[1]),
        )
    finally:
        for name in names:
            await _drop_schema(name)


def config_file(tmp_path: Path, database: DatabaseSettings) -> Path:
    """A configuration of one deployment in `database`'s schema."""
    config = tmp_path / f"{database.schema_name}.yaml"
    config.write_text(
        f"database: {{url: '{database.url}', schema_name: {database.schema_name}}}\nhunts: {{schedule: false}}\n"
    )
    return config


def test_each_purpose_and_schema_has_a_key_of_its_own() -> None:
    keys = {lock_key(purpose, schema) for purpose in PURPOSES for schema in (None, "soc", "tenant_b")}
    assert len(keys) == len(PURPOSES) * 3
    assert all(-(2**63) <= key < 2**63 for key in keys), "PostgreSQL's advisory lock keys are signed 64-bit"
    assert lock_key("rescoring", None) == lock_key("rescoring", ""), "no schema is the default schema"


async def test_a_lock_held_elsewhere_is_reported_not_taken_until_it_is_freed(
    schemas: tuple[DatabaseSettings, DatabaseSettings],
) -> None:
    store = await Store.open(schemas[0])
    try:
        async with holding(store, "rescoring") as held:  # waiting for a lock: tests/test_cluster_topology.py
            assert held
            async with holding(store, "rescoring", wait=False) as again:
                assert not again, "another session holds it"
        async with holding(store, "rescoring", wait=False) as freed:
            assert freed, "the first holder freed it"
    finally:
        await store.close()


async def test_re_scoring_skips_its_turn_only_for_its_own_schema(
    tmp_path: Path, schemas: tuple[DatabaseSettings, DatabaseSettings]
) -> None:
    first, second = (load_settings(config_file(tmp_path, database)) for database in schemas)
    async with await Services.open(first) as mine, await Services.open(second) as theirs:
        async with holding(mine.store, "rescoring") as taken:
            assert taken
            assert await rescore(mine.pipeline, None) == (None, []), "a runner of the same schema skips its turn"
            scored, _ = await rescore(theirs.pipeline, None)
            assert scored is not None, "another schema's runner re-scores all the same"
        scored, _ = await rescore(mine.pipeline, None)
        assert scored is not None, "once the lock is free, the schema's runner re-scores"


async def test_dropping_a_schema_takes_its_store_and_leaves_the_other_schema_whole(
    schemas: tuple[DatabaseSettings, DatabaseSettings],
) -> None:
    first, second = schemas
    for settings in schemas:
        await (await Store.open(settings)).close()
    assert first.schema_name is not None and second.schema_name is not None
    await _drop_schema(first.schema_name)
    await _drop_schema(first.schema_name)  # nothing left to drop is no error
    store = await Store.open(second, migrate_schema=False)
    try:
        async with store.engine.connect() as conn:
            names = set((await conn.execute(sa.text("SELECT schema_name FROM information_schema.schemata"))).scalars())
            assert first.schema_name not in names and second.schema_name in names
            assert (await conn.execute(sa.text("SELECT count(*) FROM findings"))).scalar() == 0, "its tables stand"
    finally:
        await store.close()
