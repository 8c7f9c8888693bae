"""Okta containment actions (sessions, password, factors, groups, lookup) against the simulator over real HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from conftest import OKTA_TOKEN as TOKEN
from custodes.config import ResponderSettings
from custodes.responder import ActionContext, ActionError, catalog, http
from custodes.sandbox import okta

TOKEN_VARIABLE = "CUSTODES_TEST_OKTA_TOKEN"
PROTECTED = "Break.Glass@example.com"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "retry_policy", http.RetryPolicy(attempts=3, max_wait=0.01, backoff=0.001))


@pytest.fixture
def ctx(
    org: tuple[okta.OktaState, str], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> ActionContext:
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    settings = ResponderSettings.model_validate(
        {"okta": {"base_url": org[1], "token": f"env:{TOKEN_VARIABLE}"}, "protected_accounts": [PROTECTED]}
    )
    return ActionContext(settings=settings, http=session, idempotency_key="run-1/step-1")


async def call(ctx: ActionContext, name: str, **arguments: Any) -> dict[str, Any]:
    spec = catalog.get(name)
    return await spec.fn(ctx, **spec.validate(arguments))


def mutations(state: okta.OktaState) -> list[tuple[str, str, str]]:
    return [(r.method, r.path, r.query) for r in state.mutations()]


def test_the_actions_register_with_their_metadata() -> None:
    expected = {
        "okta.clear_sessions": (True, None),
        "okta.expire_password": (True, None),
        "okta.reset_factors": (True, None),
        "okta.add_to_group": (True, "okta.remove_from_group"),
        "okta.remove_from_group": (True, "okta.add_to_group"),
        "okta.lookup_user": (False, None),
    }
    for name, (destructive, undo) in expected.items():
        spec = catalog.get(name)
        assert (spec.destructive, spec.undo, spec.target) == (destructive, undo, "user"), name
    add = catalog.get("okta.add_to_group")
    assert add.describe({"user": "ann@example.com", "group": "Step-Up"}) == (
        "add ann@example.com to the Okta group Step-Up"
    )
    assert catalog.get("okta.clear_sessions").validate({"user": "ann"}) == {"user": "ann", "oauth_tokens": True}


async def test_clear_sessions_ends_sessions_and_revokes_tokens(
    org: tuple[okta.OktaState, str], ctx: ActionContext
) -> None:
    state, _ = org
    ann = state.add_user("ann@example.com")["id"]
    bob = state.add_user("bob@example.com")["id"]
    for login in ("ann@example.com", "ann@example.com", "bob@example.com"):
        state.add_session(login)
        state.grant_token(login)
    result = await call(ctx, "okta.clear_sessions", user="Ann@Example.com")
    assert result == {
        "changed": True,
        "status": "ACTIVE",
        "user_id": ann,
        "login": "ann@example.com",
        "oauth_tokens_revoked": True,
    }
    assert ann not in state.sessions and ann not in state.oauth_tokens
    assert len(state.sessions[bob]) == 1 and len(state.oauth_tokens[bob]) == 1
    assert mutations(state) == [("DELETE", f"/api/v1/users/{ann}/sessions", "oauthTokens=true")]

    await call(ctx, "okta.clear_sessions", user="bob@example.com", oauth_tokens=False)
    assert bob not in state.sessions and len(state.oauth_tokens[bob]) == 1
    assert mutations(state)[-1] == ("DELETE", f"/api/v1/users/{bob}/sessions", "oauthTokens=false")


async def test_clear_sessions_replay_resends_the_idempotent_delete(
    org: tuple[okta.OktaState, str], ctx: ActionContext
) -> None:
    """Okta lists no user's sessions, so there is no state to read first; the DELETE itself is idempotent."""
    state, _ = org
    ann = state.add_user("ann@example.com")["id"]
    state.add_session("ann@example.com")
    await call(ctx, "okta.clear_sessions", user="ann@example.com")
    again = await call(ctx, "okta.clear_sessions", user="ann@example.com")
    assert again["changed"] is True
    assert [(r.method, r.status) for r in state.mutations()] == [("DELETE", 204)] * 2
    assert ann not in state.sessions


async def test_expire_password_changes_state_and_a_replay_makes_no_second_call(
    org: tuple[okta.OktaState, str], ctx: ActionContext
) -> None:
    state, _ = org
    ann = state.add_user("ann@example.com")["id"]
    first = await call(ctx, "okta.expire_password", user="ann@example.com")
    assert first == {"changed": True, "status": "PASSWORD_EXPIRED", "user_id": ann, "login": "ann@example.com"}
    assert state.find_user(ann)["status"] == "PASSWORD_EXPIRED"  # type: ignore[index]
    second = await call(ctx, "okta.expire_password", user=ann)
    assert second == {**first, "changed": False}
    assert mutations(state) == [("POST", f"/api/v1/users/{ann}/lifecycle/expire_password", "")]


async def test_expire_password_of_a_suspended_user_is_okta_e0000001(
    org: tuple[okta.OktaState, str], ctx: ActionContext
) -> None:
    state, _ = org
    state.add_user("sus@example.com", status="SUSPENDED")
    with pytest.raises(ActionError) as refused:
        await call(ctx, "okta.expire_password", user="sus@example.com")
    assert refused.value.code == "E0000001"
    assert "Cannot expire the password of a user that is not active" in str(refused.value)
    assert state.find_user("sus@example.com")["status"] == "SUSPENDED"  # type: ignore[index]


async def test_reset_factors_unenrolls_and_a_replay_makes_no_second_call(
    org: tuple[okta.OktaState, str], ctx: ActionContext
) -> None:
    state, _ = org
    ann = state.add_user("ann@example.com")["id"]
    state.add_user("bob@example.com")
    state.enroll_factor("ann@example.com", "push")
    state.enroll_factor("ann@example.com", "token:software:totp")
    state.enroll_factor("bob@example.com", "sms")
    first = await call(ctx, "okta.reset_factors", user="ann@example.com")
    assert first == {
        "changed": True,
        "status": "ACTIVE",
        "user_id": ann,
        "login": "ann@example.com",
        "factors_reset": 2,
    }
    assert state.factors.get(ann, []) == []
    assert len(state.factors[state.find_user("bob@example.com")["id"]]) == 1  # type: ignore[index]
    second = await call(ctx, "okta.reset_factors", user="ann@example.com")
    assert second == {**first, "changed": False, "factors_reset": 0}
    assert mutations(state) == [("POST", f"/api/v1/users/{ann}/lifecycle/reset_factors", "")]


async def test_add_and_remove_group_membership_by_name_or_id(
    org: tuple[okta.OktaState, str], ctx: ActionContext
) -> None:
    state, _ = org
    ann = state.add_user("ann@example.com")["id"]
    state.add_user("bob@example.com")
    step_up = state.add_group("Step-Up", ["bob@example.com"])
    state.add_group("Step-Up Admins", [])
    added = await call(ctx, "okta.add_to_group", user="ann@example.com", group="step-up")
    assert added == {
        "changed": True,
        "member": True,
        "user_id": ann,
        "login": "ann@example.com",
        "group_id": step_up,
        "group": "Step-Up",
    }
    assert ann in state.members(step_up)
    replay = await call(ctx, "okta.add_to_group", user="ann@example.com", group=step_up)
    assert replay == {**added, "changed": False}
    assert mutations(state) == [("PUT", f"/api/v1/groups/{step_up}/users/{ann}", "")]

    removed = await call(ctx, "okta.remove_from_group", user=ann, group="Step-Up")
    assert removed == {**added, "member": False}
    assert ann not in state.members(step_up) and len(state.members(step_up)) == 1
    again = await call(ctx, "okta.remove_from_group", user=ann, group="Step-Up")
    assert again["changed"] is False
    assert mutations(state)[1:] == [("DELETE", f"/api/v1/groups/{step_up}/users/{ann}", "")]
    assert any(r.path == "/api/v1/groups" and "q=" in r.query for r in state.calls("GET"))


async def test_unknown_or_ambiguous_group_is_an_action_error(
    org: tuple[okta.OktaState, str], ctx: ActionContext
) -> None:
    state, _ = org
    state.add_user("ann@example.com")
    state.add_group("Twins", [])
    state.add_group("twins", [])
    with pytest.raises(ActionError) as by_name:
        await call(ctx, "okta.add_to_group", user="ann@example.com", group="Quarantine")
    assert by_name.value.code == "group_not_found"
    with pytest.raises(ActionError) as by_id:
        await call(ctx, "okta.remove_from_group", user="ann@example.com", group="00gDoesNotExist00000")
    assert by_id.value.code == "E0000007"
    assert "(UserGroup)" in str(by_id.value)
    with pytest.raises(ActionError) as ambiguous:
        await call(ctx, "okta.add_to_group", user="ann@example.com", group="TWINS")
    assert ambiguous.value.code == "ambiguous_group"
    assert state.mutations() == []


async def test_app_group_membership_is_refused_with_okta_code(
    org: tuple[okta.OktaState, str], ctx: ActionContext
) -> None:
    state, _ = org
    state.add_user("ann@example.com")
    state.add_group("Synced", [], group_type="APP_GROUP")
    with pytest.raises(ActionError) as refused:
        await call(ctx, "okta.add_to_group", user="ann@example.com", group="Synced")
    assert refused.value.code == "E0000006"


MUTATING: list[tuple[str, dict[str, Any]]] = [
    ("okta.clear_sessions", {}),
    ("okta.expire_password", {}),
    ("okta.reset_factors", {}),
    ("okta.add_to_group", {"group": "Step-Up"}),
    ("okta.remove_from_group", {"group": "Step-Up"}),
]


@pytest.mark.parametrize(("name", "extra"), MUTATING)
async def test_protected_account_is_refused_without_a_call(
    org: tuple[okta.OktaState, str], ctx: ActionContext, name: str, extra: dict[str, Any]
) -> None:
    state, _ = org
    user_id = state.add_user("break.glass@example.com")["id"]
    state.add_session("break.glass@example.com")
    state.enroll_factor("break.glass@example.com")
    state.add_group("Step-Up", ["break.glass@example.com"])
    with pytest.raises(ActionError) as refused:
        await call(ctx, name, user="BREAK.GLASS@example.com", **extra)
    assert refused.value.code == "protected_account"
    assert state.requests == []
    with pytest.raises(ActionError) as by_id:
        await call(ctx, name, user=user_id, **extra)
    assert by_id.value.code == "protected_account"
    assert [r.method for r in state.requests] == ["GET"]
    assert state.find_user(user_id)["status"] == "ACTIVE"  # type: ignore[index]
    assert len(state.sessions[user_id]) == 1 and len(state.factors[user_id]) == 1


@pytest.mark.parametrize(("name", "extra"), [*MUTATING, ("okta.lookup_user", {})])
async def test_dry_run_makes_no_call(
    org: tuple[okta.OktaState, str], ctx: ActionContext, name: str, extra: dict[str, Any]
) -> None:
    state, _ = org
    state.add_user("ann@example.com")
    ctx.dry_run = True
    result = await call(ctx, name, user="ann@example.com", **extra)
    assert result["dry_run"] is True and result["changed"] is False
    assert "ann@example.com" in result["would"]
    assert state.requests == []


async def test_lookup_user_reads_without_changing(org: tuple[okta.OktaState, str], ctx: ActionContext) -> None:
    state, _ = org
    ann = state.add_user("ann@example.com", first_name="Ann", last_name="Lee", status="SUSPENDED")
    state.set_last_login("ann@example.com", 1_700_000_000.0)
    found = await call(ctx, "okta.lookup_user", user="ANN@example.com")
    assert found == {
        "changed": False,
        "status": "SUSPENDED",
        "user_id": ann["id"],
        "login": "ann@example.com",
        "email": "ann@example.com",
        "name": "Ann Lee",
        "created": ann["created"],
        "status_changed": ann["statusChanged"],
        "last_login": "2023-11-14T22:13:20.000Z",
        "password_changed": None,
    }
    assert state.mutations() == []
    with pytest.raises(ActionError) as missing:
        await call(ctx, "okta.lookup_user", user="nobody@example.com")
    assert missing.value.code == "E0000007"


async def test_group_search_follows_next_links(org: tuple[okta.OktaState, str], ctx: ActionContext) -> None:
    state, _ = org
    ann = state.add_user("ann@example.com")["id"]
    for index in range(205):
        state.add_group(f"Team {index:03d}", [])
    last = state.add_group("Team", [])
    result = await call(ctx, "okta.add_to_group", user="ann@example.com", group="team")
    assert result["group_id"] == last and ann in state.members(last)
    assert len([r for r in state.calls("GET") if r.path == "/api/v1/groups"]) == 2
