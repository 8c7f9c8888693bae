"""Vendor records in the rows of Microsoft Sentinel's tables (Log Analytics), so that a SOC on Sentinel is scored and
routed as one reading the vendors' own logs.

Sentinel stores what its connectors bring in under its own column names: Entra ID's sign-ins (`SigninLogs`,
`AADNonInteractiveUserSignInLogs`) and directory audits (`AuditLogs`) as Graph's objects with their members in
Pascal case; the Microsoft 365 unified audit log (`OfficeActivity`) with a few members renamed (`OfficeWorkload`,
`OfficeObjectId`, `Logon_Type`) and its numbered kinds named (`UserType` "Regular", `Logon_Type` "Delegate"); AWS
CloudTrail (`AWSCloudTrail`) with its identity flattened into columns and its request and response as JSON text;
Linux's sudo, sshd and su (`Syslog`) as a line's program, host and message in columns. A row is told by its `Type`
column (the table's name, in every row a query returns unless a `project` drops it) and rebuilt as the vendor's
record (`vendor_record`), which the vendor's readers then read: scoring's features and the envelope's formats. A
`CloudAppEvents` row (Defender XDR's advanced hunting, or Sentinel) of a Microsoft 365 application holds the unified
audit record whole, in its `RawEventData`. `dynamic` columns may be objects, or their JSON text (as a CSV export,
the non-interactive table or some query tools give them). Column names are Azure Monitor's table reference's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from custodes.connectors.textlogs import read_line, syslog_entry
from custodes.model import json_object, json_value

SIGNIN_TABLES: Final = {"SigninLogs": "SignInLogs", "AADNonInteractiveUserSignInLogs": "NonInteractiveUserSignInLogs"}
"""Sentinel's tables of Entra ID sign-ins, by the category diagnostic settings give the same records."""
TABLES: Final = frozenset({*SIGNIN_TABLES, "AuditLogs", "OfficeActivity", "AWSCloudTrail", "Syslog"})
"""The tables whose rows are read as their vendor's records."""

_GRAPH_NAMES: Final = {"LocationDetails": "location", "IPAddress": "ipAddress"}
"""Graph's names of the columns whose name is not Graph's own with its first letter raised."""
_GRAPH_OBJECTS: Final = frozenset({"Status", "DeviceDetail", "LocationDetails", "InitiatedBy", "TargetResources"})
"""The `dynamic` columns the readers look into."""
_WORKSPACE_COLUMNS: Final = frozenset(
    {
        "TenantId",
        "TimeGenerated",
        "Type",
        "SourceSystem",
        "_ResourceId",
        "_SubscriptionId",
        "_BilledSize",
        "_IsBillable",
    }
)
"""Log Analytics' own columns, of no vendor's record."""

_OFFICE_NAMES: Final = {
    "OfficeWorkload": "Workload",
    "OfficeObjectId": "ObjectId",
    "OfficeId": "Id",
    "Logon_Type": "LogonType",
    "Client_IPAddress": "ClientIPAddress",
    "Site_Url": "SiteUrl",
    "Event_Data": "EventData",
    "AzureActiveDirectory_EventType": "AzureActiveDirectoryEventType",
}
"""The unified audit log's names of the `OfficeActivity` columns Sentinel renamed."""
_OFFICE_LISTS: Final = frozenset({"Parameters", "ModifiedProperties", "ExtendedProperties"})
"""`OfficeActivity` columns that hold a list of the unified audit record as its JSON text."""
USER_TYPES: Final = {
    "Regular": 0,
    "Reserved": 1,
    "Admin": 2,
    "DcAdmin": 3,
    "System": 4,
    "Application": 5,
    "ServicePrincipal": 6,
    "CustomPolicy": 7,
    "SystemPolicy": 8,
}
"""The unified audit log's `UserType` numbers, by the names `OfficeActivity` gives them."""
LOGON_TYPES: Final = {
    "Owner": 0,
    "Admin": 1,
    "Delegate": 2,
    "Transport": 3,
    "SystemService": 4,
    "BestAccess": 5,
    "DelegatedAdmin": 6,
}
"""Exchange's mailbox audit `LogonType` numbers, by the names `OfficeActivity` gives them."""


def vendor_record(row: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The vendor's record a Sentinel row (or a `CloudAppEvents` row) holds, and the source format it is of; None for a
    row of another table, or one naming no one this module reads (a sign-in without its user, an audit without its
    activity, a cloud application's event that is no unified audit record)."""
    table = row.get("Type")
    if type(table) is not str:  # a hostile or broken row's: no table's name
        table = None
    if table in SIGNIN_TABLES and row.get("UserPrincipalName"):
        return signin_record(row, SIGNIN_TABLES[table]), "entra_signin_diagnostic"
    if table == "AuditLogs" and row.get("ActivityDisplayName"):
        return audit_record(row), "entra_audit_graph"
    if table == "OfficeActivity" and row.get("Operation") and row.get("OfficeWorkload"):
        return office_record(row), "m365"
    if table == "AWSCloudTrail" and row.get("EventName"):
        return trail_record(row), "cloudtrail"
    if table == "Syslog" and read_line(row.get("ProcessName"), row.get("SyslogMessage")):
        return syslog_record(row), "sudo"
    if "RawEventData" in row and "ActionType" in row:  # CloudAppEvents
        inner = json_object(row["RawEventData"])
        if inner is not None and inner.get("Operation") and inner.get("Workload"):
            return inner, "m365"
    return None


def _columns(row: dict[str, Any], name_of: Callable[[str], str], objects: frozenset[str]) -> dict[str, Any]:
    """A row's columns under the vendor's names (`name_of`), the JSON text of its `objects` decoded, Log Analytics'
    own columns (and an unnamed one) left out."""
    return {
        name_of(name): json_value(value) if name in objects else value
        for name, value in row.items()
        if name and name not in _WORKSPACE_COLUMNS
    }


def _graph_name(column: str) -> str:
    """Graph's name of a column of its object's member in Pascal case."""
    return _GRAPH_NAMES.get(column) or column[0].lower() + column[1:]


def _office_name(column: str) -> str:
    """The unified audit log's name of an `OfficeActivity` column."""
    return _OFFICE_NAMES.get(column, column)


def signin_record(row: dict[str, Any], category: str) -> dict[str, Any]:
    """A `SigninLogs` or `AADNonInteractiveUserSignInLogs` row as diagnostic settings export the sign-in: Graph's
    sign-in under `properties`, with its category (non-interactive or not) and result code (`ResultType`)."""
    body = _columns(row, _graph_name, _GRAPH_OBJECTS)
    body.setdefault("createdDateTime", row.get("TimeGenerated"))
    return {
        "time": row.get("TimeGenerated") or row.get("CreatedDateTime"),
        "category": category,
        "resultType": row.get("ResultType"),
        "properties": body,
    }


def audit_record(row: dict[str, Any]) -> dict[str, Any]:
    """An `AuditLogs` row as Graph's directory audit (`initiatedBy`, `targetResources`, `activityDisplayName`)."""
    record = _columns(row, _graph_name, _GRAPH_OBJECTS)
    record.setdefault("activityDateTime", row.get("TimeGenerated"))
    return record


def office_record(row: dict[str, Any]) -> dict[str, Any]:
    """An `OfficeActivity` row as the unified audit record: the columns Sentinel renamed under their own names,
    the kinds it named as their numbers, the cmdlet's parameters (JSON text) as their list, the time as
    `CreationTime`."""
    record = _columns(row, _office_name, _OFFICE_LISTS)
    record["CreationTime"] = row.get("TimeGenerated")
    for name, numbers in (("UserType", USER_TYPES), ("LogonType", LOGON_TYPES)):
        if isinstance(record.get(name), str):
            record[name] = numbers.get(record[name], record[name])
    return record


_TRAIL_IDENTITY: Final = {
    "type": "UserIdentityType",
    "userName": "UserIdentityUserName",
    "arn": "UserIdentityArn",
    "principalId": "UserIdentityPrincipalid",
    "accountId": "UserIdentityAccountId",
    "accessKeyId": "UserIdentityAccessKeyId",
    "invokedBy": "UserIdentityInvokedBy",
}
_TRAIL_ISSUER: Final = {
    "type": "SessionIssuerType",
    "userName": "SessionIssuerUserName",
    "arn": "SessionIssuerArn",
    "principalId": "SessionIssuerPrincipalId",
    "accountId": "SessionIssuerAccountId",
}
_TRAIL_MEMBERS: Final = {
    "eventName": "EventName",
    "eventSource": "EventSource",
    "eventType": "EventTypeName",
    "eventVersion": "EventVersion",
    "awsRegion": "AWSRegion",
    "sourceIPAddress": "SourceIpAddress",
    "userAgent": "UserAgent",
    "errorCode": "ErrorCode",
    "errorMessage": "ErrorMessage",
    "recipientAccountId": "RecipientAccountId",
    "readOnly": "ReadOnly",
    "managementEvent": "ManagementEvent",
}
_TRAIL_OBJECTS: Final = {
    "requestParameters": "RequestParameters",
    "responseElements": "ResponseElements",
    "additionalEventData": "AdditionalEventData",
    "resources": "Resources",
    "serviceEventDetails": "ServiceEventDetails",
}
"""CloudTrail's members that `AWSCloudTrail` keeps as their JSON text."""


def _given(members: dict[str, str], row: dict[str, Any]) -> dict[str, Any]:
    """CloudTrail's members from the columns `members` names, those the row holds (not null, not empty)."""
    return {key: row[name] for key, name in members.items() if row.get(name) not in (None, "")}


def trail_record(row: dict[str, Any]) -> dict[str, Any]:
    """An `AWSCloudTrail` row as the CloudTrail record: the identity Sentinel flattens into `UserIdentity*` and
    `SessionIssuer*` columns nested again, the request, response and additional data decoded from their JSON text,
    the time (`TimeGenerated`) as `eventTime` and the id (`AwsEventId`) as `eventID`."""
    identity = _given(_TRAIL_IDENTITY, row)
    issuer = _given(_TRAIL_ISSUER, row)
    if issuer:
        identity["sessionContext"] = {"sessionIssuer": issuer}
    record = _given(_TRAIL_MEMBERS, row)
    record |= {key: json_value(value) for key, value in _given(_TRAIL_OBJECTS, row).items()}
    record |= {"eventTime": row.get("TimeGenerated"), "eventID": row.get("AwsEventId"), "userIdentity": identity}
    return record


def syslog_record(row: dict[str, Any]) -> dict[str, Any]:
    """A `Syslog` row that `textlogs.read_line` reads (sudo, sshd, su; a removable disk, a session at the machine) as
    the file tail reads the line: its message (`SyslogMessage`) read for what the program says, at the row's time
    (`EventTime`, else `TimeGenerated`), on its host."""
    message = str(row.get("SyslogMessage") or "")
    time, host = row.get("EventTime") or row.get("TimeGenerated"), row.get("HostName") or row.get("Computer")
    return syslog_entry(message, time, host, str(row["ProcessName"]), row.get("ProcessID"), message)
