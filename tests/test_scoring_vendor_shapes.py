"""Real vendor record shapes (Panther's rule tests, `p_*` keys stripped; where the data has none, a record of the
vendor's documented shape) through behaviour scoring's feature extraction: Entra ID as diagnostic settings export it,
Google Workspace activities one event a record, GitHub audit actions and Okta's second factors are read for their
person, with what each vendor's own fields say happened."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import SHARED
from custodes.config import ScoringSettings
from custodes.connectors.envelope import to_event
from custodes.detections.scoring.engine import ScoringEngine
from custodes.detections.scoring.evaluate import LabelRow, evaluate
from custodes.detections.scoring.features import Extractor, record_time
from custodes.detections.scoring.identity import PERSON, SERVICE, IdentityResolver, Person
from custodes.detections.scoring.observation import Observation
from custodes.sources import SourceFormatName, SourceSettings
from elastic_shapes import (
    elastic_auth,
    elastic_cloudtrail,
    elastic_entra,
    elastic_entra_audit,
    elastic_github,
    elastic_m365,
    elastic_okta,
    elastic_workspace,
)
from sentinel_shapes import (
    aws_cloudtrail,
    cloud_app_event,
    sentinel_audit,
    sentinel_office,
    sentinel_signin,
    sentinel_syslog,
)
from test_scoring_winlog import RECOGNISED, defender, file_created, flat

DATASETS = SHARED / "datasets" / "panther-rule-tests"
EXTRACTOR = Extractor(ScoringSettings(), ["panther.com", "example.io", "acme.com", "example.com"])
GENERIC = SourceSettings(format="generic")
CLOUDTRAIL = SourceSettings(format="cloudtrail")
"""How Elastic's documents are mapped to the envelope (their source's format: ECS names by default)."""


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


def winlogbeat_admin(code: str, outcome: str = "success") -> dict[str, Any]:
    """A Windows Security event of administration as Winlogbeat ships it, logged on a domain controller."""
    return {
        "@timestamp": "2024-03-04T09:00:00.000Z",
        "event": {"code": code, "category": ["iam"], "type": ["change"], "outcome": outcome},
        "winlog": {"event_id": code, "event_data": {"SubjectUserName": "jdoe", "TargetUserName": "Domain Admins"}},
        "user": {"name": "jdoe", "domain": "CORP"},
        "host": {"name": "DC01"},
    }


@pytest.mark.parametrize(
    ("record", "features"),
    [
        (winlogbeat_admin("4728"), {"privilege_grant"}),  # a member added to Domain Admins
        (winlogbeat_admin("4732"), {"privilege_grant"}),
        (winlogbeat_admin("4724"), {"sensitive_api"}),  # someone else's password reset
        (winlogbeat_admin("1102"), {"sensitive_api"}),  # the Security log cleared
        (winlogbeat_admin("4719"), {"sensitive_api"}),
        (winlogbeat_admin("4720"), {"sensitive_api"}),  # an account created
        (winlogbeat_admin("4722"), {"sensitive_api"}),  # an account enabled again
        (winlogbeat_admin("4728", "failure"), set()),
        (winlogbeat_admin("4738"), set()),  # an account changed
    ],
)
def test_windows_administration_events_are_grants_and_sensitive_calls(
    record: dict[str, Any], features: set[str]
) -> None:
    obs = observed(record)
    assert obs.actor == "jdoe" and names(obs) == features
    assert obs.host is None, "the domain controller that logged it is not a machine the person used"


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


def endpoint_dlp(operation: str, **fields: Any) -> dict[str, Any]:
    """A Purview endpoint DLP record (unified audit record type 63) of a file on jane's machine."""
    defaults: dict[str, Any] = dict(
        RecordType=63,
        UserKey="jane@corp.example",
        DeviceName="WS-0142.corp.example",
        Platform=1,
        Application="Microsoft Windows Explorer",
        ObjectId="C:\\Users\\jane\\Documents\\plan.xlsx",
        FileExtension="xlsx",
        FileType="xlsx",
        FileSize=48213,
        EnforcementMode=1,
        Sha256="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    )
    return unified_audit(operation, "Endpoint", **(defaults | fields))


USB_STICK = {"Manufacturer": "SanDisk", "Model": "Ultra", "SerialNumber": "4C530001230718115392", "BusType": "USB"}


@pytest.mark.parametrize(
    ("record", "counted"),
    [
        (
            endpoint_dlp(
                "FileCopiedToRemovableMedia", TargetFilePath="E:\\plan.xlsx", RemovableMediaDeviceAttributes=USB_STICK
            ),
            {"usb_files": 1.0, "upload_bytes": 48213.0},
        ),
        (endpoint_dlp("FileCreatedOnRemovableMedia", FileSize="1024"), {"usb_files": 1.0, "upload_bytes": 1024.0}),
        (endpoint_dlp("FileCopiedToRemovableMedia", EnforcementMode=4, FileSize=None), {"usb_files": 1.0}),
        (endpoint_dlp("RemovableMediaMount", RemovableMediaDeviceAttributes=USB_STICK), {"usb": 1.0}),
        (
            endpoint_dlp("FileUploadedToCloud", TargetDomain="www.dropbox.com"),
            {"cloud_upload": 1.0, "upload_bytes": 48213.0},
        ),
        (
            endpoint_dlp("FileUploadedToCloud", TargetDomain="https://pastebin.com:443/"),
            {"leak_upload": 1.0, "upload_bytes": 48213.0},
        ),
        (
            endpoint_dlp("FileUploadedToCloud", TargetUrl="https://wetransfer.com/upload"),
            {"cloud_upload": 1.0, "upload_bytes": 48213.0},
        ),
        (endpoint_dlp("FileUploadedToCloud", TargetDomain="corp.sharepoint.com"), {}),
        (endpoint_dlp("FileUploadedToCloud", TargetDomain=["not", "a", "domain"]), {}),
        (endpoint_dlp("FilePrinted", TargetPrinterName="HP LaserJet 4th floor"), {"print": 1.0}),
        (endpoint_dlp("FileArchived"), {"archive": 1.0}),
        (endpoint_dlp("FileRead"), {"file_access": 1.0}),
        (endpoint_dlp("FileDeleted"), {"delete": 1.0}),
        (endpoint_dlp("FileDownloadedFromBrowser"), {"download": 1.0}),
        (endpoint_dlp("FileCopiedToNetworkShare", TargetFilePath="\\\\fs01\\share\\plan.xlsx"), {}),
        (endpoint_dlp("FileCopiedToClipboard"), {}),
    ],
)
def test_purview_endpoint_dlp_records_are_the_persons_data_movements_on_their_machine(
    record: dict[str, Any], counted: dict[str, float]
) -> None:
    """A file copied to a stick, uploaded, printed as Purview's endpoint DLP audits it: the person is named (where a
    Windows or Defender drive event names only the machine), the machine is where it happened."""
    obs = observed(record)
    assert obs.actor == "jane@corp.example" and dict(obs.features) == counted
    assert obs.host == "WS-0142.corp.example" and not obs.presence
    resource = ("resource", "WS-0142.corp.example:C:\\Users\\jane\\Documents\\plan.xlsx")
    assert obs.seen == ([resource] if "file_access" in counted else [])
    assert record_time(record) is not None


def test_a_purview_copy_to_a_stick_on_a_colleagues_machine_is_a_first_data_movement_there() -> None:
    """Scored: the directory's owner of the machine is another person, so the copy is a first use of the channel on
    that person's machine, beside the person's first use of USB at all."""
    people = [
        Person(id="jane@corp.example", department="Finance"),
        Person(id="bob@corp.example", department="Finance", hosts=["WS-0142"]),
    ]
    settings = ScoringSettings(pseudonymise=False)
    engine = ScoringEngine(settings, IdentityResolver(people, settings.identities), org_domains=["corp.example"])
    start = datetime(2024, 3, 4, 9, tzinfo=UTC)
    for day in range(12):  # jane's own days: mail, no drive
        mail = unified_audit("FileAccessed", "SharePoint", ObjectId=DOC)
        mail["CreationTime"] = (start + timedelta(days=day)).isoformat(timespec="seconds").removesuffix("+00:00")
        engine.observe(to_event(mail, SourceSettings(format="m365"), "m365"))
    copy = endpoint_dlp("FileCopiedToRemovableMedia", DeviceName="WS-0142")
    copy["CreationTime"] = (start + timedelta(days=12)).isoformat(timespec="seconds").removesuffix("+00:00")
    key = engine.observe(to_event(copy, SourceSettings(format="m365"), "m365"))
    assert key is not None
    today = engine.states[key].open
    assert today is not None
    assert today.counts["usb_files"] == 1.0 and today.counts["new_channel"] == 1.0
    assert today.counts["other_host_channel"] == 1.0


def defend_file(action: str, bus: Any, name: str = "plan.xlsx") -> dict[str, Any]:
    """A file event of Elastic Defend (`logs-endpoint.events.file-*`) on a Windows machine, its device's bus given."""
    return {
        "@timestamp": "2024-03-04T09:20:11.000Z",
        "agent": {"type": "endpoint"},
        "data_stream": {"dataset": "endpoint.events.file"},
        "event": {"category": ["file"], "type": ["creation"], "action": action, "dataset": "endpoint.events.file"},
        "file": {
            "name": name,
            "path": f"E:\\{name}",
            "extension": name.rpartition(".")[2],
            "size": 48213,
            "Ext": {"device": {"bus_type": bus, "dos_name": "E:", "file_system_type": "exFAT", "vendor_id": "SanDisk"}},
        },
        "host": {"name": "ws-0142", "os": {"type": "windows"}},
        "process": {"name": "explorer.exe", "pid": 4812},
        "user": {"name": "jane", "domain": "CORP"},
    }


@pytest.mark.parametrize(
    ("record", "counted"),
    [
        (defend_file("creation", "USB"), {"usb_files": 1.0, "upload_bytes": 48213.0}),
        (defend_file("overwrite", "usb"), {"usb_files": 1.0, "upload_bytes": 48213.0}),
        (defend_file("modification", "BusTypeSd"), {"usb_files": 1.0, "upload_bytes": 48213.0}),
        (defend_file("creation", "1394", "out.zip"), {"usb_files": 1.0, "upload_bytes": 48213.0}),  # onto the drive
        (defend_file("creation", "NVMe", "out.zip"), {"archive": 1.0}),  # the machine's own disk
        (defend_file("creation", "SATA"), {}),
        (defend_file("creation", None), {}),
        (defend_file("creation", ["USB"]), {}),
        (defend_file("deletion", "USB"), {"delete": 1.0}),
        (defend_file("rename", "USB"), {}),
    ],
)
def test_a_file_elastic_defend_saw_written_to_a_removable_drive_is_a_copy_to_it(
    record: dict[str, Any], counted: dict[str, float]
) -> None:
    """Elastic Defend names the device a file was written to (`file.Ext.device.bus_type`), as Elastic's own job for
    bytes written to an external device reads it: a file created, overwritten or changed on a USB drive, a FireWire
    disk or a card is a file copied to removable media by its user; on the machine's own disks it is not."""
    obs = observed(record)
    assert obs.actor == "jane" and dict(obs.features) == counted and obs.host == "ws-0142"


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


START = datetime(2024, 3, 4, tzinfo=UTC)


def working_days(
    rng: random.Random, people: list[str], least: int, most: int, hours: tuple[int, int] = (8, 18)
) -> Iterator[tuple[str, str]]:
    """(person, time) of each of `least` to `most` records a day of each person, 20 days within `hours`."""
    for day in range(20):
        for person in people:
            for _ in range(rng.randint(least, most)):
                yield person, (START + timedelta(days=day, hours=rng.uniform(*hours))).isoformat()


def saved_audit(tmp_path: Path, records: list[dict[str, Any]], saved: str) -> Path:
    """Unified audit records in a file as a SOC saves them: the Management API's records a line each (`ndjson`), an
    audit log search exported from Purview (`purview`: a CSV whose `AuditData` column holds each record), a
    Sentinel query of `OfficeActivity` in the query API's answer (`sentinel`), or Defender's advanced hunting of
    `CloudAppEvents` in its API's answer (`defender`)."""
    if saved == "ndjson":
        path = tmp_path / "audit.ndjson"
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    elif saved == "purview":
        path = tmp_path / "audit.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["RecordId", "CreationDate", "RecordType", "Operation", "UserId", "AuditData"])
            for r in records:
                audit = orjson.dumps(r).decode()
                writer.writerow([r["Id"], r["CreationTime"], r["RecordType"], r["Operation"], r["UserId"], audit])
    elif saved == "defender":
        path = tmp_path / "hunting.json"
        events = [cloud_app_event(r) for r in records]
        schema = [{"Name": name, "Type": "String"} for name in events[0]]
        path.write_bytes(orjson.dumps({"Schema": schema, "Results": events}))
    else:
        rows = [sentinel_office(r) for r in records]
        columns = sorted({name for row in rows for name in row})
        table = {
            "name": "PrimaryResult",
            "columns": [{"name": name, "type": "string"} for name in columns],
            "rows": [[row.get(name) for name in columns] for row in rows],
        }
        path = tmp_path / "answer.json"
        path.write_bytes(orjson.dumps({"tables": [table]}))
    return path


def best_rank_of(tmp_path: Path, records: list[dict[str, Any]], label: LabelRow, saved: str = "ndjson") -> int | None:
    """Where `eval scoring`'s evaluation ranks the labelled person of unified audit records, saved as `saved_audit`
    says (None: not caught)."""
    records.sort(key=lambda r: r["CreationTime"])
    path = saved_audit(tmp_path, records, saved)
    result = evaluate([path], [label], ScoringSettings(pseudonymise=False, warmup_days=5))
    assert not result.warnings, result.warnings
    return result.incidents[0].best_rank if result.caught == 1 else None


@pytest.mark.parametrize("saved", ["ndjson", "purview", "sentinel", "defender"])
def test_a_mass_download_seen_only_in_the_microsoft_365_audit_log_is_ranked_first(tmp_path: Path, saved: str) -> None:
    """The whole route on a vendor shape the simulator does not write: unified audit records in a file, scored by
    `eval scoring`'s evaluation against a label."""
    rng = random.Random(3)
    people = [f"user{n}@corp.example" for n in range(30)]
    records = [
        unified_audit(
            "FileAccessed",
            "SharePoint",
            ObjectId=f"https://corp.sharepoint.com/sites/team/doc{rng.randint(0, 40)}.docx",
            UserId=person,
            CreationTime=at,
        )
        for person, at in working_days(rng, people, 1, 4, (9, 17))
    ]
    thief, theft = people[11], START + timedelta(days=19, hours=20)
    for n in range(300):
        doc = f"https://corp.sharepoint.com/sites/finance/Shared Documents/ledger-{n}.xlsx"
        at = (theft + timedelta(seconds=5 * n)).isoformat()
        records.append(unified_audit("FileDownloaded", "SharePoint", ObjectId=doc, UserId=thief, CreationTime=at))
    label = LabelRow("incident-1", "departure_mass_download", thief, "insider", theft, theft + timedelta(hours=1))
    assert best_rank_of(tmp_path, records, label, saved) == 1


def mailbox(
    operation: str, user: str, owner: str | None, logon: int, at: str = "2024-03-04T09:00:00", **fields: Any
) -> dict[str, Any]:
    """An Exchange mailbox audit record (unified audit log, RecordType 50 for MailItemsAccessed)."""
    owned = {} if owner is None else {"MailboxOwnerUPN": owner}
    extra = {"LogonType": logon, "MailboxOwnerSid": "S-1-5-21-1-2-3-1001", "ClientInfoString": "Client=OWA", **owned}
    return unified_audit(operation, "Exchange", RecordType=50, UserId=user, CreationTime=at, **extra, **fields)


def test_another_persons_mailbox_opened_or_sent_as_is_sensitive_and_new_per_mailbox() -> None:
    boss = "Boss@Corp.example"
    for record in (
        mailbox("MailItemsAccessed", "jane@corp.example", boss, 2, OperationProperties=[{"Name": "MailAccessType"}]),
        mailbox("FolderBind", "jane@corp.example", boss, 1),
        mailbox("MessageBind", "jane@corp.example", boss, 0),  # a UPN of another person, whatever the logon says
    ):
        obs = observed(record)
        assert obs.actor == "jane@corp.example" and names(obs) == {"sensitive_api"}, record
        assert obs.seen == [("resource", f"mailbox:{boss}")]
    by_sid = observed(mailbox("FolderBind", "jane@corp.example", None, 2))  # no UPN: the delegate logon tells
    assert names(by_sid) == {"sensitive_api"} and by_sid.seen == [("resource", "mailbox:S-1-5-21-1-2-3-1001")]
    sent = mailbox("SendAs", "jane@corp.example", boss, 2, SendAsUserSmtp="boss@corp.example")
    behalf = mailbox("SendOnBehalf", "jane@corp.example", boss, 2, SendOnBehalfOfUserSmtp="boss@corp.example")
    assert names(observed(sent)) == names(observed(behalf)) == {"sensitive_api"}
    for own in (
        mailbox("MailItemsAccessed", "jane@corp.example", "JANE@corp.example", 0),
        mailbox("FolderBind", "jane@corp.example", "jane@corp.example", 1),  # an administrator in their own mailbox
        mailbox("MailItemsAccessed", "jane@corp.example", None, 0),
        mailbox("SendAs", "jane@corp.example", None, 0, SendAsUserSmtp="jane@corp.example"),
        mailbox("SendAs", "jane@corp.example", None, 0),
    ):
        assert names(observed(own)) == set(), own


@pytest.mark.parametrize("saved", ["ndjson", "purview", "sentinel", "defender"])
def test_a_first_look_into_an_executives_mailbox_ranks_first_above_delegates_who_read_theirs_daily(
    tmp_path: Path, saved: str
) -> None:
    rng = random.Random(5)
    people = [f"user{n}@corp.example" for n in range(40)]
    executives, assistants = people[:4], people[4:8]  # each assistant reads an executive's mail every day
    records = [mailbox("MailItemsAccessed", person, person, 0, at) for person, at in working_days(rng, people, 2, 6)]
    for assistant, executive in zip(assistants, executives, strict=True):
        records += [
            mailbox("MailItemsAccessed", assistant, executive, 2, at) for _, at in working_days(rng, [assistant], 1, 5)
        ]
    snoop, when = people[23], START + timedelta(days=19, hours=13)
    sent = (when + timedelta(minutes=5)).isoformat()
    records.append(mailbox("MailItemsAccessed", snoop, executives[0], 2, when.isoformat()))
    records.append(mailbox("SendAs", snoop, executives[0], 2, sent, SendAsUserSmtp=executives[0]))
    label = LabelRow("incident-1", "mailbox_snooping", snoop, "insider", when, when + timedelta(hours=1))
    assert best_rank_of(tmp_path, records, label, saved) == 1


TRAIL_SAMPLES: list[dict[str, Any]] = [
    {
        "eventName": "GetObject",
        "eventSource": "s3.amazonaws.com",
        "requestParameters": {"bucketName": "payroll", "key": "2024.csv"},
        "additionalEventData": {"bytesTransferredOut": 52311},
    },
    {
        "eventName": "ConsoleLogin",
        "eventSource": "signin.amazonaws.com",
        "responseElements": {"ConsoleLogin": "Failure"},
        "errorMessage": "Failed authentication",
    },
    {
        "eventName": "ConsoleLogin",
        "eventSource": "signin.amazonaws.com",
        "responseElements": {"ConsoleLogin": "Success"},
    },
    {"eventName": "CreateAccessKey", "eventSource": "iam.amazonaws.com", "requestParameters": {"userName": "bob"}},
    {
        "eventName": "AttachUserPolicy",
        "eventSource": "iam.amazonaws.com",
        "requestParameters": {"userName": "alice", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
    },
    {"eventName": "StopLogging", "eventSource": "cloudtrail.amazonaws.com", "requestParameters": {"name": "main"}},
    {"eventName": "ListBuckets", "eventSource": "s3.amazonaws.com", "errorCode": "AccessDenied"},
    {"eventName": "DeleteBucket", "eventSource": "s3.amazonaws.com", "requestParameters": {"bucketName": "old"}},
    {
        "eventName": "AssumeRole",
        "eventSource": "sts.amazonaws.com",
        "requestParameters": {"roleArn": "arn:aws:iam::123456789012:role/Admin", "roleSessionName": "alice"},
    },
]
IDENTITIES: list[dict[str, Any]] = [
    {
        "type": "IAMUser",
        "userName": "alice",
        "arn": "arn:aws:iam::123456789012:user/alice",
        "principalId": "AIDAEXAMPLE",
        "accountId": "123456789012",
    },
    {
        "type": "AssumedRole",
        "arn": "arn:aws:sts::123456789012:assumed-role/Dev/alice@corp.example",
        "principalId": "AROAEXAMPLE:alice@corp.example",
        "accountId": "123456789012",
        "sessionContext": {
            "sessionIssuer": {"type": "Role", "userName": "Dev", "arn": "arn:aws:iam::123456789012:role/Dev"}
        },
    },
    {
        "type": "Root",
        "arn": "arn:aws:iam::123456789012:root",
        "principalId": "123456789012",
        "accountId": "123456789012",
    },
]


def trail_samples() -> list[dict[str, Any]]:
    otrf = SHARED / "datasets" / "otrf-cloudtrail" / "ec2_proxy_s3_exfiltration_2020-09-14011940.json"
    shared = [orjson.loads(line) for line in otrf.read_bytes().splitlines() if line.strip()]
    made = [
        {
            "eventVersion": "1.08",
            "eventTime": "2024-03-04T09:00:00Z",
            "eventID": f"e{n}",
            "sourceIPAddress": "198.51.100.7",
            "userIdentity": identity,
            **sample,
        }
        for n, (identity, sample) in enumerate((i, s) for i in IDENTITIES for s in TRAIL_SAMPLES)
    ]
    return shared + made


@pytest.mark.parametrize("original", [False, True])
def test_cloudtrail_in_elastics_aws_integration_is_read_as_the_cloudtrail_record(original: bool) -> None:
    """With `event.original` the record is read as it stands; without it, it is rebuilt from the fields kept."""
    features = set()
    for record in trail_samples():
        expected = EXTRACTOR.extract(record)
        document = elastic_cloudtrail(record, original)
        found = EXTRACTOR.extract(document)
        assert found == expected, record
        assert to_event(document, GENERIC, "elastic").actor == to_event(record, CLOUDTRAIL, "cloudtrail").actor
        features |= names(found) if found is not None else set()
    assert features >= {
        "download",
        "download_bytes",
        "signin",
        "signin_failed",
        "sensitive_api",
        "access_key_other",
        "privilege_grant",
        "access_denied",
        "delete",
    }


def m365_samples() -> list[dict[str, Any]]:
    """Unified audit records of each kind scoring reads, and of some it reads as nothing."""
    boss = "boss@corp.example"
    return [
        unified_audit("FileDownloaded", "SharePoint", ObjectId=DOC),
        unified_audit("FileAccessed", "SharePoint", ObjectId=DOC),
        unified_audit("FileRecycled", "OneDrive", ObjectId=DOC),
        unified_audit("AnonymousLinkCreated", "OneDrive", ObjectId=DOC),
        unified_audit("SharingInvitationCreated", "SharePoint", ObjectId=DOC, TargetUserOrGroupType="Guest"),
        unified_audit(
            "New-InboxRule", "Exchange", RecordType=1, Parameters=[{"Name": "ForwardTo", "Value": "me@gmail.com"}]
        ),
        unified_audit(
            "New-InboxRule", "Exchange", RecordType=1, Parameters=[{"Name": "MoveToFolder", "Value": "Archive"}]
        ),
        unified_audit("Add member to role.", "AzureActiveDirectory", RecordType=8),
        unified_audit("FileDownloaded", "SharePoint", UserType=5, UserId="app@sharepoint"),
        mailbox("MailItemsAccessed", "jane@corp.example", boss, 2),
        mailbox("FolderBind", "jane@corp.example", None, 1),
        mailbox("MailItemsAccessed", "jane@corp.example", "jane@corp.example", 0),
        mailbox("SendAs", "jane@corp.example", boss, 2, SendAsUserSmtp=boss),
        endpoint_dlp("FileCopiedToRemovableMedia", RemovableMediaDeviceAttributes=USB_STICK),
        endpoint_dlp("FileUploadedToCloud", TargetDomain="www.dropbox.com"),
        endpoint_dlp("FilePrinted"),
        endpoint_dlp("FileCopiedToNetworkShare"),
    ]


M365_READ = {
    "usb_files",
    "upload_bytes",
    "cloud_upload",
    "print",
    "download",
    "file_access",
    "delete",
    "external_share",
    "mail_forwarding",
    "privilege_grant",
    "sensitive_api",
}
"""What `m365_samples` are read for."""


def test_cloudtrail_in_sentinels_aws_table_is_read_as_the_cloudtrail_record() -> None:
    """`AWSCloudTrail` flattens the identity into columns and keeps the request and response as JSON text."""
    seen: set[str] = set()
    samples = trail_samples()
    for record in samples:
        expected = EXTRACTOR.extract(record)
        row = aws_cloudtrail(record)
        assert EXTRACTOR.extract(row) == expected, record
        native, stored = to_event(record, CLOUDTRAIL, "ct"), to_event(row, GENERIC, "sentinel")
        fields = ("actor", "action", "target", "outcome", "src_ip", "bytes", "time")
        assert [getattr(stored, f) for f in fields] == [getattr(native, f) for f in fields], record
        seen |= names(expected) if expected is not None else set()
    assert len(samples) >= 20 and {"download", "sensitive_api", "privilege_grant", "access_denied"} <= seen


def test_microsoft_365_in_elastics_integration_is_read_as_the_unified_audit_record() -> None:
    seen = set()
    for record in m365_samples():
        expected = EXTRACTOR.extract(record)
        assert EXTRACTOR.extract(elastic_m365(record)) == expected, record
        seen |= names(expected) if expected is not None else set()
    assert seen == M365_READ


@pytest.mark.parametrize(
    ("shape", "as_text"),
    [(sentinel_office, False), (sentinel_office, True), (cloud_app_event, False), (cloud_app_event, True)],
)
def test_sentinel_and_defender_rows_are_read_as_the_unified_audit_record(
    shape: Callable[[dict[str, Any], bool], dict[str, Any]], as_text: bool
) -> None:
    """`OfficeActivity` names the user's and the mailbox logon's kinds, and renames the workload, object and id;
    `CloudAppEvents` holds the record in `RawEventData`."""
    seen = set()
    m365 = SourceSettings(format="m365")
    for record in m365_samples():
        expected = EXTRACTOR.extract(record)
        row = shape(record, as_text)
        assert EXTRACTOR.extract(row) == expected, row
        seen |= names(expected) if expected is not None else set()
        native, stored = to_event(record, m365, "m365"), to_event(row, GENERIC, "sentinel")
        assert (stored.actor, stored.action, stored.target, stored.time) == (
            native.actor,
            native.action,
            native.target,
            native.time,
        )
        assert not stored.warnings, stored.warnings
    assert seen == M365_READ


@pytest.mark.parametrize("as_text", [False, True])
def test_sentinel_audit_log_rows_are_read_as_entras_directory_audits(as_text: bool) -> None:
    seen: set[str] = set()
    audits = [r for r in records("azure_signin") if "activityDisplayName" in (r.get("properties") or {})]
    for record in audits:
        expected = EXTRACTOR.extract(record)
        row = sentinel_audit(record["properties"], as_text, record.get("time"))
        assert EXTRACTOR.extract(row) == expected, record
        native = to_event(record, SourceSettings(format="entra_audit_diagnostic"), "entra")
        stored = to_event(row, GENERIC, "sentinel")
        assert (stored.actor, stored.action, stored.outcome) == (native.actor, native.action, native.outcome)
        seen |= names(expected) if expected is not None else set()
    assert len(audits) >= 10 and "privilege_grant" in seen


def test_google_workspace_in_elastics_integration_is_read_as_the_activity() -> None:
    """Elastic's `user.name` is the address cut at its `@`: the person is the actor's whole address."""
    seen = set()
    for record in records("gsuite"):
        expected = EXTRACTOR.extract(record)
        if expected is None or "name" not in record or record["id"].get("applicationName") is None:
            continue
        document = elastic_workspace(record)
        assert EXTRACTOR.extract(document) == expected, record
        assert to_event(document, GENERIC, "elastic").actor == expected.actor  # routed and joined by it
        seen |= names(expected)
    expected_kinds = {"download", "file_access", "delete", "external_share", "signin", "signin_failed"}
    assert seen >= expected_kinds | {"factor_change", "sensitive_api", "mail_forwarding"}


def test_entra_sign_ins_in_elastics_azure_integration_are_read_as_entras_own() -> None:
    """Elastic's `user.name` is the user principal name cut at its `@`: the person is the whole name."""
    seen: set[str] = set()
    found = 0
    for record in records("azure_signin"):
        if not str(record.get("category", "")).endswith("SignInLogs"):
            continue
        expected = EXTRACTOR.extract(record)
        document = elastic_entra(record)
        assert EXTRACTOR.extract(document) == expected, record
        if expected is not None:
            assert to_event(document, GENERIC, "elastic").actor == expected.actor  # routed and joined by it
            seen |= names(expected)
            found += 1
    assert found >= 10 and seen >= {"signin", "signin_failed"}
    service = {"category": "ServicePrincipalSignInLogs", "resultType": "0", "properties": {"servicePrincipalId": "x"}}
    assert EXTRACTOR.extract(elastic_entra(service)) is None  # no person, as from Entra itself


def test_github_audit_events_in_elastics_integration_are_read_as_githubs_own() -> None:
    seen: set[str] = set()
    found = 0
    for record in records("github"):
        if not (isinstance(record.get("action"), str) and isinstance(record.get("actor"), str)):
            continue
        expected = EXTRACTOR.extract(record)
        document = elastic_github(record)
        assert EXTRACTOR.extract(document) == expected, record
        assert (
            to_event(document, GENERIC, "elastic").actor
            == to_event(record, SourceSettings(format="github"), "gh").actor
        )
        seen |= names(expected) if expected is not None else set()
        found += 1
    assert found >= 10 and seen >= {"download", "external_share", "privilege_grant"}


def test_entra_audits_in_elastics_azure_integration_are_read_as_entras_own() -> None:
    seen: set[str] = set()
    audits = [r for r in records("azure_signin") if "activityDisplayName" in (r.get("properties") or {})]
    for record in audits:
        expected = EXTRACTOR.extract(record)
        document = elastic_entra_audit(record)
        assert EXTRACTOR.extract(document) == expected, record
        native = to_event(record, SourceSettings(format="entra_audit_diagnostic"), "entra")
        assert to_event(document, GENERIC, "elastic").actor == native.actor
        seen |= names(expected) if expected is not None else set()
    assert len(audits) >= 10 and "privilege_grant" in seen


@pytest.mark.parametrize("as_text", [False, True])
def test_sentinel_sign_in_rows_are_read_as_entras_own(as_text: bool) -> None:
    found = 0
    for record in records("azure_signin"):
        if record.get("category") not in ("SignInLogs", "NonInteractiveUserSignInLogs"):
            continue
        expected = EXTRACTOR.extract(record)
        assert EXTRACTOR.extract(sentinel_signin(record, as_text)) == expected, record
        found += expected is not None
    assert found >= 10


def test_okta_in_elastics_okta_integration_is_read_as_the_okta_event() -> None:
    """Elastic's `user.name` is the address cut at its `@`: the person is the actor's whole address, as from Okta."""
    seen = set()
    for record in records("okta"):
        expected = EXTRACTOR.extract(record)
        if expected is None or "eventType" not in record:
            continue
        document = elastic_okta(record)
        assert EXTRACTOR.extract(document) == expected, record
        assert to_event(document, GENERIC, "elastic").actor == expected.actor  # routed and joined by it
        seen |= names(expected) | {kind for kind, _ in expected.seen}
    assert seen >= {"signin", "signin_failed", "privilege_grant", "device", "country", "asn"}


def test_an_ecs_document_whose_original_no_reader_knows_is_read_as_ecs() -> None:
    logon: dict[str, Any] = {
        "@timestamp": "2024-03-04T09:00:00Z",
        "event": {"category": ["authentication"], "action": "logged-in", "outcome": "success"},
        "user": {"name": "alice"},
        "host": {"name": "ws-1"},
    }
    for original in (
        '{"some": "json"}',
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'/>",
        "{cut",
        '{"event": {"kind": "event"}}',
    ):
        kept = {**logon, "event": {**logon["event"], "original": original}}
        assert EXTRACTOR.extract(kept) == EXTRACTOR.extract(logon)


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


def record_named(dataset: str, test_name: str) -> dict[str, Any]:
    """The record of one of the shared data's named tests, `p_*` keys stripped."""
    for line in (DATASETS / f"{dataset}.ndjson").read_bytes().splitlines():
        row = orjson.loads(line)
        if row["test_name"] == test_name:
            return {k: v for k, v in row["log"].items() if not k.startswith("p_")}
    raise AssertionError(f"no test {test_name!r} in {dataset}")


COMPANY = Extractor(ScoringSettings(), ["company.com", "company.io", "runpanther.com", "runpanther.io", "lotr.com"])


def slack_audit(action: str, **fields: Any) -> dict[str, Any]:
    """A Slack audit log entry as the Audit Logs API returns it."""
    actor = {"type": "user", "user": {"id": "W123AB456", "name": "ann", "email": "ann@company.com"}}
    return {
        "id": "0123a45b-6c7d-8900-e12f-3456789gh0i1",
        "date_create": 1709542800,
        "action": action,
        "actor": actor,
        "context": {
            "location": {"type": "workspace", "id": "T01234N56GB", "domain": "corp"},
            "ua": "Slack",
            "ip_address": "198.51.100.4",
        },
        **fields,
    }


@pytest.mark.parametrize(
    ("record", "features"),
    [
        (record_named("slack", "Role Changed to Admin"), {"privilege_grant"}),
        (record_named("slack", "Role Changed to Owner"), {"privilege_grant", "self_grant"}),  # actor and entity one
        (record_named("slack", "Role Changed to User"), set()),
        (record_named("slack", "SSO Setting Changed"), {"sensitive_api"}),
        (record_named("slack", "MFA Auth Changed"), {"sensitive_api"}),
        (record_named("slack", "User Logout"), set()),
        (slack_audit("user_login"), {"signin"}),
        (slack_audit("user_login_failed"), {"signin_failed"}),
        (slack_audit("manual_export_started"), {"sensitive_api"}),  # every message and file of the workspace
        (
            slack_audit("file_downloaded", entity={"type": "file", "file": {"id": "F0123", "name": "plan.pdf"}}),
            {"download"},
        ),
        (slack_audit("file_public_link_created", entity={"type": "file", "file": {"id": "F0123"}}), {"external_share"}),
    ],
)
def test_slack_audit_entries_are_read_for_the_member_who_acted(record: dict[str, Any], features: set[str]) -> None:
    obs = observed(record)
    assert obs.actor == record["actor"]["user"]["email"] and names(obs) == features
    assert record_time(slack_audit("user_login")) == datetime(2024, 3, 4, 9, tzinfo=UTC)
    if features == {"download"}:
        assert obs.seen == [("resource", "slack:F0123")]


def test_a_slack_app_acting_is_no_member() -> None:
    record = slack_audit("file_downloaded", actor={"type": "app", "app": {"id": "A1", "name": "exporter"}})
    assert EXTRACTOR.extract(record) is None


def box_event(event_type: str, **fields: Any) -> dict[str, Any]:
    """A Box enterprise event (`admin_logs` stream) as the Events API returns it."""
    return {
        "type": "event",
        "event_id": "f82c3ba03e41f7e8a7608363cc6c0390183c3f83",
        "created_at": "2024-03-04T09:00:00-08:00",
        "event_type": event_type,
        "created_by": {"type": "user", "id": "11446498", "name": "Ann Lee", "login": "ann@company.com"},
        "source": {"item_type": "file", "item_id": "1234567", "item_name": "plan.xlsx"},
        **fields,
    }


@pytest.mark.parametrize(
    ("record", "features"),
    [
        (record_named("box_dropbox", "User Download"), {"download"}),
        (record_named("box_dropbox", "File marked malicious"), set()),
        (record_named("box_dropbox", "Regular Event"), {"delete"}),
        (record_named("box_dropbox", "New Login Event"), set()),  # a device added: the sign-in counts, not this
        (box_event("LOGIN"), {"signin"}),
        (box_event("FAILED_LOGIN"), {"signin_failed"}),
        (box_event("DEVICE_TRUST_CHECK_FAILED"), {"signin_failed"}),  # a device the policy does not trust
        (box_event("PREVIEW"), {"file_access"}),
        (box_event("CHANGE_ADMIN_ROLE"), {"privilege_grant"}),
        (
            box_event("COLLABORATION_INVITE", accessible_by={"type": "user", "login": "me@gmail.com"}),
            {"external_share"},
        ),
        (box_event("COLLABORATION_INVITE", accessible_by={"type": "user", "login": "bob@company.com"}), set()),
    ],
)
def test_box_events_are_read_for_the_user_who_acted(record: dict[str, Any], features: set[str]) -> None:
    obs = COMPANY.extract(record)
    assert obs is not None and obs.actor == record["created_by"]["login"] and names(obs) == features
    item = (record.get("source") or {}).get("item_id")
    assert obs.seen == ([("resource", f"box:{item}")] if item and features & {"download", "file_access"} else [])


def test_an_anonymous_box_viewer_is_no_one() -> None:
    assert EXTRACTOR.extract(record_named("box_dropbox", "Previewed Anonymously")) is None
    assert EXTRACTOR.extract(record_named("box_dropbox", "Missing Created By")) is None


@pytest.mark.parametrize(
    ("test_name", "actor", "features"),
    [
        ("File Downloaded", "alice@company.com", {"download"}),
        ("Non-Delete Event", "alice@company.com", {"download"}),
        ("File Deleted", "alice@company.com", {"delete"}),
        ("external share", "alice.bob@company.com", {"external_share"}),  # a member outside the team
        ("Folder Ownership Transfer to External", "alice.bob@company.io", set()),  # to the same company
        ("Folder Ownership Transfer to Internal", "alice.bob@company.io", {"external_share"}),  # to example.com
        ("2FA Disabled", "alice.bob@company.io", {"factor_change"}),
        ("Sign-in-as Session", "adminuser@company.com", {"sensitive_api"}),  # an admin in a member's account
    ],
)
def test_dropbox_team_events_are_read_for_the_member_or_admin_who_acted(
    test_name: str, actor: str, features: set[str]
) -> None:
    record = record_named("box_dropbox", test_name)
    obs = COMPANY.extract(record)
    assert obs is not None and (obs.actor, names(obs)) == (actor, features)
    assert COMPANY.extract({**record, "event_type": {".tag": record["event_type"]["_tag"]}}) == obs  # the API's tag


@pytest.mark.parametrize(
    ("test_name", "features"),
    [
        ("Gmail account added", {"privilege_grant", "external_share"}),
        ("Expected account added", {"privilege_grant"}),
        ("Manual Change", set()),  # a binding removed
        ("GCS AllUsers Read Permission", {"privilege_grant", "external_share"}),  # a bucket open to anyone
        ("GCP Run IAM Policy Set", {"privilege_grant"}),  # no delta logged: a policy set
        ("Created Service Account Key", {"sensitive_api"}),
        ("Object Get Without Copy Operation", {"download"}),
        ("External User Ownership Invite", {"privilege_grant"}),
    ],
)
def test_google_cloud_audit_entries_are_read_for_the_principal(test_name: str, features: set[str]) -> None:
    record = record_named("gcp_audit", test_name)
    obs = COMPANY.extract(record)
    assert obs is not None and obs.actor == record["protoPayload"]["authenticationInfo"]["principalEmail"]
    assert names(obs) == features
    for code, refused in ((7, {"access_denied"}), (5, set())):  # PERMISSION_DENIED; NOT_FOUND
        failed = {**record, "protoPayload": {**record["protoPayload"], "status": {"code": code, "message": "no"}}}
        assert names(observed(failed)) == refused, "a call refused did nothing but be refused"


def test_google_cloud_log_routing_changes_and_self_grants_count() -> None:
    sinks = [
        r
        for r in records("gcp_audit")
        if "ConfigServiceV2.DeleteSink" in str(r.get("protoPayload", {}).get("methodName"))
    ]
    assert sinks and all("sensitive_api" in names(observed(r)) for r in sinks)
    delta = {"bindingDeltas": [{"action": "ADD", "role": "roles/owner", "member": "user:Ann@company.com"}]}
    payload = {
        "authenticationInfo": {"principalEmail": "ann@company.com"},
        "methodName": "SetIamPolicy",
        "serviceData": {"policyDelta": delta},
    }
    granted = COMPANY.extract({"protoPayload": payload, "timestamp": "2024-03-04T09:00:00Z"})
    assert granted is not None and names(granted) == {"privilege_grant", "self_grant"}
    assert record_time({"protoPayload": payload, "timestamp": "2024-03-04T09:00:00Z"}) == datetime(
        2024, 3, 4, 9, tzinfo=UTC
    )
    resolver = IdentityResolver([], ScoringSettings().identities)
    assert resolver.resolve("terraform@platform.iam.gserviceaccount.com")[1] == SERVICE


def cloudtrail_record(identity: dict[str, Any], event: str = "GetObject", **fields: Any) -> dict[str, Any]:
    return {
        "eventVersion": "1.08",
        "eventTime": "2024-03-04T09:00:00Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": event,
        "userIdentity": identity,
        "requestParameters": {"bucketName": "finance", "key": "ledger.xlsx"},
        **fields,
    }


def assumed(role: str, session: str) -> dict[str, Any]:
    return {"type": "AssumedRole", "arn": f"arn:aws:sts::123456789012:assumed-role/{role}/{session}"}


@pytest.mark.parametrize(
    ("identity", "actor", "kind"),
    [
        (assumed("AWSReservedSSO_Admin_0123abcd", "jane@corp.example"), "jane@corp.example", PERSON),
        (assumed("BankingWAFRole", "i-0317f6c6b66ae9c40"), "i-0317f6c6b66ae9c40", SERVICE),  # an instance's role
        (assumed("Deploy", "botocore-session-1712345678"), "role/Deploy", SERVICE),  # a name the SDK made up
        (assumed("Deploy", "aws-go-sdk-1712345678901"), "role/Deploy", SERVICE),
        (assumed("Deploy", "0f8fad5b-d9cb-469f-a165-70867728950e"), "role/Deploy", SERVICE),
        ({"type": "IAMUser", "userName": "pedro", "arn": "arn:aws:iam::123456789012:user/pedro"}, "pedro", PERSON),
        ({"type": "Root", "accountId": "123456789012"}, "root@123456789012", PERSON),
    ],
)
def test_a_cloudtrail_identity_is_the_person_or_the_role_behind_it(
    identity: dict[str, Any], actor: str, kind: str
) -> None:
    """Once each session an SDK named (`botocore-session-<time>`) was an entity of its own, new every hour."""
    record = cloudtrail_record(identity)
    assert observed(record).actor == actor
    assert to_event(record, SourceSettings(format="cloudtrail"), "cloudtrail").actor == actor  # routed by it too
    assert IdentityResolver([], ScoringSettings().identities).resolve(actor)[1] == kind


def test_a_console_sign_in_failed_under_a_name_the_account_lacks_is_no_one_s() -> None:
    """CloudTrail hides a mistyped or sprayed user name; read as a name, every such failure was one entity's."""
    hidden = {"type": "IAMUser", "userName": "HIDDEN_DUE_TO_SECURITY_REASONS", "accountId": "123456789012"}
    record = cloudtrail_record(hidden, "ConsoleLogin", responseElements={"ConsoleLogin": "Failure"})
    assert EXTRACTOR.extract(record) is None
    assert to_event(record, SourceSettings(format="cloudtrail"), "cloudtrail").actor is None


def test_a_role_taken_is_a_resource_first_accessed_and_a_role_refused_an_access_denied() -> None:
    """A person assuming a role they never took before reaches for access of a new kind: the role is a resource,
    first accessed once."""
    person = assumed("AWSReservedSSO_Developer_0123abcd", "jane@corp.example")
    role = {"roleArn": "arn:aws:iam::123456789012:role/ProdAdmin", "roleSessionName": "jane@corp.example"}
    taken = observed(cloudtrail_record(person, "AssumeRole", eventSource="sts.amazonaws.com", requestParameters=role))
    assert taken.seen == [("resource", "aws:arn:aws:iam::123456789012:role/ProdAdmin")] and names(taken) == set()
    refused = cloudtrail_record(
        person, "AssumeRole", eventSource="sts.amazonaws.com", requestParameters=role, errorCode="AccessDenied"
    )
    assert observed(refused).seen == [] and names(observed(refused)) == {"access_denied"}


def test_the_recorded_ec2_proxy_exfiltration_is_read_for_the_user_and_the_instance() -> None:
    path = SHARED / "datasets" / "otrf-cloudtrail" / "ec2_proxy_s3_exfiltration_2020-09-14011940.json"
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    found = [EXTRACTOR.extract(row) for row in rows]
    assert all(obs is None for row, obs in zip(rows, found, strict=True) if row["userIdentity"]["type"] == "AWSService")
    read = [obs for obs in found if obs is not None]
    assert {obs.actor for obs in read} == {"pedro", "i-0317f6c6b66ae9c40"}
    assert sum(("download", 1.0) in obs.features for obs in read) == 2  # the two objects taken


@pytest.mark.parametrize(
    ("test_name", "features"),
    [
        ("API Key Created", {"sensitive_api"}),  # a token that outlives its maker's access
        ("MFA Disabled", {"sensitive_api"}),  # a factor switched off for everyone
        ("Support Access Granted", {"sensitive_api"}),
        ("User accessed another user's password", {"sensitive_api"}),
        ("User accessed their own password", set()),
        ("User accessed their own password - 2", set()),
    ],
)
def test_okta_credentials_and_controls_touched_are_sensitive(test_name: str, features: set[str]) -> None:
    record = record_named("okta", test_name)
    obs = observed(record)
    assert obs.actor == record["actor"]["alternateId"] and names(obs) == features


def test_another_person_s_okta_password_reset_is_sensitive() -> None:
    """The shared records of an administrator (and Okta support) resetting someone's password; they carry no
    `published`, which the System Log API always gives."""
    for test_name in ("Reset by Company Admin", "Support Reset Credential"):
        record = {**record_named("okta", test_name), "published": "2024-03-04T09:00:00.000Z"}
        assert names(observed(record)) == {"sensitive_api"}, test_name
        own = {**record, "target": [{**record["target"][0], "alternateId": record["actor"]["alternateId"]}]}
        assert names(observed(own)) == set(), "one's own password is not another's"


def test_okta_admin_privileges_granted_to_a_group_or_a_person_are_grants() -> None:
    """`group.privilege.grant` (an administrator role given to a group) as the System Log API returns it."""
    for event_type in ("group.privilege.grant", "user.account.privilege.grant"):
        record = {
            "uuid": "0d3f5e1a-0000-4000-8000-000000000001",
            "published": "2024-03-04T09:00:00.000Z",
            "eventType": event_type,
            "actor": {"alternateId": "marge@springfield.gov", "type": "User"},
            "target": [{"alternateId": "Helpdesk", "type": "UserGroup", "displayName": "Helpdesk"}],
            "outcome": {"result": "SUCCESS"},
        }
        assert names(observed(record)) == {"privilege_grant"}, event_type


def test_a_sign_in_the_person_reports_as_not_theirs_is_an_attack_on_their_account() -> None:
    record = {
        "eventType": "user.account.report_suspicious_activity_by_enduser",
        "published": "2024-03-04T09:00:00.000Z",
        "actor": {"alternateId": "ann@corp.example", "type": "User"},
        "outcome": {"result": "SUCCESS"},
    }
    assert names(observed(record)) == {"mfa_failed"}


@pytest.mark.parametrize(
    ("test_name", "actor", "features"),
    [
        ("Elevate Access to All Azure Subscriptions", "attacker@example.com", {"privilege_grant", "self_grant"}),
        ("Storage Account Keys Listed", "denethor@lotr.com", {"sensitive_api"}),
        ("Resource Lock Deleted Successfully", "compromised-admin@company.com", {"sensitive_api"}),
        ("Immutability Policy Deleted Successfully", "attacker@example.com", {"sensitive_api"}),
        ("Protection Container Deleted Successfully", "compromised-admin@company.com", {"delete"}),
        ("Versioning Disabled", "denethor@lotr.com", set()),
    ],
)
def test_azure_activity_log_operations_are_read_for_the_caller(test_name: str, actor: str, features: set[str]) -> None:
    """Once no Azure activity record was read: a Global Administrator taking every subscription counted nothing."""
    record = record_named("azure_activity", test_name)
    obs = observed(record)
    assert (obs.actor, names(obs)) == (actor, features)
    failed = {**record, "resultType": "Failure"}
    assert names(observed(failed)) == set(), "an operation refused did nothing"


def test_an_application_acting_in_azure_is_no_one_and_the_rest_api_s_caller_is_read() -> None:
    by_app = [r for r in records("azure_activity") if "appid" in str((r.get("identity") or {}).get("claims"))]
    assert by_app and all(EXTRACTOR.extract(r) is None for r in by_app)
    rest = {
        "caller": "ann@corp.example",
        "operationName": {"value": "Microsoft.Authorization/roleAssignments/write", "localizedValue": "Create role"},
        "resourceId": "/subscriptions/0000/providers/Microsoft.Authorization/roleAssignments/1111",
        "status": {"value": "Succeeded"},
        "eventTimestamp": "2024-03-04T09:00:00Z",
    }
    assert (observed(rest).actor, names(observed(rest))) == ("ann@corp.example", {"privilege_grant"})
    assert record_time(rest) == datetime(2024, 3, 4, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    "record",
    [
        slack_audit("user_login", actor={"type": "user", "user": {"email": ["ann@company.com"]}}),
        slack_audit("user_login", actor={"type": "user", "user": {"email": "  "}}),
        box_event("DOWNLOAD", created_by={"type": "user", "login": {"id": 1}}),
        {"event_type": {".tag": "file_download"}, "actor": {"user": {"email": 42}}},
        {"protoPayload": {"authenticationInfo": {"principalEmail": ["x@company.com"]}, "methodName": "SetIamPolicy"}},
        {"operationName": "Microsoft.Compute/disks/delete", "resourceId": "/x", "caller": {"upn": "a@b.c"}},
    ],
)
def test_a_service_record_whose_actor_is_not_text_names_no_one(record: dict[str, Any]) -> None:
    """A hostile or broken record: no entity named after an object's or a list's text."""
    assert COMPANY.extract(record) is None


@pytest.mark.parametrize(
    ("test_name", "features"),
    [
        ("Login Event", {"signin"}),
        ("Admin lockout- valid json", {"mfa_failed"}),  # too many passcodes tried
        ("marked_fraud", {"mfa_failed"}),  # the administrator's own push reported as fraud
        ("Admin Create", {"privilege_grant"}),
        ("Generic Skey View", {"sensitive_api"}),  # an integration's secret key shown
        ("Duo app install ", set()),
        ("Bypass Create", {"sensitive_api"}),  # a code that signs someone in without their second factor
        ("Bypass View", {"sensitive_api"}),
        ("Bypass Enabled", {"sensitive_api"}),  # a user's second factor switched off
        ("Account Disabled", set()),
        ("Phones Update", set()),
        ("Admin API Integration Created", {"sensitive_api"}),  # a credential to administer Duo itself
        ("Non Admin API Integration", set()),
        ("Admin MFA Update Event", {"sensitive_api"}),
        ("Policy Update", {"sensitive_api"}),
        ("Enforcement Disabled", {"sensitive_api"}),  # administrators' single sign-on no longer required
        ("Enforcement Optional", {"sensitive_api"}),
        ("Enforcement Required", set()),
        ("SSO Update", set()),
    ],
)
def test_duo_administrator_actions_are_read_for_the_administrator(test_name: str, features: set[str]) -> None:
    """Once Duo's administrator log was not read: a bypass code made for someone counted for nothing."""
    record = record_named("duo", test_name)
    obs = observed(record)
    assert obs.actor == record["username"] and names(obs) == features
    assert record_time(record) is not None


def test_an_administrator_named_by_display_name_is_the_person_the_directory_gives_it() -> None:
    """Duo's administrator log names administrators by full name: the directory's display name, when one person
    has it."""
    people = [
        Person("homer@company.com", display_name="Homer Simpson"),
        Person("bart@company.com", display_name="Bart Simpson"),
        Person("bart.s@company.com", display_name="Bart  Simpson"),  # two people of one name
    ]
    resolver = IdentityResolver(people, ScoringSettings().identities)
    actor = observed(record_named("duo", "Bypass View")).actor
    assert resolver.resolve(actor) == resolver.resolve("homer@company.com") == ("homer@company.com", PERSON)
    assert resolver.resolve("bart simpson") == ("bart simpson", PERSON), "a name two people have is neither's"


AKS: SourceFormatName = "azure_activity"
GKE: SourceFormatName = "gcp_audit"


@pytest.mark.parametrize(
    ("dataset", "test_name", "actor", "features"),
    [
        (AKS, "AKS Exec Into Pod (realistic)", "masterclient", {"pam_session"}),
        (AKS, "AKS cluster-wide secret list", "compromised-user@example.com", {"file_access"}),
        (AKS, "AKS 403 from Public IP", "test-user", {"access_denied"}),
        (
            "azure_activity",
            "AKS failed secret get (401 Unauthorized)",
            "compromised-user@example.com",
            {"signin_failed"},
        ),
        (
            "azure_activity",
            "AKS ClusterRoleBinding to system:masters",
            "malicious-user@example.com",
            {"privilege_grant"},
        ),
        (AKS, "AKS Role with pods/exec in namespace", "malicious-user@example.com", {"privilege_grant"}),
        (AKS, "AKS long-lived token created", "persistence-user@example.com", {"sensitive_api"}),
        (AKS, "AKS client certificate CSR created", "persistence-user@example.com", {"sensitive_api"}),
        (AKS, "AKS ValidatingWebhookConfiguration Created", "policy-admin@example.com", {"sensitive_api"}),
        (AKS, "AKS DaemonSet Created", "admin@example.com", set()),
        (GKE, "GCP GKE Exec Into Pod", "user@company.com", {"pam_session"}),
        (GKE, "GKE cluster-wide secret list", "user@company.com", {"file_access"}),
        (GKE, "GKE failed secret get", "user@company.com", {"access_denied"}),
        (GKE, "GKE ClusterRoleBinding to admin role", "user@company.com", {"privilege_grant"}),
        (GKE, "GKE client certificate CSR created", "user@company.com", {"sensitive_api"}),
        (GKE, "GKE MutatingWebhookConfiguration Created", "user@company.com", {"sensitive_api"}),
        (GKE, "GCP GKE CronJob Created", "user@company.com", set()),
    ],
)
def test_kubernetes_api_calls_are_read_as_aks_and_gke_log_them(
    dataset: SourceFormatName, test_name: str, actor: str, features: set[str]
) -> None:
    """AKS's API server audit (a `kube-audit` diagnostic record, the event as JSON text) and GKE's (a Google Cloud
    audit entry whose method is `io.k8s....`): read for the person who called, routed by the same name."""
    record = record_named(dataset, test_name)
    obs = observed(record)
    assert obs.actor == actor == to_event(record, SourceSettings(format=dataset), dataset).actor
    assert names(obs) == features


def test_kubernetes_system_accounts_are_services() -> None:
    for name in ("system:serviceaccount:kube-system:metrics-server", "system:node:aks-1", "system:anonymous"):
        assert IdentityResolver([], ScoringSettings().identities).resolve(name)[1] == SERVICE


@pytest.mark.parametrize(
    ("rule", "test_name", "actor", "features"),
    [
        ("OneLogin.Login", "Successful Login Event", "Bob Cat", {"signin"}),
        ("OneLogin.Login", "Failed Login Event", "Bob Cat", {"signin_failed"}),
        ("OneLogin.HighRiskFailedLogin", "Failed High Risk Login", "Bob Cat", {"signin_failed"}),
        ("OneLogin.UnauthorizedAccess", "User Unauthorized Access Event", "Bob Cat", {"access_denied"}),
        ("OneLogin.UnauthorizedAccess", "Normal Event", "Bob Cat", set()),  # an application opened
        ("OneLogin.AuthFactorRemoved", "User deactivated an otp deice", "Bob Cat", {"factor_change"}),
        ("OneLogin.AuthFactorRemoved", "User removed an auth factor", "Bob Cat", {"factor_change"}),
        ("OneLogin.UserAssumption", "User assumed another user's account", "Mountain Lion", {"sensitive_api"}),
        ("OneLogin.PasswordAccess", "User accessed another user's password", "Mountain Lion", {"sensitive_api"}),
        ("OneLogin.PasswordAccess", "User accessed their own password", "Bob Cat", set()),
        ("OneLogin.PasswordChanged", "User changed another's password", "Mountain Lion", {"sensitive_api"}),
        ("OneLogin.PasswordChanged", "User changed their password", "Bob Cat", set()),
        ("OneLogin.ThresholdAccountsDeleted", "User Account Delete Event", " Lion", {"delete"}),
        (
            "Standard.AdminRoleAssigned",
            "OneLogin - Super user permissions assigned",
            "Bobert O'Bobly",
            {"privilege_grant"},
        ),
    ],
)
def test_onelogin_events_are_read_for_the_person_who_acted(
    rule: str, test_name: str, actor: str, features: set[str]
) -> None:
    """OneLogin was not read (it names people by full name, which the directory's display name now resolves)."""
    (record,) = [
        r["log"]
        for r in map(orjson.loads, (DATASETS / "onelogin.ndjson").read_bytes().splitlines())
        if r["rule_id"] == rule and r["test_name"] == test_name
    ]
    obs = observed(record)
    assert obs.actor == actor and names(obs) == features


def test_a_onelogin_privilege_given_to_oneself_is_a_self_grant_and_an_event_naming_no_one_is_no_one_s() -> None:
    granted = {
        "event_type_id": 72,
        "privilege_name": "Super user",
        "user_name": "Bob Cat",
        "actor_user_name": "bob  cat",
    }
    assert names(observed(granted)) == {"privilege_grant", "self_grant"}
    assert EXTRACTOR.extract({"event_type_id": 8, "user_name": None, "actor_user_name": ""}) is None
    stamped = {"event_type_id": "5", "user_name": "Bob Cat", "created_at": "2024-03-01T12:00:00.123Z"}
    assert record_time(stamped) == datetime(2024, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


HOSTILE: tuple[Any, ...] = (["x"], {"a": 1}, 7, -3, 1.5, True, None, "", "{", "[1]", '{"a": [1]}')
"""Values a hostile or broken sender may put in any column or member."""


def hostile_variants(record: dict[str, Any], depth: int = 0) -> Iterator[dict[str, Any]]:
    """`record` with each member (and each member of its objects, two levels down) replaced by each `HOSTILE` value."""
    for key, value in record.items():
        for bad in HOSTILE:
            yield {**record, key: bad}
        if isinstance(value, dict) and depth < 2:
            for inner in hostile_variants(value, depth + 1):
                yield {**record, key: inner}


def stored_rows() -> list[dict[str, Any]]:
    """Vendor records as Sentinel's tables, Defender's advanced hunting and Elastic's System integration hold them."""
    audits = [r for r in records("azure_signin") if "activityDisplayName" in (r.get("properties") or {})]
    signins = [r for r in records("azure_signin") if r.get("category") == "SignInLogs"]
    lines = [
        "Mar  1 11:59:58 web-1 sudo[4242]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls",
        "Mar  1 11:59:58 web-1 sshd[77]: Accepted publickey for alice from 10.0.0.9 port 51000 ssh2",
        "Mar  1 11:59:58 web-1 su[901]: (to root) alice on pts/0",
        "Mar  1 11:59:58 web-1 login[812]: pam_unix(login:session): session opened for user alice(uid=1000) by (uid=0)",
        "Mar  1 11:59:58 web-1 kernel: [ 5123.456789] sd 6:0:0:0: [sdb] Attached SCSI removable disk",
    ]
    return [
        *(sentinel_office(r) for r in m365_samples()),
        *(cloud_app_event(r) for r in m365_samples()),
        *(aws_cloudtrail(r) for r in trail_samples()[:12]),
        *(sentinel_audit(r["properties"], False, r.get("time")) for r in audits[:5]),
        *(sentinel_signin(r, False) for r in signins[:5]),
        *(sentinel_syslog(line, 2024) for line in lines),
        *(elastic_auth(line, 2024) for line in lines),
        defender("LogonSuccess", "Interactive"),  # a seat for what follows, which names only the machine
        {**defender("UsbDriveMounted", ""), "InitiatingProcessAccountName": "system", "AdditionalFields": "{}"},
        {**defender("UsbDriveMounted", ""), "AdditionalFields": '{"DriveLetter":"E:"}'},
        file_created("E:\\plan.xlsx"),  # a file on the drive just mounted
        {**file_created("E:\\plan.xlsx"), "ActionType": "RemovableStorageFileEvent"},
        defend_file("creation", "USB"),
        {**defender("PnpDeviceConnected", ""), "AdditionalFields": '{"ClassName":"WPD","DeviceDescription":"Pixel 8"}'},
        {"Type": "SecurityEvent", **flat(6416, **RECOGNISED)},
    ]


def test_a_hostile_value_anywhere_in_a_stored_row_is_mapped_and_scored_without_an_error() -> None:
    """Every member of every shape replaced by a list, an object, a number, a boolean, null or broken JSON text: the
    envelope maps it and the engine scores or skips it (counted unreadable), nothing raises."""
    settings = ScoringSettings(pseudonymise=False)
    engine = ScoringEngine(settings, IdentityResolver([], settings.identities), org_domains=["corp.example"])
    variants = [variant for row in stored_rows() for variant in hostile_variants(row)]
    for variant in variants:
        engine.observe(to_event(variant, GENERIC, "siem"))
    assert len(variants) > 10_000 and engine.unreadable > 0
