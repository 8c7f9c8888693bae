"""Vendor records as Microsoft Sentinel's tables hold them (Log Analytics rows, column names from Azure Monitor's
table reference): Entra ID's sign-ins and directory audits, and the Microsoft 365 unified audit log."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

OFFICE_COLUMNS = {
    "Workload": "OfficeWorkload",
    "ObjectId": "OfficeObjectId",
    "Id": "OfficeId",
    "LogonType": "Logon_Type",
}
"""`OfficeActivity`'s names of the unified audit record's members it renames."""
USER_TYPE_NAMES = ["Regular", "Reserved", "Admin", "DcAdmin", "System", "Application", "ServicePrincipal"]
RECORD_TYPE_NAMES = {
    1: "ExchangeAdmin",
    2: "ExchangeItem",
    6: "SharePointFileOperation",
    8: "AzureActiveDirectory",
    50: "ExchangeItemAggregated",
    63: "DLPEndpoint",
}
LOGON_TYPE_NAMES = ["Owner", "Admin", "Delegate", "Transport", "SystemService", "BestAccess", "DelegatedAdmin"]


def _dynamic(value: Any, as_text: bool) -> Any:
    return orjson.dumps(value).decode() if as_text and value is not None else value


def _present(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if value is not None}


def sentinel_signin(record: dict[str, Any], as_text: bool) -> dict[str, Any]:
    """A diagnostic settings sign-in as a Log Analytics `SigninLogs` (or non-interactive) row: Pascal case columns,
    the status, device and place as objects, or as their JSON text (`as_text`)."""
    body = record.get("properties") or {}
    table = "AADNonInteractiveUserSignInLogs" if record["category"] == "NonInteractiveUserSignInLogs" else "SigninLogs"
    return _present(
        {
            "TimeGenerated": record.get("time"),
            "Type": table,
            "UserPrincipalName": body.get("userPrincipalName"),
            "ResultType": record.get("resultType"),
            "Status": _dynamic(body.get("status"), as_text),
            "DeviceDetail": _dynamic(body.get("deviceDetail"), as_text),
            "LocationDetails": _dynamic(body.get("location"), as_text),
            "AutonomousSystemNumber": body.get("autonomousSystemNumber"),
            "IPAddress": body.get("ipAddress"),
        }
    )


def sentinel_audit(audit: dict[str, Any], as_text: bool, time: str | None = None) -> dict[str, Any]:
    """Graph's directory audit as an `AuditLogs` row: Pascal case columns, who acted and on what as objects or their
    JSON text (`as_text`)."""
    return _present(
        {
            "TimeGenerated": time or audit.get("activityDateTime"),
            "Type": "AuditLogs",
            "TenantId": "7f0e3a52-0000-4000-8000-000000000001",
            "Id": audit.get("id"),
            "Category": audit.get("category"),
            "ActivityDateTime": audit.get("activityDateTime"),
            "ActivityDisplayName": audit.get("activityDisplayName"),
            "Result": audit.get("result"),
            "LoggedByService": audit.get("loggedByService"),
            "InitiatedBy": _dynamic(audit.get("initiatedBy"), as_text),
            "TargetResources": _dynamic(audit.get("targetResources"), as_text),
        }
    )


def sentinel_office(record: dict[str, Any], as_text: bool = True) -> dict[str, Any]:
    """A unified audit record as an `OfficeActivity` row: the members Sentinel renames under its names, the user's
    and the mailbox logon's kinds by name, the cmdlet's parameters as JSON text (`as_text`; Sentinel's column is a
    string), the time as `TimeGenerated`."""
    row: dict[str, Any] = {"Type": "OfficeActivity", "SourceSystem": "OfficeActivityManager"}
    for name, value in record.items():
        if name == "CreationTime":
            when = datetime.fromisoformat(value)
            row["TimeGenerated"] = (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()
        elif name == "UserType":
            row[name] = USER_TYPE_NAMES[value]
        elif name == "LogonType":
            row["Logon_Type"] = LOGON_TYPE_NAMES[value]
        elif name == "RecordType":
            row[name] = RECORD_TYPE_NAMES[value]
        elif name == "Parameters":
            row[name] = _dynamic(value, as_text)
        else:
            row[OFFICE_COLUMNS.get(name, name)] = value
    return row


APPLICATIONS = {
    "SharePoint": "Microsoft SharePoint Online",
    "OneDrive": "Microsoft OneDrive for Business",
    "Exchange": "Microsoft Exchange Online",
    "AzureActiveDirectory": "Office 365",
    "Endpoint": "Microsoft 365",
}


def cloud_app_event(record: dict[str, Any], as_text: bool = False) -> dict[str, Any]:
    """A unified audit record as Defender XDR's `CloudAppEvents` row (advanced hunting's columns): the record whole
    in `RawEventData` (an object, or its JSON text with `as_text`, as a CSV export gives it)."""
    when = datetime.fromisoformat(record["CreationTime"])
    return {
        "Timestamp": (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat(),
        "ActionType": record["Operation"],
        "Application": APPLICATIONS[record["Workload"]],
        "ApplicationId": 20892,
        "AccountObjectId": "3f1c0b8e-0000-4000-8000-00000000a1b2",
        "AccountDisplayName": "Jane Doe",
        "IsAdminOperation": False,
        "IPAddress": record.get("ClientIP"),
        "ObjectName": record.get("ObjectId"),
        "ReportId": record["Id"],
        "RawEventData": _dynamic(record, as_text),
    }


IDENTITY_COLUMNS = {
    "type": "UserIdentityType",
    "userName": "UserIdentityUserName",
    "arn": "UserIdentityArn",
    "principalId": "UserIdentityPrincipalid",
    "accountId": "UserIdentityAccountId",
    "accessKeyId": "UserIdentityAccessKeyId",
}
ISSUER_COLUMNS = {"type": "SessionIssuerType", "userName": "SessionIssuerUserName", "arn": "SessionIssuerArn"}
TRAIL_COLUMNS = {
    "eventName": "EventName",
    "eventSource": "EventSource",
    "eventType": "EventTypeName",
    "awsRegion": "AWSRegion",
    "sourceIPAddress": "SourceIpAddress",
    "userAgent": "UserAgent",
    "errorCode": "ErrorCode",
    "errorMessage": "ErrorMessage",
    "recipientAccountId": "RecipientAccountId",
}
TRAIL_TEXT = {
    "requestParameters": "RequestParameters",
    "responseElements": "ResponseElements",
    "additionalEventData": "AdditionalEventData",
    "resources": "Resources",
}


def aws_cloudtrail(record: dict[str, Any]) -> dict[str, Any]:
    """A CloudTrail record as an `AWSCloudTrail` row: the identity and its session's issuer flattened into columns,
    the request, response, additional data and resources as JSON text, empty columns as empty strings (as the query
    API gives a string column without a value)."""
    identity = record.get("userIdentity") or {}
    issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
    row: dict[str, Any] = {
        "TimeGenerated": record.get("eventTime") or record.get("@timestamp"),
        "Type": "AWSCloudTrail",
        "OperationName": "CloudTrail",
    }
    row["AwsEventId"] = record.get("eventID", "")
    row |= {column: identity.get(key, "") for key, column in IDENTITY_COLUMNS.items()}
    row |= {column: issuer.get(key, "") for key, column in ISSUER_COLUMNS.items()}
    row |= {column: record.get(key, "") for key, column in TRAIL_COLUMNS.items()}
    row |= {column: orjson.dumps(record[key]).decode() if key in record else "" for key, column in TRAIL_TEXT.items()}
    return row


SYSLOG_LINE = re.compile(
    r"^(?P<stamp>\w{3}\s+\d+ [\d:]{8}) (?P<host>\S+) (?P<program>[\w-]+)\]?(?:\[(?P<pid>\d+)\])?: "
    r"(?P<message>.*)$"
)


def sentinel_syslog(line: str, year: int) -> dict[str, Any]:
    """A BSD syslog line (of `year`) as a `Syslog` row: its time, host, program and process id in columns, the
    message after the program's colon in `SyslogMessage`."""
    found = SYSLOG_LINE.match(line)
    assert found is not None, line
    when = datetime.strptime(f"{year} {found['stamp']}", "%Y %b %d %H:%M:%S").replace(tzinfo=UTC)
    return {
        "TimeGenerated": when.isoformat().replace("+00:00", "Z"),
        "Type": "Syslog",
        "Computer": found["host"],
        "HostName": found["host"],
        "Facility": "authpriv",
        "SeverityLevel": "info",
        "ProcessName": found["program"],
        "ProcessID": int(found["pid"]) if found["pid"] else None,
        "SyslogMessage": found["message"],
    }
