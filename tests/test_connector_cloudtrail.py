"""CloudTrail connectors with boto3 over loopback HTTP: S3 and SQS on moto in server mode (behind a fault
proxy), LookupEvents on the simulator; records from ../shared/datasets/otrf-cloudtrail."""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from conftest import SHARED
from connector_support import FAST, poll, services, stored_raw
from custodes.connectors import cloudtrail as ct
from custodes.connectors.runtime import ConnectorRuntime
from custodes.sandbox import cloudtrail as sim
from custodes.sandbox.pathfaults import Fault, Faults, proxy_app
from custodes.sandbox.server import running
from custodes.services import Services
from custodes.sources import SourceSettings

__all__ = ["services"]

OTRF = SHARED / "datasets" / "otrf-cloudtrail" / "ec2_proxy_s3_exfiltration_2020-09-14011940.json"
RECORDS = [orjson.loads(line) for line in OTRF.read_bytes().splitlines() if line.strip()]
SOURCE = SourceSettings(format="cloudtrail", product="aws", service="cloudtrail")
BUCKET = "trail-bucket"
ACCOUNT = "123456789123"
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[tuple[str, Faults]]:
    """A fresh moto behind a fault-injecting proxy: (proxy URL, its faults)."""
    async with aiohttp.ClientSession() as session, session.post(f"{moto_url}/moto-api/reset") as answer:
        assert answer.status == 200
    faults = Faults()
    async with running(proxy_app(moto_url, faults, sim.render_aws_fault)) as url:
        yield url, faults


def log_file(records: list[dict[str, Any]]) -> bytes:
    return gzip.compress(orjson.dumps({"Records": records}))


def key_for(n: int, day: str = "2020/09/14", region: str = "us-east-1") -> str:
    stamp = day.replace("/", "") + f"T{n:04d}Z"
    return f"AWSLogs/{ACCOUNT}/CloudTrail/{region}/{day}/{ACCOUNT}_CloudTrail_{region}_{stamp}_f{n:03d}.json.gz"


def queue_setup(url: str, objects: dict[str, bytes]) -> tuple[Any, Any, str]:
    """A trail bucket announcing new objects on a queue, then `objects` put in it (run it in a thread: the
    fault proxy serves on the test's event loop)."""
    options = ct.AwsOptions(endpoint_url=url)
    s3 = ct.client("s3", options, CREDENTIALS)
    sqs = ct.client("sqs", options, CREDENTIALS)
    s3.create_bucket(Bucket=BUCKET)
    queue_url = sqs.create_queue(QueueName="trail-files")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    put(s3, objects)
    return s3, sqs, queue_url


def put(s3: Any, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def queue_connector(url: str, queue_url: str, **more: Any) -> ct.CloudTrailQueueConnector:
    options = {
        "endpoint_url": url,
        "queue_url": queue_url,
        "wait_seconds": 0,
        "visibility_timeout": 1,
        "timeout_seconds": 0.5,
        **more,
    }
    connector = ct.build_queue("trail", "cloudtrail", SOURCE, options, CREDENTIALS)
    connector.policy = FAST
    return connector


def event_ids(raws: list[dict[str, Any]]) -> set[str]:
    return {raw["eventID"] for raw in raws}


def test_log_files_and_notifications_parse() -> None:
    events, warnings = ct.parse_log_file(log_file(RECORDS), SOURCE, "cloudtrail", "f")
    assert len(events) == 103 and not warnings
    assert {e.raw["eventID"] for e in events} == event_ids(RECORDS)
    assert all(e.src_ip and e.action and not e.warnings for e in events)
    assert ct.parse_log_file(b"\x1f\x8bnot gzip", SOURCE, "cloudtrail", "f")[1] == [
        "f: not a CloudTrail log file (BadGzipFile); skipped"
    ]
    assert not ct.is_log_file(f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/2020/09/14/x_CloudTrail-Digest_x.json.gz")
    sns = orjson.dumps(
        {"Type": "Notification", "Message": orjson.dumps({"s3Bucket": BUCKET, "s3ObjectKey": ["a.json.gz"]}).decode()}
    ).decode()
    assert ct.notified_objects(sns) == ([(BUCKET, "a.json.gz")], None)
    assert ct.notified_objects('{"Service":"Amazon S3","Event":"s3:TestEvent"}') == ([], "S3 test event")
    with pytest.raises(ValueError):
        ct.notified_objects("[1]")


async def test_queue_files_with_faults_land_exactly_once_and_messages_go_after_commit(
    aws: tuple[str, Faults], services: Services
) -> None:
    url, faults = aws
    objects = {key_for(n): log_file(RECORDS[i : i + 20]) for n, i in enumerate(range(0, len(RECORDS), 20))}
    objects[f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/2020/09/14/d.json.gz"] = b"{}"
    _s3, sqs, queue_url = await asyncio.to_thread(queue_setup, url, objects)
    await asyncio.to_thread(sqs.send_message, QueueUrl=queue_url, MessageBody="not a notification")
    faults.add(Fault(status=503, retry_after=0.05, method="POST"))
    faults.add(Fault(status=429, method="GET", path=f"/{BUCKET}/"))
    faults.add(Fault(status=500, method="GET", path=f"/{BUCKET}/"))
    faults.add(Fault(drop=True, method="GET", path=f"/{BUCKET}/"))
    faults.add(Fault(delay=1.0, method="GET", path=f"/{BUCKET}/"))
    connector = queue_connector(url, queue_url)
    runtime = ConnectorRuntime(services.pipeline)
    stored = duplicates = 0
    for _ in range(5):  # a receive that timed out on a loaded machine leaves its messages in flight for a second
        report = await runtime.poll(connector, kind="cloudtrail_sqs")
        stored, duplicates = stored + report.stored, duplicates + report.duplicates
        if stored >= 103:
            break
        await asyncio.sleep(1.1)
    assert stored == 103 and duplicates == 0
    assert event_ids(await stored_raw(services, "cloudtrail")) == event_ids(RECORDS)
    assert faults.pending == []
    await asyncio.sleep(1.2)  # the visibility timeout of the received messages
    left = await asyncio.to_thread(
        sqs.receive_message, QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=1
    )
    assert [m["Body"] for m in left.get("Messages", [])] == ["not a notification"], "the rest were deleted"


async def test_a_batch_that_fails_to_commit_leaves_its_messages_for_redelivery(
    aws: tuple[str, Faults], services: Services
) -> None:
    url, _faults = aws
    _s3, _sqs, queue_url = await asyncio.to_thread(queue_setup, url, {key_for(1): log_file(RECORDS[:30])})
    # no fault here: a receive timed out on a loaded machine hides its messages for the visibility timeout, and the
    # round would end empty before the batch this test is about
    connector = queue_connector(url, queue_url, timeout_seconds=10)
    batches = connector.batches(None)
    first = await anext(batches)
    while not first.events:
        first = await anext(batches)
    assert len(first.events) == 30
    await batches.aclose()  # the consumer died before committing: nothing is deleted
    await asyncio.sleep(1.2)  # the visibility timeout of the received messages
    assert await poll(services, connector) == 30


def padded_log_file(size: int) -> bytes:
    """A valid, empty log file of `size` bytes (spaces inside its JSON), gzipped: a few kilobytes that inflate."""
    squeeze = zlib.compressobj(wbits=31)
    parts = [squeeze.compress(b'{"Records": [')]
    parts += [squeeze.compress(b" " * 2**20) for _ in range(size // 2**20)]
    return b"".join([*parts, squeeze.compress(b"]}"), squeeze.flush()])


async def test_log_files_past_max_file_bytes_are_skipped_unread_and_said(
    aws: tuple[str, Faults], services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """A gzip bomb in the trail bucket was inflated whole in memory (16 GiB of JSON from 16 MiB of gzip)."""
    bomb = padded_log_file(64 * 2**20)
    assert len(bomb) < 2**20 and ct.parse_log_file(bomb, SOURCE, "c", "f", limit=64 * 2**20 + 16) == ([], [])
    plain = b'{"Records": [' + b" " * 2**20 + b"]}"
    objects = {key_for(1): bomb, key_for(2): log_file(RECORDS[:30]), key_for(3): plain}
    _s3, _sqs, queue_url = await asyncio.to_thread(queue_setup, url := aws[0], objects)
    with caplog.at_level(logging.WARNING, logger="custodes.connectors.runtime"):
        connector = queue_connector(url, queue_url, max_file_bytes=2**20, timeout_seconds=10)  # no fault injected
        assert (await ConnectorRuntime(services.pipeline).poll(connector, kind="cloudtrail_sqs")).stored == 30
    skipped = sorted(r.getMessage() for r in caplog.records if "max_file_bytes" in r.getMessage())
    assert skipped == [
        f"trail: s3://{BUCKET}/{key_for(n)}: larger than max_file_bytes (1,048,576 bytes); skipped" for n in (1, 3)
    ]
    caplog.clear()  # a replay through the pipeline (as `custodes replay` and the tests' polls do) says so too
    await asyncio.to_thread(put, ct.client("s3", ct.AwsOptions(endpoint_url=url), CREDENTIALS), {key_for(4): bomb})
    with caplog.at_level(logging.WARNING, logger="custodes.pipeline"):
        assert await poll(services, connector) == 0
    said = [r.getMessage() for r in caplog.records if "max_file_bytes" in r.getMessage()]
    assert said == [f"trail: s3://{BUCKET}/{key_for(4)}: larger than max_file_bytes (1,048,576 bytes); skipped"]


async def test_a_bucket_scan_hunts_a_range_and_resumes(aws: tuple[str, Faults], services: Services) -> None:
    url, faults = aws
    options = ct.AwsOptions(endpoint_url=url)
    s3 = ct.client("s3", options, CREDENTIALS)
    objects = {key_for(n): log_file(RECORDS[i : i + 25]) for n, i in enumerate(range(0, len(RECORDS), 25))}
    objects[key_for(0, region="eu-west-1")] = log_file(RECORDS[:3])
    objects[f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/2020/09/14/d.json.gz"] = b"x"
    await asyncio.to_thread(s3.create_bucket, Bucket=BUCKET)
    await asyncio.to_thread(put, s3, objects)
    times = sorted(ct.parse_log_file(log_file(RECORDS), SOURCE, "c", "f")[0], key=lambda e: e.time)
    start, end = times[10].time, times[60].time
    expected = {e.raw["eventID"] for e in times if start <= e.time < end}
    connector = ct.build_bucket("hunt", "cloudtrail", SOURCE, {"endpoint_url": url, "bucket": BUCKET}, CREDENTIALS)
    connector.policy = FAST
    faults.add(Fault(status=503, method="GET", path=f"/{BUCKET}", times=2))
    runtime = ConnectorRuntime(services.pipeline)
    report = await runtime.backfill(connector, start, end)
    assert event_ids(await stored_raw(services, "cloudtrail")) == expected
    assert report.stored == len(expected)
    assert (await runtime.backfill(connector, start, end)).received == 0
    assert [loc.split("/")[-2] for loc in await connector.locations()] == ["eu-west-1", "us-east-1"]
    connector.options.start = datetime(2020, 9, 14, tzinfo=UTC).date()
    connector.clock = lambda: datetime(2020, 9, 15, tzinfo=UTC)
    assert await poll(services, connector) == 103 - len(expected)
    await asyncio.to_thread(put, s3, {key_for(9): log_file([{**RECORDS[0], "eventID": "new-one"}])})
    assert await poll(services, connector) == 1


async def test_lookup_events_pages_newest_first_with_throttling_and_repeated_tokens(services: Services) -> None:
    state = sim.CloudTrailState(rate_per_second=100)
    now = datetime(2020, 9, 14, 2, 0, tzinfo=UTC)
    state.add([{**record, "eventTime": record["@timestamp"]} for record in RECORDS])
    state.faults.add(Fault(status=429))
    state.faults.add(Fault(status=503, retry_after=0.05))
    state.repeat_tokens = 1
    async with running(sim.create_app(state)) as url:
        options = {
            "endpoint_url": url,
            "page_size": 20,
            "lookback_seconds": 86400 * 2,
            "requests_per_second": 5,
            "timeout_seconds": 1,
        }
        connector = ct.build_lookup("lookup", "cloudtrail", SOURCE, options, CREDENTIALS)
        connector.policy = FAST
        connector.clock = lambda: now
        assert await poll(services, connector) == 103
        assert event_ids(await stored_raw(services, "cloudtrail")) == event_ids(RECORDS)
        assert len(state.requests) == 6 + 1, "six pages, and one again after its token came back unchanged"
        assert state.faults.pending == [] and state.repeat_tokens == 0
        connector.clock = lambda: now + timedelta(minutes=5)
        assert await poll(services, connector) == 0
        backfill = await ConnectorRuntime(services.pipeline).backfill(
            connector, datetime(2020, 9, 13, tzinfo=UTC), datetime(2020, 9, 14, 1, 20, tzinfo=UTC)
        )
        assert backfill.stored == 0 and backfill.received > 0
