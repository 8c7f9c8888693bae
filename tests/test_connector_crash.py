"""A connector process killed between fetch and commit (or between commit and the SQS delete) neither loses
nor duplicates events; and the `custodes connectors` commands, as real processes."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk
from moto.server import ThreadedMotoServer

from conftest import ROOT
from connector_support import stored_raw
from custodes.config import DatabaseSettings, Settings
from custodes.connectors import cloudtrail as ct
from custodes.model import utcnow
from custodes.sandbox import elasticsearch as es_sim
from custodes.sandbox.server import running
from custodes.services import Services

WORKER = Path(__file__).with_name("connector_crash_worker.py")
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


async def worker(spec: dict[str, Any]) -> tuple[int, bytes]:
    """Run the worker; (exit code, stdout), with stderr printed for the failure report."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        orjson.dumps(spec).decode(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, **AWS_ENV, "PYTHONPATH": str(ROOT / "src")},
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    sys.stderr.write(err.decode())
    return process.returncode, out


def spec_for(database: DatabaseSettings, tmp_path: Path, connector: dict[str, Any], **crash: int) -> dict[str, Any]:
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    return {"database": database.model_dump(), "empty": str(empty), "connector": connector, **crash}


async def stored(database: DatabaseSettings, tmp_path: Path, source: str) -> list[dict[str, Any]]:
    settings = Settings(database=database)
    settings.detection.rules = settings.playbooks.paths = [tmp_path / "empty"]
    async with await Services.open(settings) as services:
        return await stored_raw(services, source)


async def test_an_elasticsearch_poll_killed_before_a_commit_resumes_exactly(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    state = es_sim.ElasticsearchState()
    now = utcnow()
    async with running(es_sim.create_app(state)) as url:
        client = AsyncElasticsearch(url, max_retries=0)
        docs = [
            {
                "_index": "audit",
                "_id": f"d{n}",
                "_source": {"@timestamp": (now - timedelta(minutes=30) + timedelta(seconds=n)).isoformat(), "n": n},
            }
            for n in range(50)
        ]
        await async_bulk(client, docs)
        await client.close()
        connector = {
            "kind": "elasticsearch",
            "source": "generic",
            "options": {"hosts": [url], "index": "audit", "page_size": 10},
        }
        code, output = await worker(spec_for(database, tmp_path, connector, crash_before=3))
        assert code == -signal.SIGKILL, output
        assert sorted(r["n"] for r in await stored(database, tmp_path, "generic")) == list(range(20))
        code, output = await worker(spec_for(database, tmp_path, connector))
        assert code == 0, output
        assert orjson.loads(output)["stored"] == 30
    assert sorted(r["n"] for r in await stored(database, tmp_path, "generic")) == list(range(50))


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


async def test_an_sqs_poll_killed_after_a_commit_before_the_delete_stores_nothing_twice(
    database: DatabaseSettings, tmp_path: Path, moto_url: str
) -> None:
    options = ct.AwsOptions(endpoint_url=moto_url)
    creds = {"access_key_id": "testing", "secret_access_key": "testing"}
    s3, sqs = ct.client("s3", options, creds), ct.client("sqs", options, creds)
    bucket, queue = f"b-{tmp_path.name[-12:].lower().replace('_', '-')}", f"q-{os.getpid()}-{tmp_path.name[-8:]}"
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    records = [
        {
            "eventID": f"e{n}",
            "eventTime": "2024-03-01T00:00:00Z",
            "eventName": "GetObject",
            "sourceIPAddress": "10.0.0.1",
        }
        for n in range(40)
    ]
    for n in range(4):
        body = gzip.compress(orjson.dumps({"Records": records[n * 10 : n * 10 + 10]}))
        s3.put_object(Bucket=bucket, Key=f"AWSLogs/1/CloudTrail/us-east-1/2024/03/01/f{n}.json.gz", Body=body)
    connector = {
        "kind": "cloudtrail_sqs",
        "options": {
            "endpoint_url": moto_url,
            "queue_url": queue_url,
            "wait_seconds": 0,
            "visibility_timeout": 1,
            "max_messages": 1,
        },
    }
    code, output = await worker(spec_for(database, tmp_path, connector, crash_after=3))
    assert code == -signal.SIGKILL, output
    await asyncio.sleep(1.2)  # the undeleted message becomes visible again
    code, output = await worker(spec_for(database, tmp_path, connector))
    assert code == 0, output
    assert sorted(r["eventID"] for r in await stored(database, tmp_path, "cloudtrail")) == sorted(
        r["eventID"] for r in records
    )
    assert orjson.loads(output)["received"] > orjson.loads(output)["stored"], "the redelivered file was dropped"
    left = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)
    assert "Messages" not in left


async def test_connectors_commands(tmp_path: Path) -> None:
    state = es_sim.ElasticsearchState()
    now = utcnow().replace(microsecond=0)
    async with running(es_sim.create_app(state)) as url:
        client = AsyncElasticsearch(url, max_retries=0)
        await async_bulk(
            client,
            [
                {
                    "_index": "audit",
                    "_id": f"d{n}",
                    "_source": {"@timestamp": (now - timedelta(days=2, minutes=n)).isoformat(), "n": n},
                }
                for n in range(12)
            ],
        )
        await client.close()
        config = tmp_path / "custodes.yaml"
        (tmp_path / "empty").mkdir()
        config.write_text(
            orjson.dumps(
                {
                    "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"},
                    "detection": {"rules": [str(tmp_path / "empty")]},
                    "playbooks": {"paths": [str(tmp_path / "empty")]},
                    "connectors": {
                        "siem": {"kind": "elasticsearch", "options": {"hosts": [url], "index": "audit"}},
                        "idle": {"kind": "file_tail", "options": {"path": str(tmp_path / "x.log"), "parser": "json"}},
                    },
                }
            ).decode()
        )
        start = (now - timedelta(days=3)).isoformat()
        end = (now - timedelta(days=1)).isoformat()
        out = await cli("connectors", "backfill", "siem", "--from", start, "--to", end, "--json", "-c", str(config))
        assert orjson.loads(out)["stored"] == 12
        out = await cli("connectors", "status", "--json", "-c", str(config))
        rows = {row["connector"]: row for row in orjson.loads(out)}
        backfill_row = next(row for name, row in rows.items() if name.startswith("siem#backfill:"))
        assert backfill_row["events_total"] == 12 and backfill_row["last_error"] is None
        assert backfill_row["lag_seconds"] >= 86400 * 2
        assert rows["idle"]["last_success"] is None
        table = await cli("connectors", "status", "-c", str(config))
        assert "siem#backfill" in table and "never" in table
        refused = await cli("connectors", "backfill", "idle", "--from", start, "--to", end, "-c", str(config), expect=2)
        assert "cannot backfill a time range" in refused


async def cli(*args: str, expect: int = 0) -> str:
    process = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "custodes"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await process.communicate()
    assert process.returncode == expect, (out + err).decode()
    return (out if expect == 0 else err).decode()
