"""Real vendor record shapes (Panther's rule tests, `p_*` keys stripped; where the data has none, a record of the
vendor's documented shape) through behaviour scoring's feature extraction: Entra ID as diagnostic settings export it,
Google Workspace activities one event a record, GitHub audit actions and Okta's second factors are read for their
person, with what each vendor's own fields say happened."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import SHARED
from custodes.config import ScoringSettings
from custodes.detections.scoring.evaluate import LabelRow, evaluate
from custodes.detections.scoring.features import Extractor, Observation, record_time
from custodes.detections.scoring.identity import PERSON, SERVICE, IdentityResolver

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
    interactive = [r for r in signins if r["category"] != "NonInteractiveUserSignInLogs"]
    assert len(interactive) < len(signins), "both kinds are in the data"
    assert all(EXTRACTOR.extract(r) is None for r in signins if r not in interactive), "a token refreshed: no act"
    for record in interactive:
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


def winlogbeat_logon(user: str, host: str, logon_type: str, type_name: str | None) -> dict[str, Any]:
    """A Windows 4624 logon as Winlogbeat and Elastic Agent ship it."""
    winlog: dict[str, Any] = {"event_id": "4624", "event_data": {"LogonType": logon_type, "TargetUserName": user}}
    if type_name is not None:
        winlog["logon"] = {"type": type_name, "id": "0x8dcdc"}
    return {
        "@timestamp": "2024-03-04T09:00:00.000Z",
        "event": {"code": "4624", "category": ["authentication"], "type": ["start"], "action": "logged-in"},
        "winlog": winlog,
        "user": {"name": user, "domain": "CORP"},
        "host": {"name": host},
    }


@pytest.mark.parametrize(
    ("logon_type", "type_name", "at_the_machine"),
    [
        ("2", "Interactive", True),
        ("10", "RemoteInteractive", True),  # remote desktop: someone is using the machine
        ("7", "Unlock", True),
        ("3", "Network", False),  # a file share or a remote call
        ("3", None, False),  # the number alone
        ("5", "Service", False),
        ("4", "Batch", False),
    ],
)
def test_a_windows_logon_puts_a_person_at_a_machine_only_when_someone_sat_at_it(
    logon_type: str, type_name: str | None, at_the_machine: bool
) -> None:
    """Once every network logon to a file server was a logon to a machine the person never used."""
    obs = observed(winlogbeat_logon("jdoe", "FS01", logon_type, type_name))
    assert obs.actor == "jdoe" and (obs.host == "FS01") == at_the_machine
    assert (("host", "FS01") in obs.seen) == at_the_machine


def test_windows_computer_and_built_in_accounts_are_services_not_people() -> None:
    resolver = IdentityResolver([], ScoringSettings().identities)
    for name in ("CORP\\WS-0142$", "NT AUTHORITY\\SYSTEM", "NT AUTHORITY\\ANONYMOUS LOGON", "Window Manager\\DWM-3"):
        assert resolver.resolve(name)[1] == SERVICE, name
    assert resolver.resolve("CORP\\jdoe")[1] == PERSON


def unified_audit(operation: str, workload: str, **fields: Any) -> dict[str, Any]:
    """A Microsoft 365 unified audit record (Office 365 Management Activity API common schema)."""
    return {
        "CreationTime": "2024-03-04T09:00:00",
        "Id": "5b2c8e8e-1f2a-4a57-9a1e-9d1b1c7f0a11",
        "Operation": operation,
        "OrganizationId": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
        "RecordType": 6,
        "UserKey": "i:0h.f|membership|10032000a1b2c3d4@live.com",
        "UserType": 0,
        "Version": 1,
        "Workload": workload,
        "ClientIP": "203.0.113.7",
        "UserId": "jane@corp.example",
        **fields,
    }


DOC = "https://corp.sharepoint.com/sites/finance/Shared Documents/plan.xlsx"


@pytest.mark.parametrize(
    ("record", "feature"),
    [
        (unified_audit("FileDownloaded", "SharePoint", ObjectId=DOC), "download"),
        (unified_audit("FileSyncDownloadedFull", "OneDrive", ObjectId=DOC), "download"),
        (unified_audit("FileAccessed", "SharePoint", ObjectId=DOC), "file_access"),
        (unified_audit("FileRecycled", "OneDrive", ObjectId=DOC), "delete"),
        (unified_audit("AnonymousLinkCreated", "OneDrive", ObjectId=DOC), "external_share"),
        (
            unified_audit(
                "SharingInvitationCreated",
                "SharePoint",
                ObjectId=DOC,
                TargetUserOrGroupType="Guest",
                TargetUserOrGroupName="me_gmail.com#ext#@corp.onmicrosoft.com",
            ),
            "external_share",
        ),
        (
            unified_audit(
                "New-InboxRule",
                "Exchange",
                RecordType=1,
                Parameters=[{"Name": "Name", "Value": "sync"}, {"Name": "ForwardTo", "Value": "me@gmail.com"}],
            ),
            "mail_forwarding",
        ),
        (
            unified_audit(
                "Set-Mailbox",
                "Exchange",
                RecordType=1,
                Parameters=[{"Name": "ForwardingSmtpAddress", "Value": "smtp:me@gmail.com"}],
            ),
            "mail_forwarding",
        ),
        (unified_audit("Add member to role.", "AzureActiveDirectory", RecordType=8), "privilege_grant"),
    ],
)
def test_microsoft_365_unified_audit_records_are_read_for_their_person(record: dict[str, Any], feature: str) -> None:
    obs = observed(record)
    assert obs.actor == "jane@corp.example" and names(obs) == {feature}
    assert record_time(record) is not None
    if feature in ("download", "file_access"):
        assert obs.seen == [("resource", f"m365:{DOC}")]


def test_microsoft_365_records_that_move_nothing_out_count_nothing() -> None:
    internal = unified_audit("SharingSet", "SharePoint", ObjectId=DOC, TargetUserOrGroupType="Member")
    rule = unified_audit("New-InboxRule", "Exchange", Parameters=[{"Name": "MoveToFolder", "Value": "Archive"}])
    cleared = unified_audit("Set-Mailbox", "Exchange", Parameters=[{"Name": "ForwardingSmtpAddress", "Value": "$null"}])
    for record in (internal, rule, cleared):
        assert names(observed(record)) == set(), record
    assert EXTRACTOR.extract(unified_audit("FileDownloaded", "SharePoint", UserType=5, UserId="app@sharepoint")) is None


def elastic_signin(action: str, outcome: str, **fields: Any) -> dict[str, Any]:
    """An identity provider's sign-in as Elastic's integrations store it in ECS (pulled from Elasticsearch)."""
    return {
        "@timestamp": "2024-03-04T09:00:00.000Z",
        "event": {"category": ["authentication"], "type": ["start"], "action": action, "outcome": outcome},
        "user": {"name": "ann@corp.example"},
        "source": {"ip": "198.51.100.4", "geo": {"country_iso_code": "PT"}, "as": {"number": 3243}},
        "user_agent": {"original": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"},
        **fields,
    }


def entra_in_ecs(outcome: str, code: int) -> dict[str, Any]:
    status = {"error_code": code}
    azure = {"signinlogs": {"result_type": str(code), "properties": {"status": status}}}
    return elastic_signin("Sign-in activity", outcome, azure=azure)


@pytest.mark.parametrize(
    ("record", "features"),
    [
        (elastic_signin("user.session.start", "success"), {"signin"}),
        (elastic_signin("user.session.start", "failure"), {"signin_failed"}),
        (elastic_signin("user.mfa.okta_verify.deny_push", "success"), {"mfa_failed"}),  # Classic's denial
        (elastic_signin("user.authentication.auth_via_mfa", "failure"), {"mfa_failed"}),
        (elastic_signin("user.authentication.auth_via_mfa", "success"), set()),  # a factor passed: no sign-in
        (elastic_signin("user.authentication.sso", "success"), set()),  # a hop to an application
        (elastic_signin("user.session.end", "success", event={"category": ["authentication"], "type": ["end"]}), set()),
        (entra_in_ecs("success", 0), {"signin"}),
        (entra_in_ecs("failure", 50074), set()),  # MFA required: an interrupt
        (entra_in_ecs("failure", 500121), {"mfa_failed"}),
        (entra_in_ecs("failure", 50126), {"signin_failed"}),
    ],
)
def test_identity_provider_sign_ins_stored_as_ecs_are_sign_ins(record: dict[str, Any], features: set[str]) -> None:
    """Once a SIEM's ECS copy of an Okta or Entra sign-in (no machine) counted nothing but its failures, all as
    failed sign-ins."""
    obs = observed(record)
    assert obs.actor == "ann@corp.example" and names(obs) == features
    if features == {"signin"}:
        assert {kind for kind, _ in obs.seen} == {"device", "country", "asn"}


def test_a_non_interactive_entra_sign_in_stored_as_ecs_is_not_scored() -> None:
    record = entra_in_ecs("success", 0)
    record["azure"]["signinlogs"]["category"] = "NonInteractiveUserSignInLogs"
    assert EXTRACTOR.extract(record) is None


def test_a_logon_at_a_machine_stays_a_logon_there_not_a_sign_in() -> None:
    record = elastic_signin("logged-in", "success", host={"name": "WS-0142"})
    obs = observed(record)
    assert names(obs) == set() and obs.host == "WS-0142" and ("host", "WS-0142") in obs.seen


def test_a_mass_download_seen_only_in_the_microsoft_365_audit_log_is_ranked_first(tmp_path: Path) -> None:
    """The whole route on a vendor shape the simulator does not write: unified audit records in a file, scored by
    `eval scoring`'s evaluation against a label."""
    rng = random.Random(3)
    people = [f"user{n}@corp.example" for n in range(30)]
    start = datetime(2024, 3, 4, tzinfo=UTC)
    records = []
    for day in range(20):
        for person in people:
            for _ in range(rng.randint(1, 4)):
                at = (start + timedelta(days=day, hours=rng.uniform(9, 17))).isoformat()
                doc = f"https://corp.sharepoint.com/sites/team/doc{rng.randint(0, 40)}.docx"
                records.append(
                    unified_audit("FileAccessed", "SharePoint", ObjectId=doc, UserId=person, CreationTime=at)
                )
    thief, theft = people[11], start + timedelta(days=19, hours=20)
    for n in range(300):
        doc = f"https://corp.sharepoint.com/sites/finance/Shared Documents/ledger-{n}.xlsx"
        at = (theft + timedelta(seconds=5 * n)).isoformat()
        records.append(unified_audit("FileDownloaded", "SharePoint", ObjectId=doc, UserId=thief, CreationTime=at))
    records.sort(key=lambda r: r["CreationTime"])
    path = tmp_path / "audit.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    label = LabelRow("incident-1", "departure_mass_download", thief, "insider", theft, theft + timedelta(hours=1))
    result = evaluate([path], [label], ScoringSettings(pseudonymise=False, warmup_days=5))
    assert result.caught == 1 and result.incidents[0].best_rank == 1


def test_duo_authentications_are_sign_ins_failed_factors_or_policy_denials() -> None:
    """Once no Duo record was read: a push the user marked as fraud counted for nothing."""
    found = [r for r in records("duo") if r.get("event_type") == "authentication"]
    assert len(found) >= 10
    kinds = set()
    for record in found:
        obs = observed(record)
        result, reason = record["result"], record.get("reason")
        user_said_no = result == "fraud" or reason in ("user_declined", "user_marked_fraud", "anomalous_push")
        expected = {"signin"} if result == "success" else {"mfa_failed"} if user_said_no else {"signin_failed"}
        assert obs.actor == record["user"]["name"] and names(obs) == expected, record
        kinds |= expected
    assert kinds == {"signin", "mfa_failed", "signin_failed"}, "each kind is in the data"
    assert record_time({**found[0], "isotimestamp": "2024-03-04T09:00:00+00:00"}) is not None
