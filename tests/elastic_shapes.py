"""Vendor records as Elastic's integrations store them in ECS, for tests of reading them back (`connectors.elastic`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson


def elastic_cloudtrail(record: dict[str, Any], original: bool = False) -> dict[str, Any]:
    """A CloudTrail record as Elastic's AWS integration indexes it: the event in ECS, the identity and the request,
    response and additional data under `aws.cloudtrail` (the objects under `flattened`, the text forms beside them),
    the record itself in `event.original` only with `original` (the `preserve_original_event` tag)."""
    identity = record.get("userIdentity") or {}
    kind = identity.get("type")
    issuer = ((identity.get("sessionContext") or {}).get("sessionIssuer")) or {}
    name = issuer.get("userName") if kind == "AssumedRole" else identity.get("userName")
    failed = bool(record.get("errorCode"))
    event: dict[str, Any] = {
        "action": record["eventName"],
        "provider": record.get("eventSource"),
        "id": record.get("eventID"),
        "kind": "event",
        "outcome": "failure" if failed else "success",
        "created": "2026-12-07T10:00:00.000Z",
    }
    if original:
        event["original"] = orjson.dumps(record).decode()
    kept = {
        "type": kind,
        "arn": identity.get("arn"),
        "access_key_id": identity.get("accessKeyId"),
        "invoked_by": identity.get("invokedBy"),
    }
    flattened = {
        "request_parameters": record.get("requestParameters"),
        "response_elements": record.get("responseElements"),
        "additional_eventdata": record.get("additionalEventData"),
    }
    trail = {
        "event_version": record.get("eventVersion"),
        "user_identity": {k: v for k, v in kept.items() if v is not None},
        "flattened": {k: v for k, v in flattened.items() if v},
        "request_parameters": _text(record.get("requestParameters")),
        "error_code": record.get("errorCode"),
        "error_message": record.get("errorMessage"),
    }
    document = {
        "@timestamp": record.get("eventTime") or record.get("@timestamp"),
        "event": event,
        "aws": {"cloudtrail": {k: v for k, v in trail.items() if v is not None}},
        "cloud": {"account": {"id": identity.get("accountId") or record.get("recipientAccountId")}},
        "source": {"address": record.get("sourceIPAddress")},
        "user": {k: v for k, v in {"id": identity.get("principalId"), "name": name}.items() if v is not None},
        "user_agent": {"original": record.get("userAgent")},
    }
    return document


def _text(value: Any) -> str | None:
    """An object in the integration's text form, `{key=value, ...}` (not JSON)."""
    if not isinstance(value, dict):
        return None
    return (
        "{" + ", ".join(f"{key}={_text(item) if isinstance(item, dict) else item}" for key, item in value.items()) + "}"
    )


def elastic_okta(record: dict[str, Any]) -> dict[str, Any]:
    """An Okta System Log event as Elastic's Okta integration indexes it (without `event.original`): its members in
    snake case under `okta`, the client's place in ECS `client.geo`, the debug data as written under `flattened`,
    and `user.name` the part of the actor's address before the `@`."""
    actor = record.get("actor") or {}
    client = record.get("client") or {}
    agent = client.get("userAgent") or {}
    place = client.get("geographicalContext") or {}
    security = record.get("securityContext") or {}
    debug = (record.get("debugContext") or {}).get("debugData") or {}
    okta: dict[str, Any] = {
        "uuid": record.get("uuid"),
        "event_type": record["eventType"],
        "display_message": record.get("displayMessage"),
        "actor": _snake_person(actor),
        "outcome": {k: v for k, v in (record.get("outcome") or {}).items() if v is not None},
        "client": {
            "ip": client.get("ipAddress"),
            "device": client.get("device"),
            "user_agent": {"raw_user_agent": agent.get("rawUserAgent"), "browser": agent.get("browser")},
        },
        "debug_context": {"debug_data": {"flattened": debug, "device_fingerprint": debug.get("deviceFingerprint")}},
        "security_context": {
            "as": {"number": security.get("asNumber"), "organization": {"name": security.get("asOrg")}},
            "domain": security.get("domain"),
            "is_proxy": security.get("isProxy"),
        },
    }
    if isinstance(record.get("target"), list):
        okta["target"] = [_snake_person(target) for target in record["target"] if isinstance(target, dict)]
    address = str(actor.get("alternateId") or "")
    return {
        "@timestamp": record.get("published"),
        "event": {"action": record["eventType"], "id": record.get("uuid"), "kind": "event"},
        "okta": okta,
        "client": {
            "ip": client.get("ipAddress"),
            "geo": {"country_name": place.get("country"), "city_name": place.get("city")},
        },
        "user": {"name": address.partition("@")[0], "full_name": actor.get("displayName")},
    }


def _snake_person(member: dict[str, Any]) -> dict[str, Any]:
    names = {"alternate_id": "alternateId", "display_name": "displayName", "id": "id", "type": "type"}
    return {snake: member[camel] for snake, camel in names.items() if member.get(camel) is not None}


def elastic_m365(record: dict[str, Any]) -> dict[str, Any]:
    """A Microsoft 365 unified audit record as Elastic's Microsoft 365 integration indexes it: the operation, workload,
    id and object's address in ECS, the rest under `o365.audit` with numbers as text and an Exchange cmdlet's
    parameters as a map of names to values."""
    moved = {"Operation", "Workload", "Id", "ObjectId", "ClientIP"}
    audit: dict[str, Any] = {}
    for key, value in record.items():
        if key in moved:
            continue
        if key == "Parameters" and isinstance(value, list):
            value = {p["Name"]: p.get("Value") for p in value if isinstance(p, dict) and "Name" in p}
        audit[key] = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    document: dict[str, Any] = {
        "@timestamp": record["CreationTime"] + "Z",
        "event": {"action": record["Operation"], "provider": record.get("Workload"), "id": record.get("Id")},
        "o365": {"audit": audit},
        "user": {
            "id": record.get("UserId"),
            "email": record.get("UserId"),
            "name": str(record.get("UserId")).partition("@")[0],
        },
    }
    if record.get("ObjectId"):
        document["url"] = {"original": record["ObjectId"]}
    if record.get("ClientIP"):
        document["client"] = {"ip": record["ClientIP"]}
    return document


WORKSPACE_PARAMETERS = {
    "drive": {
        "visibility": "visibility",
        "new_value": "new_value",
        "target_user": "target_user",
        "new_owner": "target",
    },
    "login": {"login_challenge_status": "challenge_status", "login_type": "type"},
}
"""Google Workspace parameters by the names Elastic's integration gives them under each application's key."""


def elastic_workspace(record: dict[str, Any]) -> dict[str, Any]:
    """A Google Workspace activity (one event, parameters by name) as Elastic's Google Workspace integration indexes
    it: the application and event in ECS, the actor's address in `source.user.email`, `user.name` the part of it
    before the `@`, and the parameters under the application's key (a document's id under `drive.file.id`, the user
    an administrator acted on under `admin.user.email`)."""
    app = record["id"]["applicationName"]
    if "events" in record:  # the Reports API's form, one event an activity (Elastic indexes each event apart)
        (event,) = record["events"]
        listed = event.get("parameters") or []
        record = {**record, "name": event["name"], "parameters": {p["name"]: _value(p) for p in listed}}
    params = record.get("parameters") or {}
    kept: dict[str, Any] = {}
    for name, value in params.items():
        renamed = WORKSPACE_PARAMETERS.get(app, {}).get(name)
        if renamed is not None:
            kept[renamed] = value
    if app == "drive" and params.get("doc_id"):
        kept["file"] = {"id": params["doc_id"], "owner": {"email": params.get("owner")}}
    if app == "drive" and params.get("target_domain"):
        kept["target_domain"] = params["target_domain"]
    if app == "admin" and params.get("USER_EMAIL"):
        kept["user"] = {"email": params["USER_EMAIL"]}
    email = (record.get("actor") or {}).get("email")
    local, _, domain = str(email or "").partition("@")
    return {
        "@timestamp": record["id"].get("time"),
        "event": {"action": record.get("name"), "provider": app, "kind": "event"},
        "google_workspace": {app: kept, "kind": record.get("kind")},
        "source": {"ip": record.get("ipAddress"), "user": {"email": email, "name": local, "domain": domain}},
        "user": {"name": local, "domain": domain},
    }


def _value(parameter: dict[str, Any]) -> Any:
    for key in ("value", "multiValue", "boolValue", "intValue"):
        if key in parameter:
            return parameter[key]
    return None


def elastic_entra(record: dict[str, Any]) -> dict[str, Any]:
    """An Entra ID sign-in as diagnostic settings export it, as Elastic's Azure integration indexes it: the sign-in
    in snake case under `azure.signinlogs.properties`, Entra's place in ECS `geo`, `user.name` the part of the user
    principal name before the `@`. A sign-in in Graph's shape is taken as diagnostic settings would export it, and
    any other record (a directory audit) is left as it is."""
    if "properties" not in record:
        if "userPrincipalName" not in record:
            return record
        interactive = "nonInteractiveUser" not in (record.get("signInEventTypes") or [])
        category = "SignInLogs" if interactive else "NonInteractiveUserSignInLogs"
        code = (record.get("status") or {}).get("errorCode", 0)
        record = {
            "time": record["createdDateTime"],
            "category": category,
            "resultType": str(code),
            "properties": record,
        }
    body = record.get("properties") or {}
    status = body.get("status") or {}
    device = body.get("deviceDetail") or {}
    upn = str(body.get("userPrincipalName") or "")
    properties: dict[str, Any] = {
        "user_principal_name": body.get("userPrincipalName"),
        "ip_address": body.get("ipAddress"),
        "status": {"error_code": status.get("errorCode")} if "errorCode" in status else {},
        "device_detail": {
            "device_id": device.get("deviceId", ""),
            "display_name": device.get("displayName"),
            "operating_system": device.get("operatingSystem"),
            "browser": device.get("browser"),
        },
    }
    if body.get("autonomousSystemNumber") is not None:
        properties["autonomous_system_number"] = body["autonomousSystemNumber"]
    signin = {"category": record.get("category"), "result_type": record.get("resultType"), "properties": properties}
    document: dict[str, Any] = {
        "@timestamp": record.get("time"),
        "event": {"action": record.get("operationName"), "category": ["authentication"], "kind": "event"},
        "azure": {"signinlogs": signin},
        "user": {"name": upn.partition("@")[0], "domain": upn.partition("@")[2]},
    }
    country = (body.get("location") or {}).get("countryOrRegion")
    if country:
        document["geo"] = {"country_iso_code": country}
    return document


def elastic_entra_audit(record: dict[str, Any]) -> dict[str, Any]:
    """An Entra ID directory audit as diagnostic settings export it, as Elastic's Azure integration indexes it: the
    audit in snake case under `azure.auditlogs.properties` (the initiator as written, the targets an object of
    numbered entries), `user.name` the part of the initiator's principal name before the `@`."""
    body = record.get("properties") or {}
    initiated = body.get("initiatedBy") or {}
    upn = str((initiated.get("user") or {}).get("userPrincipalName") or "")
    targets = {
        str(n): {
            "user_principal_name": t.get("userPrincipalName"),
            "display_name": t.get("displayName"),
            "type": t.get("type"),
        }
        for n, t in enumerate(body.get("targetResources") or [])
        if isinstance(t, dict)
    }
    properties = {
        "activity_display_name": body.get("activityDisplayName"),
        "activity_datetime": body.get("activityDateTime"),
        "result": body.get("result"),
        "initiated_by": initiated,
        "target_resources": targets,
    }
    return {
        "@timestamp": record.get("time"),
        "event": {"action": body.get("activityDisplayName"), "kind": "event"},
        "azure": {"auditlogs": {"category": record.get("category"), "properties": properties}},
        "user": {"name": upn.partition("@")[0]},
    }


def elastic_github(record: dict[str, Any]) -> dict[str, Any]:
    """A GitHub audit log event as Elastic's GitHub integration indexes it: the action in `event.action`, the actor
    in `user.name`, the user acted on in `user.target.name`, the repository and its visibility under `github`."""
    github = {key: record[key] for key in ("repo", "org", "visibility") if record.get(key) is not None}
    user: dict[str, Any] = {"name": record.get("actor")}
    if record.get("user"):
        user["target"] = {"name": record["user"]}
    return {
        "@timestamp": record.get("@timestamp") or record.get("created_at"),
        "event": {"action": record["action"], "kind": "event", "category": ["configuration", "web"]},
        "github": {"category": str(record["action"]).split(".")[0], **github},
        "user": user,
    }


SYSLOG_HEADER = re.compile(
    r"^(?P<stamp>\w{3}\s+\d+ [\d:]{8}) (?P<host>\S+) (?P<program>[\w-]+)\]?(?:\[(?P<pid>\d+)\])?: (?P<message>.*)$"
)
SUDO_LINE = re.compile(
    r"^\s*(?P<user>\S+) : (?:(?P<error>[^;=]+?) ; )?TTY=(?P<tty>\S+) ; PWD=(?P<pwd>\S+) ; USER=(?P<runas>\S+) ; "
    r"COMMAND=(?P<command>.*)$"
)
SSH_LINE = re.compile(
    r"^(?P<event>Accepted|Failed) (?P<method>\S+) for (?:invalid user )?(?P<user>\S+) from (?P<ip>\S+) "
    r"port (?P<port>\d+)"
)


def elastic_auth(line: str, year: int) -> dict[str, Any]:
    """A syslog line (of `year`) as Elastic's System integration indexes it (`system.auth`): a sudo command under
    `system.auth.sudo` (a refusal's words as its `error`), an sshd login under `system.auth.ssh` with ECS's
    `ssh_login` action, any other line's message left in `message`; the invoking user in `user.name`. A kernel's line
    as its `system.syslog` data stream indexes it (the message alone)."""
    found = SYSLOG_HEADER.match(line)
    assert found is not None, line
    when = datetime.strptime(f"{year} {found['stamp']}", "%Y %b %d %H:%M:%S").replace(tzinfo=UTC)
    process: dict[str, Any] = {"name": found["program"]}
    if found["pid"]:
        process["pid"] = int(found["pid"])
    document: dict[str, Any] = {
        "@timestamp": when.isoformat().replace("+00:00", ".000Z"),
        "event": {"kind": "event", "timezone": "+0000"},
        "host": {"hostname": found["host"]},
        "process": process,
        "system": {"auth": {}},
    }
    message = found["message"]
    if found["program"] == "kernel":  # not in the auth log: the integration's `syslog` data stream
        del document["system"]
        document["event"]["dataset"] = "system.syslog"
        document["message"] = message
        return document
    sudo, ssh = SUDO_LINE.match(message), SSH_LINE.match(message)
    if found["program"] == "sudo" and sudo is not None:
        parsed = {"command": sudo["command"], "pwd": sudo["pwd"], "tty": sudo["tty"], "user": sudo["runas"]}
        if sudo["error"]:
            parsed["error"] = sudo["error"]
        document["system"]["auth"]["sudo"] = parsed
        document["user"] = {"name": sudo["user"], "effective": {"name": sudo["runas"]}}
    elif found["program"] == "sshd" and ssh is not None:
        document["event"] |= {
            "action": "ssh_login",
            "category": ["authentication"],
            "outcome": "success" if ssh["event"] == "Accepted" else "failure",
        }
        document["system"]["auth"]["ssh"] = {"event": ssh["event"], "method": ssh["method"]}
        document["user"] = {"name": ssh["user"]}
        document["source"] = {"ip": ssh["ip"], "port": int(ssh["port"])}
    else:
        document["message"] = message
    return document
