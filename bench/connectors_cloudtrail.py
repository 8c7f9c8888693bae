"""Connector throughput: the CloudTrail S3 path on gzipped log files (target >= 50,000 events/s on one core,
parsing included), and events/s of each connector against its simulator.

Run: .venv/bin/python bench/connectors_cloudtrail.py [--files 200] [--per-file 500]

Figures: (1) parsing alone: gunzip + JSON + envelope of every record, in this process; (2) the SQS path end to
end: receive the notifications from moto (server mode, loopback), get each object, parse, delete after the
batch; (3) each connector draining its simulator (no store: what the connector itself sustains); (4) the SQS
path through the pipeline into SQLite (what a deployment sees with the store's commit per batch).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk
from moto.server import ThreadedMotoServer

from custodes.config import DatabaseSettings, Settings
from custodes.connectors import cloudtrail as ct
from custodes.connectors import splunk
from custodes.connectors.base import Batch
from custodes.connectors.elasticsearch import ElasticsearchConnector, ElasticsearchOptions
from custodes.connectors.filetail import FileTailConnector, FileTailOptions
from custodes.connectors.runtime import ConnectorRuntime
from custodes.sandbox import cloudtrail as ct_sim
from custodes.sandbox import elasticsearch as es_sim
from custodes.sandbox import splunk as splunk_sim
from custodes.sandbox.server import running
from custodes.services import Services
from custodes.sources import SourceSettings

ROOT = Path(__file__).resolve().parents[1]
OTRF = ROOT.parent / "shared" / "datasets" / "otrf-cloudtrail" / "ec2_proxy_s3_exfiltration_2020-09-14011940.json"
CLOUDTRAIL = SourceSettings(format="cloudtrail", product="aws", service="cloudtrail")
GENERIC = SourceSettings(format="generic")
CREDS = {"access_key_id": "bench", "secret_access_key": "bench"}
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def records(count: int) -> list[dict[str, Any]]:
    """`count` real CloudTrail records (OTRF), each with its own eventID and eventTime."""
    base = [orjson.loads(line) for line in OTRF.read_bytes().splitlines() if line.strip()]
    return [
        {**base[n % len(base)], "eventID": f"bench-{n}", "eventTime": (T0 + timedelta(milliseconds=n)).isoformat()}
        for n in range(count)
    ]


def log_files(files: int, per_file: int) -> list[bytes]:
    """Gzipped CloudTrail log files."""
    rows = records(files * per_file)
    return [gzip.compress(orjson.dumps({"Records": rows[i * per_file : (i + 1) * per_file]})) for i in range(files)]


def line(name: str, events: int, seconds: float, note: str = "") -> None:
    print(f"{name:<44} {events:>8} events {seconds:>7.2f} s {events / seconds:>10,.0f} events/s  {note}")


async def drain(batches: AsyncIterator[Batch]) -> int:
    total = 0
    async for batch in batches:
        total += len(batch.events)
    return total


def bench_parse(files: list[bytes]) -> None:
    start = time.process_time()
    total = sum(len(ct.parse_log_file(data, CLOUDTRAIL, "cloudtrail", "bench")[0]) for data in files)
    line("cloudtrail S3 files: parse only (CPU time)", total, time.process_time() - start, "target >= 50,000")


def setup_queue(url: str, files: list[bytes]) -> str:
    options = ct.AwsOptions(endpoint_url=url)
    s3, sqs = ct.client("s3", options, CREDS), ct.client("sqs", options, CREDS)
    s3.create_bucket(Bucket="trail")
    queue_url = str(sqs.create_queue(QueueName="trail")["QueueUrl"])
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket="trail",
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    for n, data in enumerate(files):
        s3.put_object(
            Bucket="trail", Key=f"AWSLogs/1/CloudTrail/us-east-1/2024/03/01/1_CloudTrail_f{n}.json.gz", Body=data
        )
    return queue_url


def refill(url: str, files: list[bytes]) -> None:
    """Put the files again under new keys (new notifications) for the next run."""
    s3 = ct.client("s3", ct.AwsOptions(endpoint_url=url), CREDS)
    for n, data in enumerate(files):
        s3.put_object(
            Bucket="trail", Key=f"AWSLogs/1/CloudTrail/us-east-1/2024/03/02/1_CloudTrail_g{n}.json.gz", Body=data
        )


def queue(url: str, queue_url: str) -> ct.CloudTrailQueueConnector:
    options = {"endpoint_url": url, "queue_url": queue_url, "wait_seconds": 0}
    return ct.build_queue("bench", "cloudtrail", CLOUDTRAIL, options, CREDS)


async def bench_sqs(url: str, files: list[bytes]) -> None:
    queue_url = await asyncio.to_thread(setup_queue, url, files)
    cpu, wall = time.process_time(), time.perf_counter()
    total = await drain(queue(url, queue_url).batches(None))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    line("cloudtrail SQS+S3 (moto): end to end", total, wall, f"(this process's CPU: {cpu:.2f} s)")
    await asyncio.to_thread(refill, url, files)


async def bench_sqs_store(url: str, files: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "empty"
        empty.mkdir()
        settings = Settings(database=DatabaseSettings(url=f"sqlite+aiosqlite:///{folder}/bench.db"))
        settings.detection.rules = settings.playbooks.paths = [empty]
        async with await Services.open(settings) as services:
            options = ct.AwsOptions(endpoint_url=url)
            sqs = ct.client("sqs", options, CREDS)
            queue_url = str(sqs.get_queue_url(QueueName="trail")["QueueUrl"])
            wall = time.perf_counter()
            report = await ConnectorRuntime(services.pipeline, run_playbooks=False).poll(queue(url, queue_url))
            line("cloudtrail SQS+S3 (moto) into SQLite", report.stored, time.perf_counter() - wall, "(no rules loaded)")


async def bench_elasticsearch(count: int) -> None:
    state = es_sim.ElasticsearchState()
    async with running(es_sim.create_app(state)) as url:
        client = AsyncElasticsearch(url, max_retries=0, request_timeout=60)
        docs = [
            {
                "_index": "audit",
                "_id": f"d{n}",
                "_source": {
                    "@timestamp": (T0 + timedelta(milliseconds=n)).isoformat(),
                    "event": {"action": "login"},
                    "n": n,
                },
            }
            for n in range(count)
        ]
        await async_bulk(client, docs, chunk_size=5000)
        opts = ElasticsearchOptions(hosts=[url], index="audit", start=T0, page_size=1000)
        connector = ElasticsearchConnector("es", "siem", GENERIC, client, opts, clock=lambda: T0 + timedelta(days=1))
        wall = time.perf_counter()
        total = await drain(connector.batches(None))
        line("elasticsearch (simulator): PIT + search_after", total, time.perf_counter() - wall)
        await client.close()


async def bench_splunk(count: int) -> None:
    state = splunk_sim.SplunkState()
    for n in range(count):
        at = T0 + timedelta(milliseconds=n * 10)
        state.index(at, orjson.dumps({"@timestamp": at.isoformat(), "n": n}).decode(), index="auth")
    async with running(splunk_sim.create_app(state)) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        options = {
            "host": host,
            "port": int(port),
            "scheme": "http",
            "search": "search index=auth",
            "window_seconds": 300,
            "settle_seconds": 0,
            "overlap_seconds": 0,
            "start": T0,
        }
        connector = splunk.build(
            "splunk", "splunk", GENERIC, options, {"username": "admin", "password": "sandbox-password"}
        )
        connector.clock = lambda: T0 + timedelta(seconds=count / 100 + 1)
        wall = time.perf_counter()
        total = await drain(connector.batches(None))
        line("splunk (simulator): export by window", total, time.perf_counter() - wall)


async def bench_lookup(count: int) -> None:
    state = ct_sim.CloudTrailState(rate_per_second=100_000)
    state.add(records(count))
    async with running(ct_sim.create_app(state)) as url:
        options = {"endpoint_url": url, "requests_per_second": 100_000, "lookback_seconds": 86400 * 3650}
        connector = ct.build_lookup("lookup", "cloudtrail", CLOUDTRAIL, options, CREDS)
        wall = time.perf_counter()
        total = await drain(connector.batches(None))
        line(
            "cloudtrail LookupEvents (simulator, no limit)",
            total,
            time.perf_counter() - wall,
            "(AWS allows 2 requests/s = 100 events/s)",
        )


async def bench_tail(count: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "teleport.log"
        with path.open("wb") as handle:
            for n in range(count):
                handle.write(
                    orjson.dumps(
                        {
                            "event": "session.start",
                            "code": "T2000I",
                            "uid": f"u{n}",
                            "time": "2024-03-01T10:00:00Z",
                            "user": "alice",
                            "sid": f"s{n}",
                            "server_hostname": "db-1",
                            "addr.remote": "10.0.0.5:1",
                        }
                    )
                    + b"\n"
                )
        connector = FileTailConnector(
            "tail", "teleport", SourceSettings(format="teleport"), FileTailOptions(path=path, parser="json")
        )
        wall = time.perf_counter()
        total = await drain(connector.batches(None))
        line("file tail (teleport JSON lines)", total, time.perf_counter() - wall)


async def main(files: int, per_file: int) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    data = log_files(files, per_file)
    bench_parse(data)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        await bench_sqs(url, data)
        await bench_sqs_store(url, data)
    finally:
        server.stop()
    await bench_elasticsearch(20_000)
    await bench_splunk(20_000)
    await bench_lookup(5_000)
    await bench_tail(100_000)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--per-file", type=int, default=500)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.files, arguments.per_file))
