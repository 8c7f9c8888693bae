"""Source formats, their pySigma pipelines and envelope mappers, against real vendor records; push-down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from custodes.config import Settings
from custodes.connectors.envelope import dig, to_event
from custodes.detections.sigma.convert import convert_rules
from custodes.detections.sigma.engine import SigmaEngine
from custodes.detections.sigma.loader import load_rules
from custodes.detections.sigma.pipelines import FORMATS, pipeline_named
from custodes.detections.sigma.routing import RoutedEngine
from custodes.detections.sigma.ruleset import RuleSet
from custodes.model import Outcome
from custodes.sources import SourceSettings

SHARED = Path(__file__).resolve().parents[2] / "shared"
PANTHER = SHARED / "datasets" / "panther-rule-tests"
SIGMAHQ = SHARED / "sigmahq" / "rules"

# panther file -> (our format, log types of records in that shape, SigmaHQ rule folder)
DATASETS = {
    "okta": ("okta", {"Okta.SystemLog"}, SIGMAHQ / "identity" / "okta"),
    "azure_activity": ("azure_activity", {"Azure.MonitorActivity"}, SIGMAHQ / "cloud" / "azure"),
    "azure_signin": ("entra_audit_diagnostic", {"Azure.Audit"}, SIGMAHQ / "cloud" / "azure"),
    "gcp_audit": ("gcp_audit", {"GCP.AuditLog"}, SIGMAHQ / "cloud" / "gcp"),
    "gsuite": ("google_workspace", {"GSuite.ActivityEvent"}, SIGMAHQ / "cloud" / "gcp"),
    "github": ("github", {"GitHub.Audit"}, SIGMAHQ / "application" / "github"),
    "microsoft_graph": ("m365", {"Microsoft365.Audit.SharePoint", "Microsoft365.Audit.Exchange"}, SIGMAHQ / "cloud"),
}


def panther(name: str) -> Iterator[dict[str, Any]]:
    with (PANTHER / f"{name}.ndjson").open(encoding="utf-8") as lines:
        for line in lines:
            case = json.loads(line)
            case["log"] = {k: v for k, v in case["log"].items() if not k.startswith("p_")}
            yield case


def ruleset_for(fmt: str, folder: Path) -> RuleSet:
    ruleset = load_rules([folder], pipeline=pipeline_named(fmt))
    assert ruleset.rules
    return ruleset


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_panther_record_maps_to_an_event(dataset: str) -> None:
    fmt, _, _ = DATASETS[dataset]
    settings = SourceSettings(format=fmt)  # type: ignore[arg-type]
    records = [case["log"] for case in panther(dataset)]
    events = [to_event(record, settings, dataset) for record in records]
    assert len(events) >= 20
    assert [event.raw for event in events] == records and {event.source for event in events} == {dataset}
    path = ACTION_PATHS[fmt]
    with_action = [(event, dig(record, path)) for event, record in zip(events, records, strict=True)]
    named = [(event, action) for event, action in with_action if isinstance(action, str)]
    assert len(named) >= 5
    assert all(event.action == action for event, action in named)


# Where each format's records name their action (Panther lower-cases the keys of some test records: those map
# too, with a warning, but are not the vendor's shape).
ACTION_PATHS = {
    "okta": "eventType",
    "azure_activity": "operationName",
    "entra_audit_diagnostic": "properties.activityDisplayName",
    "gcp_audit": "protoPayload.methodName",
    "google_workspace": "name",
    "github": "action",
    "m365": "Operation",
}


def matches(dataset: str) -> set[tuple[str, str, bool]]:
    """(SigmaHQ rule title, panther rule id, panther expectation) for records of the format's shape."""
    fmt, log_types, folder = DATASETS[dataset]
    settings = SourceSettings(format=fmt)  # type: ignore[arg-type]
    engine = SigmaEngine(ruleset_for(fmt, folder))
    found: set[tuple[str, str, bool]] = set()
    for case in panther(dataset):
        if not log_types & set(case["log_types"]):
            continue
        for rule in engine.match(to_event(case["log"], settings, dataset)):
            found.add((rule.title, case["rule_id"], case["expected_result"]))
    return found


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("okta", ("Okta API Token Created", "Okta.APIKeyCreated", True)),
        ("okta", ("Okta Admin Role Assigned to an User or Group", "Okta.AdminRoleAssigned", True)),
        (
            "azure_activity",
            (
                "Azure Network Security Configuration Modified or Deleted",
                "Azure.MonitorActivity.Network.NSGModifiedOrDeleted",
                True,
            ),
        ),
        ("azure_signin", ("Azure Domain Federation Settings Modified", "Azure.Audit.DomainSettingsModified", True)),
        ("gcp_audit", ("Google Cloud Firewall Modified or Deleted", "GCP.Firewall.Rule.Deleted", True)),
        ("gsuite", ("Suspicious Login Activity Classified By Google", "GSuite.SuspiciousLogins", True)),
        ("gsuite", ("Google Workspace Out Of Domain Email Forwarding", "GSuite.ExternalMailForwarding", True)),
        ("github", ("Github Repository/Organization Transferred", "Github.Repository.Transfer", True)),
    ],
)
def test_sigmahq_rules_match_real_vendor_records(dataset: str, expected: tuple[str, str, bool]) -> None:
    assert expected in matches(dataset)


def test_without_its_pipeline_a_workspace_rule_misses_the_record() -> None:
    case = next(c for c in panther("gsuite") if c["rule_id"] == "GSuite.SuspiciousLogins" and c["expected_result"])
    settings = SourceSettings(format="google_workspace")
    event = to_event(case["log"], settings, "gws")
    assert event.logsource.service == "google_workspace.login"
    folder = SIGMAHQ / "cloud" / "gcp" / "gworkspace"
    titles = {rule.title for rule in SigmaEngine(load_rules([folder])).match(event)}
    assert "Suspicious Login Activity Classified By Google" not in titles
    mapped = {rule.title for rule in SigmaEngine(ruleset_for("google_workspace", folder)).match(event)}
    assert "Suspicious Login Activity Classified By Google" in mapped


SIGNIN_GRAPH = {
    "id": "7b1d2c3e-0000-4000-8000-000000000001",
    "createdDateTime": "2026-11-21T07:12:00Z",
    "userPrincipalName": "mallory@example.com",
    "appDisplayName": "Office 365 Exchange Online",
    "ipAddress": "203.0.113.5",
    "status": {"errorCode": 50053, "failureReason": "Account is locked"},
    "deviceDetail": {"deviceId": "", "isCompliant": False},
}


def test_entra_signin_in_both_shapes_maps_and_matches() -> None:
    folder = SIGMAHQ / "cloud" / "azure" / "signin_logs"
    diagnostic = {
        "time": "2026-11-21T07:12:00Z",
        "operationName": "Sign-in activity",
        "category": "SignInLogs",
        "resultType": "50053",
        "callerIpAddress": "203.0.113.5",
        "properties": SIGNIN_GRAPH,
    }
    for fmt, record in (("entra_signin_graph", SIGNIN_GRAPH), ("entra_signin_diagnostic", diagnostic)):
        settings = SourceSettings(format=fmt)  # type: ignore[arg-type]
        event = to_event(record, settings, "entra")
        assert (event.actor, event.outcome, event.src_ip) == ("mallory@example.com", Outcome.FAILURE, "203.0.113.5")
        assert str(event.logsource) == "azure/signinlogs/*" and not event.warnings
        titles = {rule.title for rule in SigmaEngine(ruleset_for(fmt, folder)).match(event)}
        assert "Azure AD Account Lockout" in titles or any("Lockout" in title for title in titles), titles
        unmapped = {rule.title for rule in SigmaEngine(load_rules([folder])).match(event)}
        assert not any("Lockout" in title for title in unmapped)


def test_a_pipeline_leaves_rules_of_other_logsources_alone(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(
        "title: other\nid: 8d7c6b5a-0000-4000-8000-000000000001\nlogsource: {product: okta, service: okta}\n"
        "detection:\n  sel: {ResultType: 0}\n  condition: sel\n"
    )
    (rule,) = load_rules([tmp_path], pipeline=pipeline_named("entra_signin_graph")).rules
    assert rule.match({"ResultType": 0}) and not rule.match({"status": {"errorCode": 0}})


def test_routing_uses_each_sources_pipeline() -> None:
    folder = SIGMAHQ / "cloud" / "azure" / "signin_logs"
    sources = {
        "graph": SourceSettings(format="entra_signin_graph"),
        "raw": SourceSettings(format="entra_signin_graph", pipeline="none"),
    }
    engine = RoutedEngine.load([folder], sources)
    assert set(engine.engines) == {"none", "entra_signin_graph"}
    assert engine.match(to_event(SIGNIN_GRAPH, sources["graph"], "graph"))
    assert not engine.match(to_event(SIGNIN_GRAPH, sources["raw"], "raw"))


def test_every_format_has_a_mapper_and_the_config_refuses_unknown_pipelines() -> None:
    for name in FORMATS:
        assert to_event({}, SourceSettings(format=name), "s").warnings is not None  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"sources\.s\.pipeline"):
        Settings.model_validate({"sources": {"s": {"format": "okta", "pipeline": "splunk_cim"}}})
    assert SourceSettings(format="gcp_audit").logsource.service == "gcp.audit"
    assert SourceSettings(format="generic", product="x").pipeline_name == "generic"


def test_auditd_record_time_and_serial_come_from_msg() -> None:
    record = {
        "type": "SYSCALL",
        "msg": "audit(1700000000.123:4242):",
        "auid": "1000",
        "success": "no",
        "exe": "/bin/cat",
    }
    event = to_event(record, SourceSettings(format="auditd"), "linux")
    assert event.time.timestamp() == pytest.approx(1700000000.123)
    assert (event.actor, event.outcome, event.action, event.warnings) == ("1000", Outcome.FAILURE, "SYSCALL", [])


# Push-down -----------------------------------------------------------------------------------------------

CORRELATION = """
title: S3 read
id: 0a1b2c3d-0000-4000-8000-00000000000a
name: s3_read
logsource: {product: aws, service: cloudtrail}
detection:
  sel: {eventName: GetObject}
  condition: sel
---
title: Many S3 reads
id: 0a1b2c3d-0000-4000-8000-00000000000b
correlation:
  type: event_count
  rules: [s3_read]
  group-by: [userIdentity.arn]
  timespan: 1h
  condition: {gte: 100}
"""


def test_conversions_use_the_pipeline_and_say_why_they_are_not_exact(tmp_path: Path) -> None:
    gws = SIGMAHQ / "cloud" / "gcp" / "gworkspace" / "login" / "gcp_gworkspace_suspicious_login.yml"
    for target in ("lucene", "esql", "eql", "splunk"):
        (conversion,) = convert_rules([gws], target, SourceSettings(format="google_workspace"))
        assert conversion.exact and conversion.query is not None
        assert "id.applicationName" in conversion.query and "login" in conversion.query
        assert "login.googleapis.com" not in conversion.query
    fieldref = Path(__file__).resolve().parents[1] / "detections" / "rules" / "aws"
    by_title = {c.title: c for c in convert_rules([fieldref], "lucene", SourceSettings(format="cloudtrail"))}
    other_user = by_title["AWS Access Key Created for Another IAM User"]
    assert other_user.query is None and not other_user.exact and "field reference" in (other_user.reason or "")
    (tmp_path / "c.yml").write_text(CORRELATION)
    for target, exact in (("esql", False), ("splunk", False), ("lucene", False)):
        base, many = convert_rules([tmp_path], target, SourceSettings(format="cloudtrail"))  # type: ignore[arg-type]
        assert base.exact and base.query is None
        assert many.exact is exact and many.reason
    (_, many) = convert_rules([tmp_path], "splunk", None)
    assert "fixed time buckets" in (many.reason or "") and "bin _time span=1h" in (many.query or "")


def test_keyword_rules_and_other_logsources_are_flagged(tmp_path: Path) -> None:
    (tmp_path / "k.yml").write_text(
        "title: kw\nid: 1f2e3d4c-0000-4000-8000-000000000001\nlogsource: {product: aws, service: cloudtrail}\n"
        "detection:\n  keywords: [evil]\n  condition: keywords\n---\n"
        "title: okta one\nid: 1f2e3d4c-0000-4000-8000-000000000002\nlogsource: {product: okta, service: okta}\n"
        "detection:\n  sel: {eventType: x}\n  condition: sel\n"
    )
    keyword, okta = convert_rules([tmp_path], "splunk", SourceSettings(format="cloudtrail"))
    assert keyword.query is not None and not keyword.exact and "keyword" in (keyword.reason or "")
    assert not okta.applies and okta.query is None
