"""Entra ID containment actions over Microsoft Graph v1.0: sessions, account, risk, MFA methods and group membership.

A client-credentials token comes from msal through the connector's `GraphAuth` (one per app registration, so msal's
cache keeps the token until it expires); Graph is called over the context's aiohttp session with `send`, which
retries throttling (429 with ``Retry-After``) and 5xx. Graph's refusals become ActionError with Graph's
``error.code`` (``Request_ResourceNotFound`` for an unknown user or group).

Each action reads the current state first and reports ``changed: False`` when there is nothing to do, so a replayed
step makes no second write. Protected accounts are refused before any request (and again by the user's
userPrincipalName and mail once read); a dry run makes no request at all, not even for a token.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from urllib.parse import quote

from custodes.config import EntraConnection
from custodes.connectors.graph_auth import GraphAuth
from custodes.responder.http import send
from custodes.responder.registry import ActionContext, ActionError, action

_USER_FIELDS = "id,userPrincipalName,mail,displayName,accountEnabled,userType"
_GRAPH_OBJECTS = "https://graph.microsoft.com/v1.0/directoryObjects"
_AUTHS: dict[tuple[str, str, str | None, str], GraphAuth] = {}


class _Graph:
    """Authorised calls to Graph v1.0 for one action call."""

    def __init__(self, ctx: ActionContext, connection: EntraConnection) -> None:
        self.ctx = ctx
        self.base = connection.graph_base_url.rstrip("/") + "/v1.0"
        self.auth = _auth(connection)

    async def call(self, method: str, path: str, *, json: Any = None) -> Any:
        try:
            token = await self.auth.token()
        except ValueError as error:
            raise ActionError(str(error), code="token_error") from None
        response = await send(
            self.ctx.http,
            method,
            self.base + path,
            headers={"Authorization": f"Bearer {token}"},
            json=json,
            timeout_seconds=self.ctx.settings.http_timeout_seconds,
        )
        return response.data


def _auth(connection: EntraConnection) -> GraphAuth:
    """The app registration's token source, shared across calls so msal's cache is reused until expiry."""
    fingerprint = hashlib.sha256(connection.client_secret.reveal().encode()).hexdigest()
    key = (connection.tenant_id, connection.client_id, connection.login_endpoint, fingerprint)
    auth = _AUTHS.get(key)
    if auth is None:
        auth = GraphAuth(
            connection.tenant_id,
            connection.client_id,
            connection.client_secret,
            login_endpoint=connection.login_endpoint,
        )
        _AUTHS[key] = auth
    return auth


def _connection(ctx: ActionContext) -> EntraConnection:
    entra = ctx.settings.entra
    if entra is None:
        raise ActionError(
            "no Entra ID connection is configured: set responder.entra (tenant_id, client_id, client_secret)",
            code="not_configured",
        )
    return entra


def _refuse_protected(ctx: ActionContext, *names: Any) -> None:
    protected = {account.strip().casefold() for account in ctx.settings.protected_accounts}
    for name in names:
        if isinstance(name, str) and name.strip().casefold() in protected:
            raise ActionError(
                f"{name} is a protected account: Custodes will not change it in Entra ID", code="protected_account"
            )


def _required(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise ActionError(f"{what} is required", code="invalid_argument")
    return value


async def _read_user(graph: _Graph, user: str, fields: str = _USER_FIELDS) -> dict[str, Any]:
    found = await graph.call("GET", f"/users/{quote(user, safe='@')}?$select={fields}")
    if not isinstance(found, dict) or not isinstance(found.get("id"), str):
        raise ActionError(f"Graph returned something other than a user for {user!r}", code="invalid_response")
    return found


def _summary(found: dict[str, Any], *, changed: bool, **extra: Any) -> dict[str, Any]:
    return {
        "changed": changed,
        "user_id": found["id"],
        "user_principal_name": found.get("userPrincipalName"),
        **extra,
    }


async def _prepare(
    ctx: ActionContext, user: str, would: str, fields: str = _USER_FIELDS
) -> tuple[_Graph, dict[str, Any]] | dict[str, Any]:
    """Checks common to every change: argument, protected accounts, connection, dry run; then the user, read."""
    user = _required(user, "an Entra ID user (userPrincipalName or object id)")
    _refuse_protected(ctx, user)
    connection = _connection(ctx)
    if ctx.dry_run:
        return {"changed": False, "dry_run": True, "would": would}
    graph = _Graph(ctx, connection)
    found = await _read_user(graph, user, fields)
    _refuse_protected(ctx, found.get("userPrincipalName"), found.get("mail"))
    return graph, found


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@action(
    "entra.revoke_sessions",
    destructive=True,
    plan="revoke every sign-in session of {user} in Entra ID",
    target="user",
)
async def revoke_sessions(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Revoke a user's refresh tokens and session cookies: they must sign in again everywhere.

    No change when the sessions are already valid only from a time at or after the user's last recorded sign-in
    (interactive or not), i.e. nothing was issued since the last revocation.
    """
    fields = _USER_FIELDS + ",signInSessionsValidFromDateTime,signInActivity"
    prepared = await _prepare(ctx, user, f"revoke every sign-in session of {user.strip()} in Entra ID", fields)
    if isinstance(prepared, dict):
        return prepared
    graph, found = prepared
    valid_from = _time(found.get("signInSessionsValidFromDateTime"))
    activity = found.get("signInActivity") or {}
    signins = [
        stamp
        for stamp in (
            _time(activity.get("lastSignInDateTime")),
            _time(activity.get("lastNonInteractiveSignInDateTime")),
        )
        if stamp is not None
    ]
    if valid_from is not None and all(stamp <= valid_from for stamp in signins):
        since = found.get("signInSessionsValidFromDateTime")
        return _summary(found, changed=False, sessions_valid_from=since)
    await graph.call("POST", f"/users/{found['id']}/revokeSignInSessions")
    after = await _read_user(graph, found["id"], "id,signInSessionsValidFromDateTime")
    return _summary(found, changed=True, sessions_valid_from=after.get("signInSessionsValidFromDateTime"))


async def _set_enabled(ctx: ActionContext, user: str, enabled: bool) -> dict[str, Any]:
    verb = "enable" if enabled else "disable"
    prepared = await _prepare(ctx, user, f"{verb} the Entra ID account {user.strip()}")
    if isinstance(prepared, dict):
        return prepared
    graph, found = prepared
    if found.get("accountEnabled") is enabled:
        return _summary(found, changed=False, account_enabled=enabled)
    await graph.call("PATCH", f"/users/{found['id']}", json={"accountEnabled": enabled})
    return _summary(found, changed=True, account_enabled=enabled)


@action(
    "entra.disable_account",
    destructive=True,
    undo="entra.enable_account",
    plan="disable the Entra ID account {user}",
    target="user",
)
async def disable_account(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Disable an Entra ID account (accountEnabled false): no new sign-ins until it is enabled again."""
    return await _set_enabled(ctx, user, False)


@action(
    "entra.enable_account",
    undo="entra.disable_account",
    plan="enable the Entra ID account {user}",
    target="user",
)
async def enable_account(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Enable a disabled Entra ID account (accountEnabled true)."""
    return await _set_enabled(ctx, user, True)


async def _risk_state(graph: _Graph, user_id: str) -> dict[str, Any] | None:
    """The user's riskyUser record, or None when Identity Protection has none."""
    try:
        found = await graph.call("GET", f"/identityProtection/riskyUsers/{user_id}")
    except ActionError as error:
        if error.code == "Request_ResourceNotFound":
            return None
        raise
    return found if isinstance(found, dict) else None


@action(
    "entra.confirm_compromised",
    destructive=True,
    undo="entra.dismiss_risk",
    plan="confirm {user} compromised in Entra ID Identity Protection (risk high)",
    target="user",
)
async def confirm_compromised(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Confirm a user compromised: user risk goes high, so risk-based Conditional Access steps them up or blocks."""
    prepared = await _prepare(ctx, user, f"confirm {user.strip()} compromised in Entra ID Identity Protection")
    if isinstance(prepared, dict):
        return prepared
    graph, found = prepared
    risky = await _risk_state(graph, found["id"])
    if risky is not None and risky.get("riskState") == "confirmedCompromised":
        return _summary(found, changed=False, risk_state="confirmedCompromised", risk_level=risky.get("riskLevel"))
    await graph.call("POST", "/identityProtection/riskyUsers/confirmCompromised", json={"userIds": [found["id"]]})
    return _summary(found, changed=True, risk_state="confirmedCompromised", risk_level="high")


@action(
    "entra.dismiss_risk",
    plan="dismiss the user risk of {user} in Entra ID Identity Protection",
    target="user",
)
async def dismiss_risk(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Dismiss a user's risk (risk level none): the inverse of confirming them compromised."""
    prepared = await _prepare(ctx, user, f"dismiss the user risk of {user.strip()} in Entra ID Identity Protection")
    if isinstance(prepared, dict):
        return prepared
    graph, found = prepared
    risky = await _risk_state(graph, found["id"])
    if risky is None or risky.get("riskLevel") in {None, "none"}:
        state = "none" if risky is None else risky.get("riskState")
        return _summary(found, changed=False, risk_state=state, risk_level="none")
    await graph.call("POST", "/identityProtection/riskyUsers/dismiss", json={"userIds": [found["id"]]})
    return _summary(found, changed=True, risk_state="dismissed", risk_level="none")


async def _is_member(graph: _Graph, group: str, user_id: str) -> bool:
    """Whether `user_id` is a direct member of `group` (every page of its members, ids only)."""
    page = await graph.call("GET", f"/groups/{quote(group, safe='')}/members?$select=id&$top=999")
    while True:
        if not isinstance(page, dict) or not isinstance(page.get("value"), list):
            raise ActionError("Graph returned something other than a member list", code="invalid_response")
        if any(isinstance(item, dict) and item.get("id") == user_id for item in page["value"]):
            return True
        following = page.get("@odata.nextLink")
        if not isinstance(following, str) or not following.startswith(graph.base):
            return False
        page = await graph.call("GET", following[len(graph.base) :])


async def _membership(ctx: ActionContext, user: str, group: str, add: bool) -> dict[str, Any]:
    group = _required(group, "a group object id")
    would = f"add {user.strip()} to the Entra ID group {group}" if add else f"remove {user.strip()} from {group}"
    prepared = await _prepare(ctx, user, would)
    if isinstance(prepared, dict):
        return prepared
    graph, found = prepared
    if await _is_member(graph, group, found["id"]) is add:
        return _summary(found, changed=False, group=group, member=add)
    try:
        if add:
            reference = {"@odata.id": f"{_GRAPH_OBJECTS}/{found['id']}"}
            await graph.call("POST", f"/groups/{quote(group, safe='')}/members/$ref", json=reference)
        else:
            await graph.call("DELETE", f"/groups/{quote(group, safe='')}/members/{found['id']}/$ref")
    except ActionError as error:
        # Someone (or a retried request) got there first: that is no change.
        if error.code not in {"Request_BadRequest", "Request_ResourceNotFound"}:
            raise
        if await _is_member(graph, group, found["id"]) is not add:
            raise
        return _summary(found, changed=False, group=group, member=add)
    return _summary(found, changed=True, group=group, member=add)


@action(
    "entra.add_to_group",
    undo="entra.remove_from_group",
    plan="add {user} to the Entra ID group {group}",
    target="user",
)
async def add_to_group(ctx: ActionContext, *, user: str, group: str) -> dict[str, Any]:
    """Add a user to a group by its object id (e.g. a Conditional Access step-up or quarantine group)."""
    return await _membership(ctx, user, group, True)


@action(
    "entra.remove_from_group",
    undo="entra.add_to_group",
    plan="remove {user} from the Entra ID group {group}",
    target="user",
)
async def remove_from_group(ctx: ActionContext, *, user: str, group: str) -> dict[str, Any]:
    """Remove a user's direct membership of a group (by the group's object id)."""
    return await _membership(ctx, user, group, False)


async def _methods(graph: _Graph, user_id: str) -> list[tuple[str, str]]:
    """(kind, id) of every authentication method but the password, e.g. ("microsoftAuthenticator", "...")."""
    listed = await graph.call("GET", f"/users/{user_id}/authentication/methods")
    if not isinstance(listed, dict) or not isinstance(listed.get("value"), list):
        raise ActionError(
            "Graph returned something other than a list of authentication methods", code="invalid_response"
        )
    methods = []
    for method in listed["value"]:
        kind = str(method.get("@odata.type", "") if isinstance(method, dict) else "")
        kind = kind.removeprefix("#microsoft.graph.").removesuffix("AuthenticationMethod")
        if kind and kind != "password" and isinstance(method.get("id"), str):
            methods.append((kind, method["id"]))
    return methods


@action(
    "entra.reset_authentication_methods",
    destructive=True,
    plan="delete every authentication method of {user} but the password: MFA must be registered again",
    target="user",
)
async def reset_authentication_methods(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Require MFA re-registration: delete every registered method (authenticator app, phone, FIDO2 key, OATH token,
    email, Windows Hello, Temporary Access Pass) but the password, which Graph cannot delete.

    Graph refuses to delete the default method while others remain, so a method it refuses is tried again once the
    others are gone. Not reversible: the person registers their methods again (revoke their sessions too, so a
    session holding the old MFA claim cannot outlive the reset). The result lists the kinds and ids removed.
    """
    prepared = await _prepare(ctx, user, f"delete every authentication method of {user.strip()} but the password")
    if isinstance(prepared, dict):
        return prepared
    graph, found = prepared
    pending = await _methods(graph, found["id"])
    removed: list[dict[str, str]] = []
    while pending:
        refused: list[tuple[tuple[str, str], ActionError]] = []
        for kind, method_id in pending:
            try:
                await graph.call("DELETE", f"/users/{found['id']}/authentication/{kind}Methods/{method_id}")
            except ActionError as error:
                if error.code == "itemNotFound":  # already gone: a replayed step, or someone else removed it
                    continue
                if error.code != "badRequest":
                    raise
                refused.append(((kind, method_id), error))
                continue
            removed.append({"kind": kind, "id": method_id})
        if len(refused) == len(pending):
            raise refused[0][1]
        pending = [method for method, _ in refused]
    return _summary(found, changed=bool(removed), removed=removed)


@action("entra.lookup_user", plan="look up {user} in Entra ID", target="user")
async def lookup_user(ctx: ActionContext, *, user: str) -> dict[str, Any]:
    """Read a user: object id, userPrincipalName, display name, mail, type and whether the account is enabled."""
    user = _required(user, "an Entra ID user (userPrincipalName or object id)")
    connection = _connection(ctx)
    if ctx.dry_run:
        return {"changed": False, "dry_run": True, "would": f"look up {user} in Entra ID"}
    found = await _read_user(_Graph(ctx, connection), user)
    return {
        "changed": False,
        "user_id": found["id"],
        "user_principal_name": found.get("userPrincipalName"),
        "display_name": found.get("displayName"),
        "mail": found.get("mail"),
        "user_type": found.get("userType"),
        "account_enabled": found.get("accountEnabled"),
    }
