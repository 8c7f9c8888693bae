"""`custodes serve` as a real process pulls every configured connector continuously: each simulator of
custodes.sandbox, moto SQS/S3 and tailed sudo, auditd, Teleport and Vault files. Killed with SIGKILL and
restarted, it resumes from its checkpoints with no gap and no duplicate (events stored per source == records the
sources hold); connectors stop and start through the CLI and the REST API; /metrics shows each connector's lag,
rate and errors."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import orjson
import sqlalchemy as sa

from conftest import ROOT
from custodes.config import DatabaseSettings
from custodes.sandbox import cloudtrail, elasticsearch, github, google, graph, okta, splunk
from custodes.sandbox.server import running
from custodes.store import Store
from custodes.store.tables import events

DATA = Path(__file__).with_name("data")
CUSTODES = str(ROOT / ".venv" / "bin" / "custodes")
ADMIN_TOKEN = "live-admin-token-5b1c"
WAIT_SECONDS = 45.0
"""How long the sources may take to be read (seconds: rounds every 0.5 s, on a loaded machine)."""
AWS = {"access_key_id": "env:LIVE_AWS_KEY", "secret_access_key": "env:LIVE_AWS_SECRET"}


@dataclass
class Sources:
    """The simulators' states and what each holds, counted per store source (moto's bucket is read twice: through
    its S3 notifications on SQS, and by a bucket scan)."""

    okta: okta.OktaState = field(default_factory=lambda: okta.OktaState(token="live-okta-token"))
    graph: graph.GraphState = field(default_factory=lambda: graph.GraphState(reports_window=1.0))
    google: google.GoogleState = field(default_factory=google.GoogleState)
    github: github.GitHubState = field(default_factory=github.GitHubState)
    elastic: elasticsearch.ElasticsearchState = field(default_factory=elasticsearch.ElasticsearchState)
    splunk: splunk.SplunkState = field(default_factory=splunk.SplunkState)
    trail: cloudtrail.CloudTrailState = field(default_factory=lambda: cloudtrail.CloudTrailState(rate_per_second=50))
    expected: dict[str, int] = field(default_factory=dict)
    serial: int = 0
    clock: float = 0.0

    def count(self, source: str, n: int = 1) -> None:
        self.expected[source] = self.expected.get(source, 0) + n

    def seed(self, n: int, s3: Any, bucket: str, tail: Path) -> None:
        """`n` new records in every source, in time order after those before (as vendors publish them), in
        the last minute."""
        self.clock = max(self.clock, time.time() - 60)
        for _ in range(n):
            self.serial += 1
            self.clock += 0.5
            at = self.clock
            stamp = datetime.fromtimestamp(at, UTC)
            tag = f"r{self.serial}"
            self.okta.add_log_event("user.session.start", actor=f"{tag}@example.com", published=at)
            self.graph.add_signin(f"{tag}@contoso.com", at)
            self.graph.add_audit(f"{tag}@contoso.com", "Add member to role", at)
            self.graph.add("riskDetections", {"id": f"risk-{tag}", "userPrincipalName": f"{tag}@contoso.com"}, at)
            self.google.add_activity("login", f"{tag}@example.com", "login_success", at)
            self.github.add_event("repo.download_zip", tag, at)
            self.elastic.index("audit", tag, {"@timestamp": stamp.isoformat(), "tag": tag})
            self.splunk.index(stamp, orjson.dumps({"@timestamp": stamp.isoformat(), "tag": tag}).decode(), index="au")
            self.trail.add([{"eventID": f"lookup-{tag}", "eventTime": stamp.isoformat(), "eventName": "GetObject"}])
        for source in ("okta", "entra_signin", "entra_audit", "entra_risk", "google_workspace", "github"):
            self.count(source, n)
        for source in ("es_audit", "splunk_audit", "cloudtrail"):
            self.count(source, n)
        records = [{"eventID": f"s3-{self.serial}-{k}", "eventTime": "2026-12-01T10:00:00Z"} for k in range(n)]
        body = gzip.compress(orjson.dumps({"Records": records}))
        # CloudTrail's names sort in delivery order: `<account>_CloudTrail_<region>_<time>_<unique>.json.gz`.
        name = f"111122223333_CloudTrail_us-east-1_20261201T10{self.serial:02d}Z_{self.serial:08x}.json.gz"
        s3.put_object(Bucket=bucket, Key=f"AWSLogs/1/CloudTrail/us-east-1/2026/12/01/{name}", Body=body)
        self.count("trail_bucket", n)
        self.count("trail_scan", n)
        sudo = DATA.joinpath("sudo-auth.log").read_text().splitlines()
        audit = DATA.joinpath("audit.log").read_bytes().split(b"\n")
        with tail.joinpath("auth.log").open("a") as handle:
            for k in range(n):
                # Distinct lines (the same line twice is one event): a different pid in each sudo[pid].
                handle.write(sudo[6].replace("sudo[20211]", f"sudo[{self.serial * 100 + k}]") + "\n")
        with tail.joinpath("audit.log").open("ab") as handle:
            for k in range(n):
                handle.write(audit[0].replace(b":4211)", f":{self.serial * 100 + k})".encode()) + b"\n")
        with tail.joinpath("teleport.log").open("ab") as handle:
            for k in range(n):
                session = {"event": "session.start", "code": "T2000I", "sid": f"sid-{tag}-{k}", "uid": f"{tag}-{k}"}
                handle.write(orjson.dumps({**session, "time": stamp.isoformat(), "user": tag}) + b"\n")
        with tail.joinpath("vault_audit.log").open("ab") as handle:
            for k in range(n):
                request = {"id": f"{tag}-{k}", "operation": "read", "path": f"secret/data/{tag}"}
                entry = {
                    "type": "response",
                    "time": stamp.isoformat(),
                    "request": request,
                    "auth": {"display_name": tag},
                }
                handle.write(orjson.dumps(entry) + b"\n")
        for source in ("sudo", "auditd", "teleport", "vault"):
            self.count(source, n)


@asynccontextmanager
async def simulators(sources: Sources) -> AsyncIterator[dict[str, str]]:
    async with AsyncExitStack() as stack:
        urls = {
            "okta": await stack.enter_async_context(running(okta.create_app(sources.okta))),
            "graph": await stack.enter_async_context(running(graph.create_app(sources.graph))),
            "google": await stack.enter_async_context(running(google.create_app(sources.google))),
            "github": await stack.enter_async_context(running(github.create_app(sources.github))),
            "elastic": await stack.enter_async_context(running(elasticsearch.create_app(sources.elastic))),
            "splunk": await stack.enter_async_context(running(splunk.create_app(sources.splunk))),
            "trail": await stack.enter_async_context(running(cloudtrail.create_app(sources.trail))),
        }
        yield urls


def configuration(tmp_path: Path, database: DatabaseSettings, urls: dict[str, str], aws: dict[str, str]) -> Path:
    """Every connector kind, each polling every half second (backing off at most 1 s)."""
    splunk_host, splunk_port = urls["splunk"].removeprefix("http://").rsplit(":", 1)
    every = {"interval_seconds": 0.5, "max_backoff_seconds": 1.0}
    (tmp_path / "empty").mkdir(exist_ok=True)
    config = {
        "database": database.model_dump(exclude_none=True),
        "detection": {"rules": [str(tmp_path / "empty")]},
        "playbooks": {"paths": [str(tmp_path / "empty")]},
        "hunts": {"schedule": False},
        "server": {"port": 0, "api_tokens": [{"name": "ops", "token": "env:LIVE_ADMIN", "role": "admin"}]},
        "sources": {
            "es_audit": {"format": "generic"},
            "splunk_audit": {"format": "generic"},
            "trail_bucket": {"format": "cloudtrail"},
            "trail_scan": {"format": "cloudtrail"},
            "teleport": {"format": "teleport", "product": "teleport"},
            "vault": {"format": "vault", "product": "vault"},
        },
        "connectors": {
            "okta": {
                "kind": "okta",
                **every,
                "credentials": {"token": "env:LIVE_OKTA"},
                "options": {"base_url": urls["okta"], "page_size": 7},
            },
            "entra": {
                "kind": "entra",
                **every,
                "credentials": {"client_secret": "env:LIVE_GRAPH"},
                "options": {
                    "tenant_id": "contoso.onmicrosoft.com",
                    "client_id": "11111111-2222-3333-4444-555555555555",
                    "graph_url": urls["graph"],
                    "login_endpoint": urls["graph"],
                    "window_seconds": 1.0,
                    "page_size": 7,
                },
            },
            "gws": {
                "kind": "google_workspace",
                **every,
                "credentials": {"token": "env:LIVE_GOOGLE"},
                "options": {"base_url": urls["google"], "applications": ["login"], "page_size": 7},
            },
            "github": {
                "kind": "github",
                **every,
                "credentials": {"token": "env:LIVE_GITHUB"},
                "options": {"org": "example-org", "base_url": urls["github"], "page_size": 7},
            },
            "siem": {
                "kind": "elasticsearch",
                "source": "es_audit",
                **every,
                "options": {"hosts": [urls["elastic"]], "index": "audit", "page_size": 7, "overlap_seconds": 120},
            },
            "splunk": {
                "kind": "splunk",
                "source": "splunk_audit",
                **every,
                "credentials": {"username": "env:LIVE_SPLUNK_USER", "password": "env:LIVE_SPLUNK_PASSWORD"},
                "options": {
                    "host": splunk_host,
                    "port": int(splunk_port),
                    "scheme": "http",
                    "search": "search index=au",
                    "settle_seconds": 0,
                    "window_seconds": 60,
                    "overlap_seconds": 120,
                    "start": (datetime.now(UTC) - timedelta(minutes=10)).isoformat(),
                },
            },
            "trail-lookup": {
                "kind": "cloudtrail_lookup",
                **every,
                "credentials": AWS,
                "options": {"endpoint_url": urls["trail"], "requests_per_second": 20, "page_size": 7},
            },
            "trail-queue": {
                "kind": "cloudtrail_sqs",
                "source": "trail_bucket",
                **every,
                "credentials": AWS,
                # A message received by the killed serve comes back after its visibility timeout.
                "options": {
                    "endpoint_url": aws["endpoint"],
                    "queue_url": aws["queue"],
                    "wait_seconds": 1,
                    "visibility_timeout": 3,
                },
            },
            "trail-scan": {
                "kind": "cloudtrail_s3",
                "source": "trail_scan",
                **every,
                "credentials": AWS,
                "options": {"endpoint_url": aws["endpoint"], "bucket": aws["bucket"], "start": "2026-12-01"},
            },
            "sudo": {"kind": "file_tail", **every, "options": {"path": str(tmp_path / "auth.log"), "parser": "sudo"}},
            "auditd": {
                "kind": "file_tail",
                **every,
                "options": {"path": str(tmp_path / "audit.log"), "parser": "auditd"},
            },
            "teleport": {
                "kind": "file_tail",
                "source": "teleport",
                **every,
                "options": {"path": str(tmp_path / "teleport.log"), "parser": "json"},
            },
            "vault": {
                "kind": "file_tail",
                "source": "vault",
                **every,
                "options": {"path": str(tmp_path / "vault_audit.log"), "parser": "json"},
            },
        },
    }
    path = tmp_path / "custodes.yaml"
    path.write_bytes(orjson.dumps(config))
    return path


def environment(sources: Sources) -> dict[str, str]:
    return {
        **os.environ,
        "LIVE_ADMIN": ADMIN_TOKEN,
        "LIVE_OKTA": "live-okta-token",
        "LIVE_GRAPH": sources.graph.client_secret,
        "LIVE_GOOGLE": sources.google.token,
        "LIVE_GITHUB": sources.github.token,
        "LIVE_SPLUNK_USER": sources.splunk.username,
        "LIVE_SPLUNK_PASSWORD": sources.splunk.password,
        "LIVE_AWS_KEY": "testing",
        "LIVE_AWS_SECRET": "testing",
        "COLUMNS": "200",
    }


@dataclass
class Serve:
    process: asyncio.subprocess.Process
    url: str
    lines: list[str]
    reader: asyncio.Task[None]


async def start_serve(config: Path, env: dict[str, str]) -> Serve:
    process = await asyncio.create_subprocess_exec(
        CUSTODES, "serve", "-c", str(config), stderr=asyncio.subprocess.PIPE, cwd=config.parent, env=env
    )
    assert process.stderr is not None
    lines: list[str] = []
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace")
            lines.append(line)
            match = re.search(r"serving on (http://[\d.:]+)", line)
            if match and not found.done():
                found.set_result(match[1])
        if not found.done():
            found.set_exception(AssertionError("serve exited:\n" + "".join(lines[-30:])))

    reader = asyncio.create_task(read())
    url = await asyncio.wait_for(found, 60)
    return Serve(process, url, lines, reader)


async def stored(database: DatabaseSettings) -> dict[str, int]:
    store = await Store.open(database)
    try:
        async with store.engine.connect() as conn:
            rows = await conn.execute(sa.select(events.c.source, sa.func.count()).group_by(events.c.source))
            return {str(source): int(count) for source, count in rows}
    finally:
        await store.close()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def caught_up(database: DatabaseSettings, sources: Sources, what: str) -> None:
    """Wait until the store holds exactly what the sources hold, per source."""

    async def check() -> bool:
        return await stored(database) == sources.expected

    try:
        await until(check, what)
    except AssertionError as error:
        raise AssertionError(f"{error}: stored {await stored(database)}, expected {sources.expected}") from None


async def cli(env: dict[str, str], *args: str, expect: int = 0) -> str:
    process = await asyncio.create_subprocess_exec(
        CUSTODES, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await process.communicate()
    assert process.returncode == expect, (out + err).decode()
    return (out if expect == 0 else err).decode()


def sqs_bucket(moto_url: str, name: str) -> tuple[Any, str, str]:
    options = {
        "endpoint_url": moto_url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    s3, sqs = boto3.client("s3", **options), boto3.client("sqs", **options)
    bucket = f"trail-{name}"
    s3.create_bucket(Bucket=bucket)
    queue = sqs.create_queue(QueueName=f"trail-{name}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    return s3, bucket, queue


async def test_serve_pulls_every_source_and_a_killed_serve_resumes_without_gaps_or_duplicates(
    database: DatabaseSettings, tmp_path: Path, moto_url: str
) -> None:
    sources = Sources()
    s3, bucket, queue = sqs_bucket(moto_url, f"{os.getpid()}-{tmp_path.name[-10:].lower().replace('_', '-')}")
    sources.seed(9, s3, bucket, tmp_path)
    env = environment(sources)
    async with simulators(sources) as urls:
        config = configuration(tmp_path, database, urls, {"endpoint": moto_url, "queue": queue, "bucket": bucket})
        serve = await start_serve(config, env)
        try:
            await caught_up(database, sources, "the first records of every source")

            # More records arrive while serve polls; it is killed part way through them.
            sources.seed(12, s3, bucket, tmp_path)

            async def some_new() -> bool:
                counts = await stored(database)
                return sum(counts.values()) > sum(sources.expected.values()) - 12 * len(sources.expected)

            await until(some_new, "the second records to start arriving")
            serve.process.send_signal(signal.SIGKILL)
            assert await serve.process.wait() == -signal.SIGKILL
            partial = await stored(database)
            assert partial != sources.expected, "killed after everything was read: the test proves nothing"

            serve = await start_serve(config, env)
            await caught_up(database, sources, "every record after the restart")
            await asyncio.sleep(2)  # a few more rounds read nothing twice
            assert await stored(database) == sources.expected

            # Stop and start through the CLI (REST API, admin token); a stopped connector reads nothing.
            out = await cli(
                env, "connectors", "stop", "okta", "--url", serve.url, "--token", "env:LIVE_ADMIN", "--json"
            )
            assert orjson.loads(out) == {"name": "okta", "kind": "okta", "state": "stopped", "connectors": ["okta"]}
            sources.okta.add_log_event("user.session.start", actor="late@example.com", published=time.time() - 5)
            await asyncio.sleep(1.5)
            assert (await stored(database))["okta"] == sources.expected["okta"]
            out = await cli(env, "connectors", "start", "okta", "--url", serve.url, "--token", "env:LIVE_ADMIN")
            assert "okta (okta): running" in out
            sources.count("okta")
            await caught_up(database, sources, "the record okta holds since its stop")

            async with aiohttp.ClientSession() as http:
                viewer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
                async with http.get(f"{serve.url}/api/connectors", headers=viewer) as answer:
                    listed = {row["connector"]: row for row in (await answer.json())["connectors"]}
                async with http.get(f"{serve.url}/metrics") as answer:
                    metrics = await answer.text()
                async with http.post(f"{serve.url}/api/connectors/nope/stop", headers=viewer) as answer:
                    assert answer.status == 404
            assert listed["entra/risk"]["state"] == "running" and listed["entra/risk"]["last_error"] is None
            assert listed["trail-queue"]["last_success"] is not None
            for name in (
                "okta",
                "entra/signins",
                "gws/login",
                "github",
                "siem",
                "splunk",
                "trail-lookup",
                "sudo",
                "teleport",
            ):
                assert re.search(rf'custodes_connector_lag_seconds{{connector="{re.escape(name)}"}} \d', metrics), name
                assert f'custodes_connector_running{{connector="{name}"}} 1.0' in metrics
                assert f'custodes_connector_errors_total{{connector="{name}"}}' in metrics
            assert 'custodes_connector_events_per_second{connector="auditd"}' in metrics

            serve.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(serve.process.wait(), 30) == 0
        finally:
            if serve.process.returncode is None:
                serve.process.kill()
                await serve.process.wait()
            serve.reader.cancel()
            sys.stderr.write("".join(serve.lines[-20:]))
