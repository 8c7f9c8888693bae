"""Vendor records inside the ECS documents of Elastic's integrations, so that a SOC on Elasticsearch is scored as one
reading the vendors' own logs.

An integration renames a vendor's record into ECS and keeps what ECS has no name for under the vendor's own key
(`aws.cloudtrail`, `okta`, ...). What a record means to behaviour scoring (an S3 object read, a sensitive API call,
an access key created for someone else) is read from the vendor's record by the vendor's reader
(`features.Extractor`). So an ECS document that keeps the record it came from (`event.original`, which the
integrations keep with the `preserve_original_event` tag) is read as that record; one that does not is read as ECS,
except AWS CloudTrail's (the `aws.cloudtrail` fields of Elastic's AWS integration), whose record is rebuilt from the
fields the integration keeps, since ECS has no name for most of what the CloudTrail reader reads.
"""

from __future__ import annotations

from typing import Any

import orjson


def vendor_record(raw: dict[str, Any], event: dict[str, Any]) -> dict[str, Any] | None:
    """The vendor's record an ECS document was made from, where it is kept or can be rebuilt; None otherwise (and
    for a record kept that is ECS itself, which is read as the document is)."""
    original = event.get("original")
    if type(original) is str and original[:1] == "{":
        try:
            record = orjson.loads(original)
        except orjson.JSONDecodeError:
            record = None
        if type(record) is dict and not isinstance(record.get("event"), dict):
            return record
    aws = raw.get("aws")
    trail = aws.get("cloudtrail") if type(aws) is dict else None
    if type(trail) is dict and event.get("action"):
        return cloudtrail_record(raw, event, trail)
    return None


def _object(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else {}


def cloudtrail_record(raw: dict[str, Any], event: dict[str, Any], trail: dict[str, Any]) -> dict[str, Any]:
    """A CloudTrail record rebuilt from an ECS document of Elastic's AWS integration: the event's name and source
    (`event.action`, `event.provider`), the identity (`aws.cloudtrail.user_identity`; the user's name from
    `user.name` but for an assumed role, whose session is in its ARN and whose `user.name` is the role's), the error,
    and the request, response and additional data the integration keeps as objects (`aws.cloudtrail.flattened`)."""
    kept = _object(trail.get("user_identity"))
    user = _object(raw.get("user"))
    kind = kept.get("type")
    identity = {
        "type": kind,
        "arn": kept.get("arn"),
        "accountId": _object(_object(raw.get("cloud")).get("account")).get("id"),
        "principalId": user.get("id"),
        "accessKeyId": kept.get("access_key_id"),
        "userName": None if kind == "AssumedRole" else user.get("name"),
    }
    flat = _object(trail.get("flattened"))
    source = _object(raw.get("source"))
    record = {
        "eventName": event.get("action"),
        "eventSource": event.get("provider"),
        "eventTime": raw.get("@timestamp"),
        "eventID": event.get("id"),
        "userIdentity": {key: value for key, value in identity.items() if value is not None},
        "sourceIPAddress": source.get("address") or source.get("ip"),
        "errorCode": trail.get("error_code"),
        "errorMessage": trail.get("error_message"),
        "requestParameters": flat.get("request_parameters"),
        "responseElements": flat.get("response_elements"),
        "additionalEventData": flat.get("additional_eventdata"),
    }
    return {key: value for key, value in record.items() if value is not None}
