"""Webhook ingest: sustained signed alerts/s and latency against `custodes serve`, SQLite and PostgreSQL.

The server runs as its own process (one core); this process is the load generator (the other core), posting
HMAC-signed Okta records to the generic receiver over loopback with a fixed number of concurrent
connections for a fixed time. Every record is distinct, so each one is committed (no duplicate shortcut).
Target: >= 2,000 alerts/s sustained with SQLite, p99 < 50 ms.

    .venv/bin/python bench/webhooks.py [--seconds 10] [--concurrency 32] [--postgres URL] [--without-scoring]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import orjson
from sqlalchemy.engine import make_url

from custodes.server.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-webhook-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(folder: Path, database_url: str, schema: str | None, scoring: bool = True) -> Path:
    (folder / "playbooks").mkdir()
    database = {"url": database_url, **({"schema_name": schema} if schema else {})}
    config = {
        "database": database,
        "detection": {"rules": [str(ROOT / "detections" / "rules")]},
        "playbooks": {"paths": [str(folder / "playbooks")]},
        "scoring": {"enabled": scoring},
        "webhooks": {
            "generic": {
                "kind": "generic",
                "source": "okta",
                "auth": {"scheme": "hmac", "secret": "env:BENCH_WEBHOOK_SECRET"},
            }
        },
    }
    path = folder / "custodes.json.yaml"
    path.write_bytes(orjson.dumps(config))
    return path


def record() -> bytes:
    return orjson.dumps(
        {
            "uuid": str(uuid.uuid4()),
            "published": "2026-11-19T02:03:40.077Z",
            "eventType": "user.session.start",
            "actor": {"alternateId": f"user{uuid.uuid4().int % 5000}@example.com"},
            "outcome": {"result": "SUCCESS"},
            "client": {"ipAddress": "203.0.113.9"},
        }
    )


async def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if server.poll() is not None:
                raise SystemExit(f"custodes serve exited with {server.returncode}")
            try:
                async with http.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("custodes serve did not start")


async def load(url: str, seconds: float, concurrency: int) -> tuple[int, int, list[float]]:
    latencies: list[float] = []
    refused = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal refused
        while time.perf_counter() < deadline:
            body = record()
            stamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: stamp,
                SIGNATURE_HEADER: sign(SECRET, stamp, body),
            }
            started = time.perf_counter()
            async with http.post(f"{url}/webhooks/generic", data=body, headers=headers) as response:
                await response.read()
                if response.status == 202:
                    latencies.append(time.perf_counter() - started)
                elif response.status == 429:
                    refused += 1
                else:
                    raise SystemExit(f"unexpected status {response.status}: {await response.text()}")

    async with aiohttp.ClientSession(connector=connector) as http:
        began = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return int(len(latencies) / elapsed), refused, latencies


def run(
    label: str, database_url: str, schema: str | None, seconds: float, concurrency: int, scoring: bool = True
) -> None:
    with tempfile.TemporaryDirectory(prefix="custodes-bench-") as folder:
        config = write_config(Path(folder), database_url, schema, scoring=scoring)
        port = free_port()
        env = {**os.environ, "BENCH_WEBHOOK_SECRET": SECRET}
        server = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "custodes", "serve", "--config", str(config), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(wait_ready(url, server))
            rate, refused, latencies = asyncio.run(load(url, seconds, concurrency))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
    print(
        f"{label:<12} {rate:>8,} alerts/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
        f"accepted {len(ordered):,}  refused(429) {refused:,}  concurrency {concurrency}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("CUSTODES_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument(
        "--without-scoring", action="store_true", help="behaviour scoring off (what its baselines cost per record)"
    )
    args = parser.parse_args()
    scoring = not args.without_scoring
    print(
        f"webhook ingest, {args.seconds:.0f} s per store, target >= 2,000 alerts/s with p99 < 50 ms (SQLite), "
        f"behaviour scoring {'on' if scoring else 'off'}"
    )
    with tempfile.TemporaryDirectory(prefix="custodes-bench-db-") as folder:
        run("sqlite", f"sqlite+aiosqlite:///{folder}/bench.db", None, args.seconds, args.concurrency, scoring)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        run("postgresql", args.postgres, schema, args.seconds, args.concurrency, scoring)
    finally:
        asyncio.run(drop_schema(args.postgres, schema))


async def drop_schema(url: str, schema: str) -> None:
    """Remove the benchmark's PostgreSQL schema."""
    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username, database=parsed.database
    )
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
