"""Webhook ingest: sustained signed alerts/s and latency against `custodes serve`, SQLite and PostgreSQL.

The server runs as its own process; this process is the load generator, posting HMAC-signed Okta records to the
generic receiver over loopback from a fixed number of keep-alive connections for a fixed time, with a minimal
HTTP/1.1 client (or aiohttp's: `--client aiohttp`, three times the CPU on the same two cores). Every record is
distinct, so each one is committed (no duplicate shortcut), and every answer is checked.
Target: >= 2,000 alerts/s sustained with SQLite, p99 < 50 ms.

    .venv/bin/python bench/webhooks.py [--seconds 10] [--concurrency 64] [--runs 1] [--stores sqlite,postgresql]
        [--client raw|aiohttp] [--postgres URL] [--without-scoring]

Each line gives the rate, the latency of the 202s, the server's CPU time per alert (all its threads) and the load
generator's (a gauge of how fast the machine runs at that moment), and the records per group commit.
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
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

from custodes.server.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custodes.store.database import drop_schema

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-webhook-secret"
TARGET_RATE = 2_000
TARGET_P99_MS = 50.0


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


Latencies = list[float]


async def load(url: str, seconds: float, concurrency: int, client: str) -> tuple[int, int, Latencies]:
    """Post distinct signed records from `concurrency` keep-alive connections for `seconds`; (alerts/s, 429s,
    latencies of the 202s). Every answer is checked: a 202 must say its record was stored."""
    latencies: Latencies = []
    refused = 0
    deadline = time.perf_counter() + seconds

    def signed() -> tuple[bytes, dict[str, str]]:
        body = record()
        stamp = str(int(time.time()))
        return body, {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(SECRET, stamp, body)}

    async def raw_worker() -> None:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        head = f"POST /webhooks/generic HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        try:
            while time.perf_counter() < deadline:
                body, headers = signed()
                extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
                started = time.perf_counter()
                writer.write(f"{head}{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                status_line, _, header_block = (await reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in header_block.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                answer = await reader.readexactly(length)
                settle(int(status_line.split()[1]), answer, started)
        finally:
            writer.close()

    async def aiohttp_worker(http: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            body, headers = signed()
            started = time.perf_counter()
            async with http.post(
                f"{url}/webhooks/generic", data=body, headers={"Content-Type": "application/json", **headers}
            ) as response:
                settle(response.status, await response.read(), started)

    def settle(status: int, body: bytes, started: float) -> None:
        nonlocal refused
        if status == 202 and b'"stored":1' in body:
            latencies.append(time.perf_counter() - started)
        elif status == 429:
            refused += 1
        else:
            raise SystemExit(f"unexpected answer {status}: {body[:300]!r}")

    began = time.perf_counter()
    if client == "raw":
        await asyncio.gather(*(raw_worker() for _ in range(concurrency)))
    else:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
            await asyncio.gather(*(aiohttp_worker(http) for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return int(len(latencies) / elapsed), refused, latencies


async def mean_batch(url: str) -> float:
    """Records per group commit over the run, from the server's own metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        text = await response.text()
    values = {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name in ("custodes_ingest_batch_records_sum", "custodes_ingest_batch_records_count")
    }
    return values["custodes_ingest_batch_records_sum"] / max(1.0, values["custodes_ingest_batch_records_count"])


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Result:
    """One timed run against one store."""

    rate: int
    p50: float
    p99: float
    server_cpu_us: float
    client_cpu_us: float
    batch: float
    accepted: int
    refused: int

    def met(self) -> bool:
        """Whether the run meets the bar."""
        return self.rate >= TARGET_RATE and self.p99 < TARGET_P99_MS


def run(database_url: str, schema: str | None, seconds: float, concurrency: int, scoring: bool, client: str) -> Result:
    """Start `custodes serve` on this store, load it for `seconds`, stop it."""
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
            server_before, client_before = cpu_seconds(server.pid), cpu_seconds(os.getpid())
            rate, refused, latencies = asyncio.run(load(url, seconds, concurrency, client))
            server_cpu, client_cpu = cpu_seconds(server.pid) - server_before, cpu_seconds(os.getpid()) - client_before
            batch = asyncio.run(mean_batch(url))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    ordered = sorted(latencies)
    return Result(
        rate=rate,
        p50=statistics.median(ordered) * 1000,
        p99=ordered[int(len(ordered) * 0.99) - 1] * 1000,
        server_cpu_us=server_cpu / len(ordered) * 1e6,
        client_cpu_us=client_cpu / len(ordered) * 1e6,
        batch=batch,
        accepted=len(ordered),
        refused=refused,
    )


def measure(store: str, postgres: str, seconds: float, concurrency: int, scoring: bool, client: str) -> Result:
    """One run on a fresh SQLite file or a fresh PostgreSQL schema."""
    if store == "sqlite":
        with tempfile.TemporaryDirectory(prefix="custodes-bench-db-") as folder:
            return run(f"sqlite+aiosqlite:///{folder}/bench.db", None, seconds, concurrency, scoring, client)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        return run(postgres, schema, seconds, concurrency, scoring, client)
    finally:
        asyncio.run(drop_schema(postgres, schema))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1, help="runs per store, interleaved (the machine drifts)")
    parser.add_argument("--stores", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("CUSTODES_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="load generator: a minimal HTTP/1.1 keep-alive client (default), or aiohttp's (about 3x its CPU)",
    )
    parser.add_argument(
        "--without-scoring", action="store_true", help="behaviour scoring off (what its baselines cost per record)"
    )
    args = parser.parse_args()
    stores = [name.strip() for name in args.stores.split(",") if name.strip()]
    if not stores or set(stores) - {"sqlite", "postgresql"}:
        parser.error("--stores takes sqlite and/or postgresql")
    scoring = not args.without_scoring
    print(
        f"webhook ingest, {args.seconds:.0f} s per run, {args.concurrency} connections ({args.client} client), "
        f"target >= {TARGET_RATE:,} "
        f"alerts/s with p99 < {TARGET_P99_MS:.0f} ms (SQLite), behaviour scoring {'on' if scoring else 'off'}"
    )
    results: dict[str, list[Result]] = {store: [] for store in stores}
    for _ in range(args.runs):
        for store in stores:
            result = measure(store, args.postgres, args.seconds, args.concurrency, scoring, args.client)
            results[store].append(result)
            print(
                f"{store:<11} {result.rate:>6,} alerts/s  p50 {result.p50:5.1f} ms  p99 {result.p99:5.1f} ms  "
                f"server CPU {result.server_cpu_us:4.0f} us/alert  load generator CPU {result.client_cpu_us:4.0f} "
                f"us/alert  {result.batch:4.1f} records/commit  accepted {result.accepted:,}  429 {result.refused:,}"
            )
    for store, runs in results.items():
        rates = sorted(r.rate for r in runs)
        p99s = sorted(r.p99 for r in runs)
        met = sum(r.met() for r in runs)
        print(
            f"{store:<11} {len(runs)} runs: alerts/s {rates[0]:,}-{rates[-1]:,} "
            f"(median {statistics.median(rates):,.0f}), p99 {p99s[0]:.1f}-{p99s[-1]:.1f} ms; "
            f"bar met in {met} of {len(runs)}"
        )


if __name__ == "__main__":
    main()
