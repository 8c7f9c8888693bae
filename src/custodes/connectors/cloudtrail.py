"""AWS CloudTrail, three ways (boto3; its calls run in worker threads):

- `CloudTrailQueueConnector` (kind ``cloudtrail_sqs``): log files announced by S3 event notifications on SQS
  (direct, or wrapped in SNS; CloudTrail's own SNS file notices too). Test events, digest files and keys
  that are not log files are skipped. The messages of one receive become one batch, and are deleted only after
  that batch is committed, so a crash before the commit redelivers them (the store keeps nothing twice).
- `CloudTrailBucketConnector` (kind ``cloudtrail_s3``): a scan of the trail bucket by day prefix,
  ``AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/``, one batch per log file with the last key read as
  the checkpoint; a backfill keeps only the records whose ``eventTime`` falls in its range (hunts).
- `CloudTrailLookupConnector` (kind ``cloudtrail_lookup``): ``LookupEvents`` for management events, newest
  first, through the runtime's `sweep`, under a client-side request-rate limit (AWS allows 2 per second).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import KW_ONLY, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from multidict import CIMultiDict
from pydantic import Field

from custodes.config import Section
from custodes.connectors.base import Batch
from custodes.connectors.envelope import to_event
from custodes.connectors.exports import trail_record
from custodes.connectors.http import RateLimiter
from custodes.connectors.retry import RetryPolicy, SourceError, Transient, call
from custodes.connectors.runtime import RangeBackfill, sweep
from custodes.model import Event, utcnow
from custodes.responder.http import retry_delay
from custodes.sources import SourceSettings

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
MAX_FILE_BYTES = 256 * 2**20
"""The largest log file read by default (decompressed; `max_file_bytes`)."""
_RETRYABLE_CODES = {
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "SlowDown",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
    "RequestTimeout",
}


class AwsOptions(Section):
    """Where the AWS APIs are: region and, for simulators or VPC endpoints, an endpoint URL."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)


class LogFileOptions(AwsOptions):
    """What the connectors that read CloudTrail log files from S3 share: how large a file they read."""

    max_file_bytes: int = Field(
        default=MAX_FILE_BYTES, ge=1, description="a log file larger than this (decompressed) is skipped with a warning"
    )


class QueueOptions(LogFileOptions):
    """Options of a ``cloudtrail_sqs`` connector."""

    queue_url: str
    max_messages: int = Field(default=10, ge=1, le=10, description="messages per receive")
    wait_seconds: int = Field(default=20, ge=0, le=20, description="long-poll wait of a receive")
    visibility_timeout: int = Field(default=300, ge=0, description="seconds a received message stays hidden")
    max_receives: int = Field(default=100, ge=1, description="receives per poll at most")


class BucketOptions(LogFileOptions):
    """Options of a ``cloudtrail_s3`` connector."""

    bucket: str
    prefix: str = Field(default="", description="before AWSLogs/ (e.g. a trail prefix or an organisation id)")
    accounts: list[str] = Field(default_factory=list, description="account ids (default: every one found)")
    regions: list[str] = Field(default_factory=list, description="regions (default: every one found)")
    start: date | None = Field(default=None, description="first day a poll scans (default: today)")


class LookupOptions(AwsOptions):
    """Options of a ``cloudtrail_lookup`` connector."""

    overlap_seconds: float = Field(default=900.0, ge=0, description="CloudTrail may deliver events this late")
    lookback_seconds: float = Field(default=3600.0, gt=0, description="how far the first poll reaches back")
    requests_per_second: int = Field(default=2, ge=1)
    page_size: int = Field(default=50, ge=1, le=50)


def _classify(error: Exception) -> Exception:
    """Throttling, 5xx and connection trouble are worth a retry; any other AWS refusal is not."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        meta = error.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode", 0) or 0)
        if code in _RETRYABLE_CODES or status >= 500 or status == 429:
            headers = CIMultiDict((str(k), str(v)) for k, v in (meta.get("HTTPHeaders") or {}).items())
            delay = retry_delay(429 if status == 400 else status, headers, now=utcnow().timestamp())
            return Transient(f"{code or 'HTTP ' + str(status)}", delay)
        return SourceError(f"{code}: {error.response.get('Error', {}).get('Message', '')}"[:300])
    if isinstance(error, HTTPClientError | BotoCoreError):
        return Transient(type(error).__name__)
    return error


async def _aws(where: str, policy: RetryPolicy, function: Callable[..., Any], **kwargs: Any) -> Any:
    async def attempt() -> Any:
        try:
            return await asyncio.to_thread(function, **kwargs)
        except (ClientError, BotoCoreError) as error:
            raise _classify(error) from None

    return await call(where, attempt, policy)


def client(service: str, options: AwsOptions, credentials: dict[str, str]) -> Any:
    """A boto3 client without botocore's own retries (ours honour Retry-After and are counted)."""
    config = Config(
        retries={"total_max_attempts": 1},
        connect_timeout=options.timeout_seconds,
        read_timeout=options.timeout_seconds,
        max_pool_connections=16,
        s3={"addressing_style": "path"},
    )
    keys: dict[str, str] = {}
    if "access_key_id" in credentials and "secret_access_key" in credentials:
        keys = {
            "aws_access_key_id": credentials["access_key_id"],
            "aws_secret_access_key": credentials["secret_access_key"],
        }
        if "session_token" in credentials:
            keys["aws_session_token"] = credentials["session_token"]
    return boto3.session.Session().client(
        service, region_name=options.region, endpoint_url=options.endpoint_url, config=config, **keys
    )


# log files ---------------------------------------------------------------------------------------------
def is_log_file(key: str) -> bool:
    """Whether an object key is a CloudTrail log file (not a digest, not anything else in the bucket)."""
    if "CloudTrail-Digest" in key or "/CloudTrail-Insight/" in key:
        return False
    return key.endswith(".json.gz") or key.endswith(".json")


def _content(data: bytes, limit: int) -> bytes | None:
    """A log file's content, gunzipped when it is gzip; None past `limit` bytes (a gzip bomb is never inflated
    whole)."""
    if len(data) > limit:
        return None
    if data[:2] != GZIP_MAGIC:
        return data
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        content = stream.read(limit + 1)
    return content if len(content) <= limit else None


def parse_log_file(
    data: bytes,
    settings: SourceSettings,
    source: str,
    where: str,
    within: tuple[datetime, datetime] | None = None,
    limit: int = MAX_FILE_BYTES,
) -> tuple[list[Event], list[str]]:
    """The events of one CloudTrail log file (gzipped or not, at most `limit` bytes decompressed), and warnings for
    what could not be read.

    With `within`, only records whose ``eventTime`` falls in ``[start, end)`` are kept.
    """
    try:
        content = _content(data, limit)
        if content is None:
            return [], [f"{where}: larger than max_file_bytes ({limit:,} bytes); skipped"]
        document = orjson.loads(content)
    except (OSError, EOFError, orjson.JSONDecodeError) as error:
        return [], [f"{where}: not a CloudTrail log file ({type(error).__name__}); skipped"]
    records = document.get("Records") if isinstance(document, dict) else None
    if not isinstance(records, list):
        return [], [f"{where}: no Records array; skipped"]
    events = [to_event(record, settings, source) for record in records]
    if within is not None:
        events = [event for event in events if within[0] <= event.time < within[1]]
    return events, []


async def read_object(answer: dict[str, Any], limit: int) -> bytes:
    """The body of a ``GetObject`` answer, at most `limit` + 1 bytes of it (more than `limit` is a file too large to
    read, which `parse_log_file` says)."""
    body = answer["Body"]
    try:
        return await asyncio.to_thread(body.read, limit + 1)
    except (BotoCoreError, OSError) as error:
        raise SourceError(f"s3 get object: {type(error).__name__} while reading") from None
    finally:
        body.close()


def notified_objects(body: str) -> tuple[list[tuple[str, str]], str | None]:
    """The (bucket, key) pairs an SQS message announces, and why it announces none (a test event, ...).

    Raises ValueError when the message is not a notification at all.
    """
    document = orjson.loads(body)
    if isinstance(document, dict) and document.get("Type") == "Notification" and "Message" in document:
        document = orjson.loads(document["Message"])
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if document.get("Event") == "s3:TestEvent":
        return [], "S3 test event"
    if "s3Bucket" in document and isinstance(document.get("s3ObjectKey"), list):
        return [(str(document["s3Bucket"]), str(key)) for key in document["s3ObjectKey"]], None
    records = document.get("Records")
    if not isinstance(records, list):
        raise ValueError("no Records in the notification")
    found: list[tuple[str, str]] = []
    for record in records:
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        found.append((str(s3["bucket"]["name"]), unquote_plus(str(s3["object"]["key"]))))
    return found, None if found else "no object created"


@dataclass
class CloudTrailQueueConnector:
    """Log files announced on an SQS queue; see the module docstring."""

    name: str
    source: str
    settings: SourceSettings
    sqs: Any
    s3: Any
    options: QueueOptions
    _: KW_ONLY
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    async def _fetch(self, bucket: str, key: str) -> tuple[list[Event], list[str]]:
        where = f"s3://{bucket}/{key}"
        try:
            answer = await _aws("s3 get object", self.policy, self.s3.get_object, Bucket=bucket, Key=key)
        except SourceError as error:
            if "NoSuchKey" in str(error):
                return [], [f"{where}: announced but gone; skipped"]
            raise
        data = await read_object(answer, self.options.max_file_bytes)
        return parse_log_file(data, self.settings, self.source, where, limit=self.options.max_file_bytes)

    async def batches(self, checkpoint: dict[str, Any] | None) -> AsyncGenerator[Batch, None]:
        """One batch per receive, until the queue is empty or `max_receives` is reached."""
        files = int((checkpoint or {}).get("files", 0))
        opts = self.options
        for _ in range(opts.max_receives):
            answer = await _aws(
                "sqs receive message",
                self.policy,
                self.sqs.receive_message,
                QueueUrl=opts.queue_url,
                MaxNumberOfMessages=opts.max_messages,
                WaitTimeSeconds=opts.wait_seconds,
                VisibilityTimeout=opts.visibility_timeout,
            )
            messages = answer.get("Messages") or []
            if not messages:
                return
            done: list[dict[str, Any]] = []
            wanted: list[tuple[str, str]] = []
            warnings: list[str] = []
            for message in messages:
                try:
                    objects, _reason = notified_objects(message.get("Body", ""))
                except (ValueError, KeyError, TypeError):
                    warnings.append(
                        f"SQS message {message.get('MessageId')}: not an S3 notification; left on the queue "
                        "for its redrive policy"
                    )
                    continue
                wanted += [(bucket, key) for bucket, key in objects if is_log_file(key)]
                done.append(message)
            results = await asyncio.gather(*(self._fetch(bucket, key) for bucket, key in wanted))
            events = [event for found, _notes in results for event in found]
            warnings += [note for _found, notes in results for note in notes]
            files += len(wanted)
            yield Batch(events, {"files": files, "last_key": wanted[-1][1] if wanted else None}, warnings)
            await self._delete(done)

    async def _delete(self, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        answer = await _aws(
            "sqs delete message batch",
            self.policy,
            self.sqs.delete_message_batch,
            QueueUrl=self.options.queue_url,
            Entries=entries,
        )
        for failed in answer.get("Failed") or []:
            log.warning(
                "%s: a committed message was not deleted (%s); it will be read again", self.name, failed.get("Code")
            )


# bucket scan -------------------------------------------------------------------------------------------
def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


@dataclass
class CloudTrailBucketConnector:
    """A day-by-day scan of the trail bucket; see the module docstring."""

    name: str
    source: str
    settings: SourceSettings
    s3: Any
    options: BucketOptions
    _: KW_ONLY
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], datetime] = utcnow

    async def _listing(
        self, prefix: str, *, delimiter: str | None = None, after: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Each ListObjectsV2 answer for the keys under `prefix`, following its continuation tokens; `delimiter`
        goes with every request, `after` (StartAfter) with the first."""
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"ContinuationToken": token} if token else {}
            if delimiter is not None:
                extra["Delimiter"] = delimiter
            if after and not token:
                extra["StartAfter"] = after
            answer = await _aws(
                "s3 list objects",
                self.policy,
                self.s3.list_objects_v2,
                Bucket=self.options.bucket,
                Prefix=prefix,
                **extra,
            )
            yield answer
            token = answer.get("NextContinuationToken")
            if not token:
                return

    async def _children(self, prefix: str) -> list[str]:
        names: list[str] = []
        async for answer in self._listing(prefix, delimiter="/"):
            names += [p["Prefix"][len(prefix) : -1] for p in answer.get("CommonPrefixes") or []]
        return names

    async def locations(self) -> list[str]:
        """The ``.../CloudTrail/<region>/`` prefixes to scan: configured, or found in the bucket."""
        base = f"{self.options.prefix}AWSLogs/"
        accounts = self.options.accounts or [a for a in await self._children(base) if a.isdigit()]
        found: list[str] = []
        for account in accounts:
            trail = f"{base}{account}/CloudTrail/"
            regions = self.options.regions or await self._children(trail)
            found += [f"{trail}{region}/" for region in sorted(regions)]
        return found

    def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """Log files from the saved position (or `start`) up to today."""
        today = self.clock().date()
        return self._scan(checkpoint, self.options.start or today, today, None)

    def backfill(self, start: datetime, end: datetime) -> BucketBackfill:
        """A connector reading the records of `[start, end)` once, under its own checkpoint name."""
        return BucketBackfill(self, start, end)

    async def _scan(
        self, checkpoint: dict[str, Any] | None, first: date, last: date, within: tuple[datetime, datetime] | None
    ) -> AsyncIterator[Batch]:
        positions: dict[str, Any] = dict((checkpoint or {}).get("positions", {}))
        for location in await self.locations():
            saved = positions.get(location) or {}
            start_day = date.fromisoformat(saved["day"]) if "day" in saved else first
            for day in _days(max(start_day, first), last):
                after = saved.get("after") if saved.get("day") == day.isoformat() else None
                async for key in self._keys(f"{location}{day:%Y/%m/%d}/", after):
                    answer = await _aws(
                        "s3 get object", self.policy, self.s3.get_object, Bucket=self.options.bucket, Key=key
                    )
                    data = await read_object(answer, self.options.max_file_bytes)
                    where = f"s3://{self.options.bucket}/{key}"
                    limit = self.options.max_file_bytes
                    events, warnings = parse_log_file(data, self.settings, self.source, where, within, limit)
                    positions[location] = {"day": day.isoformat(), "after": key}
                    yield Batch(events, {"positions": dict(positions)}, warnings)

    async def _keys(self, prefix: str, after: str | None) -> AsyncIterator[str]:
        async for answer in self._listing(prefix, after=after):
            for item in answer.get("Contents") or []:
                if is_log_file(item["Key"]):
                    yield item["Key"]


class BucketBackfill(RangeBackfill[CloudTrailBucketConnector]):
    """A scan of the days around `[start, end)` keeping the records of that range; it resumes, then is done."""

    async def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """Files after `checkpoint`; a log file lands in the folder of its delivery day, so scan one more day."""
        state = checkpoint or {}
        if state.get("done"):
            return
        last_checkpoint: dict[str, Any] = state
        last = (self.end + timedelta(days=1)).date()
        async for batch in self.parent._scan(state, self.start.date(), last, (self.start, self.end)):
            last_checkpoint = batch.checkpoint
            yield batch
        yield Batch([], {**last_checkpoint, "done": True})


# LookupEvents ------------------------------------------------------------------------------------------
@dataclass
class CloudTrailLookupConnector:
    """Management events through ``LookupEvents``; see the module docstring."""

    name: str
    source: str
    settings: SourceSettings
    cloudtrail: Any
    options: LookupOptions
    _: KW_ONLY
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Callable[[], datetime] = utcnow
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.options.requests_per_second, 1.0)

    async def fetch(self, start: datetime, end: datetime, cursor: str | None) -> tuple[list[Event], str | None]:
        """One page of ``[start, end]``, newest first."""

        async def attempt() -> Any:
            extra = {"NextToken": cursor} if cursor else {}
            try:
                async with self.limiter.slot():
                    return await asyncio.to_thread(
                        self.cloudtrail.lookup_events,
                        StartTime=start,
                        EndTime=end,
                        MaxResults=self.options.page_size,
                        **extra,
                    )
            except (ClientError, BotoCoreError) as error:
                raise _classify(error) from None

        answer = await call("cloudtrail lookup events", attempt, self.policy)
        events: list[Event] = []
        for item in answer.get("Events") or []:
            kept = {key: (value.isoformat() if isinstance(value, datetime) else value) for key, value in item.items()}
            record, warning = trail_record(kept)
            event = to_event(record, self.settings, self.source)
            if warning is not None:
                event.warnings.append(warning)
            events.append(event)
        token = answer.get("NextToken")
        return events, str(token) if token else None

    def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """One newest-first sweep from the watermark (less the overlap) to now."""
        return sweep(
            self.fetch,
            checkpoint,
            overlap=timedelta(seconds=self.options.overlap_seconds),
            lookback=timedelta(seconds=self.options.lookback_seconds),
            now=self.clock(),
        )

    def backfill(self, start: datetime, end: datetime) -> LookupBackfill:
        """A connector reading `[start, end]` once, under its own checkpoint name."""
        return LookupBackfill(self, start, end)


class LookupBackfill(RangeBackfill[CloudTrailLookupConnector]):
    """One sweep of a fixed range of LookupEvents; it resumes, then is done."""

    def batches(self, checkpoint: dict[str, Any] | None) -> AsyncIterator[Batch]:
        """The range after `checkpoint`."""
        options = self.parent.options
        return sweep(
            self.parent.fetch,
            checkpoint,
            overlap=timedelta(seconds=options.overlap_seconds),
            lookback=timedelta(seconds=options.lookback_seconds),
            now=self.parent.clock(),
            window=(self.start, self.end),
        )


def build_queue(
    name: str, source: str, settings: SourceSettings, options: dict[str, Any], credentials: dict[str, str]
) -> CloudTrailQueueConnector:
    """A ``cloudtrail_sqs`` connector (credentials: `access_key_id`/`secret_access_key`, or the default chain)."""
    opts = QueueOptions.model_validate(options)
    return CloudTrailQueueConnector(
        name, source, settings, client("sqs", opts, credentials), client("s3", opts, credentials), opts
    )


def build_bucket(
    name: str, source: str, settings: SourceSettings, options: dict[str, Any], credentials: dict[str, str]
) -> CloudTrailBucketConnector:
    """A ``cloudtrail_s3`` connector."""
    opts = BucketOptions.model_validate(options)
    return CloudTrailBucketConnector(name, source, settings, client("s3", opts, credentials), opts)


def build_lookup(
    name: str, source: str, settings: SourceSettings, options: dict[str, Any], credentials: dict[str, str]
) -> CloudTrailLookupConnector:
    """A ``cloudtrail_lookup`` connector."""
    opts = LookupOptions.model_validate(options)
    return CloudTrailLookupConnector(name, source, settings, client("cloudtrail", opts, credentials), opts)
