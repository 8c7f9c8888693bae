"""Vendor records inside the ECS documents of Elastic's integrations, so that a SOC on Elasticsearch is scored as one
reading the vendors' own logs.

An integration renames a vendor's record into ECS and keeps what ECS has no name for under the vendor's own key
(`aws.cloudtrail`, `okta`, ...). What a record means to behaviour scoring (an S3 object read, a sensitive API call,
an access key created for someone else) is read from the vendor's record by the vendor's reader
(`features.Extractor`). So an ECS document is read as the vendor's record where one is kept (`event.original`, kept
with the integrations' `preserve_original_event` tag) or can be rebuilt from what an integration keeps: AWS
CloudTrail's (`aws.cloudtrail`), Okta's (`okta`), Microsoft 365's (`o365.audit`), Google Workspace's
(`google_workspace`), GitHub's (`github`), Entra ID's sign-ins and directory audits (`azure.signinlogs`,
`azure.auditlogs`) and the System integration's sudo, sshd and su lines (`system.auth`). Any other is read as ECS.
"""

from __future__ import annotations

from typing import Any, Final

from custodes.connectors.textlogs import SSHD_EVENTS, read_line, syslog_entry
from custodes.model import as_object, json_object

_AGENT: Final = {"rawUserAgent": "raw_user_agent", "browser": "browser", "os": "os"}
"""Okta's user agent members by the names Elastic's Okta integration gives them."""


def vendor_record(raw: dict[str, Any], event: dict[str, Any]) -> tuple[dict[str, Any], str | None] | None:
    """The vendor's record an ECS document was made from, where it is kept (`event.original`) or can be rebuilt,
    and the source format it is of where the integration's keys say (so it is surely of that vendor's shape, where
    a record kept by an integration not read here, None, may be of a shape no reader knows); None otherwise (and for
    a record kept that is ECS itself, which is read as the document is)."""
    original = event.get("original")
    kept = json_object(original) if isinstance(original, str) else None
    if kept is not None and isinstance(kept.get("event"), dict):  # ECS itself: read as the document is
        kept = None
    trail = as_object(raw.get("aws")).get("cloudtrail")
    if type(trail) is dict and event.get("action"):
        return kept or cloudtrail_record(raw, event, trail), "cloudtrail"
    okta = raw.get("okta")
    if type(okta) is dict and okta.get("event_type"):
        return kept or okta_record(raw, okta), "okta"
    audit = as_object(raw.get("o365")).get("audit")
    if type(audit) is dict and event.get("action"):
        return kept or m365_record(raw, event, audit), "m365"
    azure = as_object(raw.get("azure"))
    signin = as_object(azure.get("signinlogs"))
    if as_object(signin.get("properties")).get("user_principal_name"):  # else read as ECS
        return kept or entra_record(raw, signin), "entra_signin_diagnostic"
    directory = as_object(azure.get("auditlogs"))
    if type(directory.get("properties")) is dict:
        return kept or entra_audit_record(raw, directory), "entra_audit_diagnostic"
    auth = as_object(raw.get("system")).get("auth")
    lines = type(auth) is dict or event.get("dataset") == "system.syslog"  # the System integration's two logs
    if lines and read_line(as_object(raw.get("process")).get("name"), raw.get("message")):
        return syslog_record(raw, as_object(auth)), "sudo"
    github = raw.get("github")
    if type(github) is dict and event.get("action"):
        return kept or github_record(raw, event, github), "github"
    workspace = raw.get("google_workspace")
    if type(workspace) is dict and event.get("action") and event.get("provider"):
        return kept or workspace_record(raw, event, workspace), "google_workspace"
    return None if kept is None else (kept, None)


def _kept(record: dict[str, Any]) -> dict[str, Any]:
    """The members of a rebuilt record that hold something."""
    return {key: value for key, value in record.items() if value is not None and value != {}}


def cloudtrail_record(raw: dict[str, Any], event: dict[str, Any], trail: dict[str, Any]) -> dict[str, Any]:
    """A CloudTrail record rebuilt from an ECS document of Elastic's AWS integration: the event's name and source
    (`event.action`, `event.provider`), the identity (`aws.cloudtrail.user_identity`; the user's name from
    `user.name` but for an assumed role, whose session is in its ARN and whose `user.name` is the role's), the error,
    and the request, response and additional data the integration keeps as objects (`aws.cloudtrail.flattened`)."""
    kept = as_object(trail.get("user_identity"))
    user = as_object(raw.get("user"))
    kind = kept.get("type")
    identity = {
        "type": kind,
        "arn": kept.get("arn"),
        "accountId": as_object(as_object(raw.get("cloud")).get("account")).get("id"),
        "principalId": user.get("id"),
        "accessKeyId": kept.get("access_key_id"),
        "userName": None if kind == "AssumedRole" else user.get("name"),
    }
    flat = as_object(trail.get("flattened"))
    source = as_object(raw.get("source"))
    record = {
        "eventName": event.get("action"),
        "eventSource": event.get("provider"),
        "eventTime": raw.get("@timestamp"),
        "eventID": event.get("id"),
        "userIdentity": _kept(identity),
        "sourceIPAddress": source.get("address") or source.get("ip"),
        "errorCode": trail.get("error_code"),
        "errorMessage": trail.get("error_message"),
        "requestParameters": flat.get("request_parameters"),
        "responseElements": flat.get("response_elements"),
        "additionalEventData": flat.get("additional_eventdata"),
    }
    return _kept(record)


def okta_record(raw: dict[str, Any], okta: dict[str, Any]) -> dict[str, Any]:
    """An Okta System Log event rebuilt from an ECS document of Elastic's Okta integration, which renames its
    members in snake case under `okta` (`actor.alternate_id`, `client.user_agent.raw_user_agent`, the autonomous
    system under `security_context.as`) and keeps the client's place in ECS (`client.geo`) and the debug data as
    Okta wrote it (`debug_context.debug_data.flattened`): the person is the actor's address, not the `user.name`
    Elastic cuts from it."""
    actor = as_object(okta.get("actor"))
    client = as_object(okta.get("client"))
    agent = as_object(client.get("user_agent"))
    geo = as_object(as_object(raw.get("client")).get("geo"))
    debug = as_object(as_object(okta.get("debug_context")).get("debug_data"))
    security = as_object(okta.get("security_context"))
    system = as_object(security.get("as"))
    targets = okta.get("target")
    fingerprint = debug.get("device_fingerprint")
    record = {
        "uuid": okta.get("uuid"),
        "published": raw.get("@timestamp"),
        "eventType": okta.get("event_type"),
        "displayMessage": okta.get("display_message"),
        "actor": _person(actor),
        "outcome": _kept(as_object(okta.get("outcome"))),
        "client": _kept(
            {
                "ipAddress": client.get("ip"),
                "device": client.get("device"),
                "userAgent": _kept({key: agent.get(name) for key, name in _AGENT.items()}),
                "geographicalContext": _kept(
                    {"country": geo.get("country_name"), "state": geo.get("region_name"), "city": geo.get("city_name")}
                ),
            }
        ),
        "debugContext": {"debugData": as_object(debug.get("flattened")) or _kept({"deviceFingerprint": fingerprint})},
        "securityContext": _kept(
            {
                "asNumber": system.get("number"),
                "asOrg": as_object(system.get("organization")).get("name"),
                "domain": security.get("domain"),
                "isp": security.get("isp"),
                "isProxy": security.get("is_proxy"),
            }
        ),
        "target": [_person(target) for target in targets if type(target) is dict] if type(targets) is list else None,
    }
    return _kept(record)


def _person(member: dict[str, Any]) -> dict[str, Any]:
    """An Okta actor or target from Elastic's snake-case members."""
    return _kept(
        {
            "alternateId": member.get("alternate_id"),
            "displayName": member.get("display_name"),
            "id": member.get("id"),
            "type": member.get("type"),
        }
    )


def m365_record(raw: dict[str, Any], event: dict[str, Any], audit: dict[str, Any]) -> dict[str, Any]:
    """A Microsoft 365 unified audit record rebuilt from an ECS document of Elastic's Microsoft 365 integration, which
    keeps the record under `o365.audit` with its own names (numbers as text) but moves the operation, the workload,
    the id and a SharePoint object's address into ECS (`event.action`, `event.provider`, `event.id`, `url.original`)."""
    moved = {
        "Operation": event.get("action"),
        "Workload": event.get("provider"),
        "Id": event.get("id"),
        "ObjectId": as_object(raw.get("url")).get("original"),
        "CreationTime": raw.get("@timestamp"),
    }
    return {**_kept(moved), **audit}


def workspace_record(raw: dict[str, Any], event: dict[str, Any], workspace: dict[str, Any]) -> dict[str, Any]:
    """A Google Workspace activity (one event, its parameters by name) rebuilt from an ECS document of Elastic's
    Google Workspace integration: the application and event in ECS (`event.provider`, `event.action`), the actor's
    address in `source.user.email` (`user.name` is the part before the `@`), and the parameters scoring reads
    under the application's key: Drive's document (`drive.file.id`), visibility, new value and the person or domain
    an access change is for (`target_user`, `target`, `target_domain`), a login challenge's status, and the user an
    administrator acted on (`admin.user.email`)."""
    user = as_object(raw.get("user"))
    actor = as_object(as_object(raw.get("source")).get("user")).get("email") or user.get("email")
    if not actor and user.get("name") and user.get("domain"):
        actor = f"{user['name']}@{user['domain']}"
    drive = as_object(workspace.get("drive"))
    parameters = {
        "doc_id": as_object(drive.get("file")).get("id"),
        "visibility": drive.get("visibility"),
        "new_value": drive.get("new_value"),
        "target_user": drive.get("target_user") or drive.get("target"),
        "target_domain": drive.get("target_domain"),
        "login_challenge_status": as_object(workspace.get("login")).get("challenge_status"),
        "USER_EMAIL": as_object(as_object(workspace.get("admin")).get("user")).get("email"),
    }
    return {
        "id": {"applicationName": event.get("provider"), "time": raw.get("@timestamp")},
        "actor": _kept({"email": actor}),
        "name": event.get("action"),
        "parameters": _kept(parameters),
    }


def entra_record(raw: dict[str, Any], signin: dict[str, Any]) -> dict[str, Any]:
    """An Entra ID sign-in as diagnostic settings export it (`category`, `resultType`, the sign-in under
    `properties`), rebuilt from an ECS document of Elastic's Azure integration, which keeps it in snake case under
    `azure.signinlogs` and the place Entra gives in ECS `geo`: the person is the user principal name
    (`properties.user_principal_name`), not the `user.name` Elastic cuts from it at the `@`."""
    body = as_object(signin.get("properties"))
    status = as_object(body.get("status"))
    device = as_object(body.get("device_detail"))
    properties = {
        "userPrincipalName": body.get("user_principal_name"),
        "createdDateTime": raw.get("@timestamp"),
        "ipAddress": body.get("ip_address"),
        "status": _kept({"errorCode": status.get("error_code")}),
        "deviceDetail": _kept(
            {
                "deviceId": device.get("device_id") or None,
                "displayName": device.get("display_name") or None,
                "operatingSystem": device.get("operating_system"),
                "browser": device.get("browser"),
            }
        ),
        "location": _kept({"countryOrRegion": as_object(raw.get("geo")).get("country_iso_code")}),
        "autonomousSystemNumber": body.get("autonomous_system_number"),
    }
    record = {
        "time": raw.get("@timestamp"),
        "category": signin.get("category"),
        "resultType": signin.get("result_type"),
        "properties": _kept(properties),
    }
    return _kept(record)


def entra_audit_record(raw: dict[str, Any], audit: dict[str, Any]) -> dict[str, Any]:
    """An Entra ID directory audit as diagnostic settings export it (`category`, the audit under `properties`),
    rebuilt from an ECS document of Elastic's Azure integration, which keeps it under `azure.auditlogs` in snake case
    (`activity_display_name`, `initiated_by`, `target_resources` as an object of numbered entries): who acted is the
    initiating user's principal name, not the `user.name` Elastic cuts at its `@`."""
    body = as_object(audit.get("properties"))
    initiated = as_object(body.get("initiated_by"))
    user, app = as_object(initiated.get("user")), as_object(initiated.get("app"))
    targets = body.get("target_resources")
    entries = targets.values() if type(targets) is dict else targets if type(targets) is list else []
    properties = {
        "activityDisplayName": body.get("activity_display_name"),
        "activityDateTime": body.get("activity_datetime") or raw.get("@timestamp"),
        "result": body.get("result"),
        "initiatedBy": _kept(
            {
                "user": _kept({"userPrincipalName": _either(user, "userPrincipalName")}),
                "app": _kept(
                    {
                        "displayName": _either(app, "displayName"),
                        "servicePrincipalName": _either(app, "servicePrincipalName"),
                    }
                ),
            }
        ),
        "targetResources": [
            _kept(
                {
                    "userPrincipalName": _either(target, "userPrincipalName"),
                    "displayName": _either(target, "displayName"),
                    "type": target.get("type"),
                }
            )
            for target in entries
            if type(target) is dict
        ],
    }
    return {"time": raw.get("@timestamp"), "category": audit.get("category"), "properties": _kept(properties)}


def _either(member: dict[str, Any], name: str) -> Any:
    """A member by its camel-case name or Elastic's snake-case one (`userPrincipalName`, `user_principal_name`)."""
    snake = "".join(f"_{char.lower()}" if char.isupper() else char for char in name)
    return member.get(name) or member.get(snake)


def github_record(raw: dict[str, Any], event: dict[str, Any], github: dict[str, Any]) -> dict[str, Any]:
    """A GitHub audit log event rebuilt from an ECS document of Elastic's GitHub integration: the action in
    `event.action`, the actor in `user.name`, the user acted on in `user.target.name`, and the repository and its
    visibility under `github`."""
    user = as_object(raw.get("user"))
    record = {
        "action": event.get("action"),
        "actor": user.get("name"),
        "user": as_object(user.get("target")).get("name"),
        "repo": github.get("repo"),
        "org": github.get("org"),
        "visibility": github.get("visibility"),
        "created_at": raw.get("@timestamp"),
    }
    return _kept(record)


def syslog_record(raw: dict[str, Any], auth: dict[str, Any]) -> dict[str, Any]:
    """A line `textlogs.read_line` reads as the file tail reads it, rebuilt from an ECS document of Elastic's System
    integration (its `auth` data stream; a kernel's line from its `syslog` one): a sudo command from `system.auth.sudo`
    (a refusal where it has an `error`), an sshd login from `system.auth.ssh` (accepted or failed), any other line from
    the `message` the integration leaves unparsed; the invoking user is ECS `user.name`, the machine `host.hostname`."""
    process, host = as_object(raw.get("process")), as_object(raw.get("host"))
    message = raw.get("message")
    text = message if isinstance(message, str) else ""
    machine = host.get("hostname") or host.get("name")
    record = syslog_entry(text, raw.get("@timestamp"), machine, str(process.get("name")), process.get("pid"), text)
    sudo, ssh = as_object(auth.get("sudo")), as_object(auth.get("ssh"))
    user = as_object(raw.get("user")).get("name")
    if sudo.get("command"):
        error = sudo.get("error")
        record |= {
            "event": "denied" if error else "command",
            "user": user,
            "run_as": sudo.get("user"),
            "command": sudo.get("command"),
            "pwd": sudo.get("pwd"),
            "tty": sudo.get("tty"),
            "reason": error,
        }
    elif type(ssh.get("event")) is str and ssh["event"] in SSHD_EVENTS:
        address = as_object(raw.get("source")).get("ip")
        record |= {"event": SSHD_EVENTS[ssh["event"]], "user": user, "address": address, "method": ssh.get("method")}
    return record
