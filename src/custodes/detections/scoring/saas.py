"""Behaviour features out of collaboration and cloud services' audit records: Slack's audit logs, Box's and Dropbox's
team events, and Google Cloud's audit logs (`protoPayload`). Each reader takes one record of its shape (the
`Extractor` recognises it) and the organisation's mail domains, and returns who acted and what it counts."""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from custodes.detections.scoring.observation import Observation, as_list, domain_of

SLACK_GRANTS = frozenset(
    {"role_change_to_admin", "role_change_to_owner", "owner_transferred", "primary_owner_transferred"}
)
"""Slack actions that make a member an admin or an owner of the workspace or organisation."""
SLACK_EXPORTS = frozenset(
    {
        "manual_export_started",
        "manual_export_downloaded",
        "scheduled_export_started",
        "scheduled_export_downloaded",
        "corporate_exports_approved",
        "corporate_exports_enabled",
    }
)
"""Slack actions that export a workspace's messages and files (sensitive, as a Google Takeout is)."""
SLACK_EVASION = frozenset(
    {
        "pref.sso_setting_changed",
        "pref.two_factor_auth_changed",
        "native_dlp_rule_deactivated",
        "native_dlp_violation_deleted",
        "legal_hold_policy_released",
        "legal_hold_policy_entities_deleted",
        "legal_hold_policy_exclusion_added",
        "ekm_unenrolled",
        "ekm_logging_config_set",
        "intune_disabled",
        "idp_configuration_deleted",
        "barrier_deleted",
    }
)
"""Slack actions that weaken a control: sign-in requirements, data loss prevention, legal holds, key management,
device management, information barriers."""
BOX_SIGNIN_FAILED = frozenset({"FAILED_LOGIN", "DEVICE_TRUST_CHECK_FAILED"})
"""A wrong password, or a device the enterprise's policy does not trust: a sign-in refused."""
BOX_DOWNLOADS = frozenset({"DOWNLOAD"})
BOX_READS = frozenset({"PREVIEW"})
BOX_DELETES = frozenset({"DELETE", "ITEM_TRASH", "TRASH"})
BOX_GRANTS = frozenset({"CHANGE_ADMIN_ROLE", "ADMIN_ROLE_ASSIGN"})
BOX_INVITES = frozenset({"COLLABORATION_INVITE", "COLLABORATION_ACCEPT"})
DROPBOX_DOWNLOADS = frozenset({"file_download", "shared_content_download"})
DROPBOX_READS = frozenset({"file_preview", "file_view"})
DROPBOX_DELETES = frozenset({"file_delete", "file_permanently_delete"})
DROPBOX_SHARES = frozenset(
    {
        "shared_content_add_member",
        "shared_content_add_invitees",
        "shared_folder_transfer_ownership",
        "shared_link_create",
        "shared_link_share",
        "file_request_create",
    }
)
"""Dropbox shares: counted when the event says it involves someone outside the team (`involve_non_team_member`) or
hands a folder to an owner of another domain."""
DROPBOX_FACTOR = frozenset({"tfa_change_status", "tfa_remove_backup_phone", "tfa_remove_security_key"})
DROPBOX_GRANTS = frozenset({"member_change_admin_role"})
DROPBOX_SENSITIVE = frozenset({"sign_in_as_session_start"})
"""An administrator signed in as a member: every file of theirs in reach."""
GCP_IMPERSONATION = frozenset({"GenerateAccessToken", "GenerateIdToken", "SignJwt", "SignBlob"})
"""IAM credentials calls: a token or a signature of a service account, acting as it."""
GCP_SENSITIVE = frozenset(
    {
        "google.iam.admin.v1.CreateServiceAccountKey",
        "google.logging.v2.ConfigServiceV2.DeleteSink",
        "google.logging.v2.ConfigServiceV2.UpdateSink",
        "google.logging.v2.ConfigServiceV2.DeleteBucket",
        "google.logging.v2.ConfigServiceV2.UpdateBucket",
        "google.logging.v2.ConfigServiceV2.DeleteExclusion",
        "google.logging.v2.ConfigServiceV2.CreateExclusion",
    }
)
"""A key for a service account (a credential that outlives its maker's access), and audit logs routed away or
excluded."""
GCP_DOWNLOADS = frozenset({"storage.objects.get"})
GCP_DELETES = frozenset({"storage.objects.delete", "storage.buckets.delete"})
GCP_GRANTS = frozenset({"InsertProjectOwnershipInvite"})
GCP_PUBLIC = frozenset({"allusers", "allauthenticatedusers"})


def slack(raw: dict[str, Any]) -> Observation | None:
    """A Slack audit log entry (`action`, `actor`, `entity`, `context`) by a user."""
    actor = raw["actor"]
    user = actor.get("user") if actor.get("type", "user") == "user" else None
    name = user.get("email") if isinstance(user, dict) else None
    if not name:
        return None
    action = str(raw["action"])
    features: list[tuple[str, float]] = []
    seen: list[tuple[str, str]] = []
    if action == "user_login":
        features.append(("signin", 1.0))
    elif action == "user_login_failed":
        features.append(("signin_failed", 1.0))
    elif action in SLACK_GRANTS or action == "permissions_assigned":
        features.append(("privilege_grant", 1.0))
        if str(_dig(raw.get("entity"), "user", "email")).lower() == str(name).lower():
            features.append(("self_grant", 1.0))
    elif action in SLACK_EXPORTS or action in SLACK_EVASION:
        features.append(("sensitive_api", 1.0))
    elif action == "file_downloaded":
        features.append(("download", 1.0))
        ident = _dig(raw.get("entity"), "file", "id")
        if ident:
            seen.append(("resource", f"slack:{ident}"))
    elif action == "file_public_link_created":
        features.append(("external_share", 1.0))
    return Observation(str(name), features, seen)


def box(raw: dict[str, Any], org_domains: Set[str]) -> Observation | None:
    """A Box enterprise event (`event_type`, `created_by`, `source`, `accessible_by`)."""
    name = _dig(raw, "created_by", "login")
    if not name:
        return None  # an anonymous viewer of a shared link
    kind = str(raw["event_type"])
    features: list[tuple[str, float]] = []
    seen: list[tuple[str, str]] = []
    if kind == "LOGIN":
        features.append(("signin", 1.0))
    elif kind in BOX_SIGNIN_FAILED:
        features.append(("signin_failed", 1.0))
    elif kind in BOX_DOWNLOADS or kind in BOX_READS:
        features.append(("download" if kind in BOX_DOWNLOADS else "file_access", 1.0))
        item = _dig(raw, "source", "item_id")
        if item:
            seen.append(("resource", f"box:{item}"))
    elif kind in BOX_DELETES:
        features.append(("delete", 1.0))
    elif kind in BOX_GRANTS:
        features.append(("privilege_grant", 1.0))
    elif kind in BOX_INVITES:
        invited = _dig(raw, "accessible_by", "login")
        if invited and domain_of(str(invited)) not in org_domains:
            features.append(("external_share", 1.0))
    return Observation(str(name), features, seen)


def dropbox(raw: dict[str, Any], tag: str, org_domains: Set[str]) -> Observation | None:
    """A Dropbox team event (`event_type` tagged `tag`), by a team member or an administrator."""
    actor = raw.get("actor")
    person = None
    if isinstance(actor, dict):
        person = actor.get("user") if isinstance(actor.get("user"), dict) else actor.get("admin")
    name = person.get("email") if isinstance(person, dict) else None
    if not name:
        return None
    features: list[tuple[str, float]] = []
    seen: list[tuple[str, str]] = []
    if tag == "login_success":
        features.append(("signin", 1.0))
    elif tag == "login_fail":
        features.append(("signin_failed", 1.0))
    elif tag in DROPBOX_DOWNLOADS or tag in DROPBOX_READS:
        features.append(("download" if tag in DROPBOX_DOWNLOADS else "file_access", 1.0))
        for asset in as_list(raw.get("assets")):
            path = _dig(asset, "path", "contextual")
            if path:
                seen.append(("resource", f"dropbox:{path}"))
    elif tag in DROPBOX_DELETES:
        features.append(("delete", 1.0))
    elif tag in DROPBOX_SHARES:
        owner = _dig(raw, "details", "new_owner_email")
        if raw.get("involve_non_team_member") is True or (owner and domain_of(str(owner)) not in org_domains):
            features.append(("external_share", 1.0))
    elif tag in DROPBOX_FACTOR:
        features.append(("factor_change", 1.0))
    elif tag in DROPBOX_GRANTS:
        features.append(("privilege_grant", 1.0))
    elif tag in DROPBOX_SENSITIVE:
        features.append(("sensitive_api", 1.0))
    return Observation(str(name), features, seen)


def gcp(payload: dict[str, Any], org_domains: Set[str]) -> Observation | None:
    """A Google Cloud audit log entry's `protoPayload` (an `AuditLog`); a call that failed counts nothing."""
    name = _dig(payload, "authenticationInfo", "principalEmail")
    if not name:
        return None
    method = str(payload.get("methodName") or "")
    features: list[tuple[str, float]] = []
    seen: list[tuple[str, str]] = []
    status = payload.get("status")
    if isinstance(status, dict) and status.get("code"):
        return Observation(str(name), features, seen)
    short = method.rpartition(".")[2]
    if short.lower() in ("setiampolicy", "setiampermissions"):
        _gcp_policy(payload, str(name).lower(), org_domains, features)
    elif method in GCP_GRANTS:
        features.append(("privilege_grant", 1.0))
    elif method in GCP_SENSITIVE or short in GCP_IMPERSONATION:
        features.append(("sensitive_api", 1.0))
    elif method in GCP_DOWNLOADS:
        features.append(("download", 1.0))
        resource = payload.get("resourceName")
        if resource:
            seen.append(("resource", f"gcs:{resource}"))
    elif method in GCP_DELETES:
        features.append(("delete", 1.0))
    return Observation(str(name), features, seen)


def _gcp_policy(payload: dict[str, Any], actor: str, org_domains: Set[str], features: list[tuple[str, float]]) -> None:
    """An IAM policy set: a grant when it adds a binding (or says nothing of what changed); shared outside when it
    adds everyone (`allUsers`, `allAuthenticatedUsers`) or an account of another domain; a grant to oneself."""
    deltas = [
        d
        for d in as_list(_dig(payload, "serviceData", "policyDelta", "bindingDeltas"))
        + as_list(_dig(payload, "metadata", "policyDelta", "bindingDeltas"))
        if isinstance(d, dict)
    ]
    added = [str(d.get("member") or "").lower() for d in deltas if str(d.get("action")).upper() == "ADD"]
    if deltas and not added:
        return  # only removals
    features.append(("privilege_grant", 1.0))
    accounts = [member.partition(":")[2] or member for member in added]
    if any(member in GCP_PUBLIC for member in added) or any(
        "@" in account and not account.endswith(".gserviceaccount.com") and domain_of(account) not in org_domains
        for account in accounts
    ):
        features.append(("external_share", 1.0))
    if actor in accounts:
        features.append(("self_grant", 1.0))


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
