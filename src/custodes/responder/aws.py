"""AWS containment actions on IAM (boto3; its calls run in worker threads, retried by `connectors.retry.call`).

- ``aws.deactivate_access_keys`` / ``aws.reactivate_access_keys``: each other's undo. The keys a deactivation
  changed are listed in its result and recorded on the user as the tag ``custodes:deactivated-keys`` (written
  before the keys are touched), so the undo (which the engine calls with the same arguments) reactivates exactly
  those and never a key that was already inactive, e.g. a retired one.
- ``aws.delete_login_profile`` / ``aws.restore_login_profile``: each other's undo. The deletion is recorded on the
  user as the tag ``custodes:login-profile-deleted`` (before the password goes). AWS keeps no copy of a deleted
  password, so the restore sets a new random one that must be changed at first sign-in and hands it over through
  AWS Secrets Manager (never in a result or a log); it restores only a profile Custodes deleted.
- ``aws.attach_quarantine_policy`` / ``aws.detach_quarantine_policy``: an inline deny-all policy on the user.
- ``aws.revoke_role_sessions``: AWS's documented "revoke active sessions" pattern, an inline role policy
  (``AWSRevokeOlderSessions``) denying every action to credentials whose ``aws:TokenIssueTime`` is before now.

Every action reads the current state first and reports ``changed: False`` when there is nothing to do (a
replayed step). Protected accounts are refused before any call; a dry run makes no call at all. AWS refusals
become ActionError with the AWS error code (``NoSuchEntity``, ``AccessDenied``, ...); throttling, 5xx and
connection failures are retried and, once the attempts are spent, reported as retryable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from multidict import CIMultiDict

from custodes.config import AwsConnection
from custodes.connectors.retry import RetryPolicy, SourceError, Transient, call
from custodes.responder.http import retry_delay
from custodes.responder.registry import ActionContext, ActionError, action

QUARANTINE_POLICY = "CustodesQuarantine"
"""Name of the inline deny-all policy `aws.attach_quarantine_policy` puts on a user."""
REVOKE_POLICY = "AWSRevokeOlderSessions"
"""Name of the inline role policy of the session-revocation pattern (the name the AWS console uses too)."""
KEYS_TAG = "custodes:deactivated-keys"
"""User tag listing the access keys Custodes deactivated (space-separated ids), for the undo."""
LOGIN_PROFILE_TAG = "custodes:login-profile-deleted"
"""User tag recording when Custodes deleted the console password, for the undo."""
_IAM_SYMBOLS = "!@#$%^&*()_+-=[]{}|'"
"""The non-alphanumeric characters IAM accepts in a password policy's symbol class."""

QUARANTINE_DOCUMENT: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "CustodesQuarantine", "Effect": "Deny", "Action": "*", "Resource": "*"}],
}

retry_policy = RetryPolicy(attempts=4, max_wait=30.0, backoff=0.5)
"""How IAM calls are retried; tests may replace it."""

_THROTTLING = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable", "RequestTimeout"}


def _connection(ctx: ActionContext) -> AwsConnection:
    aws = ctx.settings.aws
    if aws is None:
        raise ActionError(
            "no AWS connection is configured: set responder.aws (region, and optionally endpoint_url and keys)",
            code="not_configured",
        )
    return aws


def _client(ctx: ActionContext, aws: AwsConnection, service: str = "iam") -> Any:
    """A client (IAM by default) without botocore's own retries (ours honour Retry-After and are logged)."""
    timeout = ctx.settings.http_timeout_seconds
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=timeout, read_timeout=timeout)
    keys: dict[str, str] = {}
    if aws.access_key_id is not None and aws.secret_access_key is not None:
        keys = {
            "aws_access_key_id": aws.access_key_id.reveal(),
            "aws_secret_access_key": aws.secret_access_key.reveal(),
        }
    return boto3.session.Session().client(
        service, region_name=aws.region, endpoint_url=aws.endpoint_url, config=config, **keys
    )


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "") or "")


async def _aws(operation: str, function: Callable[..., Any], **kwargs: Any) -> Any:
    """One IAM call in a worker thread: throttling, 5xx and connection trouble retried; refusals as ActionError."""
    where = f"AWS {operation}"
    last = "connection_error"

    async def attempt() -> Any:
        nonlocal last
        try:
            return await asyncio.to_thread(function, **kwargs)
        except ClientError as error:
            code = _error_code(error)
            meta = error.response.get("ResponseMetadata", {})
            status = int(meta.get("HTTPStatusCode", 0) or 0)
            if code in _THROTTLING or status >= 500 or status == 429:
                last = code or f"http_{status}"
                headers = CIMultiDict((str(k), str(v)) for k, v in (meta.get("HTTPHeaders") or {}).items())
                delay = retry_delay(429 if status == 400 else status, headers, now=datetime.now(UTC).timestamp())
                raise Transient(last, delay) from None
            message = str(error.response.get("Error", {}).get("Message", "") or "request refused")
            raise ActionError(f"{where}: {code or status}: {message}"[:400], code=code or f"http_{status}") from None
        except BotoCoreError as error:
            last = "connection_error"
            raise Transient(type(error).__name__) from None

    try:
        return await call(where, attempt, retry_policy)
    except SourceError as error:
        raise ActionError(str(error), code=last, retryable=True) from None


def _name(ctx: ActionContext, value: str, kind: str) -> str:
    """The IAM name of a user or role given by name or ARN; protected accounts refused (by either)."""
    raw = value.strip()
    name = raw.rsplit("/", 1)[-1] if raw.startswith("arn:") else raw
    if not name:
        raise ActionError(f"an IAM {kind} (name or ARN) is required", code="invalid_argument")
    protected = {account.strip().casefold() for account in ctx.settings.protected_accounts}
    for candidate in (raw, name):
        if candidate.casefold() in protected:
            raise ActionError(
                f"{candidate} is a protected account: Custodes will not change it in AWS", code="protected_account"
            )
    return name


def _dry(would: str) -> dict[str, Any]:
    return {"changed": False, "dry_run": True, "would": would}


async def _start(ctx: ActionContext, value: str, kind: str, would: str) -> tuple[str, Any, dict[str, Any] | None]:
    """Check the arguments and the configuration; in a dry run return its outcome without creating a client."""
    name = _name(ctx, value, kind)
    aws = _connection(ctx)
    if ctx.dry_run:
        return name, None, _dry(would.format(name=name))
    return name, await asyncio.to_thread(_client, ctx, aws), None


async def _key_states(iam: Any, user: str) -> dict[str, str]:
    """Access key id -> status (Active/Inactive) of a user."""
    states: dict[str, str] = {}
    marker: str | None = None
    while True:
        page = await _aws(
            "iam:ListAccessKeys", iam.list_access_keys, UserName=user, **({"Marker": marker} if marker else {})
        )
        for key in page.get("AccessKeyMetadata", []):
            states[str(key["AccessKeyId"])] = str(key["Status"])
        if not page.get("IsTruncated"):
            return states
        marker = page["Marker"]


async def _recorded_keys(iam: Any, user: str) -> list[str]:
    tags = await _aws("iam:ListUserTags", iam.list_user_tags, UserName=user)
    for tag in tags.get("Tags", []):
        if tag.get("Key") == KEYS_TAG:
            return [key for key in str(tag.get("Value", "")).split() if key]
    return []


async def _record_keys(iam: Any, user: str, keys: list[str]) -> None:
    if keys:
        tag = {"Key": KEYS_TAG, "Value": " ".join(keys)}
        await _aws("iam:TagUser", iam.tag_user, UserName=user, Tags=[tag])
    else:
        await _aws("iam:UntagUser", iam.untag_user, UserName=user, TagKeys=[KEYS_TAG])


async def _set_keys(iam: Any, user: str, keys: list[str], status: str) -> None:
    for key in keys:
        await _aws("iam:UpdateAccessKey", iam.update_access_key, UserName=user, AccessKeyId=key, Status=status)


@action(
    "aws.deactivate_access_keys",
    destructive=True,
    undo="aws.reactivate_access_keys",
    plan="deactivate the active access keys of IAM user {user}",
    target="user",
)
async def deactivate_access_keys(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Deactivate every active access key of an IAM user (name or ARN); the result lists the keys changed."""
    name, iam, dry = await _start(ctx, user, "user", "deactivate the active access keys of IAM user {name}")
    if dry is not None:
        return dry
    states = await _key_states(iam, name)
    active = sorted(key for key, status in states.items() if status == "Active")
    if active:
        # Record first: a crash after the keys change still leaves the undo knowing which ones to restore.
        recorded = await _recorded_keys(iam, name)
        await _record_keys(iam, name, sorted({*recorded, *active}))
        await _set_keys(iam, name, active, "Inactive")
    return {"changed": bool(active), "user": name, "deactivated": active, "access_keys": sorted(states)}


@action(
    "aws.reactivate_access_keys",
    undo="aws.deactivate_access_keys",
    plan="reactivate the access keys Custodes deactivated for IAM user {user}",
    target="user",
)
async def reactivate_access_keys(
    ctx: ActionContext, *, user: str, access_key_ids: list[str] | None = None
) -> dict[str, Any]:
    """Reactivate the access keys of an IAM user that Custodes deactivated (or exactly `access_key_ids`)."""
    name, iam, dry = await _start(ctx, user, "user", "reactivate the access keys Custodes deactivated for {name}")
    if dry is not None:
        return dry
    recorded = await _recorded_keys(iam, name)
    wanted = sorted(set(access_key_ids)) if access_key_ids is not None else recorded
    states = await _key_states(iam, name)
    inactive = [key for key in wanted if states.get(key) == "Inactive"]
    await _set_keys(iam, name, inactive, "Active")
    if recorded:
        await _record_keys(iam, name, [key for key in recorded if key not in wanted])
    outcome: dict[str, Any] = {
        "changed": bool(inactive),
        "user": name,
        "reactivated": inactive,
        "not_found": [key for key in wanted if key not in states],
    }
    if not wanted:
        outcome["note"] = "no access keys are recorded as deactivated by Custodes; name them in access_key_ids"
    return outcome


async def _has_login_profile(iam: Any, user: str) -> bool:
    try:
        await _aws("iam:GetLoginProfile", iam.get_login_profile, UserName=user)
    except ActionError as error:
        if error.code != "NoSuchEntity":
            raise
        return False
    return True


async def _user_tags(iam: Any, user: str) -> dict[str, str]:
    tags = await _aws("iam:ListUserTags", iam.list_user_tags, UserName=user)
    return {str(tag.get("Key")): str(tag.get("Value", "")) for tag in tags.get("Tags", [])}


@action(
    "aws.delete_login_profile",
    destructive=True,
    undo="aws.restore_login_profile",
    plan="delete the console password (login profile) of IAM user {user}",
    target="user",
)
async def delete_login_profile(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Delete an IAM user's console password (login profile), recording the deletion on the user (the tag
    ``custodes:login-profile-deleted``) so that the undo, `aws.restore_login_profile`, knows it may restore one."""
    name, iam, dry = await _start(ctx, user, "user", "delete the console password of IAM user {name}")
    if dry is not None:
        return dry
    await _aws("iam:GetUser", iam.get_user, UserName=name)
    if not await _has_login_profile(iam, name):
        return {"changed": False, "user": name, "login_profile": False}
    # Record first: a crash after the deletion still leaves the undo knowing it may restore console access.
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    await _aws("iam:TagUser", iam.tag_user, UserName=name, Tags=[{"Key": LOGIN_PROFILE_TAG, "Value": stamp}])
    try:
        await _aws("iam:DeleteLoginProfile", iam.delete_login_profile, UserName=name)
    except ActionError as error:
        if error.code != "NoSuchEntity":
            raise
    return {"changed": True, "user": name, "login_profile": False}


async def _password_policy(iam: Any) -> dict[str, Any]:
    try:
        found = await _aws("iam:GetAccountPasswordPolicy", iam.get_account_password_policy)
    except ActionError as error:
        if error.code != "NoSuchEntity":
            raise
        return {}
    return dict(found.get("PasswordPolicy") or {})


def console_password(policy: dict[str, Any]) -> str:
    """A random console password that satisfies the account's password policy (every character class, at least
    24 characters or the policy's minimum when longer)."""
    classes = [string.ascii_uppercase, string.ascii_lowercase, string.digits, _IAM_SYMBOLS]
    length = min(128, max(24, int(policy.get("MinimumPasswordLength", 0) or 0)))
    chosen = [secrets.choice(chars) for chars in classes]
    alphabet = "".join(classes)
    chosen += [secrets.choice(alphabet) for _ in range(length - len(chosen))]
    secrets.SystemRandom().shuffle(chosen)
    return "".join(chosen)


async def _store_password(ctx: ActionContext, aws: AwsConnection, user: str, password: str) -> str:
    """Put the new password in Secrets Manager (a new version when the secret exists); return the secret's ARN."""
    manager = await asyncio.to_thread(_client, ctx, aws, "secretsmanager")
    name = f"{aws.password_secret_prefix}{user}"
    try:
        created = await _aws(
            "secretsmanager:CreateSecret",
            manager.create_secret,
            Name=name,
            SecretString=password,
            Description=f"Temporary console password of IAM user {user}, restored by Custodes; must be changed",
        )
    except ActionError as error:
        if error.code != "ResourceExistsException":
            raise
        created = await _aws(
            "secretsmanager:PutSecretValue", manager.put_secret_value, SecretId=name, SecretString=password
        )
    return str(created["ARN"])


@action(
    "aws.restore_login_profile",
    undo="aws.delete_login_profile",
    plan="give IAM user {user} back a console password (a new one, to be changed at first sign-in)",
    target="user",
)
async def restore_login_profile(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Restore console access that `aws.delete_login_profile` removed. AWS keeps no copy of a deleted password, so
    the user gets a new random one that satisfies the account's password policy and must be changed at first
    sign-in. The password never appears in a result or a log: it is stored in AWS Secrets Manager (the secret
    ``<password_secret_prefix><user>``, whose ARN the result gives) for the help desk to hand over.

    Only a login profile Custodes deleted is restored; a user that never had console access keeps none.
    """
    name, iam, dry = await _start(ctx, user, "user", "give IAM user {name} a new console password")
    if dry is not None:
        return dry
    aws = _connection(ctx)
    await _aws("iam:GetUser", iam.get_user, UserName=name)
    deleted = LOGIN_PROFILE_TAG in await _user_tags(iam, name)
    outcome: dict[str, Any] = {"changed": False, "user": name}
    if await _has_login_profile(iam, name):
        outcome["login_profile"] = True
    elif not deleted:
        outcome["login_profile"] = False
        outcome["note"] = "Custodes did not delete this user's console password, so it restores none"
        return outcome
    else:
        # Store first: a crash between the two leaves a stored password that a replay replaces, never a profile
        # whose password nobody has.
        password = await asyncio.to_thread(console_password, await _password_policy(iam))
        arn = await _store_password(ctx, aws, name, password)
        try:
            await _aws(
                "iam:CreateLoginProfile",
                iam.create_login_profile,
                UserName=name,
                Password=password,
                PasswordResetRequired=True,
            )
        except ActionError as error:
            if error.code != "EntityAlreadyExists":
                raise
        outcome.update(changed=True, login_profile=True, password_reset_required=True, password_secret=arn)
    if deleted:
        await _aws("iam:UntagUser", iam.untag_user, UserName=name, TagKeys=[LOGIN_PROFILE_TAG])
    return outcome


def _document(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def _inline_policy(get: Callable[..., Any], operation: str, **kwargs: Any) -> Any | None:
    """An inline policy's document, or None when there is none by that name."""
    try:
        found = await _aws(operation, get, **kwargs)
    except ActionError as error:
        if error.code == "NoSuchEntity":
            return None
        raise
    return _document(found.get("PolicyDocument"))


@action(
    "aws.attach_quarantine_policy",
    destructive=True,
    undo="aws.detach_quarantine_policy",
    plan=f"attach the deny-all inline policy {QUARANTINE_POLICY} to IAM user {{user}}",
    target="user",
)
async def attach_quarantine_policy(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Put an inline deny-all policy (CustodesQuarantine) on an IAM user: every API call they make is refused."""
    name, iam, dry = await _start(ctx, user, "user", f"attach {QUARANTINE_POLICY} (deny all) to IAM user {{name}}")
    if dry is not None:
        return dry
    await _aws("iam:GetUser", iam.get_user, UserName=name)
    current = await _inline_policy(
        iam.get_user_policy, "iam:GetUserPolicy", UserName=name, PolicyName=QUARANTINE_POLICY
    )
    if current == QUARANTINE_DOCUMENT:
        return {"changed": False, "user": name, "policy": QUARANTINE_POLICY}
    await _aws(
        "iam:PutUserPolicy",
        iam.put_user_policy,
        UserName=name,
        PolicyName=QUARANTINE_POLICY,
        PolicyDocument=json.dumps(QUARANTINE_DOCUMENT),
    )
    return {"changed": True, "user": name, "policy": QUARANTINE_POLICY}


@action(
    "aws.detach_quarantine_policy",
    undo="aws.attach_quarantine_policy",
    plan=f"remove the inline policy {QUARANTINE_POLICY} from IAM user {{user}}",
    target="user",
)
async def detach_quarantine_policy(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Remove the CustodesQuarantine inline policy from an IAM user."""
    name, iam, dry = await _start(ctx, user, "user", f"remove {QUARANTINE_POLICY} from IAM user {{name}}")
    if dry is not None:
        return dry
    await _aws("iam:GetUser", iam.get_user, UserName=name)
    current = await _inline_policy(
        iam.get_user_policy, "iam:GetUserPolicy", UserName=name, PolicyName=QUARANTINE_POLICY
    )
    if current is None:
        return {"changed": False, "user": name, "policy": QUARANTINE_POLICY}
    try:
        await _aws("iam:DeleteUserPolicy", iam.delete_user_policy, UserName=name, PolicyName=QUARANTINE_POLICY)
    except ActionError as error:
        if error.code != "NoSuchEntity":
            raise
        return {"changed": False, "user": name, "policy": QUARANTINE_POLICY}
    return {"changed": True, "user": name, "policy": QUARANTINE_POLICY}


def _revocation_sid(idempotency_key: str) -> str:
    """The statement id marking which step wrote a revocation policy (so a replay changes nothing)."""
    return "CustodesRevoke" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


def revocation_document(cutoff: str, sid: str) -> dict[str, Any]:
    """AWS's revoke-older-sessions policy: deny everything to credentials issued before `cutoff`."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": sid,
                "Effect": "Deny",
                "Action": ["*"],
                "Resource": ["*"],
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff}},
            }
        ],
    }


def _cutoff_of(document: Any, sid: str) -> str | None:
    """The cut-off of a revocation policy written with statement id `sid`, or None."""
    statements = document.get("Statement") if isinstance(document, dict) else None
    for statement in statements if isinstance(statements, list) else []:
        if isinstance(statement, dict) and statement.get("Sid") == sid:
            condition = statement.get("Condition", {}).get("DateLessThan", {})
            value = condition.get("aws:TokenIssueTime")
            return str(value) if value is not None else None
    return None


@action(
    "aws.revoke_role_sessions",
    destructive=True,
    plan=f"deny every session of IAM role {{role}} issued before now (inline policy {REVOKE_POLICY})",
    target="role",
)
async def revoke_role_sessions(ctx: ActionContext, *, role: str) -> dict[str, Any]:
    """Revoke the active sessions of an IAM role: deny all actions to credentials issued before now."""
    name, iam, dry = await _start(
        ctx, role, "role", f"deny sessions of IAM role {{name}} issued before now ({REVOKE_POLICY})"
    )
    if dry is not None:
        return dry
    await _aws("iam:GetRole", iam.get_role, RoleName=name)
    sid = _revocation_sid(ctx.idempotency_key)
    current = await _inline_policy(iam.get_role_policy, "iam:GetRolePolicy", RoleName=name, PolicyName=REVOKE_POLICY)
    existing = _cutoff_of(current, sid)
    if existing is not None:
        return {"changed": False, "role": name, "policy": REVOKE_POLICY, "revoked_before": existing}
    cutoff = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    await _aws(
        "iam:PutRolePolicy",
        iam.put_role_policy,
        RoleName=name,
        PolicyName=REVOKE_POLICY,
        PolicyDocument=json.dumps(revocation_document(cutoff, sid)),
    )
    return {
        "changed": True,
        "role": name,
        "policy": REVOKE_POLICY,
        "revoked_before": cutoff,
        "note": "keep the policy until the revoked credentials have expired; removing it re-enables them",
    }
