"""Entra ID containment actions: real msal (client credentials) and aiohttp over loopback HTTP to the simulator."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from custodes.config import ResponderSettings
from custodes.responder import ActionContext, ActionError, catalog, http
from custodes.sandbox import graph
from custodes.sandbox.pathfaults import Fault
from custodes.sandbox.server import running

SECRET_VARIABLE = "CUSTODES_TEST_ENTRA_SECRET"
Tenant = tuple[graph.GraphState, str]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "retry_policy", http.RetryPolicy(attempts=3, max_wait=0.5, backoff=0.001))


@pytest.fixture
async def tenant() -> AsyncIterator[Tenant]:
    state = graph.GraphState()
    async with running(graph.create_app(state)) as url:
        yield state, url


@pytest.fixture
def ctx(tenant: Tenant, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> ActionContext:
    state, url = tenant
    monkeypatch.setenv(SECRET_VARIABLE, state.client_secret)
    settings = ResponderSettings.model_validate(
        {
            "entra": {
                "tenant_id": state.tenant,
                "client_id": state.client_id,
                "client_secret": f"env:{SECRET_VARIABLE}",
                "graph_base_url": url,
                "login_endpoint": url,
            },
            "protected_accounts": ["Break.Glass@contoso.com"],
        }
    )
    return ActionContext(settings=settings, http=session, idempotency_key="run-1/step-1")


async def call(ctx: ActionContext, name: str, **arguments: Any) -> dict[str, Any]:
    spec = catalog.get(name)
    return await spec.fn(ctx, **spec.validate(arguments))


def user(state: graph.GraphState, upn: str) -> dict[str, Any]:
    found = state.find_user(upn)
    assert found is not None
    return found


def test_actions_register_with_their_metadata() -> None:
    disable = catalog.get("entra.disable_account")
    assert (disable.destructive, disable.undo, disable.target) == (True, "entra.enable_account", "user")
    assert catalog.get("entra.enable_account").undo == "entra.disable_account"
    assert catalog.get("entra.confirm_compromised").undo == "entra.dismiss_risk"
    assert catalog.get("entra.add_to_group").undo == "entra.remove_from_group"
    assert catalog.get("entra.remove_from_group").undo == "entra.add_to_group"
    assert catalog.get("entra.revoke_sessions").destructive
    assert not catalog.get("entra.lookup_user").destructive
    assert disable.describe({"user": "ann@contoso.com"}) == "disable the Entra ID account ann@contoso.com"


async def test_disable_and_enable_change_state_and_a_replay_makes_no_second_write(
    tenant: Tenant, ctx: ActionContext
) -> None:
    state, _ = tenant
    user_id = state.add_user("ann@contoso.com")["id"]
    first = await call(ctx, "entra.disable_account", user="Ann@Contoso.com")
    assert first == {
        "changed": True,
        "user_id": user_id,
        "user_principal_name": "ann@contoso.com",
        "account_enabled": False,
    }
    assert user(state, user_id)["accountEnabled"] is False
    second = await call(ctx, "entra.disable_account", user="ann@contoso.com")
    assert second["changed"] is False
    assert state.mutations() == [("PATCH", f"/v1.0/users/{user_id}", 204)]
    back = await call(ctx, "entra.enable_account", user=user_id)
    assert back["changed"] is True and user(state, user_id)["accountEnabled"] is True
    assert (await call(ctx, "entra.enable_account", user=user_id))["changed"] is False
    assert len(state.mutations()) == 2
    assert state.token_requests == 1  # msal's cache kept the token across calls


async def test_revoke_sessions_moves_the_validity_and_a_replay_is_no_change(tenant: Tenant, ctx: ActionContext) -> None:
    state, _ = tenant
    user_id = state.add_user("bob@contoso.com", last_sign_in=time.time() - 600)["id"]
    first = await call(ctx, "entra.revoke_sessions", user="bob@contoso.com")
    assert first["changed"] is True
    assert user_id in state.sessions_valid_from
    assert first["sessions_valid_from"] == graph.graph_time(state.sessions_valid_from[user_id])
    second = await call(ctx, "entra.revoke_sessions", user="bob@contoso.com")
    assert second["changed"] is False
    assert state.mutations() == [("POST", f"/v1.0/users/{user_id}/revokeSignInSessions", 200)]


async def test_confirm_compromised_and_dismiss_risk(tenant: Tenant, ctx: ActionContext) -> None:
    state, _ = tenant
    user_id = state.add_user("cat@contoso.com")["id"]
    state.add_risky_user("cat@contoso.com", level="medium")
    first = await call(ctx, "entra.confirm_compromised", user="cat@contoso.com")
    assert first["changed"] is True
    assert (state.risky[user_id]["riskState"], state.risky[user_id]["riskLevel"]) == ("confirmedCompromised", "high")
    assert (await call(ctx, "entra.confirm_compromised", user="cat@contoso.com"))["changed"] is False
    dismissed = await call(ctx, "entra.dismiss_risk", user="cat@contoso.com")
    assert dismissed["changed"] is True
    assert (state.risky[user_id]["riskState"], state.risky[user_id]["riskLevel"]) == ("dismissed", "none")
    assert (await call(ctx, "entra.dismiss_risk", user="cat@contoso.com"))["changed"] is False
    assert [path for _, path, _ in state.mutations()] == [
        "/v1.0/identityProtection/riskyUsers/confirmCompromised",
        "/v1.0/identityProtection/riskyUsers/dismiss",
    ]


async def test_dismissing_a_user_without_risk_is_no_change(tenant: Tenant, ctx: ActionContext) -> None:
    state, _ = tenant
    state.add_user("dan@contoso.com")
    assert (await call(ctx, "entra.dismiss_risk", user="dan@contoso.com"))["changed"] is False
    assert state.mutations() == []


async def test_group_membership_add_and_remove(tenant: Tenant, ctx: ActionContext) -> None:
    state, _ = tenant
    user_id = state.add_user("eve@contoso.com")["id"]
    for n in range(3):
        state.add_user(f"other{n}@contoso.com")
    group = state.add_group("CA step-up", [f"other{n}@contoso.com" for n in range(3)])
    added = await call(ctx, "entra.add_to_group", user="eve@contoso.com", group=group)
    assert added == {
        "changed": True,
        "user_id": user_id,
        "user_principal_name": "eve@contoso.com",
        "group": group,
        "member": True,
    }
    assert user_id in state.group_members(group)
    assert (await call(ctx, "entra.add_to_group", user="eve@contoso.com", group=group))["changed"] is False
    removed = await call(ctx, "entra.remove_from_group", user="eve@contoso.com", group=group)
    assert removed["changed"] is True and user_id not in state.group_members(group)
    assert (await call(ctx, "entra.remove_from_group", user="eve@contoso.com", group=group))["changed"] is False
    assert state.mutations() == [
        ("POST", f"/v1.0/groups/{group}/members/$ref", 204),
        ("DELETE", f"/v1.0/groups/{group}/members/{user_id}/$ref", 204),
    ]


async def test_protected_account_is_refused_before_any_request(tenant: Tenant, ctx: ActionContext) -> None:
    state, _ = tenant
    state.add_user("break.glass@contoso.com")
    for name in ("entra.disable_account", "entra.revoke_sessions", "entra.confirm_compromised"):
        with pytest.raises(ActionError) as refused:
            await call(ctx, name, user="BREAK.GLASS@contoso.com")
        assert refused.value.code == "protected_account"
    assert (state.requests, state.token_requests) == ([], 0)


async def test_protected_account_found_by_object_id_is_refused_before_any_write(
    tenant: Tenant, ctx: ActionContext
) -> None:
    state, _ = tenant
    user_id = state.add_user("break.glass@contoso.com")["id"]
    with pytest.raises(ActionError) as refused:
        await call(ctx, "entra.disable_account", user=user_id)
    assert refused.value.code == "protected_account"
    assert state.mutations() == [] and user(state, user_id)["accountEnabled"] is True


async def test_dry_run_makes_no_request(tenant: Tenant, ctx: ActionContext) -> None:
    state, _ = tenant
    state.add_user("fay@contoso.com")
    ctx.dry_run = True
    result = await call(ctx, "entra.disable_account", user="fay@contoso.com")
    assert result == {"changed": False, "dry_run": True, "would": "disable the Entra ID account fay@contoso.com"}
    await call(ctx, "entra.add_to_group", user="fay@contoso.com", group="g1")
    assert (state.requests, state.token_requests) == ([], 0)


async def test_throttled_write_is_retried_after_retry_after(tenant: Tenant, ctx: ActionContext) -> None:
    state, _ = tenant
    user_id = state.add_user("gil@contoso.com")["id"]
    state.faults.add(Fault(status=429, retry_after=0.05, path=f"/v1.0/users/{user_id}", method="PATCH"))
    result = await call(ctx, "entra.disable_account", user="gil@contoso.com")
    assert result["changed"] is True and user(state, user_id)["accountEnabled"] is False
    patches = [status for method, path, status, _ in state.requests if method == "PATCH"]
    assert patches == [429, 204]


async def test_unknown_user_is_graphs_error_code(tenant: Tenant, ctx: ActionContext) -> None:
    state, _ = tenant
    with pytest.raises(ActionError) as missing:
        await call(ctx, "entra.disable_account", user="nobody@contoso.com")
    assert missing.value.code == "Request_ResourceNotFound"
    with pytest.raises(ActionError) as lookup:
        await call(ctx, "entra.lookup_user", user="nobody@contoso.com")
    assert lookup.value.code == "Request_ResourceNotFound"
    assert state.mutations() == []


async def test_unknown_group_is_graphs_error_code(tenant: Tenant, ctx: ActionContext) -> None:
    state, _ = tenant
    state.add_user("hal@contoso.com")
    with pytest.raises(ActionError) as missing:
        await call(ctx, "entra.add_to_group", user="hal@contoso.com", group="no-such-group")
    assert missing.value.code == "Request_ResourceNotFound"
    assert state.mutations() == []


async def test_lookup_user(tenant: Tenant, ctx: ActionContext) -> None:
    state, _ = tenant
    user_id = state.add_user("ivy@contoso.com", enabled=False)["id"]
    found = await call(ctx, "entra.lookup_user", user="ivy@contoso.com")
    assert found["user_id"] == user_id
    assert (found["user_principal_name"], found["account_enabled"], found["changed"]) == (
        "ivy@contoso.com",
        False,
        False,
    )


async def test_a_wrong_secret_is_a_token_error(
    tenant: Tenant, ctx: ActionContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = tenant
    monkeypatch.setenv(SECRET_VARIABLE, "wrong")
    ctx.settings = ResponderSettings.model_validate(
        {
            "entra": {
                "tenant_id": state.tenant,
                "client_id": state.client_id,
                "client_secret": f"env:{SECRET_VARIABLE}",
                "graph_base_url": url,
                "login_endpoint": url,
            }
        }
    )
    state.add_user("jay@contoso.com")
    with pytest.raises(ActionError) as refused:
        await call(ctx, "entra.lookup_user", user="jay@contoso.com")
    assert refused.value.code == "token_error" and "invalid_client" in str(refused.value)
    assert "wrong" not in str(refused.value)


async def test_reset_authentication_methods_removes_all_but_the_password_default_last(
    tenant: Tenant, ctx: ActionContext
) -> None:
    state, _ = tenant
    user_id = state.add_user("kim@contoso.com")["id"]  # an authenticator app, the default method
    phone = state.add_method("kim@contoso.com", "phone", phoneNumber="+1 2065550123", phoneType="mobile")
    key = state.add_method("kim@contoso.com", "fido2", model="YubiKey 5")
    [authenticator] = [m for m in state.methods[user_id] if graph.method_kind(m) == "microsoftAuthenticator"]
    first = await call(ctx, "entra.reset_authentication_methods", user="kim@contoso.com")
    assert first["changed"] is True
    assert sorted((m["kind"], m["id"]) for m in first["removed"]) == sorted(
        [("microsoftAuthenticator", authenticator["id"]), ("phone", phone["id"]), ("fido2", key["id"])]
    )
    assert "+1 2065550123" not in str(first)  # the phone number is personal data: never in a result
    assert [graph.method_kind(m) for m in state.methods[user_id]] == ["password"]
    [registration] = [r for r in state.registrations if r["id"] == user_id]
    assert (registration["isMfaRegistered"], registration["methodsRegistered"]) == (False, [])
    deletes = [(path.rsplit("/", 2)[-2], status) for method, path, status, _ in state.requests if method == "DELETE"]
    # Graph refused the default while others remained; it went once they were gone.
    assert deletes == [
        ("microsoftAuthenticatorMethods", 400),
        ("phoneMethods", 204),
        ("fido2Methods", 204),
        ("microsoftAuthenticatorMethods", 204),
    ]
    second = await call(ctx, "entra.reset_authentication_methods", user="kim@contoso.com")
    assert (second["changed"], second["removed"]) == (False, [])
    assert len(state.mutations()) == 4


async def test_reset_authentication_methods_is_guarded_and_registered_without_undo(
    tenant: Tenant, ctx: ActionContext
) -> None:
    state, _ = tenant
    state.add_user("break.glass@contoso.com")
    with pytest.raises(ActionError) as refused:
        await call(ctx, "entra.reset_authentication_methods", user="break.glass@contoso.com")
    assert refused.value.code == "protected_account" and state.requests == []
    spec = catalog.get("entra.reset_authentication_methods")
    assert (spec.destructive, spec.undo) == (True, None)
    ctx.dry_run = True
    planned = await call(ctx, "entra.reset_authentication_methods", user="lee@contoso.com")
    assert planned["dry_run"] is True and state.requests == []
