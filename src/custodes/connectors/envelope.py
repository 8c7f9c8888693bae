"""Mapping vendor records to the event envelope (id, time, actor, action, target, outcome, src_ip, bytes).

The record itself is never changed. Fields that cannot be read become warnings on the event, so bad vendor
data is kept and visible instead of dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

from custodes.connectors import elastic, sentinel
from custodes.connectors import windows as win
from custodes.connectors.bounds import path_of, too_long
from custodes.connectors.textlogs import MACHINE_EVENTS, SYSLOG_PROGRAMS
from custodes.model import Event, LogSource, Outcome, as_object, stable_id
from custodes.sources import SourceSettings
from custodes.widths import EVENT_TEXT, LOGSOURCE_TEXT

Mapper = Callable[[dict[str, Any], SourceSettings, str], Event]
MAX_BIGINT = 2**63 - 1
"""The largest integer an integer column of the store holds (BIGINT on PostgreSQL, INTEGER on SQLite)."""


class FieldError(ValueError):
    """A field whose value cannot be stored; `field` is its dotted path in the record."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


_STRICT: ContextVar[bool] = ContextVar("strict_fields", default=False)


@contextmanager
def strict_fields() -> Iterator[None]:
    """Within the block, an unstorable envelope field raises FieldError instead of becoming a warning (for
    webhooks, whose sender can be told)."""
    token = _STRICT.set(True)
    try:
        yield
    finally:
        _STRICT.reset(token)


def whole_number(value: Any, maximum: int = MAX_BIGINT) -> int:
    """An integer from 0 to `maximum`, given as a JSON number or ASCII digits; ValueError otherwise (so
    Unicode digits such as "²", fractions, 1e308 and 2**63 are refused)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"{value!r} is not a whole number written in ASCII digits")
        value = int(text)
    if not isinstance(value, int):
        raise ValueError(f"{value!r} is not a number")
    if not 0 <= value <= maximum:
        raise ValueError(f"{value} is outside 0..{maximum}")
    return value


def dig(record: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (a literal key containing dots wins), or None."""
    if path in record:
        return record[path]
    node: Any = record
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def parse_time(value: Any) -> datetime:
    """Parse ISO 8601 (with Z or an offset; naive means UTC) or epoch seconds/milliseconds into UTC."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.replace(".", "", 1).isdigit():
            return parse_time(float(text))
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise ValueError(f"not a time: {value!r}")


def iso_millis(value: datetime) -> str:
    """A time as vendors' APIs take it: ISO 8601 in UTC with milliseconds and ``Z`` (the inverse of parse_time)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


class _Builder:
    """Collects envelope fields and warnings for one record."""

    def __init__(self, record: dict[str, Any], settings: SourceSettings, source: str) -> None:
        self.record = record
        self.settings = settings
        self.source = source
        self.warnings: list[str] = []

    def integer(self, path: str, value: Any) -> int | None:
        """A whole-number field (None when absent); an unstorable value is a warning, or under
        `strict_fields` a FieldError."""
        if value is None:
            return None
        try:
            return whole_number(value)
        except ValueError as exc:
            if _STRICT.get():
                raise FieldError(path, str(exc)) from None
            self.warnings.append(f"{path}: {exc}; dropped")
            return None

    def time(self, *paths: str) -> datetime:
        for path in paths:
            value = dig(self.record, path)
            if value is None:
                continue
            try:
                return parse_time(value)
            except (ValueError, OverflowError, OSError):
                self.warnings.append(f"{path}: unreadable time {value!r}; using ingestion time")
                break
        else:
            self.warnings.append(f"no time field ({', '.join(paths)}); using ingestion time")
        return datetime.now(UTC)

    def fits(self, name: str, value: str | None, limit: int) -> bool:
        """Whether a text field fits the store; one that does not is a warning (it is dropped), or under
        `strict_fields` a FieldError naming where it is in the record."""
        reason = None if value is None else too_long(value, limit, f"an event's {name}")
        if reason is None or value is None:
            return True
        path = path_of(self.record, value) or name
        if _STRICT.get():
            raise FieldError(path, reason)
        self.warnings.append(f"{path}: {reason}; {name} dropped")
        return False

    def event(self, vendor_id: Any, time: datetime, *, logsource: LogSource | None = None, **envelope: Any) -> Event:
        vendor = _text(vendor_id)
        ident = stable_id(self.source, self.record if vendor is None else vendor)
        for name, limit in EVENT_TEXT.items():
            if not self.fits(name, envelope.get(name), limit):
                envelope[name] = None
        if logsource is not None and not all(
            self.fits(name, getattr(logsource, name), limit) for name, limit in LOGSOURCE_TEXT.items()
        ):
            logsource = None
        return Event(
            id=ident,
            time=time,
            source=self.source,
            logsource=logsource or self.settings.logsource,
            raw=self.record,
            warnings=self.warnings,
            **envelope,
        )


def okta(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Okta System Log (LogEvent) records."""
    b = _Builder(record, settings, source)
    targets = record.get("target")
    target = None
    if isinstance(targets, list) and targets and isinstance(targets[0], dict):
        target = _text(targets[0].get("alternateId") or targets[0].get("id"))
    result = _text(dig(record, "outcome.result")) or ""
    outcome = {
        "SUCCESS": Outcome.SUCCESS,
        "ALLOW": Outcome.SUCCESS,
        "FAILURE": Outcome.FAILURE,
        "DENY": Outcome.FAILURE,
    }.get(result.upper(), Outcome.UNKNOWN)
    if record.get("eventType") is None:
        b.warnings.append("eventType missing")
    return b.event(
        record.get(ID_KEYS["okta"]),
        b.time("published"),
        actor=_text(dig(record, "actor.alternateId")),
        action=_text(record.get("eventType")),
        target=target,
        outcome=outcome,
        src_ip=_text(dig(record, "client.ipAddress")),
    )


CLOUDTRAIL_HIDDEN_USER = "HIDDEN_DUE_TO_SECURITY_REASONS"
"""The user name CloudTrail writes for a failed console sign-in under a name the account does not have."""
SDK_SESSION = re.compile(
    r"^(botocore-session-\d+|aws-sdk-[a-z]+-\d+|aws-go-sdk-\d+|[0-9a-f]{32}"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
    re.IGNORECASE,
)
"""Role session names an SDK or a task generates (boto3, the Java and Go SDKs; an ECS task's id, a UUID): a new one
per session, naming no one. A bare number is not among them: it may be a person's employee number."""


def cloudtrail_actor(identity: Any) -> str | None:
    """Who a CloudTrail `userIdentity` names: an IAM user's name; an assumed role's session name (an SSO user's
    address, an instance id), or the role as `role/<name>` when an SDK generated the session name
    (`botocore-session-1712345678`: a new entity per session otherwise); the root user as `root@<account>`; None for
    a failed console sign-in under a name the account does not have."""
    if not isinstance(identity, dict) or identity.get("userName") == CLOUDTRAIL_HIDDEN_USER:
        return None
    kind = identity.get("type")
    if kind == "IAMUser" and identity.get("userName"):
        return str(identity["userName"])
    arn = identity.get("arn")
    if kind == "AssumedRole" and isinstance(arn, str) and arn.count("/") >= 2:
        _, role, session = arn.rsplit("/", 2)
        return f"role/{role}" if SDK_SESSION.match(session) else session
    if kind == "Root":
        return f"root@{identity.get('accountId', 'unknown')}"
    return _text(identity.get("userName") or arn or identity.get("principalId"))


def cloudtrail(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """AWS CloudTrail records (from log files, LookupEvents' CloudTrailEvent, or EventBridge)."""
    b = _Builder(record, settings, source)
    params = record.get("requestParameters")
    target = None
    if isinstance(params, dict):
        target = _text(params.get("userName") or params.get("bucketName") or params.get("roleName"))
    resources = record.get("resources")
    if target is None and isinstance(resources, list) and resources and isinstance(resources[0], dict):
        target = _text(resources[0].get("ARN"))
    extra = record.get("additionalEventData")
    moved = (
        b.integer("additionalEventData.bytesTransferredOut", extra.get("bytesTransferredOut"))
        if isinstance(extra, dict)
        else None
    )
    return b.event(
        record.get(ID_KEYS["cloudtrail"]),
        b.time("eventTime", "@timestamp"),
        actor=cloudtrail_actor(record.get("userIdentity")),
        action=_text(record.get("eventName")),
        target=target,
        outcome=Outcome.FAILURE if record.get("errorCode") else Outcome.SUCCESS,
        src_ip=_text(record.get("sourceIPAddress")),
        bytes=moved,
    )


GENERIC_DEFAULTS = {
    "id": "id",
    "time": "@timestamp|timestamp|time|TimeGenerated|Timestamp",
    "actor": "user.name",
    "action": "event.action",
    "target": "target",
    "outcome": "event.outcome",
    "src_ip": "source.ip",
    "bytes": "bytes",
}


def generic(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Any JSON record, with envelope fields read from configured dotted paths (ECS names by default). Where the
    record holds a vendor's (`_vendor_event`: an Elastic integration's document, a Sentinel row), the actor is that
    record's, and so are the action, target, outcome, source address and bytes the paths find none of."""
    b = _Builder(record, settings, source)
    vendor = None if "actor" in settings.fields else _vendor_event(record, settings, source)

    def pick(name: str) -> Any:
        return _pick(record, _generic_paths(settings, name))

    def told(name: str) -> Any:
        """A field at its paths, else the vendor's record's where the record holds one and the source's `fields`
        do not say where it is."""
        found = pick(name)
        return getattr(vendor, name) if found is None and vendor is not None and name not in settings.fields else found

    outcome = told("outcome")
    if not isinstance(outcome, Outcome):
        text = (_text(outcome) or "").lower()
        outcome = Outcome(text) if text in {"success", "failure"} else Outcome.UNKNOWN
    return b.event(
        pick("id"),
        b.time(*_generic_paths(settings, "time").split("|")),
        actor=_text(pick("actor")) if vendor is None else vendor.actor,
        action=_text(told("action")),
        target=_text(told("target")),
        outcome=outcome,
        src_ip=_text(told("src_ip")),
        bytes=b.integer(_generic_paths(settings, "bytes"), told("bytes")),
    )


def _vendor_event(record: dict[str, Any], settings: SourceSettings, source: str) -> Event | None:
    """The vendor's record an ECS document of Elastic's integrations was made from (`elastic.vendor_record`), or a
    Sentinel row holds (`sentinel.vendor_record`), as that vendor's format maps it; None where it is neither. Its
    actor is the document's: an assumed role's session rather than the role, a whole address rather than the part
    before its `@` that Elastic puts in `user.name`, a Sentinel row's user, so that a person's events are routed,
    matched and joined by the name scoring reads."""
    event = record.get("event")
    found = elastic.vendor_record(record, event) if isinstance(event, dict) else sentinel.vendor_record(record)
    if found is None or found[1] is None:
        return None
    return MAPPERS[found[1]](found[0], settings, source)


def _generic_paths(settings: SourceSettings, name: str) -> str:
    """Where a generic record holds envelope field `name`: the source's `fields`, else the ECS default."""
    return settings.fields.get(name, GENERIC_DEFAULTS[name])


def _pick(record: dict[str, Any], paths: str) -> Any:
    """The value at the first of `paths` (dotted, `|`-separated) that the record holds, not null."""
    for path in paths.split("|"):
        value = dig(record, path)
        if value is not None:
            return value
    return None


def _first(value: Any) -> Any:
    """The first element of a list, the value itself otherwise."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _outcome(value: Any, success: set[str], failure: set[str]) -> Outcome:
    text = (_text(value) or "").lower()
    if text in success:
        return Outcome.SUCCESS
    if text in failure:
        return Outcome.FAILURE
    return Outcome.UNKNOWN


def _body(record: dict[str, Any]) -> dict[str, Any]:
    """The Graph object of an Entra ID record: `properties` in the diagnostic-settings shape, else the record."""
    properties = record.get("properties")
    return properties if isinstance(properties, dict) else record


def entra_signin(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Entra ID sign-ins, as Microsoft Graph returns them or as diagnostic settings export them."""
    b = _Builder(record, settings, source)
    body = _body(record)
    code = dig(body, "status.errorCode")
    if code is None:
        code = record.get("resultType")
    outcome = Outcome.UNKNOWN if code is None else Outcome.SUCCESS if str(code) == "0" else Outcome.FAILURE
    return b.event(
        body.get("id") or record.get("correlationId"),
        b.time("createdDateTime", "properties.createdDateTime", "time"),
        actor=_text(body.get("userPrincipalName") or body.get("servicePrincipalName") or body.get("userId")),
        action="sign-in",
        target=_text(body.get("resourceDisplayName") or body.get("appDisplayName")),
        outcome=outcome,
        src_ip=_text(body.get("ipAddress") or record.get("callerIpAddress")),
    )


def entra_audit(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Entra ID directory audit records, as Microsoft Graph returns them or as diagnostic settings export them."""
    b = _Builder(record, settings, source)
    body = _body(record)
    initiated = as_object(body.get("initiatedBy"))
    user, app = as_object(initiated.get("user")), as_object(initiated.get("app"))
    target = _first(body.get("targetResources"))
    target_name = None
    if isinstance(target, dict):
        target_name = _text(target.get("userPrincipalName") or target.get("displayName") or target.get("id"))
    return b.event(
        body.get("id") or record.get("correlationId"),
        b.time("activityDateTime", "properties.activityDateTime", "time"),
        actor=_text(user.get("userPrincipalName") or app.get("displayName") or app.get("servicePrincipalName")),
        action=_text(body.get("activityDisplayName") or record.get("operationName")),
        target=target_name,
        outcome=_outcome(body.get("result"), {"success"}, {"failure", "timeout"}),
        src_ip=_text(user.get("ipAddress") or record.get("callerIpAddress")),
    )


def kube_audit(record: dict[str, Any]) -> dict[str, Any] | None:
    """The Kubernetes audit event (`audit.k8s.io`) an AKS diagnostic record of category `kube-audit` or
    `kube-audit-admin` carries as JSON text in `properties.log`; None for any other record, or text that is not an
    object."""
    if not str(record.get("category") or "").startswith("kube-audit"):
        return None
    text = dig(record, "properties.log")
    try:
        event = json.loads(text) if isinstance(text, str) else text
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


def azure_activity(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Azure Activity log records (diagnostic-settings export; the REST shape's `{value: ...}` names also work); an
    AKS `kube-audit` record's actor is its Kubernetes event's user."""
    b = _Builder(record, settings, source)
    operation = record.get("operationName")
    if isinstance(operation, dict):
        operation = operation.get("value")
    result = record.get("resultType") or dig(record, "status.value")
    return b.event(
        record.get(ID_KEYS["azure_activity"]),
        b.time("time", "eventTimestamp"),
        actor=_text(
            record.get("caller")
            or dig(record, "identity.claims.name")
            or dig(kube_audit(record) or {}, "user.username")
        ),
        action=_text(operation),
        target=_text(record.get("resourceId")),
        outcome=_outcome(result, {"success", "succeeded", "accept"}, {"failure", "failed"}),
        src_ip=_text(record.get("callerIpAddress") or dig(record, "httpRequest.clientIpAddress")),
    )


def gcp_audit(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Google Cloud audit log LogEntry records (protoPayload is an AuditLog)."""
    b = _Builder(record, settings, source)
    found = record.get("protoPayload")
    payload: dict[str, Any] = found if isinstance(found, dict) else {}
    status = payload.get("status")
    if isinstance(status, dict):
        outcome = Outcome.SUCCESS if not status.get("code") else Outcome.FAILURE
    else:
        outcome = Outcome.UNKNOWN
    if not payload:
        b.warnings.append("protoPayload missing")
    return b.event(
        record.get(ID_KEYS["gcp_audit"]),
        b.time("timestamp", "receiveTimestamp"),
        actor=_text(dig(payload, "authenticationInfo.principalEmail")),
        action=_text(payload.get("methodName")),
        target=_text(payload.get("resourceName")),
        outcome=outcome,
        src_ip=_text(dig(payload, "requestMetadata.callerIP")),
    )


def google_workspace(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Google Workspace Reports API activities; the service is `google_workspace.<applicationName>` unless set."""
    b = _Builder(record, settings, source)
    application = _text(dig(record, "id.applicationName"))
    logsource = settings.logsource
    if settings.service is None and application:
        logsource = LogSource(logsource.product or "gcp", f"google_workspace.{application}", logsource.category)
    first = _first(record.get("events"))
    name = first.get("name") if isinstance(first, dict) else record.get("name")
    unique = dig(record, "id.uniqueQualifier")
    return b.event(
        None if unique is None else f"{unique}:{dig(record, 'id.time')}",
        b.time("id.time"),
        logsource=logsource,
        actor=_text(dig(record, "actor.email") or dig(record, "actor.profileId")),
        action=_text(name),
        src_ip=_text(record.get("ipAddress")),
    )


def github(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """GitHub organisation and enterprise audit log events."""
    b = _Builder(record, settings, source)
    return b.event(
        record.get(ID_KEYS["github"]),
        b.time("@timestamp", "created_at"),
        actor=_text(record.get("actor")),
        action=_text(record.get("action")),
        target=_text(record.get("user") or record.get("repo") or record.get("repository") or record.get("org")),
        src_ip=_text(record.get("actor_ip")),
    )


def m365(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Microsoft 365 unified audit log records (Office 365 Management Activity API)."""
    b = _Builder(record, settings, source)
    return b.event(
        record.get(ID_KEYS["m365"]),
        b.time("CreationTime"),
        actor=_text(record.get("UserId")),
        action=_text(record.get("Operation")),
        target=_text(record.get("ObjectId")),
        outcome=_outcome(
            record.get("ResultStatus"),
            {"succeeded", "success", "true", "partiallysucceeded"},
            {"failed", "failure", "false"},
        ),
        src_ip=_text(record.get("ClientIP") or record.get("ActorIpAddress")),
    )


_AUDIT_MSG = re.compile(r"audit\((?P<time>\d+(?:\.\d+)?):(?P<serial>\d+)\)")


def audit_time(record: dict[str, Any]) -> datetime | None:
    """The time of an auditd record, from its ``msg=audit(<epoch>:<serial>)``; None without one (or with one no
    calendar holds)."""
    found = _AUDIT_MSG.search(_text(record.get("msg")) or "")
    try:
        return None if found is None else datetime.fromtimestamp(float(found["time"]), UTC)
    except (ValueError, OverflowError, OSError):
        return None


_AUDIT_UNSET = frozenset({"4294967295", "-1", "unset"})


def _audit_account(record: dict[str, Any]) -> str | None:
    """The account a login or authentication is for (``acct``); None for auditd's placeholders (``?``,
    ``(unknown)``, ``(invalid user)``)."""
    value = _text(record.get("acct"))
    return value if value and value != "?" and not value.startswith("(") else None


def audit_actor(record: dict[str, Any], *, person: bool = False) -> str | None:
    """Who acted in an auditd record: the account a ``USER_LOGIN`` logs in, else the login user (the enriched
    format's ``AUID`` name, else a set ``auid``), else the account a login or authentication is for (``acct``),
    else the process's user; for a `person` (behaviour scoring) not the process's user: a daemon's is nobody's."""
    account = _audit_account(record)
    if record.get("type") == "USER_LOGIN" and account:
        return account
    for key in ("AUID", "auid"):
        value = _text(record.get(key))
        if value and value not in _AUDIT_UNSET:
            return value
    if person or account:
        return account
    return _text(record.get("UID") or record.get("uid"))


def auditd(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Linux auditd records as key/value objects; time and serial come from `msg=audit(time:serial)`. The actor
    is the login user (see `audit_actor`), the action the record type (``USER_CMD``, ``SYSCALL``, ...), the
    target the command run, else the file, account or executable; the outcome ``res``/``success``."""
    b = _Builder(record, settings, source)
    found = _AUDIT_MSG.search(_text(record.get("msg")) or "")
    stamped = audit_time(record)
    if found is not None and stamped is not None:
        time = stamped
        vendor: Any = f"{found['time']}:{found['serial']}:{record.get('type')}"
    else:
        time = b.time("@timestamp", "time", "timestamp")
        vendor = None
    success = _text(record.get("success"))
    target = record.get("cmd") or record.get("name") or record.get("acct") or record.get("exe")
    return b.event(
        vendor,
        time,
        actor=audit_actor(record),
        action=_text(record.get("type")),
        target=_text(target),
        outcome=_outcome(success, {"yes"}, {"no"}),
        src_ip=_text(record.get("addr")) if record.get("addr") not in (None, "?") else None,
    )


def _host_ip(value: Any) -> str | None:
    """The address of ``host:port`` or ``[v6]:port``."""
    text = _text(value)
    if not text:
        return None
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def teleport_outcome(record: dict[str, Any]) -> Outcome:
    """A Teleport event's outcome: its `success`, else its code (ending in ``I`` succeeded, ``W``/``E`` failed)."""
    code = _text(record.get("code")) or ""
    if record.get("success") is False or code[-1:] in ("W", "E"):
        return Outcome.FAILURE
    if record.get("success") is True or code[-1:] == "I":
        return Outcome.SUCCESS
    return Outcome.UNKNOWN


def teleport(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Teleport audit events; ``session.start``/``session.end``/``session.upload`` carry the session id
    (``sid``) and the upload its recording's ``url``; the outcome `teleport_outcome`."""
    b = _Builder(record, settings, source)
    if record.get("event") is None:
        b.warnings.append("event missing")
    outcome = teleport_outcome(record)
    target = record.get("server_hostname") or record.get("db_name") or record.get("app_name") or record.get("url")
    return b.event(
        record.get(ID_KEYS["teleport"]),
        b.time("time", "ei"),
        actor=_text(record.get("user")),
        action=_text(record.get("event")),
        target=_text(target),
        outcome=outcome,
        src_ip=_host_ip(dig(record, "addr.remote")),
    )


VAULT_PEOPLE = frozenset({"ldap", "oidc", "userpass", "okta", "radius", "saml", "github", "kerberos"})
"""Vault auth methods a person logs in with: the token's display name is ``<method>-<login>``."""
VAULT_MACHINES = frozenset(
    {"approle", "kubernetes", "aws", "gcp", "azure", "cert", "jwt", "token", "root", "alicloud", "oci", "cf"}
)
"""Vault auth methods (and the root token) of machines and pipelines: their tokens are named ``vault/<display
name>``, a service by default (`scoring.identities.service_patterns`)."""
_VAULT_LOGIN = re.compile(r"^auth/.+/login/(?P<name>[^/]+)$")


def vault_actor(record: dict[str, Any]) -> str | None:
    """Who acted in a Vault audit entry: the login the token's metadata names (``username``, or ``email`` as an
    OIDC role maps it), else the display name without the prefix of a method people log in with, a machine's
    token as ``vault/<display name>``; for a login refused, the name its path carries
    (``auth/userpass/login/<name>``). None when nothing names anyone."""
    auth = as_object(record.get("auth")) or as_object(dig(record, "response.auth"))
    metadata = as_object(auth.get("metadata"))
    for key in ("username", "email"):
        if name := _text(metadata.get(key)):
            return name
    display = _text(auth.get("display_name"))
    if display:
        method, _, login = display.partition("-")
        if method in VAULT_PEOPLE and login:
            return login
        return f"vault/{display}" if method in VAULT_MACHINES else display
    found = _VAULT_LOGIN.match(_text(dig(record, "request.path")) or "")
    return found["name"] if found else None


def vault(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """HashiCorp Vault audit device records (request and response entries share ``request.id``; tokens and
    values are HMAC-hashed by Vault). The action is the operation, the target the path."""
    b = _Builder(record, settings, source)
    request = as_object(record.get("request"))
    kind = _text(record.get("type")) or "unknown"
    if not request:
        b.warnings.append("request missing")
    actor = vault_actor(record) or dig(record, "auth.entity_id")
    outcome = {"response": Outcome.SUCCESS}.get(kind, Outcome.UNKNOWN)
    if record.get("error"):
        outcome = Outcome.FAILURE
    vendor = f"{kind}:{request['id']}" if request.get("id") else None
    return b.event(
        vendor,
        b.time("time"),
        actor=_text(actor),
        action=_text(request.get("operation")),
        target=_text(request.get("path")),
        outcome=outcome,
        src_ip=_text(request.get("remote_address")),
    )


def sudo(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Syslog lines as the file tail parses them: sudo's (event: command, denied, session_open, session_close; the
    target is the account run as, the I/O log id ``tsid`` stays in the record), sshd's logins (``sshd.login``,
    ``sshd.login_failed``: the account and the address it came from), su's switches (``su.switch``,
    ``su.switch_failed``: the account switched from, the target the one run as) and PAM sessions, a removable disk
    the kernel attached (``kernel.removable_attached``: no actor), a session opened or closed at the machine itself
    (``login.console_open``, ``login.console_close``: its account), any other line ``sudo.other``."""
    b = _Builder(record, settings, source)
    kind = _text(record.get("event"))
    failed = ("denied", "login_failed", "switch_failed")
    unknown = kind in (None, "other")
    outcome = Outcome.FAILURE if kind in failed else Outcome.UNKNOWN if unknown else Outcome.SUCCESS
    said = _text(record.get("program"))
    program = MACHINE_EVENTS.get(kind or "") or (said if said in SYSLOG_PROGRAMS and not unknown else "sudo")
    return b.event(
        None,
        b.time("time"),
        actor=_text(record.get("user")),
        action=f"{program}.{kind}" if kind else None,
        target=_text(record.get("run_as")),
        outcome=outcome,
        src_ip=_text(record.get("address")),
    )


def windows(record: dict[str, Any], settings: SourceSettings, source: str) -> Event:
    """Windows event log records, as evtx JSON or flat (Splunk's Windows add-on, Sentinel's `SecurityEvent`, NXLog):
    the actor is the account logged on for a logon, logoff, lock or refusal, else the account that acted
    (`windows.security_actor`); the action the event id; the target the machine for a logon, else the account,
    group or object acted on; the outcome an audit failure's (a refused logon, 4625, always fails)."""
    b = _Builder(record, settings, source)
    flat = win.security_fields(record) or {}
    code = win.event_code(flat)
    machine = win.computer(flat)
    serial = _text(flat.get("EventRecordID") or flat.get("RecordNumber"))
    vendor = f"{machine}:{flat.get('Channel') or flat.get('LogName') or ''}:{serial}" if serial and machine else None
    stamp = win.time_value(record)
    if stamp is None:
        time = b.time("@timestamp")
    else:
        try:
            time = parse_time(stamp)
        except (ValueError, OverflowError, OSError):
            b.warnings.append(f"time: unreadable time {stamp!r}; using ingestion time")
            time = datetime.now(UTC)
    logon = code in win.LOGON_EVENTS
    target = machine if logon else flat.get("TargetUserName") or flat.get("ObjectName")
    failed = code == "4625" or win.audit_failure(flat)
    address = _text(flat.get("IpAddress") or flat.get("Source_Network_Address") or flat.get("src_ip"))
    return b.event(
        vendor,
        time,
        actor=win.security_actor(flat, code) if code else None,
        action=code or None,
        target=_text(target),
        outcome=Outcome.FAILURE if failed else Outcome.SUCCESS if code else Outcome.UNKNOWN,
        src_ip=None if address in (None, "-", "::1", "127.0.0.1") else address,
    )


MAPPERS: dict[str, Mapper] = {
    "okta": okta,
    "cloudtrail": cloudtrail,
    "entra_signin_graph": entra_signin,
    "entra_signin_diagnostic": entra_signin,
    "entra_audit_graph": entra_audit,
    "entra_audit_diagnostic": entra_audit,
    "azure_activity": azure_activity,
    "gcp_audit": gcp_audit,
    "google_workspace": google_workspace,
    "github": github,
    "m365": m365,
    "auditd": auditd,
    "teleport": teleport,
    "vault": vault,
    "sudo": sudo,
    "windows": windows,
    "generic": generic,
}


ID_KEYS: Final = {
    "okta": "uuid",
    "cloudtrail": "eventID",
    "azure_activity": "eventDataId",
    "gcp_audit": "insertId",
    "github": "_document_id",
    "m365": "Id",
    "teleport": "uid",
}
"""The key of the vendor's own event id, for formats where it is one top-level key (the others derive it)."""

VARYING_LOGSOURCE: Final = frozenset({"google_workspace"})
"""Formats whose events' logsource depends on the record (elsewhere it is the source's `logsource`)."""


def mapper_for(settings: SourceSettings) -> Mapper:
    """The mapper for a source's format; ValueError names the known formats."""
    try:
        return MAPPERS[settings.format]
    except KeyError:
        raise ValueError(f"unknown source format {settings.format!r} (known: {', '.join(MAPPERS)})") from None


def event_id(record: Any, settings: SourceSettings, source: str) -> str:
    """The id `to_event` gives the record's event, read without mapping the rest where the format names its key."""
    if not isinstance(record, dict):
        return to_event(record, settings, source).id
    if settings.format == "generic":
        vendor = _text(_pick(record, _generic_paths(settings, "id")))
    elif (key := ID_KEYS.get(settings.format)) is not None:
        vendor = _text(record.get(key))
    else:
        return to_event(record, settings, source).id
    return stable_id(source, record if vendor is None else vendor)


def to_event(record: Any, settings: SourceSettings, source: str) -> Event:
    """Map one decoded JSON value to an Event; a non-object value is kept, wrapped, with a warning."""
    if isinstance(record, dict):
        return mapper_for(settings)(record, settings, source)
    event = generic({"value": record}, settings, source)
    event.warnings.append(f"record is a JSON {type(record).__name__}, not an object")
    return event
