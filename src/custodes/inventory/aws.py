"""AWS IAM inventory through boto3: users with their password last used, groups, attached and inline policies
(user and group; privileged: ``AdministratorAccess``-like AWS policies, or a document allowing ``*`` or ``iam:*``
on every resource), access keys with their last use, MFA devices and console access. Lists go through boto3's
paginators; each call is retried by `connectors.retry.call` (throttling, 5xx, dropped connections)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from pydantic import Field

from custodes.connectors import cloudtrail
from custodes.connectors.cloudtrail import AwsOptions
from custodes.connectors.options import RetryOptions
from custodes.connectors.retry import RetryPolicy, SourceError
from custodes.inventory.model import Account, Grant, Snapshot
from custodes.model import utcnow

ADMIN_POLICIES = frozenset({"AdministratorAccess", "IAMFullAccess", "PowerUserAccess", "AWSOrganizationsFullAccess"})
EMAIL_TAGS = ("email", "Email", "mail")


class IamOptions(AwsOptions):
    """Options of an ``aws_iam`` connector."""

    retry: RetryOptions = Field(default_factory=RetryOptions)


def admin_document(document: Any) -> bool:
    """Whether a policy document allows ``*`` or ``iam:*`` on every resource."""
    if isinstance(document, str):
        try:
            document = json.loads(unquote(document))
        except ValueError:
            return False
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if "*" in resources and any(action in {"*", "iam:*"} for action in actions):
            return True
    return False


def _policies(detail: dict[str, Any], inline_key: str, admin_arns: set[str]) -> Iterable[Grant]:
    for policy in detail.get("AttachedManagedPolicies", []):
        name, arn = str(policy.get("PolicyName")), str(policy.get("PolicyArn"))
        yield Grant("policy", name, name in ADMIN_POLICIES or arn in admin_arns, attributes={"arn": arn})
    for policy in detail.get(inline_key, []):
        name = str(policy.get("PolicyName"))
        yield Grant("policy", name, admin_document(policy.get("PolicyDocument")), attributes={"inline": True})


class IamReader:
    """boto3 IAM calls, each in a thread and retried."""

    def __init__(self, options: IamOptions, credentials: dict[str, str]) -> None:
        self.options = options
        self.iam = cloudtrail.client("iam", options, credentials)
        retry = options.retry
        self.policy = RetryPolicy(retry.attempts, retry.max_wait, retry.backoff)

    async def call(self, operation: str, **kwargs: Any) -> Any:
        """One IAM call."""
        return await cloudtrail._aws(f"IAM {operation}", self.policy, getattr(self.iam, operation), **kwargs)

    async def pages(self, operation: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a paginated list (``Marker``/``IsTruncated``), one retried call per page."""
        items: list[dict[str, Any]] = []
        marker: str | None = None
        while True:
            page = await self.call(operation, **kwargs, **({"Marker": marker} if marker else {}))
            items += page.get(key, [])
            marker = page.get("Marker")
            if not page.get("IsTruncated") or not marker:
                return items


def _time(account: Account, value: Any, what: str) -> datetime | None:
    return value if isinstance(value, datetime) else account.time({"t": value}, "t", what)


async def collect(name: str, reader: IamReader) -> Snapshot:
    """The account's IAM users with groups, policies (via groups too), access keys, MFA and console access."""
    snapshot = Snapshot(name, "aws_iam", utcnow())
    details = await reader.pages("get_account_authorization_details", "UserDetailList", Filter=["User"])
    groups = {
        str(group.get("GroupName")): group
        for group in await reader.pages("get_account_authorization_details", "GroupDetailList", Filter=["Group"])
    }
    local = await reader.pages("get_account_authorization_details", "Policies", Filter=["LocalManagedPolicy"])
    admin_arns = {
        str(policy.get("Arn"))
        for policy in local
        for version in policy.get("PolicyVersionList", [])
        if version.get("IsDefaultVersion") and admin_document(version.get("Document"))
    }
    by_name = {str(detail.get("UserName")): detail for detail in details}
    for user in await reader.pages("list_users", "Users"):
        user_name = str(user.get("UserName"))
        detail = by_name.get(user_name, {})
        tags = {str(tag.get("Key")): str(tag.get("Value")) for tag in detail.get("Tags", []) or user.get("Tags", [])}
        email = next((tags[key] for key in EMAIL_TAGS if key in tags), None)
        account = Account(
            provider="aws_iam",
            native_id=str(user.get("Arn") or user_name),
            login=user_name,
            display_name=user_name,
            email=email,
            status="active",
            enabled=True,
            attributes={"user_id": user.get("UserId")},
        )
        account.created = _time(account, user.get("CreateDate"), "CreateDate")
        account.last_sign_in = _time(account, user.get("PasswordLastUsed"), "PasswordLastUsed")
        account.grants += _policies(detail, "UserPolicyList", admin_arns)
        for group_name in detail.get("GroupList", []):
            account.grants.append(Grant("group", str(group_name)))
            account.grants += _policies(groups.get(str(group_name), {}), "GroupPolicyList", admin_arns)
        keys = await reader.pages("list_access_keys", "AccessKeyMetadata", UserName=user_name)
        for key in keys:
            key_id = str(key.get("AccessKeyId"))
            used = await reader.call("get_access_key_last_used", AccessKeyId=key_id)
            last = (used.get("AccessKeyLastUsed") or {}).get("LastUsedDate")
            account.grants.append(
                Grant(
                    "access_key",
                    key_id,
                    created=_time(account, key.get("CreateDate"), f"access key {key_id} CreateDate"),
                    last_used=_time(account, last, f"access key {key_id} LastUsedDate"),
                    attributes={"status": key.get("Status")},
                )
            )
        devices = await reader.pages("list_mfa_devices", "MFADevices", UserName=user_name)
        account.mfa = bool(devices)
        try:
            await reader.call("get_login_profile", UserName=user_name)
            console = True
        except SourceError as error:
            if "NoSuchEntity" not in str(error):
                raise
            console = False
        account.attributes["console"] = console
        account.service = not console and email is None
        active_keys = any(g.kind == "access_key" and g.attributes.get("status") == "Active" for g in account.grants)
        account.enabled = console or active_keys
        account.status = "active" if account.enabled else "no_credentials"
        snapshot.accounts.append(account)
    return snapshot
