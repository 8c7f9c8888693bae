"""Behaviour features out of collaboration and cloud services' audit records: Slack's audit logs, Box's and Dropbox's
team events, Google Cloud's audit logs (`protoPayload`), Azure's activity log and Duo's administrator log. Each
reader takes one record of its shape (the `Extractor` recognises it) and the organisation's mail domains where it
needs them, and returns who acted and what it counts: the feature its action names in the service's table, then what
the record's own fields add (a grant to oneself, a share outside the organisation, the resource read)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Set
from typing import Any

import orjson

from custodes.connectors.envelope import dig
from custodes.detections.scoring import pam
from custodes.detections.scoring.observation import Observation, as_list, counting, domain_of, name_key, name_of, whole


def _table(**groups: Iterable[str]) -> dict[str, str]:
    """Action -> feature, from the actions of each feature."""
    return {action: feature for feature, actions in groups.items() for action in actions}


SLACK = _table(
    signin={"user_login"},
    signin_failed={"user_login_failed"},
    download={"file_downloaded"},
    external_share={"file_public_link_created"},
    privilege_grant={
        "role_change_to_admin",
        "role_change_to_owner",
        "owner_transferred",
        "primary_owner_transferred",
        "permissions_assigned",
    },
    sensitive_api={
        # the workspace's messages and files exported, as a Google Takeout
        "manual_export_started",
        "manual_export_downloaded",
        "scheduled_export_started",
        "scheduled_export_downloaded",
        "corporate_exports_approved",
        "corporate_exports_enabled",
        # a control weakened: sign-in requirements, data loss prevention, legal holds, key management, device
        # management, information barriers
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
    },
)
"""Slack audit actions and what each counts."""
BOX = _table(
    signin={"LOGIN"},
    signin_failed={"FAILED_LOGIN", "DEVICE_TRUST_CHECK_FAILED"},  # a device the policy does not trust: refused
    download={"DOWNLOAD"},
    file_access={"PREVIEW"},
    delete={"DELETE", "ITEM_TRASH", "TRASH"},
    privilege_grant={"CHANGE_ADMIN_ROLE", "ADMIN_ROLE_ASSIGN"},
    external_share={"COLLABORATION_INVITE", "COLLABORATION_ACCEPT"},  # with a login of another domain only
)
"""Box enterprise event types and what each counts."""
DROPBOX = _table(
    signin={"login_success"},
    signin_failed={"login_fail"},
    download={"file_download", "shared_content_download"},
    file_access={"file_preview", "file_view"},
    delete={"file_delete", "file_permanently_delete"},
    factor_change={"tfa_change_status", "tfa_remove_backup_phone", "tfa_remove_security_key"},
    privilege_grant={"member_change_admin_role"},
    sensitive_api={"sign_in_as_session_start"},  # an administrator in a member's account: every file in reach
    external_share={
        # counted when the event involves someone outside the team, or hands a folder to an owner of another domain
        "shared_content_add_member",
        "shared_content_add_invitees",
        "shared_folder_transfer_ownership",
        "shared_link_create",
        "shared_link_share",
        "file_request_create",
    },
)
"""Dropbox team event tags and what each counts."""
GCP = _table(
    privilege_grant={"InsertProjectOwnershipInvite"},
    sensitive_api={
        # a key for a service account: a credential that outlives its maker's access
        "google.iam.admin.v1.CreateServiceAccountKey",
        # audit logs routed away or excluded
        "google.logging.v2.ConfigServiceV2.DeleteSink",
        "google.logging.v2.ConfigServiceV2.UpdateSink",
        "google.logging.v2.ConfigServiceV2.DeleteBucket",
        "google.logging.v2.ConfigServiceV2.UpdateBucket",
        "google.logging.v2.ConfigServiceV2.DeleteExclusion",
        "google.logging.v2.ConfigServiceV2.CreateExclusion",
        # a token or a signature of a service account (IAM credentials): acting as it
        "GenerateAccessToken",
        "GenerateIdToken",
        "SignJwt",
        "SignBlob",
    },
    download={"storage.objects.get"},
    delete={"storage.objects.delete", "storage.buckets.delete"},
)
"""Google Cloud audit methods (in full, or the last part of IAM credentials' long names) and what each counts; an
IAM policy set is read by `_gcp_policy`."""
GCP_PUBLIC = frozenset({"allusers", "allauthenticatedusers"})
GCP_PERMISSION_DENIED, GCP_UNAUTHENTICATED = 7, 16
"""The `google.rpc.Code`s of a call the caller's roles do not allow, and of a caller not authenticated."""
GKE_STATUS = {GCP_PERMISSION_DENIED: 403, GCP_UNAUTHENTICATED: 401}
"""A `google.rpc.Code` -> the HTTP status a Kubernetes API server gives for it (any other failure: 500)."""
GKE_VERSION = re.compile(r"v\d+(?:(?:alpha|beta)\d+)?")
"""A Kubernetes API version (`v1`, `v1beta1`) among a GKE method name's parts."""
AZURE_ELEVATE = "microsoft.authorization/elevateaccess/action"
"""A Global Administrator making themselves User Access Administrator of every subscription: a grant to oneself."""
AZURE = _table(
    privilege_grant={"microsoft.authorization/roleassignments/write", AZURE_ELEVATE},
    sensitive_api={
        # keys and downloadable copies: a storage account's keys, a disk's or snapshot's download link
        "microsoft.storage/storageaccounts/listkeys/action",
        "microsoft.compute/disks/begingetaccess/action",
        "microsoft.compute/snapshots/begingetaccess/action",
        # logs, locks, alerts and retention switched off
        "microsoft.insights/diagnosticsettings/delete",
        "microsoft.authorization/locks/delete",
        "microsoft.insights/actiongroups/delete",
        "microsoft.insights/alertrules/delete",
        "microsoft.insights/metricalerts/delete",
        "microsoft.security/alertssuppressionrules/write",
        "microsoft.storage/storageaccounts/blobservices/containers/immutabilitypolicies/delete",
    },
    delete={
        "microsoft.storage/storageaccounts/delete",
        "microsoft.compute/disks/delete",
        "microsoft.compute/snapshots/delete",
        "microsoft.keyvault/vaults/delete",
        "microsoft.recoveryservices/vaults/backupfabrics/protectioncontainers/delete",
    },
)
"""Azure Resource Manager operations (lower-cased: the log writes them in either case) and what each counts."""
AZURE_UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"

DUO_ADMIN = _table(
    signin={"admin_login"},
    mfa_failed={"admin_2fa_error", "admin_lockout"},  # a push reported as fraud; locked out after passcodes tried
    privilege_grant={"admin_create"},
    sensitive_api={
        "bypass_create",  # a code that signs someone in without their second factor
        "bypass_view",
        "integration_skey_view",  # an application's secret key shown
        "update_admin_factor_restrictions",
        "policy_update",
    },
)
"""Duo administrator log actions -> features; `DUO_WEAKENED` reads the actions whose description decides."""
ONELOGIN = {
    5: "signin",  # logged in to OneLogin
    6: "signin_failed",
    90: "access_denied",  # an application the person may not use
    24: "factor_change",  # an OTP device removed
    172: "factor_change",  # an authentication factor removed
    72: "privilege_grant",  # administrative privileges given to a user
    17: "delete",  # a user deleted
}
"""OneLogin event types (`event_type_id`) -> features."""
ONELOGIN_ON_ANOTHER = frozenset({3, 11, 240})
"""Event types that are sensitive when done to another person: an account assumed (acting as them), a password
changed, an application password viewed."""
DUO_WEAKENED = {
    "user_update": ("status", {"bypass"}),  # a user's second factor switched off
    "admin_single_sign_on_update": ("enforcement_status", {"disabled", "optional"}),
    "integration_create": ("raw_type", {"adminapi"}),  # a credential to administer Duo itself
}
"""Actions that are sensitive when their description's field holds one of the values."""


def slack(raw: dict[str, Any]) -> Observation | None:
    """A Slack audit log entry (`action`, `actor`, `entity`, `context`) by a user."""
    actor = raw["actor"]
    name = name_of(dig(actor, "user.email")) if actor.get("type", "user") == "user" else None
    if name is None:
        return None
    feature = SLACK.get(str(raw["action"]))
    obs = counting(name, feature)
    if feature == "privilege_grant" and str(dig(raw, "entity.user.email")).lower() == obs.actor.lower():
        obs.features.append(("self_grant", 1.0))
    elif feature == "download" and (ident := dig(raw, "entity.file.id")):
        obs.seen.append(("resource", f"slack:{ident}"))
    return obs


def box(raw: dict[str, Any], org_domains: Set[str]) -> Observation | None:
    """A Box enterprise event (`event_type`, `created_by`, `source`, `accessible_by`); None for an anonymous viewer
    of a shared link."""
    name = name_of(dig(raw, "created_by.login"))
    if name is None:
        return None
    feature = BOX.get(str(raw["event_type"]))
    if feature == "external_share" and not _outside(dig(raw, "accessible_by.login"), org_domains):
        feature = None
    obs = counting(name, feature)
    if feature in ("download", "file_access") and (item := dig(raw, "source.item_id")):
        obs.seen.append(("resource", f"box:{item}"))
    return obs


def dropbox(raw: dict[str, Any], tag: str, org_domains: Set[str]) -> Observation | None:
    """A Dropbox team event (`event_type` tagged `tag`), by a team member or an administrator."""
    name = name_of(dig(raw, "actor.user.email")) or name_of(dig(raw, "actor.admin.email"))
    if name is None:
        return None
    feature = DROPBOX.get(tag)
    if feature == "external_share" and raw.get("involve_non_team_member") is not True:
        feature = "external_share" if _outside(dig(raw, "details.new_owner_email"), org_domains) else None
    obs = counting(name, feature)
    if feature in ("download", "file_access"):
        paths = (dig(asset, "path.contextual") for asset in as_list(raw.get("assets")) if isinstance(asset, dict))
        obs.seen.extend(("resource", f"dropbox:{path}") for path in paths if path)
    return obs


def gcp(payload: dict[str, Any], org_domains: Set[str]) -> Observation | None:
    """A Google Cloud audit log entry's `protoPayload` (an `AuditLog`); a call refused for want of a permission is an
    access denied, any other that failed counts nothing."""
    name = name_of(dig(payload, "authenticationInfo.principalEmail"))
    if name is None:
        return None
    if str(payload.get("methodName") or "").startswith("io.k8s."):
        return gke(name, payload)
    code = dig(payload, "status.code")
    if code:
        return counting(name, "access_denied" if whole(code) == GCP_PERMISSION_DENIED else None)
    obs = counting(name, None)
    method = str(payload.get("methodName") or "")
    short = method.rpartition(".")[2]
    if short.lower() in ("setiampolicy", "setiampermissions"):
        obs.features.extend(_gcp_policy(payload, obs.actor.lower(), org_domains))
    elif feature := GCP.get(method) or GCP.get(short):
        obs.features.append((feature, 1.0))
        if feature == "download" and (resource := payload.get("resourceName")):
            obs.seen.append(("resource", f"gcs:{resource}"))
    return obs


def gke(name: str, payload: dict[str, Any]) -> Observation:
    """A Kubernetes call as Google Cloud logs it for GKE (`methodName` `io.k8s.<group>.<version>.<resource>
    [.<subresource>].<verb>`, the outcome a `google.rpc.Code`), read as an API server's audit event is
    (`pam.kube_call`)."""
    parts = str(payload.get("methodName") or "").removeprefix("io.k8s.").split(".")
    version = next((i for i, part in enumerate(parts) if GKE_VERSION.fullmatch(part)), None)
    if version is None or len(parts) < version + 3:
        return counting(name, None)
    resource, *sub = parts[version + 1 : -1]
    status = whole(dig(payload, "status.code"))
    code = GKE_STATUS.get(status, 500) if status else 200
    where = str(payload.get("resourceName") or "*/*")
    return pam.kube_call(name, parts[-1], resource, sub[0] if sub else "", code, where)


def azure(raw: dict[str, Any], operation: str) -> Observation | None:
    """An Azure activity log entry (`operationName`, `resourceId`; the caller in `identity.claims` as diagnostic
    settings export it, or `caller` as the REST API returns it) by a person; an application acting (`appid` only)
    is no one. An operation refused (`Forbidden`) is an access denied, any other that failed counts nothing."""
    claims = dig(raw, "identity.claims")
    claims = claims if isinstance(claims, dict) else {}
    names = [claims.get(AZURE_UPN), claims.get("name"), raw.get("caller")]
    name = next((n for n in map(name_of, names) if n is not None and "@" in n), None)
    if name is None:
        return None
    result = raw.get("resultType") or dig(raw, "status.value")
    if str(result).lower() in ("failure", "failed"):
        causes = (dig(raw, "subStatus.value"), raw.get("resultSignature"), dig(raw, "properties.statusCode"))
        return counting(name, "access_denied" if any("forbidden" in str(c).lower() for c in causes) else None)
    feature = AZURE.get(operation.lower())
    obs = counting(name, feature)
    if operation.lower() == AZURE_ELEVATE and feature:
        obs.features.append(("self_grant", 1.0))
    return obs


def duo_admin(raw: dict[str, Any], action: str) -> Observation | None:
    """A Duo administrator log entry, by the administrator it names (`username`: Duo gives their full name, which
    the directory's display name resolves). Its `description` is JSON written as text; one that is not JSON says
    nothing more."""
    name = name_of(raw.get("username"))
    if name is None:
        return None
    feature = DUO_ADMIN.get(action)
    if action in DUO_WEAKENED:
        key, values = DUO_WEAKENED[action]
        try:
            description = orjson.loads(str(raw.get("description") or "{}"))
        except orjson.JSONDecodeError:
            description = None
        value = description.get(key) if isinstance(description, dict) else None
        feature = "sensitive_api" if str(value).lower() in values else None
    return counting(name, feature)


def onelogin(raw: dict[str, Any]) -> Observation | None:
    """A OneLogin event (Events API), by the person who acted: `actor_user_name`, else `user_name` (OneLogin gives
    full names, which the directory's display name resolves). What was done to another person (their account
    assumed, their application password viewed, their password changed) counts for the one who did it; done to
    oneself, nothing. A privilege given to oneself is a self-grant too."""
    user = name_of(raw.get("user_name"))
    name = name_of(raw.get("actor_user_name")) or user
    if name is None:
        return None
    kind = whole(raw.get("event_type_id"))
    feature = ONELOGIN.get(kind)
    other = user is not None and name_key(user) != name_key(name)
    if kind in ONELOGIN_ON_ANOTHER:
        feature = "sensitive_api" if other else None
    obs = counting(name, feature)
    if feature == "privilege_grant" and not other:
        obs.features.append(("self_grant", 1.0))
    return obs


def _gcp_policy(payload: dict[str, Any], actor: str, org_domains: Set[str]) -> list[tuple[str, float]]:
    """An IAM policy set: a grant when it adds a binding (or says nothing of what changed); shared outside when it
    adds everyone (`allUsers`, `allAuthenticatedUsers`) or an account of another domain; a grant to oneself."""
    deltas = [
        d
        for d in as_list(dig(payload, "serviceData.policyDelta.bindingDeltas"))
        + as_list(dig(payload, "metadata.policyDelta.bindingDeltas"))
        if isinstance(d, dict)
    ]
    added = [str(d.get("member") or "").lower() for d in deltas if str(d.get("action")).upper() == "ADD"]
    if deltas and not added:
        return []  # only removals
    features = [("privilege_grant", 1.0)]
    accounts = [member.partition(":")[2] or member for member in added]
    if any(member in GCP_PUBLIC for member in added) or any(
        not account.endswith(".gserviceaccount.com") and _outside(account, org_domains) for account in accounts
    ):
        features.append(("external_share", 1.0))
    if actor in accounts:
        features.append(("self_grant", 1.0))
    return features


def _outside(address: Any, org_domains: Set[str]) -> bool:
    """Whether `address` is a mail address of a domain other than the organisation's."""
    return isinstance(address, str) and "@" in address and domain_of(address) not in org_domains
