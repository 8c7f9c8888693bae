"""Okta containment actions: suspend/unsuspend, clear sessions, expire the password, reset factors, group
membership, and looking a user up.

Each action reads the user first, so a repeated call (a replayed playbook step) reports "no change"
instead of calling Okta's non-idempotent lifecycle operation again. Protected accounts are refused before
any request is made, and a dry run makes no request at all. Clearing sessions is the one exception to reading
first: Okta's Management API does not list a user's sessions, so it always sends its (idempotent) DELETE.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from yarl import URL

from custodes.responder.http import send
from custodes.responder.registry import ActionContext, ActionError, action


def _connection(ctx: ActionContext) -> tuple[str, dict[str, str]]:
    """The users endpoint of the configured org and the headers that authorise calls to it."""
    okta = ctx.settings.okta
    if okta is None:
        raise ActionError(
            "no Okta connection is configured: set responder.okta (base_url and token) in the settings",
            code="not_configured",
        )
    return okta.base_url.rstrip("/") + "/api/v1/users", {"Authorization": f"SSWS {okta.token.reveal()}"}


def _refuse_protected(ctx: ActionContext, *names: str | None) -> None:
    protected = {account.strip().casefold() for account in ctx.settings.protected_accounts}
    for name in names:
        if name and name.strip().casefold() in protected:
            raise ActionError(
                f"{name} is a protected account: Custodes will not change it in Okta",
                code="protected_account",
            )


async def _read_user(ctx: ActionContext, users_url: str, headers: dict[str, str], user: str) -> dict[str, Any]:
    response = await send(
        ctx.http,
        "GET",
        f"{users_url}/{quote(user, safe='@')}",
        headers=headers,
        timeout_seconds=ctx.settings.http_timeout_seconds,
    )
    found = response.data
    if not isinstance(found, dict) or not isinstance(found.get("id"), str) or "status" not in found:
        raise ActionError(f"Okta returned something other than a user for {user!r}", code="invalid_response")
    return found


def _outcome(found: dict[str, Any], *, changed: bool, status: str) -> dict[str, Any]:
    profile = found.get("profile") or {}
    return {"changed": changed, "status": status, "user_id": found["id"], "login": profile.get("login")}


def _prepare(ctx: ActionContext, user: str) -> tuple[str, str, dict[str, str]]:
    """The stripped user argument (refused when protected), the users endpoint and the auth headers."""
    user = user.strip()
    if not user:
        raise ActionError("an Okta user (login, email or id) is required", code="invalid_argument")
    _refuse_protected(ctx, user)
    users_url, headers = _connection(ctx)
    return user, users_url, headers


def _dry_run(would: str) -> dict[str, Any]:
    return {"changed": False, "dry_run": True, "would": would}


async def _read_target(ctx: ActionContext, users_url: str, headers: dict[str, str], user: str) -> dict[str, Any]:
    """Read the user an action will change, refusing it when its login or email is protected."""
    found = await _read_user(ctx, users_url, headers, user)
    profile = found.get("profile") or {}
    _refuse_protected(ctx, profile.get("login"), profile.get("email"))
    return found


_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')
_MAX_PAGES = 50


async def _list(ctx: ActionContext, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every item of an Okta listing, following its ``rel="next"`` links (at most `_MAX_PAGES` pages)."""
    items: list[dict[str, Any]] = []
    following: str | None = url
    for _ in range(_MAX_PAGES):
        if following is None:
            return items
        response = await send(
            ctx.http, "GET", following, headers=headers, timeout_seconds=ctx.settings.http_timeout_seconds
        )
        if not isinstance(response.data, list):
            raise ActionError("Okta returned something other than a list", code="invalid_response")
        items.extend(item for item in response.data if isinstance(item, dict))
        links = [_NEXT.search(link) for link in response.headers.getall("link", [])]
        following = next((match.group(1) for match in links if match is not None), None)
    raise ActionError(f"Okta listing longer than {_MAX_PAGES} pages", code="invalid_response")


async def _set_status(
    ctx: ActionContext, user: str, *, operation: str, target: str, would: str | None = None
) -> dict[str, Any]:
    """Move `user` to `target` with the lifecycle `operation`, unless it is already there."""
    user, users_url, headers = _prepare(ctx, user)
    if ctx.dry_run:
        return _dry_run((would or "{operation} {user} in Okta").format(operation=operation, user=user))
    found = await _read_target(ctx, users_url, headers, user)
    if found["status"] == target:
        return _outcome(found, changed=False, status=target)
    try:
        await send(
            ctx.http,
            "POST",
            f"{users_url}/{found['id']}/lifecycle/{operation}",
            headers=headers,
            timeout_seconds=ctx.settings.http_timeout_seconds,
        )
    except ActionError as error:
        if error.code != "E0000001":
            raise
        # Okta refused the transition: if someone (or a retried request) got there first, that is no change.
        found = await _read_user(ctx, users_url, headers, found["id"])
        if found["status"] != target:
            raise
        return _outcome(found, changed=False, status=target)
    return _outcome(found, changed=True, status=target)


@action("okta.suspend_user", destructive=True, undo="okta.unsuspend_user", plan="suspend {user} in Okta", target="user")
async def suspend_user(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Suspend an Okta user (login, email or id): they can no longer sign in until unsuspended."""
    return await _set_status(ctx, user, operation="suspend", target="SUSPENDED")


@action("okta.unsuspend_user", undo="okta.suspend_user", plan="unsuspend {user} in Okta", target="user")
async def unsuspend_user(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Unsuspend a suspended Okta user (login, email or id), returning them to ACTIVE."""
    return await _set_status(ctx, user, operation="unsuspend", target="ACTIVE")


@action(
    "okta.clear_sessions",
    destructive=True,
    plan="clear the Okta sessions of {user}",
    target="user",
)
async def clear_sessions(ctx: ActionContext, *, user: str, oauth_tokens: bool = True) -> dict[str, Any]:
    """End every Okta session of a user (login, email or id) and, with oauth_tokens, revoke their OAuth tokens."""
    user, users_url, headers = _prepare(ctx, user)
    tokens = " and OAuth tokens" if oauth_tokens else ""
    if ctx.dry_run:
        return _dry_run(f"clear the Okta sessions{tokens} of {user}")
    found = await _read_target(ctx, users_url, headers, user)
    # Okta lists no user's sessions, so there is no state to check first; this DELETE is idempotent (204).
    await send(
        ctx.http,
        "DELETE",
        f"{users_url}/{found['id']}/sessions?oauthTokens={'true' if oauth_tokens else 'false'}",
        headers=headers,
        timeout_seconds=ctx.settings.http_timeout_seconds,
    )
    return {**_outcome(found, changed=True, status=found["status"]), "oauth_tokens_revoked": oauth_tokens}


@action(
    "okta.expire_password",
    destructive=True,
    plan="expire the Okta password of {user}",
    target="user",
)
async def expire_password(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Expire an ACTIVE Okta user's password (login, email or id): they must change it at their next sign-in."""
    return await _set_status(
        ctx, user, operation="expire_password", target="PASSWORD_EXPIRED", would="expire the Okta password of {user}"
    )


@action("okta.reset_factors", destructive=True, plan="reset the Okta MFA factors of {user}", target="user")
async def reset_factors(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Unenroll every MFA factor of an Okta user (login, email or id), so they must enroll again."""
    user, users_url, headers = _prepare(ctx, user)
    if ctx.dry_run:
        return _dry_run(f"reset the Okta MFA factors of {user}")
    found = await _read_target(ctx, users_url, headers, user)
    enrolled = await _list(ctx, f"{users_url}/{found['id']}/factors", headers)
    if not enrolled:
        return {**_outcome(found, changed=False, status=found["status"]), "factors_reset": 0}
    await send(
        ctx.http,
        "POST",
        f"{users_url}/{found['id']}/lifecycle/reset_factors",
        headers=headers,
        timeout_seconds=ctx.settings.http_timeout_seconds,
    )
    return {**_outcome(found, changed=True, status=found["status"]), "factors_reset": len(enrolled)}


_GROUP_ID = re.compile(r"00g[0-9A-Za-z]{17}")


async def _find_group(ctx: ActionContext, users_url: str, headers: dict[str, str], group: str) -> dict[str, Any]:
    """A group by id (``00g...``) or by exact name (case-insensitive) through ``GET /api/v1/groups?q=``."""
    groups_url = users_url.removesuffix("/users") + "/groups"
    if _GROUP_ID.fullmatch(group):
        response = await send(
            ctx.http,
            "GET",
            f"{groups_url}/{group}",
            headers=headers,
            timeout_seconds=ctx.settings.http_timeout_seconds,
        )
        found = response.data
        if not isinstance(found, dict) or not isinstance(found.get("id"), str):
            raise ActionError(f"Okta returned something other than a group for {group!r}", code="invalid_response")
        return found
    search = str(URL(groups_url).with_query({"q": group, "limit": "200"}))
    folded = group.casefold()
    matches = [
        found
        for found in await _list(ctx, search, headers)
        if isinstance(found.get("id"), str) and str((found.get("profile") or {}).get("name", "")).casefold() == folded
    ]
    if not matches:
        raise ActionError(f"no Okta group is named {group!r}", code="group_not_found")
    if len(matches) > 1:
        ids = ", ".join(str(found["id"]) for found in matches)
        raise ActionError(f"several Okta groups are named {group!r} ({ids}): pass the group id", code="ambiguous_group")
    return matches[0]


async def _set_membership(ctx: ActionContext, user: str, group: str, *, member: bool) -> dict[str, Any]:
    """Add `user` to `group` (`member`) or remove them, unless the membership already is so."""
    user, users_url, headers = _prepare(ctx, user)
    group = group.strip()
    if not group:
        raise ActionError("an Okta group (id or name) is required", code="invalid_argument")
    if ctx.dry_run:
        verb = "add {user} to" if member else "remove {user} from"
        return _dry_run(f"{verb.format(user=user)} the Okta group {group}")
    found = await _read_target(ctx, users_url, headers, user)
    target = await _find_group(ctx, users_url, headers, group)
    current = {str(item.get("id")) for item in await _list(ctx, f"{users_url}/{found['id']}/groups", headers)}
    profile = found.get("profile") or {}
    outcome = {
        "changed": False,
        "member": member,
        "user_id": found["id"],
        "login": profile.get("login"),
        "group_id": target["id"],
        "group": (target.get("profile") or {}).get("name"),
    }
    if (target["id"] in current) == member:
        return outcome
    groups_url = users_url.removesuffix("/users") + "/groups"
    await send(
        ctx.http,
        "PUT" if member else "DELETE",
        f"{groups_url}/{target['id']}/users/{found['id']}",
        headers=headers,
        timeout_seconds=ctx.settings.http_timeout_seconds,
    )
    return {**outcome, "changed": True}


@action(
    "okta.add_to_group",
    destructive=True,
    undo="okta.remove_from_group",
    plan="add {user} to the Okta group {group}",
    target="user",
)
async def add_to_group(ctx: ActionContext, *, user: str, group: str) -> dict[str, Any]:
    """Add an Okta user (login, email or id) to a group (id or exact name), e.g. a step-up or quarantine group."""
    return await _set_membership(ctx, user, group, member=True)


@action(
    "okta.remove_from_group",
    destructive=True,
    undo="okta.add_to_group",
    plan="remove {user} from the Okta group {group}",
    target="user",
)
async def remove_from_group(ctx: ActionContext, *, user: str, group: str) -> dict[str, Any]:
    """Remove an Okta user (login, email or id) from a group (id or exact name)."""
    return await _set_membership(ctx, user, group, member=False)


@action("okta.lookup_user", plan="look up {user} in Okta", target="user")
async def lookup_user(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Read an Okta user (login, email or id): status, login, email and sign-in and password dates."""
    user = user.strip()
    if not user:
        raise ActionError("an Okta user (login, email or id) is required", code="invalid_argument")
    users_url, headers = _connection(ctx)
    if ctx.dry_run:
        return _dry_run(f"look up {user} in Okta")
    found = await _read_user(ctx, users_url, headers, user)
    profile = found.get("profile") or {}
    return {
        **_outcome(found, changed=False, status=found["status"]),
        "email": profile.get("email"),
        "name": " ".join(str(part) for part in (profile.get("firstName"), profile.get("lastName")) if part) or None,
        "created": found.get("created"),
        "status_changed": found.get("statusChanged"),
        "last_login": found.get("lastLogin"),
        "password_changed": found.get("passwordChanged"),
    }
