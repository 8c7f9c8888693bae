"""Settings: one YAML file, environment overrides, and secret references resolved at load time.

Environment overrides: ``CUSTODES_<SECTION>__<KEY>=value`` sets ``section.key`` (values are parsed as YAML
scalars, so ``true`` and ``8080`` keep their types); ``CUSTODES_DATABASE_URL`` is a shortcut for
``database.url``. Secrets are never written in the file itself: a secret field holds a reference,
``env:NAME`` or ``file:/path``, resolved when the settings load.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema
from ruamel.yaml import YAML

from custodes.detections.scoring.catalog import BY_NAME, FAMILIES
from custodes.durations import MAX_DAYS, MAX_HOURS
from custodes.errors import ConfigError, CustodesError, Location, Problem
from custodes.markup import Format as MarkupFormat
from custodes.model import Severity
from custodes.redaction import REDACTOR
from custodes.sources import DATABASE_URL_ENV, DEFAULT_SOURCES, ENV_PREFIX, SourceSettings, config_file, is_override
from custodes.yamlfile import YamlDocument, load_yaml

MIN_SECRET_CHARS = 16
"""The shortest webhook secret or API token accepted: an empty or short one would let anyone in."""
ASCII_WHITESPACE = " \t\n\r\x0b\x0c"
"""What is stripped from presented credentials: ASCII whitespace only, never Unicode spaces (U+00A0, ...)."""
SHIPPED = Path(__file__).resolve().parent / "content"
"""The rule pack, playbooks and hunts Custodes ships (package data; the checkout's top-level detections/,
playbooks/ and hunts/ folders, which SOC engineers edit, are what the package carries)."""


class Secret:
    """A resolved secret value that never shows itself in repr, str, logs or serialised output."""

    __slots__ = ("_reference", "_value")

    def __init__(self, value: str, reference: str) -> None:
        self._value = value
        self._reference = reference

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it (a header, a signature)."""
        return self._value

    @property
    def reference(self) -> str:
        """Where the secret came from (``env:NAME``), safe to show."""
        return self._reference

    def __repr__(self) -> str:
        return f"Secret({self._reference})"

    __str__ = __repr__

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda secret: secret.reference),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, _schema: CoreSchema, _handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "pattern": "^(env|file):.+", "description": "secret reference"}

    @classmethod
    def _validate(cls, value: object, info: ValidationInfo) -> Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ValueError("a secret must be a reference string, 'env:NAME' or 'file:/path'")
        context = info.context if isinstance(info.context, dict) else {}
        return resolve_secret(value, context.get("environ"))


def strong_secret(secret: Secret) -> Secret:
    """A secret that authenticates callers: refused (ValueError naming its reference) when it is shorter than
    `MIN_SECRET_CHARS` once ASCII whitespace is stripped, or when its ends carry whitespace no sender could match."""
    value = secret.reveal()
    if len(value.strip(ASCII_WHITESPACE)) < MIN_SECRET_CHARS:
        raise ValueError(
            f"secret {secret.reference} is {'empty' if not value.strip(ASCII_WHITESPACE) else 'too short'}: "
            f"use at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`)"
        )
    if value != value.strip(ASCII_WHITESPACE) or value != value.strip():
        raise ValueError(f"secret {secret.reference} begins or ends with whitespace")
    return secret


def resolve_secret(reference: str, environ: Mapping[str, str] | None = None) -> Secret:
    """Resolve ``env:NAME`` or ``file:/path``; raise ValueError saying what is missing, never the value."""
    scheme, _, name = reference.partition(":")
    if scheme == "env" and name:
        value = (os.environ if environ is None else environ).get(name)
        if value is None:
            raise ValueError(f"secret reference {reference!r}: environment variable {name} is not set")
        return Secret(value, reference)
    if scheme == "file" and name:
        try:
            return Secret(Path(name).read_text(encoding="utf-8").strip(), reference)
        except OSError as exc:
            raise ValueError(f"secret reference {reference!r}: cannot read file ({exc.strerror})") from None
    raise ValueError("a secret must be a reference, 'env:NAME' or 'file:/path', never the value itself")


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors, and so are infinite or NaN numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


STORE_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
"""The URL schemes a store may be named by, each with the asynchronous driver the store opens it with."""


class DatabaseSettings(Section):
    """Where the store lives: a SQLite file by default, PostgreSQL by URL."""

    url: str = "sqlite+aiosqlite:///var/custodes.db"
    schema_name: str | None = Field(default=None, description="PostgreSQL schema (search_path) to use")
    event_retention_days: int | None = Field(default=None, ge=1, description="delete events older than this")
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="SQLite WAL durability: FULL survives power loss; NORMAL survives a crashed process but may lose "
        "the last commits on power loss, for more throughput",
    )
    sqlite_cache_mib: int = Field(
        default=64,
        ge=1,
        le=65_536,
        description="SQLite page cache per connection, in MiB (SQLite's own default is 2): the event tables' random "
        "keys touch pages all over them",
    )
    echo: bool = False
    audit_key: Secret | None = Field(
        default=None,
        description="HMAC key of the audit chain (secret reference, kept outside the store); without it the chain "
        "is plain SHA-256, which anyone able to write the store could recompute",
    )
    audit_checkpoint: str = Field(
        default="var/audit-checkpoints.jsonl",
        min_length=1,
        description="file outside the store where `custodes audit verify` appends the chain's head each time",
    )

    audit_checkpoint_s3: S3EvidenceStore | None = Field(
        default=None,
        description="also checkpoint the head as objects in an S3 bucket with Object Lock (prefix e.g. audit/)",
    )

    @field_validator("url", mode="after")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """`sqlite:///...` and `postgresql://...` (or `postgres://`) name the store with the driver it is opened
        with; a scheme or driver Custodes does not open is refused by its scheme alone (the URL may hold a
        password)."""
        scheme, found, rest = value.strip().partition("://")
        driver = STORE_SCHEMES.get(scheme.lower()) if found else None
        if driver is None:
            named = f"scheme {scheme!r}" if found else "a URL without a scheme"
            raise ValueError(
                f"{named} is not a store Custodes opens: write sqlite:///path/to/file.db or "
                "postgresql://user@host:5432/db (opened with aiosqlite and asyncpg)"
            )
        return f"{driver}://{rest}"

    @field_validator("audit_key", mode="after")
    @classmethod
    def _strong_key(cls, key: Secret | None) -> Secret | None:
        return None if key is None else strong_secret(key)


SuppressValue = str | int | float | bool | None


class RuleOverride(Section):
    """Local changes to one Sigma rule, by rule id: turn it off, change its level, drop matches."""

    enabled: bool = True
    level: Literal["informational", "low", "medium", "high", "critical"] | None = None
    suppress: list[dict[str, SuppressValue | list[SuppressValue]]] = Field(
        default_factory=list,
        description="conditions that drop a match: each maps fields to a value or a list of values; "
        "a match is dropped when every field of one condition has one of its values",
    )


class CorrelationSettings(Section):
    """Bounds on the state Sigma correlation rules keep."""

    max_groups: int = Field(default=10_000, ge=1, description="groups kept per correlation rule")
    max_events_per_group: int = Field(default=1_000, ge=1, description="events kept per group")


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _weekdays() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


class EnrichmentSettings(Section):
    """Working hours behind `custodes.off_hours` in the rules' enrichment namespace (docs/rules.md)."""

    start_hour: int = Field(default=8, ge=0, le=23, description="local hour working hours start (inclusive)")
    end_hour: int = Field(default=18, ge=1, le=24, description="local hour working hours end (exclusive)")
    working_days: list[Weekday] = Field(default_factory=_weekdays, description="days with working hours")

    @model_validator(mode="after")
    def _hours_in_order(self) -> EnrichmentSettings:
        if self.start_hour >= self.end_hour:
            raise ValueError("start_hour must be before end_hour")
        return self


class IngestSettings(Section):
    """The event times accepted as stated: a record outside the window is kept with its ingestion time and a warning."""

    max_future_skew_hours: float = Field(
        default=24.0, ge=0, le=MAX_HOURS, description="accept times at most this far ahead"
    )
    earliest_time: datetime = Field(
        default=datetime(1990, 1, 1, tzinfo=UTC), description="accept times from this instant on"
    )
    max_hold_hours: float = Field(
        default=2.0,
        ge=0,
        le=MAX_HOURS,
        description="a live source lagging behind the newest event time holds scoring's dates open at most this long",
    )

    @field_validator("earliest_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DetectionSettings(Section):
    """Where Sigma rules come from, how they are adjusted locally and how findings are deduplicated."""

    rules: list[Path] = Field(
        default_factory=lambda: [SHIPPED / "detections" / "rules"],
        description="Sigma rule files and folders (default: the rule pack Custodes ships)",
    )
    dedup_window_seconds: int = Field(default=3600, ge=0)
    placeholders: dict[str, list[str | int | float]] = Field(
        default_factory=dict, description="values for %name% placeholders of rules using |expand"
    )
    overrides: dict[str, RuleOverride] = Field(default_factory=dict, description="by rule id or name")
    correlation: CorrelationSettings = Field(default_factory=CorrelationSettings)
    enrichment: EnrichmentSettings = Field(default_factory=EnrichmentSettings)


class PlaybookSettings(Section):
    """Where playbooks come from, the secrets they may reference, and the engine's guardrails."""

    paths: list[Path] = Field(
        default_factory=lambda: [SHIPPED / "playbooks"],
        description="playbook files and folders (default: the playbooks Custodes ships)",
    )
    secrets: dict[str, Secret] = Field(
        default_factory=dict, description="name -> secret reference; `{{ secrets.NAME }}` in playbooks"
    )
    max_destructive_per_hour: int = Field(
        default=20, ge=0, description="destructive action calls allowed per rolling hour, across all runs"
    )
    max_runs_per_hour: int = Field(
        default=100,
        ge=0,
        description="runs a playbook's findings and webhook records start in any rolling hour (0: no cap); later "
        "starts wait in the outbox until the hour allows them; a playbook's own max_runs_per_hour overrides it",
    )
    heartbeat_seconds: float = Field(default=5.0, gt=0, description="how often a worker refreshes its runs")
    stale_after_seconds: float = Field(
        default=60.0, gt=0, description="a running run without a heartbeat for this long is resumed by the reaper"
    )
    max_resumes: int = Field(default=3, ge=0, description="resumptions after which the reaper fails a run")


AuthScheme = Literal["hmac", "bearer", "header", "url_token", "client_state"]
ReceiverKind = Literal["generic", "splunk", "kibana", "okta_event_hook", "graph"]
SCHEMES_BY_KIND: dict[str, tuple[str, ...]] = {
    "generic": ("hmac", "bearer"),
    "splunk": ("hmac", "bearer", "url_token"),
    "kibana": ("bearer", "header", "hmac"),
    "okta_event_hook": ("header",),
    "graph": ("client_state",),
}


DEFAULT_RECEIVER_SOURCES = {"okta_event_hook": "okta", "graph": "graph"}
"""The source a receiver of these kinds reads its records as when it names none."""


class ReceiverAuth(Section):
    """How a receiver authenticates its sender. The secret is always a reference."""

    scheme: AuthScheme = Field(description="hmac, bearer, header, url_token (with allow_from) or client_state")
    secret: Secret
    header: str = Field(default="Authorization", description="header carrying the secret (scheme header)")
    allow_from: list[IPv4Network | IPv6Network] = Field(default_factory=list, description="sender networks (url_token)")

    @field_validator("secret", mode="after")
    @classmethod
    def _strong(cls, secret: Secret) -> Secret:
        return strong_secret(secret)

    tolerance_seconds: int = Field(default=300, ge=1, le=3600, description="hmac replay window")

    @model_validator(mode="after")
    def _url_token_needs_networks(self) -> ReceiverAuth:
        if self.scheme == "url_token" and not self.allow_from:
            raise ValueError("a token in the URL is never enough alone: add allow_from with the sender's networks")
        return self


class ReceiverSettings(Section):
    """A webhook receiver at POST /webhooks/<name>."""

    kind: ReceiverKind
    auth: ReceiverAuth
    source: str | None = Field(default=None, description="source of the raw records it receives")
    root: str | None = Field(default=None, description="generic: dotted path to the records in the body")
    alert_fields: dict[str, str] = Field(
        default_factory=dict,
        description="generic: treat records as alerts; id, rule, title, severity, entity, time -> dotted paths",
    )
    entity_fields: list[str] = Field(default_factory=list, description="splunk: result fields naming the person")

    @property
    def record_source(self) -> str | None:
        """The source its raw records are read as: `source`, else the kind's own (okta hooks, Graph)."""
        return self.source or DEFAULT_RECEIVER_SOURCES.get(self.kind)

    @model_validator(mode="after")
    def _scheme_fits_kind(self) -> ReceiverSettings:
        allowed = SCHEMES_BY_KIND[self.kind]
        if self.auth.scheme not in allowed:
            raise ValueError(
                f"a {self.kind} receiver authenticates with {' or '.join(allowed)}, not {self.auth.scheme}"
            )
        return self


ROLE_PATTERN = "^(viewer|analyst|approver|admin|privacy_officer|legal)$"
"""The roles a token or a single sign-on group grants."""


class ApiToken(Section):
    """A bearer token for the REST API and the role it grants."""

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\s:]+$", description="who the token is (approvals)")
    token: Secret
    role: str = Field(default="viewer", pattern=ROLE_PATTERN)

    @field_validator("token", mode="after")
    @classmethod
    def _strong(cls, token: Secret) -> Secret:
        return strong_secret(token)


class ServerSettings(Section):
    """The HTTP service."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_json_depth: int = Field(default=64, ge=2, le=1000)
    api_tokens: list[ApiToken] = Field(default_factory=list)
    ingest_queue_records: int = Field(default=20_000, ge=1, description="pending webhook records before 429")
    ingest_batch_records: int = Field(default=2_000, ge=1, description="records committed per transaction")
    max_connections: int = Field(
        default=1_000, ge=1, description="open connections; more are answered 503 and closed (keep below ulimit -n)"
    )
    idle_timeout_seconds: float = Field(
        default=60.0, gt=0, description="close a connection with no request under way and no byte of a new one"
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="close a connection whose request headers are not complete this long after their first byte",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="close a connection whose request body is not complete this long after its headers",
    )
    session_secret: Secret | None = Field(
        default=None,
        description="secret reference signing console sessions; unset: a random key per process (sessions end "
        "when it restarts and are not shared between replicas)",
    )


class OktaConnection(Section):
    """An Okta org the responder acts on."""

    base_url: str
    token: Secret


class EntraConnection(Section):
    """An Entra ID tenant the responder acts on through Microsoft Graph (an app registration, client credentials)."""

    tenant_id: str
    client_id: str
    client_secret: Secret = Field(description="secret reference")
    graph_base_url: str = Field(default="https://graph.microsoft.com", description="Graph's base URL (tests)")
    login_endpoint: str | None = Field(
        default=None, description="send msal's requests for the real authority to this base URL (tests, a proxy)"
    )


class NotifyChannel(Section):
    """A chat incoming webhook (Slack, Teams, ...). Its URL embeds a credential, so it is a secret reference.
    Without a URL, messages to the channel are written to the service's log and kept in the run's step output."""

    url: Secret | None = None
    format: MarkupFormat = Field(
        default="slack",
        description="the markup the chat renders in a message's text (slack, teams or plain): values a playbook's "
        "expressions put into `text` are escaped for it, so they show as written",
    )


DEFAULT_CHANNELS = {"soc": NotifyChannel()}
"""The channel the shipped playbooks notify: it logs until `responder.channels.soc.url` is configured."""


class SmtpConnection(Section):
    """The mail relay `notify.email` submits through (STARTTLS when the server offers it, unless `tls` is off)."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    sender: str = Field(description="the From address")
    username: str | None = None
    password: Secret | None = Field(default=None, description="secret reference")
    starttls: bool = Field(default=True, description="upgrade with STARTTLS when the server offers it")


class JiraConnection(Section):
    """A Jira Cloud site `ticket.jira_create` files issues in (basic auth: account email + API token)."""

    base_url: str
    email: Secret = Field(description="secret reference to the account's email address")
    api_token: Secret = Field(description="secret reference to the API token")
    project: str = Field(description="default project key, e.g. SEC")
    issue_type: str = "Task"


class ServiceNowConnection(Section):
    """A ServiceNow instance `ticket.servicenow_create` opens incidents in (basic auth)."""

    base_url: str
    username: Secret = Field(description="secret reference")
    password: Secret = Field(description="secret reference")


class S3Connection(Section):
    """How to reach S3: region, endpoint and keys (secret references; without them the AWS default chain)."""

    region: str = "us-east-1"
    endpoint_url: str | None = Field(default=None, description="for S3-compatible stores and tests")
    access_key_id: Secret | None = Field(default=None, description="secret reference (default: AWS chain)")
    secret_access_key: Secret | None = Field(default=None, description="secret reference (default: AWS chain)")


class S3EvidenceStore(S3Connection):
    """An S3 bucket with Object Lock enabled, where evidence bundles are written immutable."""

    bucket: str
    prefix: str = "evidence/"
    retention_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "COMPLIANCE"
    retention_days: int = Field(default=365, ge=1)
    legal_hold: bool = Field(default=False, description="also place a legal hold on every object")


class SiemEvidenceSource(Section):
    """A SIEM that `evidence.collect` also queries for the entity's records in the window, through one of the
    configured ``elasticsearch`` or ``splunk`` connectors (its hosts, credentials, index or search)."""

    connector: str = Field(description="name of an elasticsearch or splunk entry under connectors:")
    entity_fields: list[Annotated[str, Field(pattern=r"^[A-Za-z_@][A-Za-z0-9_.@]*$")]] | None = Field(
        default=None,
        min_length=1,
        description="fields holding the person's name; default user.name and user.email (Lucene), user.name "
        "(ES|QL), user and src_user (SPL)",
    )


class EvidenceSettings(Section):
    """Where `evidence.collect` writes bundles: S3 with Object Lock when `s3` is set, else `directory`."""

    directory: Path = Path("var/evidence")
    s3: S3EvidenceStore | None = None
    max_events: int = Field(default=100_000, ge=1, description="events per bundle (and per SIEM) before refusing")
    siem: list[SiemEvidenceSource] = Field(default_factory=list, description="SIEMs to query for the entity too")
    sudo_iolog_dir: Path = Field(
        default=Path("/var/log/sudo-io"), description="sudo's iolog_dir: where a session's TSID recording is"
    )
    recordings_dirs: list[Path] = Field(
        default_factory=lambda: [Path("/var/lib/teleport")],
        description="folders a file:// or absolute recording reference may be read from (Teleport's data_dir); "
        "a reference elsewhere is kept, not read",
    )
    max_recording_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, description="a session recording larger than this is referenced, not copied"
    )
    recordings_s3: S3Connection | None = Field(
        default=None,
        description="how to read s3:// session recordings (Teleport's S3 session storage); without it they are "
        "referenced, not copied",
    )


class AwsConnection(Section):
    """The AWS account the ``aws.*`` actions act on (IAM). Keys are secret references; without them boto3's
    default credential chain (environment, profile, instance role) is used."""

    region: str = "us-east-1"
    endpoint_url: str | None = Field(default=None, description="for IAM-compatible simulators and tests")
    access_key_id: Secret | None = Field(default=None, description="secret reference (default: AWS chain)")
    secret_access_key: Secret | None = Field(default=None, description="secret reference (default: AWS chain)")
    password_secret_prefix: str = Field(
        default="custodes/console-password/",
        min_length=1,
        description="Secrets Manager name prefix for console passwords aws.restore_login_profile sets",
    )


class ResponderSettings(Section):
    """Connections to the systems actions act on, and guardrails."""

    okta: OktaConnection | None = None
    entra: EntraConnection | None = None
    aws: AwsConnection | None = None
    channels: dict[str, NotifyChannel] = Field(
        default_factory=lambda: dict(DEFAULT_CHANNELS),
        description="notify.webhook channels (`soc`, which the shipped playbooks use, logs until given a url)",
    )
    smtp: SmtpConnection | None = None
    jira: JiraConnection | None = None
    servicenow: ServiceNowConnection | None = None
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)

    @field_validator("channels", mode="after")
    @classmethod
    def _keep_default_channels(cls, channels: dict[str, NotifyChannel]) -> dict[str, NotifyChannel]:
        return {**DEFAULT_CHANNELS, **channels}

    protected_accounts: list[str] = Field(default_factory=list)
    http_timeout_seconds: float = Field(default=10.0, gt=0)


class ConnectorSettings(Section):
    """A pull connector: what it reads, how often, and with which credentials (secret references)."""

    kind: str = Field(description="connector kind, e.g. okta, entra, google_workspace, github (docs/connectors.md)")
    source: str | None = Field(default=None, description="configured source its events carry (default: per kind)")
    interval_seconds: float = Field(default=60.0, gt=0, description="seconds between polls")
    max_backoff_seconds: float = Field(
        default=300.0, gt=0, description="longest wait between retries while the source keeps failing"
    )
    enabled: bool = Field(default=True, description="run it in `custodes serve` (false: configured, not started)")
    credentials: dict[str, Secret] = Field(default_factory=dict, description="name -> secret reference")
    options: dict[str, Any] = Field(default_factory=dict, description="kind-specific settings")


def _pattern(text: str) -> str:
    """A regular expression that compiles (matched case-insensitively)."""
    try:
        re.compile(text, re.IGNORECASE)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ValueError(f"{text!r} is not a regular expression: {exc}") from None
    return text


Pattern = Annotated[str, AfterValidator(_pattern)]


class IdentitySettings(Section):
    """How actor names from every source resolve to one entity per person (behaviour scoring)."""

    aliases: dict[str, str] = Field(
        default_factory=dict, description="actor name (any source) -> person id, e.g. a GitHub login"
    )
    domains: dict[str, str] = Field(
        default_factory=dict, description="e-mail domain -> canonical domain, e.g. corp.onmicrosoft.com -> corp.com"
    )
    service_patterns: list[Pattern] = Field(
        default_factory=lambda: [
            r"^svc[-_.]",
            r"[-_.]svc$",
            r"\[bot\]$",
            r"^system$",
            r"^i-[0-9a-f]{8,}$",
            r"\$$",
            r"^(anonymous logon|local service|network service)$",
            r"^(dwm|umfd)-\d+$",
            r"\.gserviceaccount\.com$",
            r"^role/",
            r"^vault/",
            r"^system:",
        ],
        description="regular expressions: matching actors are service accounts (Windows computer accounts `HOST$` and "
        "built-in logon accounts among them)",
    )


NonNegative = Annotated[float, Field(ge=0)]


def _known(kind: str, names: Iterable[str]) -> Callable[[str], str]:
    """A validator of a name among `names`: an unknown one is refused naming the closest, or all of them."""
    known = tuple(names)

    def check(name: str) -> str:
        if name in known:
            return name
        from difflib import get_close_matches  # only a wrong name needs it: not on every start

        close = get_close_matches(name, known, n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else f"one of {', '.join(known)}"
        raise ValueError(f"unknown {kind} {name!r}: {hint}")

    return check


FeatureName = Annotated[str, AfterValidator(_known("feature", BY_NAME))]
FamilyName = Annotated[str, AfterValidator(_known("family", FAMILIES))]
SeverityName = Annotated[str, AfterValidator(_known("severity", (level.label for level in Severity)))]


def _domain_entry(entry: str) -> str:
    """A domain list's entry, `domain[/path prefix]`, lower-cased; a URL, a wildcard or blanks are refused."""
    if "://" in entry:
        bare = entry.split("://", 1)[1]
        raise ValueError(f"{entry!r} is a URL: give the domain and optional path, {bare!r}")
    if entry.startswith("*."):
        raise ValueError(f"{entry!r}: give {entry[2:]!r}, which covers its subdomains")
    if not entry or entry != entry.strip() or " " in entry or entry.startswith(("/", ".")):
        raise ValueError(f"{entry!r} is not a domain with an optional path prefix (example.com or example.com/jobs)")
    return entry.lower()


DomainEntry = Annotated[str, AfterValidator(_domain_entry)]

DEFAULT_SIGMA_POINTS = {"informational": 0.0, "low": 3.0, "medium": 8.0, "high": 15.0, "critical": 25.0}
DEFAULT_FAMILY_CAPS = {
    "identity": 35.0,
    "access": 50.0,
    "data": 45.0,
    "exfiltration": 70.0,
    "communication": 50.0,
    "behaviour": 35.0,
    "sigma": 40.0,
}
DEFAULT_WATCHLISTS = {"departing": 1.5, "on_notice": 1.5, "privileged": 1.2, "contractor": 1.2}
_TABLE_DEFAULTS = {
    "sigma_points": DEFAULT_SIGMA_POINTS,
    "family_caps": DEFAULT_FAMILY_CAPS,
    "watchlists": DEFAULT_WATCHLISTS,
}


class ScoringSettings(Section):
    """Behaviour scoring: baselines, risk and the findings it raises (see docs/scoring.md)."""

    enabled: bool = True
    directory: Path | None = Field(default=None, description="people file: JSON list (Custodes or Okta Users API)")
    identities: IdentitySettings = Field(default_factory=IdentitySettings)
    default_timezone: str = "UTC"
    risk_half_life_days: float = Field(default=2.0, gt=0)
    history_half_life_days: float = Field(default=90.0, gt=0)
    shrinkage_days: float = Field(default=10.0, gt=0, description="pseudo-days of peer evidence in a baseline")
    first_seen_days: int = Field(default=180, ge=1)
    warmup_days: int = Field(
        default=7,
        ge=0,
        description="a person's active days before their odd hours count, their anomalies are damped into their "
        "baseline and they can raise a finding",
    )
    novelty_days: int = Field(
        default=3,
        ge=0,
        description="a person's active days before their first-seen features count (how often they meet new things "
        "is their peers' until their own history says)",
    )
    learning_days: int = Field(
        default=3,
        ge=0,
        description="dates closed before anything is scored (peer statistics form); each person's own first-seen "
        "features wait for their novelty_days, odd hours and findings for their warmup_days",
    )
    lateness_hours: float = Field(default=2.0, ge=0)
    threshold: float = Field(default=65.0, gt=0, description="raise a finding at this risk")
    top_k: int = Field(
        default=0,
        ge=0,
        description="raise a finding on entering the day's top k ... (0: none; the ranking is the daily queue)",
    )
    top_k_min_risk: float = Field(default=50.0, ge=0, description="... with at least this risk")
    finding_cooldown_days: int = Field(default=7, ge=0)
    review_budget: float = Field(
        default=0.005, gt=0, le=1, description="analysts' daily review budget as a share of people (at least one)"
    )
    review_days: int = Field(
        default=7, ge=0, description="days a person ranked within the budget needs new or stronger evidence to re-enter"
    )
    sigma_points: dict[SeverityName, NonNegative] = Field(
        default_factory=lambda: dict(DEFAULT_SIGMA_POINTS),
        description="points per Sigma finding by severity (the levels given replace their defaults)",
    )
    family_caps: dict[FamilyName, NonNegative] = Field(
        default_factory=lambda: dict(DEFAULT_FAMILY_CAPS),
        description="daily cap of each family's points (the families given replace their defaults)",
    )
    watchlists: dict[str, NonNegative] = Field(
        default_factory=lambda: dict(DEFAULT_WATCHLISTS),
        description="watchlist -> multiplier of the day's points (the watchlists given replace their defaults)",
    )
    feature_weights: dict[FeatureName, NonNegative] = Field(
        default_factory=dict, description="feature -> weight override"
    )
    personal_domains: list[DomainEntry] = Field(
        default_factory=lambda: [
            "gmail.com",
            "yahoo.com",
            "hotmail.com",
            "outlook.com",
            "icloud.com",
            "proton.me",
            "protonmail.com",
            "gmx.com",
            "gmx.net",
            "gmx.de",
            "web.de",
            "aol.com",
            "aim.com",
            "msn.com",
            "live.com",
            "me.com",
            "mac.com",
            "ymail.com",
            "rocketmail.com",
            "mail.com",
            "yandex.com",
            "zoho.com",
            "comcast.net",
            "verizon.net",
            "att.net",
            "sbcglobal.net",
            "bellsouth.net",
            "cox.net",
            "charter.net",
            "earthlink.net",
            "optonline.net",
            "juno.com",
            "netzero.com",
            "netzero.net",
            "btinternet.com",
            "qq.com",
            "163.com",
        ],
        description="personal mailbox providers (webmail and consumer ISPs)",
    )
    personal_cloud_domains: list[DomainEntry] = Field(
        default_factory=lambda: [
            "dropbox.com",
            "box.com",
            "mega.nz",
            "mega.io",
            "wetransfer.com",
            "onedrive.live.com",
            "1drv.ms",
            "pcloud.com",
            "mediafire.com",
            "sendspace.com",
            "sync.com",
            "tresorit.com",
            "idrive.com",
            "4shared.com",
            "zippyshare.com",
            "filedropper.com",
            "transfernow.net",
            "smash.gg",
            "swisstransfer.com",
        ],
        description="personal cloud storage and file transfer: visits are a signal, uploads a stronger one",
    )
    leak_domains: list[DomainEntry] = Field(
        default_factory=lambda: [
            "wikileaks.org",
            "pastebin.com",
            "paste.ee",
            "ghostbin.com",
            "hastebin.com",
            "dpaste.org",
            "justpaste.it",
            "controlc.com",
            "rentry.co",
            "privatebin.net",
            "anonfiles.com",
            "file.io",
            "gofile.io",
            "transfer.sh",
            "cryptome.org",
            "ddosecrets.com",
            "leakedsource.com",
        ],
        description="leak and paste sites: visits are a signal, uploads a stronger one",
    )
    job_domains: list[DomainEntry] = Field(
        default_factory=lambda: [
            "indeed.com",
            "monster.com",
            "glassdoor.com",
            "linkedin.com/jobs",
            "ziprecruiter.com",
            "careerbuilder.com",
            "simplyhired.com",
            "dice.com",
            "hired.com",
            "jobs.com",
            "jobvite.com",
            "lever.co",
            "greenhouse.io",
            "workable.com",
            "angel.co",
            "wellfound.com",
            "stepstone.com",
            "reed.co.uk",
            "totaljobs.com",
            "seek.com.au",
            "naukri.com",
            "xing.com",
            "snagajob.com",
            "theladders.com",
            "flexjobs.com",
            "usajobs.gov",
            "careeronestop.org",
            "jobhuntersbible.com",
            "job-hunt.org",
            "hotjobs.yahoo.com",
            "indeed.co.uk",
            "monster.co.uk",
            "glassdoor.co.uk",
        ],
        description="job search sites (domain, subdomain or domain/path prefix)",
    )
    competitor_domains: list[DomainEntry] = Field(
        default_factory=list, description="competitors' sites (domain, subdomain or domain/path prefix)"
    )
    pseudonymise: bool = True
    pseudonym_key: Secret | None = Field(default=None, description="HMAC key for pseudonyms (secret reference)")
    pseudonym_key_file: str = Field(
        default="var/pseudonym.key",
        min_length=1,
        description="without pseudonym_key: the key file, outside the store, created (mode 0600) when missing",
    )
    pseudonym_key_in_store: bool = Field(
        default=False, description="opt-in: keep a generated key in the store (anyone reading it can re-identify)"
    )
    reidentify_roles: list[str] = Field(default_factory=lambda: ["privacy_officer", "admin"])
    max_state_bytes: int = Field(default=65536, ge=4096, description="bound on one entity's stored baseline")

    @field_validator("sigma_points", "family_caps", "watchlists", mode="after")
    @classmethod
    def _over_defaults(cls, value: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        """A table given in part changes the keys it names; the others keep their defaults."""
        return {**_TABLE_DEFAULTS[str(info.field_name)], **value}

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone name (UTC, Europe/London, Asia/Tokyo)") from None
        return value


class HuntSettings(Section):
    """Scheduled hunts: where their YAML files are and how missed slots are handled (docs/hunts.md)."""

    paths: list[Path] = Field(
        default_factory=lambda: [SHIPPED / "hunts"],
        description="hunt files and folders (default: the hunts Custodes ships)",
    )
    schedule: bool = Field(default=True, description="run hunts on their schedules in `custodes serve`")
    catch_up: Literal["latest", "none"] = Field(
        default="latest", description="after downtime: run the latest missed slot once, or skip missed slots"
    )
    misfire_grace_seconds: float = Field(
        default=30.0, gt=0, description="with catch_up none: a slot this late still runs"
    )
    job_table: str = Field(default="apscheduler_jobs", description="APScheduler's job store table")


class AccessReviewSettings(Section):
    """`custodes access review`: thresholds, privileged role names and separation-of-duty role pairs."""

    dormant_days: int = Field(
        default=90, ge=1, le=MAX_DAYS, description="an enabled account not signed in for this long"
    )
    unused_days: int = Field(
        default=90, ge=1, le=MAX_DAYS, description="a grant (access key, role) not used for this long"
    )
    privileged_roles: list[str] = Field(
        default_factory=list,
        description="role, group or policy names that are privileged, beyond the built-in admin roles",
    )
    sod_conflicts: list[tuple[str, str]] = Field(
        default_factory=list, description="pairs of role, group or policy names one person must not hold together"
    )
    schedule_seconds: float | None = Field(
        default=86_400.0,
        gt=0,
        description="`custodes serve` collects the inventory and runs the review at start and this often "
        "(when an entra, okta or aws_iam connector is enabled); null: never",
    )


class Role(StrEnum):
    """What `custodes serve --role` runs: everything in one process (`all`), or one part of a cluster."""

    ALL = "all"
    RECEIVER = "receiver"
    WORKER = "worker"
    RUNNER = "runner"


class ClusterSettings(Section):
    """Running as a cluster on RabbitMQ and PostgreSQL (`custodes serve --role receiver|worker|runner`)."""

    amqp_url: Secret | None = Field(
        default=None,
        description="RabbitMQ URL (secret reference, e.g. env:CUSTODES_AMQP_URL); needed by every role but all",
    )
    partitions: int = Field(
        default=16, ge=1, le=1024, description="partition queues events are hashed to by entity; fixed per cluster"
    )
    exchange: str = Field(
        default="custodes.events",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="the consistent-hash exchange; partition queues are named <exchange>.<n>",
    )


CasePriority = Literal["low", "medium", "high", "critical"]
DEFAULT_SLA_HOURS: dict[CasePriority, float] = {"critical": 1.0, "high": 4.0, "medium": 24.0, "low": 72.0}


def _https_or_loopback(url: str, what: str) -> str:
    """`url` if it is https, or http to a loopback host (a local provider, tests); ValueError otherwise."""
    parts = urlsplit(url)
    loopback = parts.hostname in {"localhost", "127.0.0.1", "::1"}
    if not parts.hostname or parts.scheme not in {"https", "http"} or (parts.scheme == "http" and not loopback):
        raise ValueError(f"{what} must be an https:// URL (http:// only to localhost), not {url!r}")
    return url


class OidcSettings(Section):
    """Console sign-in through an OpenID Connect provider (authorization code flow with PKCE)."""

    issuer: str = Field(description="the provider's issuer URL; discovery is read from <issuer>/.well-known/...")
    client_id: str = Field(min_length=1)
    client_secret: Secret = Field(description="secret reference")
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "groups"])
    groups_claim: str = Field(default="groups", min_length=1, description="the ID token claim listing groups")
    username_claim: str = Field(
        default="preferred_username", min_length=1, description="the ID token claim naming the person"
    )
    roles: dict[str, Annotated[str, Field(pattern=ROLE_PATTERN)]] = Field(
        min_length=1, description="group name to Custodes role; a person in no listed group cannot sign in"
    )
    redirect_uri: str | None = Field(
        default=None,
        description="the callback URL registered with the provider (…/signin/oidc/callback); unset: derived from "
        "the request's scheme and host",
    )

    @field_validator("issuer", mode="after")
    @classmethod
    def _issuer_url(cls, issuer: str) -> str:
        return _https_or_loopback(issuer.rstrip("/"), "issuer")

    @field_validator("redirect_uri", mode="after")
    @classmethod
    def _redirect_url(cls, uri: str | None) -> str | None:
        return None if uri is None else _https_or_loopback(uri, "redirect_uri")

    @field_validator("scopes", mode="after")
    @classmethod
    def _openid_scope(cls, scopes: list[str]) -> list[str]:
        if "openid" not in scopes:
            raise ValueError("scopes must include openid")
        return scopes


class ConsoleSettings(Section):
    """The SOC console."""

    oidc: OidcSettings | None = Field(default=None, description="single sign-on; unset: API tokens only")


class CaseSettings(Section):
    """Cases (docs/cases.md): whether findings open or join a case per person, and the time to triage by priority."""

    auto_open: bool = Field(default=True, description="a finding about a person opens or joins that person's case")
    min_severity: Literal["informational", "low", "medium", "high", "critical"] = Field(
        default="low", description="the least finding severity that opens or joins a case"
    )
    sla_hours: dict[CasePriority, float] = Field(
        default_factory=lambda: dict(DEFAULT_SLA_HOURS),
        description="a case of each priority is due for triage this many hours after it opens",
    )

    @field_validator("sla_hours")
    @classmethod
    def _positive_hours(cls, value: dict[CasePriority, float]) -> dict[CasePriority, float]:
        for priority, hours in value.items():
            if hours <= 0:
                raise ValueError(f"{priority}: the time to triage must be more than 0 hours")
        return value


class Settings(Section):
    """All of Custodes' settings."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    sources: dict[str, SourceSettings] = Field(default_factory=lambda: dict(DEFAULT_SOURCES))
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    playbooks: PlaybookSettings = Field(default_factory=PlaybookSettings)
    webhooks: dict[str, ReceiverSettings] = Field(default_factory=dict, description="receivers by name")
    server: ServerSettings = Field(default_factory=ServerSettings)
    responder: ResponderSettings = Field(default_factory=ResponderSettings)
    connectors: dict[str, ConnectorSettings] = Field(default_factory=dict, description="pull connectors by name")
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    hunts: HuntSettings = Field(default_factory=HuntSettings)
    access_review: AccessReviewSettings = Field(default_factory=AccessReviewSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    cases: CaseSettings = Field(default_factory=CaseSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @model_validator(mode="after")
    def _known_to_the_redactor(self) -> Settings:
        remember_secrets(self)
        return self

    @model_validator(mode="after")
    def _evidence_connectors(self) -> Settings:
        siems = sorted(name for name, entry in self.connectors.items() if entry.kind in ("elasticsearch", "splunk"))
        for at, item in enumerate(self.responder.evidence.siem):
            if item.connector not in siems:
                raise ValueError(
                    f"responder.evidence.siem[{at}].connector: {item.connector!r} is not an elasticsearch or splunk "
                    f"entry under connectors: (those are: {', '.join(siems) or 'none'})"
                )
        return self

    @field_validator("webhooks", mode="after")
    @classmethod
    def _receiver_sources_exist(
        cls, webhooks: dict[str, ReceiverSettings], info: ValidationInfo
    ) -> dict[str, ReceiverSettings]:
        sources = info.data.get("sources")
        if sources is None:  # the sources failed validation; that error is reported
            return webhooks
        for name, receiver in webhooks.items():
            source = receiver.record_source
            if source is not None and source not in sources:
                raise ValueError(
                    f"{name}.source: the {receiver.kind} receiver {name!r} reads its records as source {source!r}, "
                    f"which is not configured (configured: {', '.join(sorted(sources))}); declare sources.{source} "
                    "or set the receiver's source"
                )
        return webhooks

    @field_validator("sources", mode="after")
    @classmethod
    def _keep_predefined_sources(cls, sources: dict[str, SourceSettings]) -> dict[str, SourceSettings]:
        return {**DEFAULT_SOURCES, **sources}

    def source(self, name: str) -> SourceSettings:
        """A configured source by name, or a ConfigError listing the configured ones."""
        try:
            return self.sources[name]
        except KeyError:
            known = ", ".join(sorted(self.sources)) or "none configured"
            raise ConfigError(
                f"unknown source {name!r} (configured sources: {known})",
                hint="declare it under 'sources:' in the configuration file",
            ) from None


IDENTIFIER_FIELDS = frozenset({"username", "email"})
"""Secret fields that name an account rather than hold a credential: not masked wherever they appear."""


def remember_secrets(node: object, field: str | None = None) -> None:
    """Make every secret value under `node` (settings, sections, mappings, lists) known to the process's redactor,
    so that it is masked wherever Custodes stores or prints anything (`custodes.redaction`)."""
    if isinstance(node, Secret):
        if field not in IDENTIFIER_FIELDS:
            REDACTOR.know(node.reveal())
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            remember_secrets(getattr(node, name), name)
    elif isinstance(node, dict):
        for value in node.values():
            remember_secrets(value, field)
    elif isinstance(node, list | tuple):
        for value in node:
            remember_secrets(value, field)


def missing_paths(settings: Settings, *, hunts: bool = False) -> ConfigError | None:
    """A ConfigError naming each configured rule, playbook (and with `hunts`, hunt) path that does not exist:
    the setting and the absolute path looked at."""
    named = [("detection.rules", settings.detection.rules), ("playbooks.paths", settings.playbooks.paths)]
    if hunts:
        named.append(("hunts.paths", settings.hunts.paths))
    problems = [
        Problem(Location("configuration", field=f"{setting}[{index}]"), f"{path.absolute()}: no such file or folder")
        for setting, paths in named
        for index, path in enumerate(paths)
        if not path.exists()
    ]
    if not problems:
        return None
    return ConfigError(
        problems,
        hint="fix the path in custodes.yaml (relative paths are from the working folder), or remove the setting "
        "to use what Custodes ships; `custodes init` writes a commented configuration",
    )


def _env_overrides(environ: dict[str, str]) -> list[tuple[tuple[str, ...], Any, str]]:
    """(setting path, value, variable) of each override in the environment."""
    yaml = YAML(typ="safe")
    overrides: list[tuple[tuple[str, ...], Any, str]] = []
    for name, raw in sorted(environ.items()):
        if name == DATABASE_URL_ENV:
            overrides.append((("database", "url"), raw, name))
        elif is_override(name):
            path = tuple(part.lower() for part in name.removeprefix(ENV_PREFIX).split("__"))
            try:
                value = yaml.load(raw) if raw.strip() else raw
            except Exception:
                value = raw
            overrides.append((path, raw if isinstance(value, dict | list) else value, name))
    return overrides


def _apply(data: dict[str, Any], path: tuple[str, ...], value: Any) -> tuple[str, ...]:
    """Set `path` to `value`, making the mappings on the way; returns the path of the outermost value the
    override made or replaced (so a problem there, e.g. an unknown section, is the variable's, not the file's)."""
    node = data
    made: tuple[str, ...] | None = None
    for depth, key in enumerate(path[:-1], start=1):
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
            made = made or path[:depth]
        node = child
    node[path[-1]] = value
    return made or path


def load_settings(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load settings from a YAML file (optional when `path` is None) and environment overrides.

    Every problem is reported at once, each with the file, line and column or the environment variable.
    """
    environ = dict(os.environ if environ is None else environ)
    file, named = config_file(path, environ)
    doc = load_yaml(file) if file.exists() or named else YamlDocument(str(file), {}, None)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise ConfigError.at(file, "the configuration must be a mapping of sections", line=1, column=1)
    data: dict[str, Any] = doc.data
    overridden: dict[tuple[str, ...], str] = {}
    for key_path, value, variable in _env_overrides(environ):
        overridden[_apply(data, key_path, value)] = variable
    try:
        return doc.validate(Settings, context={"environ": environ})
    except CustodesError as exc:
        problems = [_blame_environment(problem, overridden) for problem in exc.problems]
        raise ConfigError(problems, hint="see docs/configuration.md for every setting") from None


def _blame_environment(problem: Problem, overridden: dict[tuple[str, ...], str]) -> Problem:
    field = problem.location.field or ""
    for key_path, variable in overridden.items():
        if field == ".".join(key_path) or field.startswith(".".join(key_path) + "."):
            return Problem(Location(f"environment {variable}", field=field), problem.message)
    return problem
