"""Reading behaviour features out of vendor-native records and ECS documents.

Each record is recognised by its shape (Okta System Log, Entra sign-in and directory audit as Graph returns them or
as diagnostic settings export them, CloudTrail, Google Workspace reports, GitHub audit log, the Microsoft 365 unified
audit log, Duo authentication log; Slack, Box, Dropbox, Google Cloud (GKE's Kubernetes calls among them), Azure
activity and Duo administrator logs in `saas`; Teleport, Vault, sudo, sshd, auditd and Kubernetes API servers' audit
events in `pam`; Windows Security events as evtx JSON or flat, as Splunk, Sentinel and NXLog hold them, in
`winlog`; and ECS documents as pulled from Elasticsearch, Windows logons among them), so the source name a
deployment gives it does not matter. `Extractor.extract` returns who acted, the
feature increments, the values to check against first-seen memory, and the machine involved.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from custodes.config import ScoringSettings
from custodes.connectors import elastic, sentinel
from custodes.connectors import windows as win
from custodes.connectors.envelope import audit_time, cloudtrail_actor, kube_audit, parse_time
from custodes.connectors.textlogs import read_record
from custodes.detections.scoring import pam, saas, winlog
from custodes.detections.scoring.observation import (
    Observation,
    as_list,
    copied,
    domain_of,
    name_key,
    name_of,
    sent,
    whole,
)

CT_PRIVILEGE = frozenset(
    {
        "AttachUserPolicy",
        "AttachRolePolicy",
        "AttachGroupPolicy",
        "PutUserPolicy",
        "PutRolePolicy",
        "PutGroupPolicy",
        "AddUserToGroup",
        "CreatePolicyVersion",
        "UpdateAssumeRolePolicy",
    }
)
CT_SENSITIVE = frozenset(
    {
        "StopLogging",
        "DeleteTrail",
        "UpdateTrail",
        "PutEventSelectors",
        "DeleteFlowLogs",
        "DeleteDetector",
        "DisableSecurityHub",
        "PutBucketPolicy",
        "PutBucketAcl",
        "DeleteBucketPolicy",
        "PutBucketPublicAccessBlock",
        "CreateLoginProfile",
        "UpdateLoginProfile",
        "DeactivateMFADevice",
        "DeleteMFADevice",
        "ModifySnapshotAttribute",
        "ModifyImageAttribute",
        "GetSecretValue",
        "CreateAccessKey",
    }
)
CT_DELETE = frozenset({"DeleteObject", "DeleteObjects", "DeleteBucket", "DeleteDBInstance", "DeleteSnapshot"})
CT_ASSUME = frozenset({"AssumeRole", "AssumeRoleWithSAML", "AssumeRoleWithWebIdentity"})
CT_DENIED = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Client.UnauthorizedOperation"}
)
"""CloudTrail's error codes for a call the caller's policies do not allow."""
OKTA_PUSH_DENIED = "user.mfa.okta_verify.deny_push"
"""Okta Classic's event of a user rejecting an Okta Verify push (Identity Engine logs `auth_via_mfa` failed)."""
OKTA_MFA_FAIL = frozenset({"user.authentication.auth_via_mfa", "system.push.send_factor_verify_push", OKTA_PUSH_DENIED})
OKTA_FACTOR = frozenset(
    {
        "user.mfa.factor.activate",
        "user.mfa.factor.deactivate",
        "user.mfa.factor.reset_all",
        "user.mfa.factor.update",
        "user.mfa.factor.suspend",
    }
)
OKTA_PRIVILEGE = frozenset(
    {"user.account.privilege.grant", "group.privilege.grant", "group.user_membership.add", "iam.role.assignment"}
)
OKTA_SENSITIVE = frozenset(
    {
        "system.api_token.create",  # a credential that outlives its maker's access
        "system.mfa.factor.deactivate",  # a factor type switched off for the whole organisation
        "user.session.impersonation.grant",  # Okta support let into the organisation
        "user.session.impersonation.initiate",
        "policy.lifecycle.deactivate",  # a sign-on or password policy switched off
        "policy.rule.deactivate",
    }
)
OKTA_ON_ANOTHER = frozenset({"application.user_membership.show_password", "user.account.reset_password"})
"""Okta events sensitive when they touch another person's credentials: their application password revealed, their
password reset by an administrator (one's own is not)."""
OKTA_REPORTED = "user.account.report_suspicious_activity_by_enduser"
OKTA_UNASSIGNED = "app.generic.unauth_app_access_attempt"
"""Okta's event of a person trying to open an application not assigned to them."""
"""The person said a sign-in or prompt was not theirs: an attack on the account's authentication."""
ENTRA_MFA_ERRORS = frozenset({500121, 50158})
ENTRA_UNASSIGNED = 50105
"""Entra ID's sign-in error for a person not assigned to the application (an access denied, not a failed sign-in)."""
"""Entra sign-in codes of a second factor that failed: denied, timed out or wrong (500121), an external challenge
not met (50158)."""
ENTRA_INTERRUPTS = frozenset(
    {50074, 50076, 50072, 50079, 50058, 50097, 50125, 50129, 50140, 50199, 16000, 16001, 16003, 65001, 81010, 81012}
)
"""Entra sign-in codes of an interrupted sign-in, neither a success nor a failure: a step the user is sent through
before the outcome, which a later record carries (MFA or its registration required, no single sign-on session yet,
device authentication, keep-me-signed-in, account selection, consent, seamless SSO falling back to a password).
Every MFA prompt starts with 50074 or 50076, so counting them as failed MFA made each person's daily MFA a failure."""
ENTRA_PRIVILEGE = frozenset(
    {"Add member to role", "Add eligible member to role", "Add app role assignment to user", "Add member to group"}
)
ENTRA_NON_INTERACTIVE, ENTRA_NON_INTERACTIVE_LOGS = "nonInteractiveUser", "NonInteractiveUserSignInLogs"
"""How Graph (`signInEventTypes`) and diagnostic settings (`category`) mark a non-interactive sign-in: a client
refreshing its token, at any hour from any network the device is on, hundreds a day. Read as the person's activity,
they made every hour usual (no off-hours activity left to see); they are not scored."""
ENTRA_PIM_GRANTS = ("Add member to role in PIM completed", "Add eligible member to role in PIM completed")
"""Privileged Identity Management's audit names of a role assigned (`... (permanent)`, `... (timebound)`); a request
(`... requested`) or a person activating a role they are eligible for is not a grant."""
ENTRA_FACTOR = frozenset(
    {
        "User registered security info",
        "User changed default security info",
        "User deleted security info",
        "Admin registered security info",
        "Admin deleted security info",
    }
)
GWS_EXTERNAL_VISIBILITY = frozenset({"people_with_link", "public_on_the_web", "shared_externally", "public"})
GWS_FACTOR = frozenset({"2sv_enroll", "2sv_disable", "titanium_enroll", "titanium_unenroll"})
"""Google account events that change its second factor (2-step verification, Advanced Protection)."""
GWS_PRIVILEGE = frozenset({"ASSIGN_ROLE", "GRANT_ADMIN_PRIVILEGE", "GRANT_DELEGATED_ADMIN_PRIVILEGES"})
"""Google Admin events that give a user an administrator role (`USER_EMAIL` names the user)."""
GWS_TAKEOUT = frozenset({"CUSTOMER_TAKEOUT_CREATED", "CUSTOMER_TAKEOUT_SUCCEEDED"})
"""Google Admin events of an export of the whole organisation's data."""
ARCHIVE_EXTENSIONS = frozenset({"zip", "7z", "rar", "tar", "gz", "tgz"})
EXTERNAL_BUSES = frozenset({"usb", "1394", "sd", "mmc"})
"""Elastic Defend's `file.Ext.device.bus_type` (Windows' storage bus, `BusTypeUsb` or `USB`) of a removable drive:
USB, FireWire, an SD or MMC card. A machine's own disks (SATA, NVMe, SCSI, RAID, virtual) are none of them."""
FILE_WRITES = ("creation", "overwrite", "modification")
"""The ECS actions of a file written (Elastic Defend's, which Elastic's own job for bytes written to an external
device reads)."""
M365_NOT_A_PERSON = 4
"""Unified audit `UserType` from which the actor is no person: 4 system, 5 application, 6 service principal, 7-8
policies (0 regular, 2 admin and 3 datacenter operator are people)."""
M365_DOWNLOADS = frozenset({"FileDownloaded", "FileSyncDownloadedFull", "FileSyncDownloadedPartial"})
M365_READS = frozenset({"FileAccessed", "FilePreviewed"})
M365_DELETES = frozenset(
    {
        "FileDeleted",
        "FileRecycled",
        "FileDeletedFirstStageRecycleBin",
        "FileDeletedSecondStageRecycleBin",
        "FolderDeleted",
        "FolderRecycled",
    }
)
M365_SHARES = frozenset({"SharingInvitationCreated", "SharingSet", "AddedToSecureLink", "AccessInvitationCreated"})
"""SharePoint and OneDrive sharing operations: external when the target is a guest or partner (an anonymous link
always is)."""
M365_FORWARDING = frozenset({"New-InboxRule", "Set-InboxRule", "Set-Mailbox"})
M365_FORWARD_TO = frozenset(
    {"ForwardTo", "ForwardAsAttachmentTo", "RedirectTo", "ForwardingSmtpAddress", "ForwardingAddress"}
)
"""Exchange parameters that send a mailbox's mail elsewhere (an inbox rule's, or the mailbox's own forwarding)."""
M365_MAILBOX_READS = frozenset({"MailItemsAccessed", "FolderBind", "MessageBind"})
"""Exchange mailbox audit operations that open a mailbox's mail: counted when the mailbox is another person's."""
M365_NOT_OWNER = frozenset({1, 2, 6})
"""Exchange mailbox audit `LogonType`s of someone other than the owner: an administrator, a delegate, a delegated
administrator (0 is the owner; 3 transport and 4 system services are no one)."""
M365_SENT_AS = {"SendAs": "SendAsUserSmtp", "SendOnBehalf": "SendOnBehalfOfUserSmtp"}
"""Exchange operations that send mail as another mailbox, by the field naming it."""
M365_ENDPOINT = {
    "FileCopiedToRemovableMedia": "usb_files",
    "FileCreatedOnRemovableMedia": "usb_files",
    "RemovableMediaMount": "usb",
    "FilePrinted": "print",
    "FileArchived": "archive",
    "FileRead": "file_access",
    "FileDeleted": "delete",
    "FileDownloadedFromBrowser": "download",
}
"""Purview endpoint DLP operations (unified audit `Workload` `Endpoint`, record type 63) by the feature each counts;
`FileUploadedToCloud` counts by its `TargetDomain` as a web upload does. A copy the policy blocked counts as the
attempt it is. Copies to a network share, a remote desktop session, the clipboard or over Bluetooth name no channel
scoring has."""
M365_ENDPOINT_UPLOAD = "FileUploadedToCloud"
ECS_SIGNIN = ("login", "logon", "logged-in", "sign-in", "signin", "session.start", "session_start")
ECS_NOT_SIGNIN = (
    "logoff",
    "logout",
    "logged-off",
    "log-off",
    "signout",
    "sign-out",
    "session.end",
    "mfa",
    "push",
    "challenge",
    "sso",
)
"""Words of an ECS authentication action that make it a sign-in, or not one (a sign-out, an MFA step or challenge,
an SSO hop to an application: Okta's `user.authentication.sso`)."""
LOGOFFS = ("off", "out")
"""How the action of a Windows logoff as Winlogbeat or Elastic Agent ship it ends (`logged-out`, `log-off`)."""
DUO_FACTOR_DENIED = frozenset(
    {"user_declined", "user_marked_fraud", "user_mistake", "no_response", "invalid_passcode", "anomalous_push"}
)
"""Duo denial reasons of the second factor itself (the push declined, reported as fraud, left unanswered, a wrong
passcode, a push Duo found anomalous), not of an access policy."""
GITHUB_DOWNLOADS = frozenset({"git.clone", "repo.download_zip", "git.fetch"})
GITHUB_GRANTS = frozenset(
    {
        "org.add_member",
        "org.update_member",
        "team.add_member",
        "team.promote_maintainer",
        "repo.add_member",
        "business.add_admin",
        "organization_moderators.add_user",
    }
)
"""GitHub audit actions that give someone (`user`) access or a role: a member, a collaborator, an administrator."""
GITHUB_TRANSFERS = frozenset({"repo.transfer", "repo.transfer_outgoing", "repo.transfer_start"})
"""A repository handed to another owner: the code leaves the organisation's hands."""
GITHUB_EVASION = frozenset(
    {
        "org.disable_two_factor_requirement",
        "org.saml_disabled",
        "org.disable_oauth_app_restrictions",
        "ip_allow_list.disable",
        "protected_branch.destroy",
        "protected_branch.policy_override",
        "repository_ruleset.destroy",
        "secret_scanning.disable",
        "secret_scanning_new_repos.disable",
        "repository_secret_scanning_push_protection.disable",
        "dependabot_alerts.disable",
        "dependabot_alerts_new_repos.disable",
        "business_advanced_security.disabled",
    }
)
"""GitHub audit actions that switch a security control off (two-factor or SSO required, branch protection, secret
scanning): sensitive, as stopping a trail is in AWS."""


def _workspace_events(raw: dict[str, Any]) -> Iterator[tuple[Any, dict[Any, Any]]]:
    """(name, parameters) of each event of a Google Workspace activity: the Reports API's `events` list (parameters
    a list of `{name, value | boolValue | intValue | multiValue}`), or one event flattened into the activity
    (`name`, and `parameters` by name, as activity feeds deliver one event a record)."""
    if "events" not in raw and "name" in raw:
        params = raw.get("parameters")
        yield raw["name"], params if isinstance(params, dict) else _parameters(params)
        return
    for item in as_list(raw.get("events")):
        if isinstance(item, dict):
            yield item.get("name"), _parameters(item.get("parameters"))


def _strings(value: Any) -> set[str]:
    """A parameter's values as text: one, or each of a list."""
    return {str(v) for v in as_list(value)}


def _parameters(listed: Any) -> dict[Any, Any]:
    """A Reports API parameter list by name, each its value of whichever type it has."""
    found: dict[Any, Any] = {}
    for param in as_list(listed):
        if isinstance(param, dict):
            found[param.get("name")] = next(
                (param[k] for k in ("value", "boolValue", "intValue", "multiValue") if k in param), None
            )
    return found


def _non_interactive(azure: Any) -> bool:
    """Whether an ECS record's `azure` object (Elastic's integration) holds a non-interactive Entra sign-in."""
    signin = azure.get("signinlogs") if isinstance(azure, dict) else None
    return isinstance(signin, dict) and signin.get("category") == ENTRA_NON_INTERACTIVE_LOGS


def _ecs_failure(raw: dict[str, Any], action: str) -> str | None:
    """What a failed authentication in ECS is: a failed second factor (an MFA action, or an Entra MFA code as
    Elastic's integration keeps it), nothing for an Entra interrupt, else a failed sign-in."""
    azure = raw.get("azure")
    signin = azure.get("signinlogs") if isinstance(azure, dict) else None
    if isinstance(signin, dict):
        properties = signin.get("properties")
        status = properties.get("status") if isinstance(properties, dict) else None
        error = status.get("error_code") if isinstance(status, dict) else None
        code = _entra_code({"errorCode": error}, signin.get("result_type"))
        if code in ENTRA_INTERRUPTS:
            return None
        if code in ENTRA_MFA_ERRORS:
            return "mfa_failed"
    if action in OKTA_MFA_FAIL or "mfa" in action:
        return "mfa_failed"
    return "signin_failed"


def _ecs_signs_in(event: dict[str, Any], action: str) -> bool:
    """Whether a successful ECS authentication record is a sign-in (not a sign-out, an MFA step or an SSO hop)."""
    types = as_list(event.get("type"))
    if "end" in types or any(word in action for word in ECS_NOT_SIGNIN):
        return False
    return "start" in types or any(word in action for word in ECS_SIGNIN)


def _ecs_client(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """The device (user agent), country and network (ASN) an ECS sign-in came from, to check against first-seen
    memory."""
    seen: list[tuple[str, str]] = []
    agent = raw.get("user_agent")
    if isinstance(agent, dict) and agent.get("original"):
        seen.append(("device", str(agent["original"])))
    source = raw.get("source")
    if isinstance(source, dict):
        geo, asn = source.get("geo"), source.get("as")
        if isinstance(geo, dict) and geo.get("country_iso_code"):
            seen.append(("country", str(geo["country_iso_code"])))
        if isinstance(asn, dict) and asn.get("number"):
            seen.append(("asn", str(asn["number"])))
    return seen


def _logon_type(shipped: Any) -> str:
    """A Windows logon's type as Winlogbeat or Elastic Agent give it (`winlog.logon.type`, else the event's
    `LogonType` number), lower case without spaces; empty when the record has none."""
    if not isinstance(shipped, dict):
        return ""
    logon, data = shipped.get("logon"), winlog.shipped_data(shipped)
    kind = logon.get("type") if isinstance(logon, dict) else None
    if kind is None and data is not None:
        kind = data.get("LogonType")
    return str(kind or "").replace(" ", "").lower()


def _external(ext: Any) -> bool:
    """Whether Elastic Defend's `file.Ext` of a file names a removable drive as its device (`EXTERNAL_BUSES`)."""
    device = ext.get("device") if isinstance(ext, dict) else None
    bus = device.get("bus_type") if isinstance(device, dict) else None
    return isinstance(bus, str) and bus.strip().lower().removeprefix("bustype") in EXTERNAL_BUSES


def _others_mailbox(raw: dict[str, Any], name: str) -> str | None:
    """The owner of the mailbox an Exchange audit record opened, where that is someone other than `name`: an
    owner of another name, or, where the record names no owner's UPN, a logon as an administrator or a delegate
    (else None)."""
    owner = raw.get("MailboxOwnerUPN")
    if owner:
        return str(owner) if name_key(str(owner)) != name_key(name) else None
    if whole(raw.get("LogonType")) in M365_NOT_OWNER:  # a number, or its text as Elastic's integration keeps it
        return str(raw.get("MailboxOwnerSid") or raw.get("MailboxGuid") or "unknown")
    return None


def _m365_parameters(raw: dict[str, Any]) -> set[str]:
    """The names of an Exchange cmdlet's parameters that were given a value (`Parameters`: name and value pairs,
    or a map of names to values as Elastic's Microsoft 365 integration keeps them)."""
    given = raw.get("Parameters")
    pairs = (
        given.items()
        if isinstance(given, dict)
        else ((p.get("Name"), p.get("Value")) for p in as_list(given) if isinstance(p, dict))
    )
    return {str(name) for name, value in pairs if value not in (None, "", "$null", "False")}


def _entra_code(status: Any, result: Any) -> int:
    """An Entra sign-in's error code: `status.errorCode`, else a diagnostic record's `resultType` (a code, or
    `Success` / `Failure`; a failure without its code is -1)."""
    if isinstance(status, dict) and status.get("errorCode") is not None:
        return whole(status["errorCode"])
    text = str(result if result is not None else "0").strip()
    if text.isascii() and text.isdigit():
        return int(text)
    return 0 if text.lower() in ("", "success") else -1


def _targets_self(target: Any, identity: dict[str, Any], actor: str) -> bool:
    """Whether an IAM request's `userName` is the caller (an IAM user, or the person behind a role session)."""
    if not target:
        return False
    if identity.get("type") == "IAMUser":
        return bool(target == identity.get("userName"))
    return str(target).lower() in actor.lower()


def record_time(raw: dict[str, Any]) -> datetime | None:
    """The time a vendor record states, by its shape; None when it has none."""
    ident = raw.get("id")
    for value in (
        raw.get("@timestamp"),
        raw.get("published"),
        raw.get("eventTime"),
        raw.get("createdDateTime"),
        raw.get("activityDateTime"),
        ident.get("time") if isinstance(ident, dict) else None,
        raw.get("created_at"),
        raw.get("time"),
        raw.get("CreationTime"),
        raw.get("isotimestamp"),
        raw.get("date_create"),
        raw.get("timestamp"),
        raw.get("eventTimestamp"),
        raw.get("stageTimestamp"),
        raw.get("Timestamp"),
    ):
        if value is not None:
            return _parsed(value)
    stamp = win.time_value(raw)
    return audit_time(raw) if stamp is None else _parsed(stamp)


def _parsed(value: Any) -> datetime | None:
    try:
        return parse_time(value)
    except (ValueError, OverflowError, OSError):
        return None


class Extractor:
    """Recognises a record's vendor and reads its features."""

    def __init__(self, settings: ScoringSettings, org_domains: Iterable[str] = ()) -> None:
        self.personal = frozenset(d.lower() for d in settings.personal_domains)
        self.cloud = DomainList(settings.personal_cloud_domains)
        self.leak = DomainList(settings.leak_domains)
        self.jobs = DomainList(settings.job_domains)
        self.competitors = DomainList(settings.competitor_domains)
        self.org_domains = frozenset(d.lower() for d in org_domains)
        self.uids = frozenset(alias for alias in settings.identities.aliases if alias.isdigit())

    def extract(self, raw: dict[str, Any]) -> Observation | None:
        """The observation a record makes, or None when it names no actor or is not a known shape."""
        if "eventType" in raw and "published" in raw:
            return self.okta(raw)
        if "eventName" in raw and "eventSource" in raw:
            return self.cloudtrail(raw)
        if "userPrincipalName" in raw and "createdDateTime" in raw:
            return self.entra_signin(raw)
        if "activityDisplayName" in raw:
            return self.entra_audit(raw)
        ident = raw.get("id")
        if isinstance(ident, dict) and "applicationName" in ident:
            return self.workspace(raw)
        event = raw.get("event")
        if isinstance(event, dict):  # ECS: read as the vendor's record where Elastic's integration keeps or rebuilds it
            # the keys elastic.vendor_record reads, asked here: calling it for every ECS record costs more
            held = "original" in event or "aws" in raw or "okta" in raw or "azure" in raw or "o365" in raw
            held = held or "google_workspace" in raw or "github" in raw or "system" in raw
            held = held or event.get("dataset") == "system.syslog"
            vendor = elastic.vendor_record(raw, event) if held else None
            if vendor is None:
                return self.ecs(raw, event)
            found = self.extract(vendor[0])  # a record rebuilt is of its vendor's shape: None there is no one
            return found if found is not None or vendor[1] is not None else self.ecs(raw, event)
        if isinstance(event, str) and "user" in raw and ("uid" in raw or "cluster_name" in raw):
            return pam.teleport(raw, event)
        if isinstance(raw.get("action"), str) and isinstance(raw.get("actor"), str):
            return self.github(raw)
        if "Operation" in raw and "Workload" in raw:
            return self.m365(raw)
        if raw.get("event_type") == "authentication" and "factor" in raw and "result" in raw:
            return self.duo(raw)
        return self._others(raw)

    def _others(self, raw: dict[str, Any]) -> Observation | None:
        """The shapes tried last: collaboration and cloud services' (`saas`), Entra ID's as diagnostic settings export
        it, Azure's activity log, Duo's administrator log, OneLogin's events, privileged access (`pam`: Vault, sudo,
        sshd, su, auditd, Kubernetes), Windows Security events in evtx JSON or flat and Defender for Endpoint's device
        logons (`winlog`); None for any other."""
        kind = raw.get("event_type")
        if isinstance(kind, str) and raw.get("type") == "event":
            return saas.box(raw, self.org_domains)
        if isinstance(kind, dict) and (tag := kind.get(".tag") or kind.get("_tag")):
            return saas.dropbox(raw, str(tag), self.org_domains)
        if isinstance(raw.get("action"), str) and isinstance(raw.get("actor"), dict) and "context" in raw:
            return saas.slack(raw)
        payload = raw.get("protoPayload")
        if isinstance(payload, dict):
            return saas.gcp(payload, self.org_domains)
        if raw.get("kind") == "Event" and str(raw.get("apiVersion")).startswith("audit.k8s.io/"):
            return pam.kubernetes(raw)
        body = raw.get("properties")
        if isinstance(body, dict) and "category" in raw:  # Entra ID as diagnostic settings export it (Event Hub)
            if raw["category"] in winlog.DEFENDER_CATEGORIES:  # Defender for Endpoint's streaming API, the same way
                return winlog.defender(body)
            if (kube := kube_audit(raw)) is not None:  # AKS's API server
                return pam.kubernetes(kube)
            if "userPrincipalName" in body and str(raw["category"]).endswith("SignInLogs"):
                if raw["category"] == ENTRA_NON_INTERACTIVE_LOGS:
                    return None
                return self.entra_signin(body, raw.get("resultType"))
            if "activityDisplayName" in body:
                return self.entra_audit(body)
        operation = raw.get("operationName")
        if isinstance(operation, dict):
            operation = operation.get("value")
        if isinstance(operation, str) and "resourceId" in raw:
            return saas.azure(raw, operation)
        action = raw.get("action")
        if isinstance(action, str) and "username" in raw and "isotimestamp" in raw:
            return saas.duo_admin(raw, action)
        if "event_type_id" in raw and ("user_name" in raw or "actor_user_name" in raw):
            return saas.onelogin(raw)
        if isinstance(raw.get("request"), dict) and raw.get("type") in ("request", "response"):
            return pam.vault(raw)
        if read_record(raw):
            return pam.syslog(raw)
        if isinstance(raw.get("type"), str) and str(raw.get("msg") or "").startswith("audit("):
            return pam.auditd(raw, self.uids)
        table = raw.get("Type")  # what sentinel.vendor_record reads, asked here
        held = "RawEventData" in raw or (type(table) is str and table in sentinel.TABLES)
        if held and (row := sentinel.vendor_record(raw)) is not None:
            return self.extract(row[0])  # Sentinel's and Defender's rows as the vendors' records
        if "ActionType" in raw and "DeviceName" in raw:  # Defender for Endpoint: advanced hunting, Sentinel
            return winlog.defender(raw)
        if "Event" in raw or "EventID" in raw or "EventCode" in raw or "event_id" in raw or "_raw" in raw:
            flat = win.security_fields(raw)
            return None if flat is None else winlog.security(flat)
        return None

    # identity providers ------------------------------------------------------------------------------
    def okta(self, raw: dict[str, Any]) -> Observation | None:
        actor = raw.get("actor")
        name = actor.get("alternateId") if isinstance(actor, dict) else None
        if not name:
            return None
        kind = raw["eventType"]
        outcome = raw.get("outcome")
        result = str(outcome.get("result", "")) if isinstance(outcome, dict) else ""
        failed = result in ("FAILURE", "DENY")
        features: list[tuple[str, float]] = []
        seen: list[tuple[str, str]] = []
        if kind == "user.session.start":
            features.append(("signin_failed" if failed else "signin", 1.0))
            if not failed:
                client = raw.get("client") or {}
                debug = (raw.get("debugContext") or {}).get("debugData") or {}
                device = debug.get("deviceFingerprint") or (client.get("userAgent") or {}).get("rawUserAgent")
                if device:
                    seen.append(("device", str(device)))
                country = (client.get("geographicalContext") or {}).get("country")
                if country:
                    seen.append(("country", str(country)))
                asn = (raw.get("securityContext") or {}).get("asNumber")
                if asn:
                    seen.append(("asn", str(asn)))
        elif kind in OKTA_MFA_FAIL or kind == OKTA_REPORTED:
            if failed or kind in (OKTA_PUSH_DENIED, OKTA_REPORTED):  # its own event, whatever its outcome says
                features.append(("mfa_failed", 1.0))
        elif kind == OKTA_UNASSIGNED:
            features.append(("access_denied", 1.0))
        elif kind in OKTA_SENSITIVE and not failed:
            features.append(("sensitive_api", 1.0))
        elif kind in OKTA_ON_ANOTHER and not failed:
            users = [t for t in as_list(raw.get("target")) if isinstance(t, dict) and t.get("type") == "User"]
            if users and str(users[0].get("alternateId")).lower() != str(name).lower():
                features.append(("sensitive_api", 1.0))
        elif kind in OKTA_FACTOR:
            features.append(("factor_change", 1.0))
        elif kind in OKTA_PRIVILEGE:
            target_names = [
                str(t.get("displayName", "")).lower() for t in as_list(raw.get("target")) if isinstance(t, dict)
            ]
            if kind != "group.user_membership.add" or any("admin" in n for n in target_names):
                features.append(("privilege_grant", 1.0))
        return Observation(str(name), features, seen)

    def entra_signin(self, raw: dict[str, Any], result: Any = None) -> Observation | None:
        """A sign-in (Graph's shape; `result`: the diagnostic record's `resultType`, read when `status` is not);
        None for a non-interactive one."""
        if ENTRA_NON_INTERACTIVE in as_list(raw.get("signInEventTypes")):
            return None
        code = _entra_code(raw.get("status"), result)
        features: list[tuple[str, float]] = []
        seen: list[tuple[str, str]] = []
        if code == 0:
            features.append(("signin", 1.0))
            device = raw.get("deviceDetail") or {}
            ident = device.get("deviceId") or device.get("displayName")
            if not ident and (device.get("operatingSystem") or device.get("browser")):
                ident = f"{device.get('operatingSystem')}/{device.get('browser')}"
            if ident:
                seen.append(("device", str(ident)))
            country = (raw.get("location") or {}).get("countryOrRegion")
            if country:
                seen.append(("country", str(country)))
            asn = raw.get("autonomousSystemNumber")
            if asn:
                seen.append(("asn", str(asn)))
        elif code in ENTRA_MFA_ERRORS:
            features.append(("mfa_failed", 1.0))
        elif code == ENTRA_UNASSIGNED:
            features.append(("access_denied", 1.0))
        elif code not in ENTRA_INTERRUPTS:
            features.append(("signin_failed", 1.0))
        return Observation(str(raw["userPrincipalName"]), features, seen)

    def entra_audit(self, raw: dict[str, Any]) -> Observation | None:
        user = (raw.get("initiatedBy") or {}).get("user") or {}
        name = user.get("userPrincipalName")
        if not name:
            return None
        activity = str(raw["activityDisplayName"])
        features: list[tuple[str, float]] = []
        if activity in ENTRA_PRIVILEGE or activity.startswith(ENTRA_PIM_GRANTS):
            features.append(("privilege_grant", 1.0))
            targets = [str(t.get("userPrincipalName", "")).lower() for t in as_list(raw.get("targetResources"))]
            if str(name).lower() in targets:
                features.append(("self_grant", 1.0))
        elif activity in ENTRA_FACTOR:
            features.append(("factor_change", 1.0))
        elif "forward" in activity.lower():
            features.append(("mail_forwarding", 1.0))
        return Observation(str(name), features, [])

    # cloud --------------------------------------------------------------------------------------------
    def cloudtrail(self, raw: dict[str, Any]) -> Observation | None:
        identity = raw.get("userIdentity") or {}
        name = cloudtrail_actor(identity)
        if not name:
            return None
        event = raw["eventName"]
        params = raw.get("requestParameters") or {}
        failed = bool(raw.get("errorCode"))
        features: list[tuple[str, float]] = []
        seen: list[tuple[str, str]] = []
        if event == "GetObject" and not failed:
            features.append(("download", 1.0))
            moved = whole((raw.get("additionalEventData") or {}).get("bytesTransferredOut"))
            if moved:
                features.append(("download_bytes", float(moved)))
            seen.append(("resource", f"s3://{params.get('bucketName')}/{params.get('key')}"))
        elif event == "ConsoleLogin":
            response = raw.get("responseElements") or {}
            bad = failed or response.get("ConsoleLogin") == "Failure"
            features.append(("signin_failed" if bad else "signin", 1.0))
        elif raw.get("errorCode") in CT_DENIED:
            features.append(("access_denied", 1.0))
        elif event in CT_PRIVILEGE and not failed:
            features.append(("privilege_grant", 1.0))
            if _targets_self(params.get("userName"), identity, str(name)):
                features.append(("self_grant", 1.0))
        elif event in CT_SENSITIVE and not failed:
            features.append(("sensitive_api", 1.0))
            target = params.get("userName")
            if event == "CreateAccessKey" and target and not _targets_self(target, identity, str(name)):
                features.append(("access_key_other", 1.0))
        elif event in CT_DELETE and not failed:
            features.append(("delete", 1.0))
        elif event in CT_ASSUME and not failed and params.get("roleArn"):
            seen.append(("resource", f"aws:{params['roleArn']}"))  # a role never taken before: a first access
        return Observation(str(name), features, seen)

    def workspace(self, raw: dict[str, Any]) -> Observation | None:
        actor = raw.get("actor") or {}
        name = actor.get("email")
        if not name:
            return None
        app = raw["id"].get("applicationName")
        features: list[tuple[str, float]] = []
        seen: list[tuple[str, str]] = []
        for event, params in _workspace_events(raw):
            if app == "drive":
                self._drive(str(event), params, features, seen)
            elif app == "login":
                if event == "login_success":
                    features.append(("signin", 1.0))
                elif event == "login_failure":
                    features.append(("signin_failed", 1.0))
                elif event == "login_challenge" and "failed" in str(params.get("login_challenge_status")).lower():
                    features.append(("mfa_failed", 1.0))
            elif app == "user_accounts" and event in GWS_FACTOR:
                features.append(("factor_change", 1.0))
            elif app == "admin" and event in GWS_PRIVILEGE:
                features.append(("privilege_grant", 1.0))
                if str(params.get("USER_EMAIL") or "").lower() == str(name).lower():
                    features.append(("self_grant", 1.0))
            elif app == "admin" and event in GWS_TAKEOUT:
                features.append(("sensitive_api", 1.0))
            if event and "forward" in str(event) and app in ("gmail", "user_accounts", "login"):
                features.append(("mail_forwarding", 1.0))
        return Observation(str(name), features, seen)

    def _drive(
        self, event: str, params: dict[Any, Any], features: list[tuple[str, float]], seen: list[tuple[str, str]]
    ) -> None:
        """A Drive event's features: downloads and views (with the document first seen), deletions, and shares
        that take a document outside the organisation (a person, a wider visibility, a new owner)."""
        doc = params.get("doc_id")
        if event in ("download", "view"):
            features.append(("download" if event == "download" else "file_access", 1.0))
            if doc:
                seen.append(("resource", f"gdrive:{doc}"))
        elif event in ("delete", "trash"):
            features.append(("delete", 1.0))
        elif event in ("change_user_access", "change_owner"):
            # a person (or new owner) by address, or a whole domain (`all`: anyone with the link)
            target = str(params.get("target_user") or params.get("new_owner") or params.get("target_domain") or "")
            if target and (target == "all" or domain_of(target) not in self.org_domains):
                features.append(("external_share", 1.0))
        elif event in ("change_document_visibility", "change_document_access_scope"):
            # the visibility this change set (`new_value`), else the document's
            visibility = _strings(params.get("new_value")) or _strings(params.get("visibility"))
            if visibility & GWS_EXTERNAL_VISIBILITY:
                features.append(("external_share", 1.0))

    def github(self, raw: dict[str, Any]) -> Observation:
        action = raw["action"]
        features: list[tuple[str, float]] = []
        seen: list[tuple[str, str]] = []
        if action in GITHUB_DOWNLOADS:
            features.append(("download", 1.0))
            if raw.get("repo"):
                seen.append(("resource", f"github:{raw['repo']}"))
        elif action in GITHUB_GRANTS or action.endswith(".promote"):
            features.append(("privilege_grant", 1.0))
            if raw.get("user") and str(raw["user"]).lower() == str(raw["actor"]).lower():
                features.append(("self_grant", 1.0))
        elif action in GITHUB_TRANSFERS or (  # a visibility change, unless it is to private or internal
            action == "repo.access" and str(raw.get("visibility") or "public").lower() == "public"
        ):
            features.append(("external_share", 1.0))
        elif action in GITHUB_EVASION:
            features.append(("sensitive_api", 1.0))
        elif action in ("repo.destroy", "repo.archived"):
            features.append(("delete", 1.0))
        return Observation(str(raw["actor"]), features, seen)

    def m365(self, raw: dict[str, Any]) -> Observation | None:
        """A Microsoft 365 unified audit record (Office 365 Management Activity API): SharePoint and OneDrive file
        operations and sharing, Exchange mailbox forwarding and permissions, directory role grants. Sign-ins are
        left to Entra ID's own logs, which carry their detail."""
        name = raw.get("UserId")
        if not name or whole(raw.get("UserType")) >= M365_NOT_A_PERSON:
            return None
        operation = str(raw["Operation"])
        if raw["Workload"] == "Endpoint":
            return self._endpoint(raw, str(name), operation)
        features: list[tuple[str, float]] = []
        seen: list[tuple[str, str]] = []
        if operation in M365_DOWNLOADS or operation in M365_READS:
            features.append(("download" if operation in M365_DOWNLOADS else "file_access", 1.0))
            if raw.get("ObjectId"):
                seen.append(("resource", f"m365:{raw['ObjectId']}"))
        elif operation in M365_DELETES:
            features.append(("delete", 1.0))
        elif operation == "AnonymousLinkCreated" or (
            operation in M365_SHARES
            and (
                str(raw.get("TargetUserOrGroupType")) in ("Guest", "Partner")
                or "#ext#" in str(raw.get("TargetUserOrGroupName")).lower()
            )
        ):
            features.append(("external_share", 1.0))
        elif operation in M365_FORWARDING and _m365_parameters(raw) & M365_FORWARD_TO:
            features.append(("mail_forwarding", 1.0))
        elif operation == "Add-MailboxPermission" or operation.rstrip(".") in ENTRA_PRIVILEGE:
            features.append(("privilege_grant", 1.0))
        elif operation in M365_MAILBOX_READS:
            owner = _others_mailbox(raw, str(name))
            if owner is not None:  # a first look into a given person's mail is new to them; any look is sensitive
                features.append(("sensitive_api", 1.0))
                seen.append(("resource", f"mailbox:{owner}"))
        elif operation in M365_SENT_AS:
            sender = raw.get(M365_SENT_AS[operation])
            if sender and name_key(str(sender)) != name_key(str(name)):
                features.append(("sensitive_api", 1.0))
        return Observation(str(name), features, seen)

    def _endpoint(self, raw: dict[str, Any], name: str, operation: str) -> Observation:
        """A Purview endpoint DLP record: a file on a person's machine (`DeviceName`) copied to removable media,
        uploaded to a cloud service, printed, archived, read, deleted or downloaded by a browser (`M365_ENDPOINT`)."""
        features: list[tuple[str, float]] = []
        seen: list[tuple[str, str]] = []
        host = name_of(raw.get("DeviceName"))
        feature = M365_ENDPOINT.get(operation)
        if operation == M365_ENDPOINT_UPLOAD:
            target = str(raw.get("TargetDomain") or raw.get("TargetUrl") or "").lower()
            domain = target.split("//", 1)[-1].split("/", 1)[0].split(":", 1)[0]  # no scheme, path or port
            if self._site(domain, "", True, features):
                sent(raw.get("FileSize"), features)
        elif feature == "usb_files":
            features += copied(raw.get("FileSize"))
        elif feature is not None:
            features.append((feature, 1.0))
            if feature == "file_access" and host and name_of(raw.get("ObjectId")):
                seen.append(("resource", f"{host}:{raw['ObjectId']}"))
        return Observation(name, features, seen, host)

    def duo(self, raw: dict[str, Any]) -> Observation | None:
        """A Duo authentication log entry: approved, a sign-in from its access device; denied or marked as fraud by
        the user (or flagged by Duo as an anomalous push), a failed second factor; denied by an access policy (an
        untrusted or out-of-date device), a failed sign-in."""
        user = raw.get("user")
        name = user.get("name") if isinstance(user, dict) else None
        if not name:
            return None
        result, reason = str(raw["result"]).lower(), str(raw.get("reason") or "").lower()
        features: list[tuple[str, float]] = []
        seen: list[tuple[str, str]] = []
        if result == "success":
            features.append(("signin", 1.0))
            device = raw.get("access_device")
            if isinstance(device, dict):
                location = device.get("location")
                country = location.get("country") if isinstance(location, dict) else None
                if country:
                    seen.append(("country", str(country)))
                ident = device.get("hostname") or "/".join(str(device[k]) for k in ("os", "browser") if device.get(k))
                if ident:
                    seen.append(("device", str(ident)))
        elif result == "fraud" or reason in DUO_FACTOR_DENIED:
            features.append(("mfa_failed", 1.0))
        elif result in ("denied", "failure"):
            features.append(("signin_failed", 1.0))
        return Observation(str(name), features, seen)

    # ECS ----------------------------------------------------------------------------------------------
    def ecs(self, raw: dict[str, Any], event: dict[str, Any]) -> Observation | None:
        user = raw.get("user") or {}
        name = user.get("email") or user.get("name") if isinstance(user, dict) else None
        host_info = raw.get("host") or {}
        host = host_info.get("name") if isinstance(host_info, dict) else None
        if "winlog" in raw and str(event.get("code")) == winlog.DEVICE_RECOGNISED:  # logged by the machine itself
            return winlog.shipped_recognised(raw["winlog"], name_of(name), name_of(host))
        if not name:
            return None
        categories = as_list(event.get("category"))
        action = str(event.get("action") or "").lower()
        features: list[tuple[str, float]] = []
        seen: list[tuple[str, str]] = []
        if "email" in categories or isinstance(raw.get("email"), dict):
            self._email(raw, action, features)
        elif "web" in categories or isinstance(raw.get("url"), dict):
            self._web(raw, features)
        elif "authentication" in categories or "session" in categories:
            if "azure" in raw and _non_interactive(raw["azure"]):
                return None
            if "session" in categories and ("privileged" in action or "pam" in action):
                features.append(("pam_session", 1.0))
            elif str(event.get("outcome")) == "failure" or action == OKTA_PUSH_DENIED:
                failure = _ecs_failure(raw, action)
                if failure is not None:
                    features.append((failure, 1.0))
            elif "winlog" in raw and (kind := _logon_type(raw["winlog"])) in winlog.REMOTE_LOGONS:
                host = None  # a share, a service or a scheduled task reached the machine: nobody sat at it
            elif host:
                seen.append(("host", str(host)))
                if "winlog" in raw:  # Windows' logon or logoff (`logged-out`), beside the drives its log names
                    presence = winlog.presence(kind, action.endswith(LOGOFFS))
                    return Observation(str(name), features, seen, str(host), presence)
            elif _ecs_signs_in(event, action):  # no machine: a sign-in to a service, as a SIEM stores an IdP's log
                features.append(("signin", 1.0))
                seen += _ecs_client(raw)
        elif "usb" in action or "device" in action or "removable" in action or isinstance(raw.get("device"), dict):
            file = raw.get("file") or {}
            if "winlog" in raw:  # Windows' object access on removable storage (4663): a write is a file copied
                if winlog.shipped_removable_write(raw["winlog"]):
                    features.append(("usb_files", 1.0))
            elif "disconnect" in action or "removed" in action or "eject" in action:
                pass  # taking a device out moves no data; only its connection counts
            elif isinstance(file, dict) and file.get("path"):
                features += copied(file.get("size"))
            else:
                features.append(("usb", 1.0))
        elif "print" in action:
            features.append(("print", 1.0))
        elif "iam" in categories:
            host = None  # logged where the directory is (a domain controller), not where the person sits
            feature = winlog.WINDOWS_ADMIN.get(str(event.get("code")))
            if feature is not None and str(event.get("outcome")) != "failure":
                features.append((feature, 1.0))
        elif "file" in categories:
            file = raw.get("file") or {}
            path = file.get("path") if isinstance(file, dict) else None
            if str(event.get("outcome")) == "failure":
                features.append(("access_denied", 1.0))  # a file the person may not open (Windows 4656, auditd)
            elif "winlog" in raw and winlog.shipped_removable_write(raw["winlog"]):
                features.append(("usb_files", 1.0))  # the same 4663, where a pipeline gave it an action of its own
            elif action in FILE_WRITES and isinstance(file, dict) and _external(file.get("Ext")):
                features += copied(file.get("size"))  # Elastic Defend: a file written to a removable drive
            elif action in ("deletion", "delete", "deleted"):
                features.append(("delete", 1.0))
            elif action in ("creation", "create", "created") and str(file.get("extension", "")).lower() in (
                ARCHIVE_EXTENSIONS
            ):
                features.append(("archive", 1.0))
            elif action in ("open", "access", "read", "opened"):
                features.append(("file_access", 1.0))
                if path:
                    seen.append(("resource", f"{host}:{path}"))
        return Observation(str(name), features, seen, None if host is None else str(host))

    def _email(self, raw: dict[str, Any], action: str, features: list[tuple[str, float]]) -> None:
        email = raw.get("email") or {}
        if "forward" in action:
            features.append(("mail_forwarding", 1.0))
            return
        if str(email.get("direction", "outbound")) == "inbound":
            return
        recipients = [
            str(address).lower()
            for part in ("to", "cc", "bcc")
            for address in as_list((email.get(part) or {}).get("address"))
        ]
        if not recipients:
            return
        features.append(("mail_recipients", float(len(recipients))))
        features.append(("mail_fanout", float(len(recipients))))
        if any(domain_of(r) in self.personal for r in recipients):
            features.append(("personal_mail", 1.0))
            size = sum(whole((a.get("file") or {}).get("size")) for a in as_list(email.get("attachments")))
            if size:
                features.append(("upload_bytes", float(size)))

    def _web(self, raw: dict[str, Any], features: list[tuple[str, float]]) -> None:
        url = raw.get("url") or {}
        domain = str(url.get("domain") or "").lower()
        if not domain:
            return
        request = (raw.get("http") or {}).get("request") or {}
        method = str(request.get("method") or "").upper()
        if self._site(domain, str(url.get("path") or ""), method in ("POST", "PUT"), features):
            sent(request.get("bytes") or (request.get("body") or {}).get("bytes"), features)

    def _site(self, domain: str, path: str, sending: bool, features: list[tuple[str, float]]) -> bool:
        """What a request to `domain` (`path` on it) counts by the settings' domain lists: a visit, or an upload
        (`sending`), to a leak site or personal cloud; a visit to a job site or a competitor. Whether it is such an
        upload (its bytes, read only then, are the caller's to count)."""
        if domain in self.leak:
            features.append(("leak_upload" if sending else "leak_visit", 1.0))
        elif domain in self.cloud:
            features.append(("cloud_upload" if sending else "cloud_visit", 1.0))
        else:
            target = domain + path
            if target in self.jobs:
                features.append(("job_search", 1.0))
            elif target in self.competitors:
                features.append(("competitor_visit", 1.0))
            return False
        return sending


class DomainList:
    """Listed domains, each with an optional path prefix (`example.com/jobs`), looked up by host and parent domain.

    `host[/path]` is in the list when its host is a listed domain or a subdomain of one, and its path starts with
    that entry's prefix if it has one: one dictionary lookup per label of the host, whatever the list's length.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self._prefixes: dict[str, list[str]] = {}
        for entry in entries:
            domain, _, prefix = entry.lower().partition("/")
            self._prefixes.setdefault(domain, []).append(prefix)

    def __contains__(self, target: object) -> bool:
        if not isinstance(target, str):
            return False
        host, _, path = target.partition("/")
        name = host
        while True:
            prefixes = self._prefixes.get(name)
            if prefixes is not None and any(path.startswith(prefix) for prefix in prefixes):
                return True
            dot = name.find(".")
            if dot < 0:
                return False
            name = name[dot + 1 :]
