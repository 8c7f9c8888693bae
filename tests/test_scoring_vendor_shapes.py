"""Real vendor record shapes (Panther's rule tests, `p_*` keys stripped; where the data has none, a record of the
vendor's documented shape) through behaviour scoring's feature extraction: Entra ID as diagnostic settings export it,
Google Workspace activities one event a record, GitHub audit actions and Okta's second factors are read for their
person, with what each vendor's own fields say happened."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from conftest import SHARED
from custodes.config import ScoringSettings
from custodes.detections.scoring.features import Extractor, Observation, record_time

DATASETS = SHARED / "datasets" / "panther-rule-tests"
EXTRACTOR = Extractor(ScoringSettings(), ["panther.com", "example.io", "acme.com", "example.com"])


def records(name: str) -> list[dict[str, Any]]:
    lines = (DATASETS / f"{name}.ndjson").read_bytes().splitlines()
    logs = [orjson.loads(line)["log"] for line in lines if line.strip()]
    return [{k: v for k, v in log.items() if not k.startswith("p_")} for log in logs]


def observed(record: dict[str, Any]) -> Observation:
    obs = EXTRACTOR.extract(record)
    assert obs is not None, record
    return obs


def names(obs: Observation) -> set[str]:
    return {name for name, _ in obs.features}


def test_entra_sign_ins_from_diagnostic_settings_are_their_users_successes_and_failures() -> None:
    """Once none was read: Entra ID through Event Hub (a SIEM's usual feed) holds the sign-in under `properties`."""
    signins = [
        r
        for r in records("azure_signin")
        if str(r.get("category")).endswith("SignInLogs") and "userPrincipalName" in r.get("properties", {})
    ]
    assert len(signins) >= 15
    for record in signins:
        obs = observed(record)
        assert obs.actor == record["properties"]["userPrincipalName"] and record_time(record) is not None
        status = record["properties"].get("status") or {}
        failed = status.get("errorCode") not in (None, 0) or str(record.get("resultType")) not in (
            "0",
            "Success",
            "None",
        )
        assert names(obs) == ({"signin_failed"} if failed else {"signin"}), record
    service = [r for r in records("azure_signin") if r.get("category") == "ServicePrincipalSignInLogs"]
    assert service and all(EXTRACTOR.extract(r) is None for r in service), "an application is no person"


def test_entra_directory_audits_from_diagnostic_settings_are_read_and_role_grants_count() -> None:
    audits = [r for r in records("azure_signin") if "activityDisplayName" in r.get("properties", {})]
    by_user = [
        r for r in audits if ((r["properties"].get("initiatedBy") or {}).get("user") or {}).get("userPrincipalName")
    ]
    assert len(by_user) >= 15
    grants = {}
    for record in by_user:
        obs = observed(record)
        assert obs.actor == record["properties"]["initiatedBy"]["user"]["userPrincipalName"]
        grants[record["properties"]["activityDisplayName"]] = "privilege_grant" in names(obs)
    assert grants["Add member to role"] and grants["Add member to role in PIM completed (permanent)"]
    assert not grants["Add member to role in PIM requested (permanent)"], "a request grants nothing"
    assert not grants["Update conditional access policy"]


@pytest.mark.parametrize(
    ("application", "event", "feature"),
    [
        ("drive", "download", "download"),
        ("drive", "view", "file_access"),
        ("drive", "trash", "delete"),
        ("login", "login_success", "signin"),
        ("login", "login_failure", "signin_failed"),
        ("user_accounts", "email_forwarding_out_of_domain", "mail_forwarding"),
        ("user_accounts", "2sv_enroll", "factor_change"),
        ("admin", "CUSTOMER_TAKEOUT_CREATED", "sensitive_api"),
    ],
)
def test_google_workspace_activities_one_event_a_record_are_read(application: str, event: str, feature: str) -> None:
    """Once an activity holding one event flattened (`name`, `parameters` by name) gave its person nothing."""
    found = [
        r
        for r in records("gsuite")
        if isinstance(r.get("id"), dict) and r["id"].get("applicationName") == application and r.get("name") == event
    ]
    assert found, (application, event)
    for record in found:
        if (record.get("actor") or {}).get("email"):
            obs = observed(record)
            assert obs.actor == record["actor"]["email"] and feature in names(obs), record


def test_a_drive_share_counts_when_it_takes_a_document_outside_the_organisation() -> None:
    """A share with a person or a domain outside the organisation, or a visibility set to anyone with the link."""
    shares = [r for r in records("gsuite") if r.get("name") in ("change_user_access", "change_document_visibility")]
    expected = {True: 0, False: 0}
    for record in shares:
        params = record.get("parameters") or {}
        target = str(params.get("target_user") or params.get("target_domain") or "")
        outside = bool(target) and target.rpartition("@")[2] not in EXTRACTOR.org_domains
        opened = "people_with_link" in (params.get("new_value") or [params.get("visibility")])
        external = outside if record["name"] == "change_user_access" else opened
        expected[external] += 1
        assert ("external_share" in names(observed(record))) == external, record
    assert expected[True] and expected[False], "both kinds are in the data"


@pytest.mark.parametrize(
    ("action", "feature"),
    [
        ("git.clone", "download"),
        ("org.update_member", "privilege_grant"),  # a member's role changed
        ("repo.add_member", "privilege_grant"),  # a collaborator added
        ("business.add_admin", "privilege_grant"),
        ("team.promote_maintainer", "privilege_grant"),
        ("repo.transfer_outgoing", "external_share"),  # the repository handed to another owner
        ("repo.access", "external_share"),  # a visibility change
        ("org.disable_two_factor_requirement", "sensitive_api"),
        ("secret_scanning.disable", "sensitive_api"),
        ("protected_branch.destroy", "sensitive_api"),
        ("repo.destroy", "delete"),
    ],
)
def test_github_audit_actions_are_read_for_what_they_do(action: str, feature: str) -> None:
    """Once a role change, a transfer out or a security control switched off gave its actor nothing, and a visibility
    change counted as a privilege grant."""
    found = [r for r in records("github") if r.get("action") == action and isinstance(r.get("actor"), str)]
    assert found, action
    for record in found:
        assert feature in names(observed(record)), record


def test_a_github_repository_made_private_is_no_share() -> None:
    record = {"action": "repo.access", "actor": "cat", "repo": "my-org/my-repo", "visibility": "private"}
    assert names(observed(record)) == set()


@pytest.mark.parametrize(
    ("event_type", "result", "failed"),
    [
        ("user.mfa.okta_verify.deny_push", "SUCCESS", True),  # Classic: the denial is the event
        ("user.mfa.okta_verify.deny_push", "FAILURE", True),
        ("user.authentication.auth_via_mfa", "FAILURE", True),  # Identity Engine: a denied or wrong factor
        ("user.authentication.auth_via_mfa", "SUCCESS", False),
        ("system.push.send_factor_verify_push", "SUCCESS", False),  # a push sent is no failure
    ],
)
def test_an_okta_second_factor_fails_as_each_engine_logs_it(event_type: str, result: str, failed: bool) -> None:
    record = {
        "eventType": event_type,
        "published": "2024-03-04T09:00:00.000Z",
        "actor": {"alternateId": "ann@corp.example", "type": "User"},
        "outcome": {"result": result, "reason": "INVALID_CREDENTIALS" if result == "FAILURE" else None},
    }
    assert names(observed(record)) == ({"mfa_failed"} if failed else set())
