"""Entra ID inventory through Microsoft Graph: users with their last sign-in, groups and their members, activated
directory roles and their holders (privileged role holders) and MFA registration from the authentication
methods report. Every collection is read to its end through ``@odata.nextLink``."""

from __future__ import annotations

from typing import Any

from custodes.connectors.entra import GraphClient
from custodes.inventory.model import Account, Grant, Snapshot
from custodes.model import utcnow

USER_FIELDS = "id,displayName,userPrincipalName,mail,accountEnabled,userType,createdDateTime,signInActivity"
MAX_TOP = 999
READER_ROLES = frozenset({"directory readers", "global reader", "reports reader", "security reader"})


def privileged_role(name: str) -> bool:
    """Whether an Entra directory role is privileged: every administrator role (readers are not)."""
    return name.lower() not in READER_ROLES and "administrator" in name.lower()


def user_account(record: dict[str, Any]) -> Account:
    """An Entra user record as an account (bad values kept as warnings)."""
    upn = record.get("userPrincipalName")
    mail = record.get("mail")
    enabled = record.get("accountEnabled")
    account = Account(
        provider="entra",
        native_id=str(record.get("id")),
        login=str(upn) if isinstance(upn, str) else None,
        display_name=str(record["displayName"]) if isinstance(record.get("displayName"), str) else None,
        email=str(mail) if isinstance(mail, str) else None,
        status="enabled" if enabled is not False else "disabled",
        enabled=enabled is not False,
        attributes={"user_type": record.get("userType")},
    )
    if not isinstance(upn, str):
        account.warnings.append("userPrincipalName: missing")
    if not isinstance(enabled, bool):
        account.warnings.append(f"accountEnabled: not a boolean ({enabled!r}); taken as enabled")
    account.created = account.time(record, "createdDateTime", "createdDateTime")
    activity = record.get("signInActivity")
    if isinstance(activity, dict):
        times = [
            account.time(activity, key, f"signInActivity.{key}")
            for key in ("lastSignInDateTime", "lastNonInteractiveSignInDateTime")
        ]
        known = [t for t in times if t is not None]
        account.last_sign_in = max(known) if known else None
    elif activity is not None:
        account.warnings.append("signInActivity: not an object")
    return account


def _top(client: GraphClient) -> str:
    return str(min(client.options.page_size, MAX_TOP))


async def _memberships(client: GraphClient, kind: str) -> list[tuple[str, list[str]]]:
    """(display name, member ids) of every group or directory role."""
    found = []
    for container in await client.all(f"/v1.0/{kind}", {"$select": "id,displayName", "$top": _top(client)}):
        members = await client.all(f"/v1.0/{kind}/{container['id']}/members", {"$select": "id", "$top": _top(client)})
        found.append((str(container.get("displayName") or container["id"]), [str(m.get("id")) for m in members]))
    return found


async def collect(name: str, client: GraphClient) -> Snapshot:
    """The tenant's users, group and role memberships and MFA registration."""
    snapshot = Snapshot(name, "entra", utcnow())
    users = await client.all("/v1.0/users", {"$select": USER_FIELDS, "$top": _top(client)})
    accounts = {account.native_id: account for account in map(user_account, users)}
    for group, members in await _memberships(client, "groups"):
        for member in members:
            if member in accounts:
                accounts[member].grants.append(Grant("group", group))
    for role, members in await _memberships(client, "directoryRoles"):
        for member in members:
            if member in accounts:
                accounts[member].grants.append(Grant("role", role, privileged_role(role)))
    path = "/v1.0/reports/authenticationMethods/userRegistrationDetails"
    for detail in await client.all(path, {"$top": _top(client)}):
        account = accounts.get(str(detail.get("id")))
        if account is None:
            continue
        registered = detail.get("isMfaRegistered")
        if isinstance(registered, bool):
            account.mfa = registered
        else:
            account.warnings.append(f"isMfaRegistered: not a boolean ({registered!r}); MFA state unknown")
    snapshot.accounts = list(accounts.values())
    return snapshot
