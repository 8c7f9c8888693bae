"""Source formats and the pySigma processing pipelines that fit SigmaHQ field names to each format's records.

A source format names a vendor record shape (CloudTrail, Okta System Log, Entra ID sign-ins as returned by
Microsoft Graph, ...), the Sigma logsource its events carry, and how the field names SigmaHQ rules use map to
dotted paths in the raw record. The same `ProcessingPipeline` serves the in-process matcher (the loader applies
it to each rule) and push-down (the pySigma backends render the mapped names). Raw records are never rewritten.

Every transformation is restricted to rules that apply to the format's logsource (each part the rule sets equals
the source's), so pipelines of formats with different logsources can be combined into one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from sigma.correlations import SigmaCorrelationRule
from sigma.processing.conditions import IncludeFieldCondition, RuleProcessingCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    FieldMappingTransformation,
    FieldPrefixMappingTransformation,
    ReplaceStringTransformation,
)
from sigma.rule import SigmaRule

from custodes.model import LogSource

NO_PIPELINE: Final = "none"
"""The `pipeline` choice of a source whose rules are used as written."""


@dataclass(frozen=True, slots=True)
class ValueRewrite:
    """A regular-expression rewrite of the values a rule compares with `fields` (applied before field mapping)."""

    fields: tuple[str, ...]
    pattern: str
    replacement: str


@dataclass(frozen=True, slots=True)
class SourceFormat:
    """A vendor record shape: its logsource, and SigmaHQ field name -> dotted path(s) in its records.

    `logsource.service` ending in `*` accepts any service with that prefix (the events' own service is then
    derived per record by the envelope mapper). A field mapped to several paths matches when any of them does.
    """

    name: str
    description: str
    logsource: LogSource
    fields: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    prefixes: Mapping[str, str] = field(default_factory=dict)
    rewrites: tuple[ValueRewrite, ...] = ()

    def pipeline(self) -> ProcessingPipeline | None:
        """The pySigma pipeline of this format, or None when SigmaHQ's field names are the record's own."""
        if not (self.fields or self.prefixes or self.rewrites):
            return None
        items: list[ProcessingItem] = [
            ProcessingItem(
                ReplaceStringTransformation(rewrite.pattern, rewrite.replacement),
                identifier=f"custodes_{self.name}_values_{index}",
                rule_conditions=self._scope(),
                field_name_conditions=[IncludeFieldCondition(list(rewrite.fields))],
            )
            for index, rewrite in enumerate(self.rewrites)
        ]
        mapping: dict[str | None, str | list[str]] = {
            name: list(paths) if isinstance(paths, tuple) else paths for name, paths in self.fields.items()
        }
        if self.fields:
            items.append(
                ProcessingItem(
                    FieldMappingTransformation(mapping),
                    identifier=f"custodes_{self.name}_fields",
                    rule_conditions=self._scope(),
                )
            )
        if self.prefixes:
            prefixes: dict[str | None, str | list[str]] = dict(self.prefixes.items())
            items.append(
                ProcessingItem(
                    FieldPrefixMappingTransformation(prefixes),
                    identifier=f"custodes_{self.name}_prefixes",
                    rule_conditions=self._scope(),
                )
            )
        return ProcessingPipeline(name=f"custodes {self.name}", priority=20, items=items)

    def _scope(self) -> list[RuleProcessingCondition]:
        """A fresh condition per item (pySigma binds each condition to one pipeline)."""
        return [AppliesToLogSource(self.logsource)]


@dataclass
class AppliesToLogSource(RuleProcessingCondition):
    """True for rules the engine routes to events of `logsource`: each logsource part the rule sets equals it.

    Comparison is case-insensitive, as routing is; a `service` ending in `*` accepts any service with that prefix.
    A correlation rule matches when any rule it refers to (once resolved) does.
    """

    logsource: LogSource

    def match(self, rule: SigmaRule | SigmaCorrelationRule) -> bool:
        """Whether the rule applies to the source's events."""
        if isinstance(rule, SigmaCorrelationRule):
            return any(
                isinstance(ref.rule, SigmaRule | SigmaCorrelationRule) and self.match(ref.rule)
                for ref in rule.rules or []
                if hasattr(ref, "rule")
            )
        wanted = rule.logsource
        return (
            _same(wanted.product, self.logsource.product)
            and _same(wanted.service, self.logsource.service)
            and _same(wanted.category, self.logsource.category)
        )


def _same(wanted: str | None, have: str | None) -> bool:
    if wanted is None:
        return True
    if have is None:
        return False
    if have.endswith("*"):
        return wanted.lower().startswith(have[:-1].lower())
    return wanted.lower() == have.lower()


# The formats -------------------------------------------------------------------------------------------

_ENTRA_SIGNIN_FIELDS: Final = {
    "ResultType": "status.errorCode",
    "resultType": "status.errorCode",
    "ResultDescription": "status.failureReason",
    "Resultdescription": "status.failureReason",
    "AuthenticationRequirement": "authenticationRequirement",
    "RiskState": "riskState",
    "ResourceDisplayName": "resourceDisplayName",
    "ConditionalAccessStatus": "conditionalAccessStatus",
    "DeviceDetail.trusttype": "deviceDetail.trustType",
    "DeviceDetail.deviceId": "deviceDetail.deviceId",
    "DeviceDetail.isCompliant": "deviceDetail.isCompliant",
    "NetworkLocationDetails": "networkLocationDetails",
    "ClientApp": "clientAppUsed",
    "Username": "userPrincipalName",
    "UserPrincipalName": "userPrincipalName",
    "UserAgent": "userAgent",
    "IPAddress": "ipAddress",
    "callerIpAddress": "ipAddress",
    "location": "location.countryOrRegion",
    "AppDisplayName": "appDisplayName",
}
"""Log Analytics (Sentinel `SigninLogs`) column names SigmaHQ uses -> Microsoft Graph `signIn` properties."""

_ENTRA_AUDIT_FIELDS: Final = {
    "properties.message": "activityDisplayName",
    "OperationName": "activityDisplayName",
    "operationName": "activityDisplayName",
    "ActivityDisplayName": "activityDisplayName",
    "ActivityType": "activityDisplayName",
    "activityType": "activityDisplayName",
    "Category": "category",
    "Status": "result",
    "properties.result": "result",
    "failure_status_reason": "resultReason",
    "LoggedByService": "loggedByService",
    "Initiatedby": "initiatedBy",
    "Initiatied.By": "initiatedBy",
    "properties.initiatedBy": "initiatedBy",
    "TargetResources": "targetResources",
    "Target": "targetResources",
    "properties.targetResources": "targetResources",
    "TargetResources.modifiedProperties": "targetResources.modifiedProperties",
    "TargetResources.ModifiedProperties.DisplayName": "targetResources.modifiedProperties.displayName",
    "TargetResources.ModifiedProperties.NewValue": "targetResources.modifiedProperties.newValue",
    "TargetResources.modifiedProperties.newValue": "targetResources.modifiedProperties.newValue",
}
"""Log Analytics (`AuditLogs`) and Azure-portal names SigmaHQ uses -> Microsoft Graph `directoryAudit` properties."""


def _in_properties(fields: Mapping[str, str], top_level: Mapping[str, str]) -> dict[str, str]:
    """The diagnostic-settings shape: the Graph object sits under `properties`, a few fields at the top level."""
    return {name: top_level.get(name, f"properties.{path}") for name, path in fields.items()}


FORMATS: Final[dict[str, SourceFormat]] = {
    fmt.name: fmt
    for fmt in (
        SourceFormat(
            "cloudtrail",
            "AWS CloudTrail records (log files, LookupEvents' CloudTrailEvent, EventBridge detail)",
            LogSource("aws", "cloudtrail"),
            {"src_ip": "sourceIPAddress"},
        ),
        SourceFormat("okta", "Okta System Log LogEvent objects", LogSource("okta", "okta")),
        SourceFormat(
            "entra_signin_graph",
            "Entra ID sign-ins as Microsoft Graph returns them (/auditLogs/signIns)",
            LogSource("azure", "signinlogs"),
            _ENTRA_SIGNIN_FIELDS,
            prefixes={"properties.": ""},
        ),
        SourceFormat(
            "entra_signin_diagnostic",
            "Entra ID sign-ins exported by diagnostic settings (Event Hub, storage): Graph object under `properties`",
            LogSource("azure", "signinlogs"),
            _in_properties(
                _ENTRA_SIGNIN_FIELDS,
                {
                    "ResultType": "resultType",
                    "resultType": "resultType",
                    "ResultDescription": "resultDescription",
                    "Resultdescription": "resultDescription",
                    "callerIpAddress": "callerIpAddress",
                    "location": "location",
                },
            ),
        ),
        SourceFormat(
            "entra_audit_graph",
            "Entra ID audit logs as Microsoft Graph returns them (/auditLogs/directoryAudits)",
            LogSource("azure", "auditlogs"),
            _ENTRA_AUDIT_FIELDS,
            prefixes={"properties.": ""},
        ),
        SourceFormat(
            "entra_audit_diagnostic",
            "Entra ID audit logs exported by diagnostic settings: Graph object under `properties`",
            LogSource("azure", "auditlogs"),
            {
                **_in_properties(_ENTRA_AUDIT_FIELDS, {}),
                "properties.message": "properties.activityDisplayName",
                "properties.result": "properties.result",
                "properties.initiatedBy": "properties.initiatedBy",
                "properties.targetResources": "properties.targetResources",
            },
        ),
        SourceFormat(
            "azure_activity",
            "Azure Activity log records exported by diagnostic settings",
            LogSource("azure", "activitylogs"),
            {
                "CategoryValue": "category",
                "OperationNameValue": "operationName",
                "ResourceId": "resourceId",
                "ResultType": "resultType",
                "Caller": "identity.claims.name",
                "CallerIpAddress": "callerIpAddress",
            },
        ),
        SourceFormat(
            "gcp_audit",
            "Google Cloud audit log LogEntry records (Cloud Logging export)",
            LogSource("gcp", "gcp.audit"),
            {
                "gcp.audit.method_name": "protoPayload.methodName",
                "data.protoPayload.logName": "logName",
                "data.protoPayload.resource.type": "resource.type",
            },
            prefixes={"data.protoPayload.": "protoPayload."},
        ),
        SourceFormat(
            "google_workspace",
            "Google Workspace Admin SDK Reports API activities (one record per activity or per event)",
            LogSource("gcp", "google_workspace*"),
            {
                "eventService": "id.applicationName",
                "protoPayload.serviceName": "id.applicationName",
                "protoPayload.Servicename": "id.applicationName",
                "eventName": ("events.name", "name"),
                "protoPayload.metadata.event.eventName": ("events.name", "name"),
                "setting_name": "parameters.SETTING_NAME",
                "new_value": "parameters.NEW_VALUE",
            },
            rewrites=(
                ValueRewrite(
                    ("eventService", "protoPayload.serviceName", "protoPayload.Servicename"),
                    r"\.googleapis\.com$",
                    "",
                ),
            ),
        ),
        SourceFormat("github", "GitHub organisation and enterprise audit log events", LogSource("github", "audit")),
        SourceFormat(
            "m365",
            "Microsoft 365 unified audit log records (Office 365 Management Activity API)",
            LogSource("m365", "audit"),
        ),
        SourceFormat(
            "auditd", "Linux auditd records as key/value objects (one per record)", LogSource("linux", "auditd")
        ),
        SourceFormat("teleport", "Teleport audit events (JSON lines)", LogSource("teleport", "audit")),
        SourceFormat("vault", "HashiCorp Vault audit device records (JSON lines)", LogSource("vault", "audit")),
        SourceFormat("sudo", "sudo syslog lines as the file tail parses them", LogSource("linux", "sudo")),
        SourceFormat(
            "windows",
            "Windows event log records: evtx JSON, or flat as Splunk's Windows add-on, Sentinel or NXLog hold them",
            LogSource("windows", "security"),
        ),
        SourceFormat("generic", "any JSON object; envelope fields from configured paths", LogSource()),
    )
}


def pipeline_named(name: str) -> ProcessingPipeline | None:
    """The pipeline of the format called `name`, or None for `none` and formats without one.

    Formats the configuration accepts but that have no entry here (their records use SigmaHQ's names) have none.
    """
    known = FORMATS.get(name)
    return known.pipeline() if known is not None else None


def source_logsource(format_name: str, declared: LogSource) -> LogSource:
    """The logsource rules must apply to for a source: the declared one, else its format's (wildcards kept)."""
    known = FORMATS.get(format_name)
    if known is not None and declared.product is None and declared.service is None and declared.category is None:
        return known.logsource
    return declared
