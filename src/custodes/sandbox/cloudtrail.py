"""A local AWS CloudTrail ``LookupEvents`` simulator (moto 5 lacks it) that boto3 accepts through
``endpoint_url``, written from the CloudTrail API reference; plus the AWS error shapes the fault proxy in
front of moto (S3, SQS) answers with.

What it speaks: the JSON 1.1 protocol (``POST /``, ``X-Amz-Target:
com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents``, ``application/x-amz-json-1.1``);
``StartTime``/``EndTime`` (epoch seconds, both inclusive), ``MaxResults`` (1-50, default 50), one
``LookupAttributes`` entry (EventName, Username, EventSource, ReadOnly, EventId), events newest first,
opaque ``NextToken`` paging (a token from another query is ``InvalidNextTokenException``); a request-rate
limit per second (``ThrottlingException``, as AWS's 2 per second per account and region). Each event carries
``CloudTrailEvent``, the record as a JSON string. Faults (`pathfaults.Faults`): a 429 is answered as a
``ThrottlingException``, a 5xx as ``ServiceUnavailableException``/``InternalFailure``.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from custodes.connectors.envelope import parse_time
from custodes.sandbox.pathfaults import Fault, Faults, middleware

TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
AMZ_JSON = "application/x-amz-json-1.1"
_ATTRIBUTES = {
    "EventName": "eventName",
    "Username": "userIdentity.userName",
    "EventSource": "eventSource",
    "ReadOnly": "readOnly",
    "EventId": "eventID",
}


@dataclass(slots=True)
class CloudTrailState:
    """Management events, the request-rate limit, faults and the request log (operation, body)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rate_per_second: int = 2
    faults: Faults = field(default_factory=Faults)
    requests: list[dict[str, Any]] = field(default_factory=list)
    repeat_tokens: int = 0
    _recent: deque[float] = field(default_factory=deque)

    def add(self, records: list[dict[str, Any]]) -> None:
        """Record management events (CloudTrail records with ``eventTime`` and ``eventID``)."""
        for record in records:
            if "eventTime" not in record or "eventID" not in record:
                raise ValueError("a management event has eventTime and eventID")
            parse_time(record["eventTime"])
        self.records.extend(records)

    def _throttled(self) -> bool:
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.rate_per_second:
            return True
        self._recent.append(now)
        return False


def aws_json_error(status: int, code: str, message: str) -> web.Response:
    """An AWS JSON-protocol error."""
    headers = {"x-amzn-RequestId": str(uuid.uuid4()), "Content-Type": AMZ_JSON}
    return web.Response(status=status, body=orjson.dumps({"__type": code, "message": message}), headers=headers)


def aws_xml_error(status: int, code: str, message: str) -> web.Response:
    """An AWS query/REST-XML error (S3)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{uuid.uuid4()}</RequestId></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


def render_aws_fault(fault: Fault, request: web.Request) -> web.StreamResponse:
    """An injected fault in the shape the addressed AWS API uses (JSON when the request names a target)."""
    status = fault.status or 500
    if "X-Amz-Target" in request.headers or "json" in request.headers.get("Content-Type", ""):
        if status == 429:
            return aws_json_error(400, "ThrottlingException", "Rate exceeded")
        return aws_json_error(status, "ServiceUnavailableException" if status == 503 else "InternalFailure", "")
    if status == 429:
        return aws_xml_error(503, "SlowDown", "Please reduce your request rate.")
    return aws_xml_error(status, "ServiceUnavailable" if status == 503 else "InternalError", "try again")


def _get(record: dict[str, Any], path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _lookup_event(record: dict[str, Any]) -> dict[str, Any]:
    resources = [
        {"ResourceType": r.get("type"), "ResourceName": r.get("ARN")}
        for r in record.get("resources") or []
        if isinstance(r, dict)
    ]
    return {
        "EventId": record.get("eventID"),
        "EventName": record.get("eventName"),
        "ReadOnly": str(record.get("readOnly", False)).lower(),
        "AccessKeyId": _get(record, "userIdentity.accessKeyId"),
        "EventTime": parse_time(record["eventTime"]).timestamp(),
        "EventSource": record.get("eventSource"),
        "Username": _get(record, "userIdentity.userName"),
        "Resources": resources,
        "CloudTrailEvent": orjson.dumps(record).decode(),
    }


STATE: web.AppKey[CloudTrailState] = web.AppKey("state", CloudTrailState)


def _token(query_key: str, offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([query_key, offset])).decode()


async def lookup_events(request: web.Request) -> web.Response:
    """``POST /`` with the LookupEvents target."""
    state = request.app[STATE]
    target = request.headers.get("X-Amz-Target", "")
    if target != TARGET:
        return aws_json_error(400, "UnknownOperationException", f"unknown operation {target!r}")
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return aws_json_error(400, "SerializationException", "the body is not JSON")
    state.requests.append(body)
    if state._throttled():
        return aws_json_error(400, "ThrottlingException", "Rate exceeded")
    start = datetime.fromtimestamp(float(body.get("StartTime", 0)), UTC)
    end = datetime.fromtimestamp(float(body.get("EndTime", time.time())), UTC)
    if start > end:
        return aws_json_error(400, "InvalidTimeRangeException", "StartTime is after EndTime")
    size = int(body.get("MaxResults", 50))
    if not 1 <= size <= 50:
        return aws_json_error(400, "InvalidMaxResultsException", "MaxResults is 1 to 50")
    attributes = body.get("LookupAttributes") or []
    if len(attributes) > 1:
        return aws_json_error(400, "InvalidLookupAttributesException", "one lookup attribute at most")
    query = orjson.dumps([body.get("StartTime"), body.get("EndTime"), attributes], option=orjson.OPT_SORT_KEYS)
    query_key = hashlib.sha256(query).hexdigest()[:16]
    offset = 0
    if body.get("NextToken"):
        try:
            token_key, offset = orjson.loads(base64.urlsafe_b64decode(body["NextToken"]))
        except (ValueError, TypeError):
            token_key = None
        if token_key != query_key:
            return aws_json_error(400, "InvalidNextTokenException", "Invalid NextToken")
    wanted = None
    if attributes:
        key = attributes[0].get("AttributeKey")
        if key not in _ATTRIBUTES:
            return aws_json_error(400, "InvalidLookupAttributesException", f"unknown attribute {key}")
        wanted = (_ATTRIBUTES[key], str(attributes[0].get("AttributeValue")))
    found = [
        record
        for record in state.records
        if start <= parse_time(record["eventTime"]) <= end
        and (wanted is None or str(_get(record, wanted[0])).lower() == wanted[1].lower())
    ]
    found.sort(key=lambda record: parse_time(record["eventTime"]), reverse=True)
    page = found[offset : offset + size]
    answer: dict[str, Any] = {"Events": [_lookup_event(record) for record in page]}
    if offset + size < len(found):
        following = offset if state.repeat_tokens else offset + size
        if state.repeat_tokens:
            state.repeat_tokens -= 1
        answer["NextToken"] = _token(query_key, following)
    headers = {"x-amzn-RequestId": str(uuid.uuid4()), "Content-Type": AMZ_JSON}
    return web.Response(body=orjson.dumps(answer), headers=headers)


def create_app(state: CloudTrailState | None = None) -> web.Application:
    """The simulator as an aiohttp application (state at ``app[STATE]``)."""
    current = state or CloudTrailState()
    app = web.Application(middlewares=[middleware(current.faults, render_aws_fault)])
    app[STATE] = current
    app.router.add_post("/", lookup_events)
    return app
