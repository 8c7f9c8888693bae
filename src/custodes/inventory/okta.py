"""Okta inventory through the Management API: users with ``lastLogin``, groups and their members, enrolled
factors per user and admin role assignments. Lists follow the ``Link: rel="next"`` header; ``X-Rate-Limit-*``
and 429s are honoured by `connectors.http.get_json`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from custodes.config import Secret
from custodes.connectors.http import PageTrail, get_json, links, next_page
from custodes.connectors.okta import OktaLogOptions
from custodes.inventory.model import Account, Grant, Snapshot
from custodes.model import utcnow

MAX_PAGE = 200
ENABLED_STATUSES = frozenset({"ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"})
UNPRIVILEGED_ROLES = frozenset({"READ_ONLY_ADMIN", "REPORT_ADMIN"})


def user_account(record: dict[str, Any]) -> Account:
    """An Okta user record as an account (bad values kept as warnings)."""
    profile = record.get("profile")
    if not isinstance(profile, dict):
        profile = {}
    status = str(record.get("status") or "UNKNOWN")
    login, email = profile.get("login"), profile.get("email")
    names = [str(profile[key]) for key in ("firstName", "lastName") if isinstance(profile.get(key), str)]
    account = Account(
        provider="okta",
        native_id=str(record.get("id")),
        login=str(login) if isinstance(login, str) else None,
        display_name=" ".join(names) or None,
        email=str(email) if isinstance(email, str) else None,
        status=status,
        enabled=status in ENABLED_STATUSES,
    )
    if not isinstance(login, str):
        account.warnings.append("profile.login: missing")
    if "status" not in record:
        account.warnings.append("status: missing")
    account.created = account.time(record, "created", "created")
    account.last_sign_in = account.time(record, "lastLogin", "lastLogin")
    return account


class OktaReader:
    """GETs on one Okta org with the API token, retries and rate limits."""

    def __init__(self, http: aiohttp.ClientSession, token: Secret, options: OktaLogOptions) -> None:
        self.http = http
        self.token = token
        self.options = options
        self.base_url = options.base_url.rstrip("/")

    async def get(self, url: str) -> tuple[Any, str | None]:
        """One response body and its next link."""
        response = await get_json(
            self.http,
            url,
            headers={"Authorization": f"SSWS {self.token.reveal()}", "Accept": "application/json"},
            policy=self.options.retry.policy,
            timeout_seconds=self.options.timeout_seconds,
        )
        target = links(response.headers).get("next")
        return response.data, None if target is None else next_page(url, target)

    async def all(self, path: str) -> list[dict[str, Any]]:
        """Every item of a list, following ``rel="next"``."""
        items: list[dict[str, Any]] = []
        url = f"{self.base_url}{path}?limit={min(self.options.page_size, MAX_PAGE)}"
        trail = PageTrail(url)
        while True:
            data, following = await self.get(url)
            if not isinstance(data, list):
                raise ValueError(f"Okta {path}: expected a JSON array, got {type(data).__name__}")
            items += [item for item in data if isinstance(item, dict)]
            if following is None:
                return items
            url = trail.follow(url, following)


async def collect(name: str, reader: OktaReader) -> Snapshot:
    """The org's users, group memberships, factors and admin roles."""
    snapshot = Snapshot(name, "okta", utcnow())
    accounts = {account.native_id: account for account in map(user_account, await reader.all("/api/v1/users"))}
    for group in await reader.all("/api/v1/groups"):
        profile = group.get("profile") if isinstance(group.get("profile"), dict) else {}
        label = str((profile or {}).get("name") or group.get("id"))
        for member in await reader.all(f"/api/v1/groups/{quote(str(group.get('id')), safe='')}/users"):
            account = accounts.get(str(member.get("id")))
            if account is not None:
                account.grants.append(Grant("group", label))
    for account in accounts.values():
        user = quote(account.native_id, safe="")
        factors, _ = await reader.get(f"{reader.base_url}/api/v1/users/{user}/factors")
        roles, _ = await reader.get(f"{reader.base_url}/api/v1/users/{user}/roles")
        if isinstance(factors, list):
            active = [f for f in factors if isinstance(f, dict) and f.get("status") == "ACTIVE"]
            account.mfa = bool(active)
            account.attributes["factors"] = sorted(str(f.get("factorType")) for f in active)
        else:
            account.warnings.append("factors: not a JSON array; MFA state unknown")
        if isinstance(roles, list):
            for role in roles:
                kind = str(role.get("type")) if isinstance(role, dict) and role.get("type") else None
                if kind is None:
                    account.warnings.append(f"roles: an assignment without a type ({role!r})"[:300])
                    continue
                account.grants.append(Grant("role", kind, kind not in UNPRIVILEGED_ROLES))
        else:
            account.warnings.append("roles: not a JSON array")
    snapshot.accounts = list(accounts.values())
    return snapshot
