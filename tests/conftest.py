"""Shared fixtures: a fresh store per test on SQLite and, when enabled, on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from moto.server import ThreadedMotoServer

from custodes.config import DatabaseSettings, EvidenceSettings
from custodes.responder.evidence import custody_entries, open_bundle
from custodes.sandbox import okta
from custodes.sandbox.server import running
from custodes.store import Store
from custodes.store.database import drop_schema

POSTGRES_URL = os.environ.get("CUSTODES_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgresql"] if POSTGRES_URL else ["sqlite"]
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    """The width of a command's output is each test's own (the environment it gives `CliRunner`, else Rich's 80
    columns): a pytest-xdist worker starts with COLUMNS and LINES set, which Rich's consoles would read once, when
    `custodes.cli` is first imported, and keep."""
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out tests that only make sense on PostgreSQL when the PostgreSQL suite is not enabled."""
    if POSTGRES_URL:
        return
    kept = [item for item in items if item.get_closest_marker("needs_postgres") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def pytest_report_header() -> str:
    state = "enabled" if POSTGRES_URL else "disabled (set CUSTODES_TEST_POSTGRES_URL; .ci/run does)"
    return f"custodes store backends: {', '.join(BACKENDS)}; PostgreSQL suite {state}"


@pytest.fixture(autouse=True)
def _rule_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Compiled rule sets cached by commands go to a folder of the test's own, never to the user's cache."""
    folder = tmp_path_factory.mktemp("rule-cache")
    folder.chmod(0o700)
    monkeypatch.setenv("CUSTODES_CACHE_DIR", str(folder))
    return folder


async def _drop_schema(schema: str) -> None:
    assert POSTGRES_URL is not None
    await drop_schema(POSTGRES_URL, schema)


OKTA_TOKEN = "test-okta-token-7f3a"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for tests that talk to the simulators."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def org() -> AsyncIterator[tuple[okta.OktaState, str]]:
    """An empty Okta simulator accepting OKTA_TOKEN, and its base URL."""
    state = okta.OktaState(token=OKTA_TOKEN)
    async with running(okta.create_app(state)) as url:
        yield state, url


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto in server mode on loopback, one per test module (tests reset it through /moto-api/reset)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def custody_whats(address: str, settings: EvidenceSettings) -> list[object]:
    """What each custody record of the bundle at `address` says, in order (every record readable)."""
    whats: list[object] = []
    for name, entry in custody_entries(open_bundle(address, settings)):
        assert entry is not None, f"unreadable custody record {name}"
        whats.append(entry["what"])
    return whats


async def raw_request(url: str, request: bytes) -> bytes:
    """Send exact bytes (no client normalising headers) and read the response until the server closes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    response = await reader.read()
    writer.close()
    return response


def moto_client(service: str, url: str) -> Any:
    """A boto3 client for moto at `url`, with the test keys."""
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret",
    )


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DatabaseSettings]:
    """Settings for an empty database: a SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        return
    assert POSTGRES_URL is not None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield DatabaseSettings(url=POSTGRES_URL, schema_name=schema)
    finally:
        await _drop_schema(schema)


@pytest.fixture
async def store(database: DatabaseSettings) -> AsyncIterator[Store]:
    """An open, migrated store."""
    opened = await Store.open(database)
    try:
        yield opened
    finally:
        await opened.close()
