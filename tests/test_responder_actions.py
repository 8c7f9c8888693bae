"""Okta and notify actions against the simulators, over real loopback HTTP with the real aiohttp client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conftest import OKTA_TOKEN as TOKEN
from custodes.config import ResponderSettings
from custodes.responder import ActionContext, ActionError, catalog, http
from custodes.sandbox import chat, okta
from custodes.sandbox.server import running

TOKEN_VARIABLE = "CUSTODES_TEST_OKTA_TOKEN"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "retry_policy", http.RetryPolicy(attempts=3, max_wait=0.01, backoff=0.001))


@pytest.fixture
async def hooks() -> AsyncIterator[tuple[chat.ChatState, str]]:
    state = chat.ChatState()
    async with running(chat.create_app(state)) as url:
        yield state, url


def settings_for(url: str, monkeypatch: pytest.MonkeyPatch, token: str = TOKEN) -> ResponderSettings:
    monkeypatch.setenv(TOKEN_VARIABLE, token)
    return ResponderSettings.model_validate(
        {
            "okta": {"base_url": url, "token": f"env:{TOKEN_VARIABLE}"},
            "protected_accounts": ["Break.Glass@example.com"],
        }
    )


@pytest.fixture
def ctx(
    org: tuple[okta.OktaState, str], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> ActionContext:
    return ActionContext(settings=settings_for(org[1], monkeypatch), http=session, idempotency_key="run-1/step-1")


async def call(ctx: ActionContext, name: str, **arguments: Any) -> dict[str, Any]:
    spec = catalog.get(name)
    return await spec.fn(ctx, **spec.validate(arguments))


def test_actions_register_with_their_metadata() -> None:
    suspend = catalog.get("okta.suspend_user")
    assert (suspend.destructive, suspend.undo) == (True, "okta.unsuspend_user")
    assert suspend.describe({"user": "ann@example.com"}) == "suspend ann@example.com in Okta"
    assert catalog.get("okta.unsuspend_user").undo == "okta.suspend_user"
    assert not catalog.get("notify.webhook").destructive


async def test_suspend_changes_state_and_a_replay_makes_no_second_call(
    org: tuple[okta.OktaState, str], ctx: ActionContext
) -> None:
    state, _ = org
    user_id = state.add_user("ann@example.com")["id"]
    first = await call(ctx, "okta.suspend_user", user="Ann@Example.com")
    assert first == {"changed": True, "status": "SUSPENDED", "user_id": user_id, "login": "ann@example.com"}
    assert state.find_user(user_id)["status"] == "SUSPENDED"  # type: ignore[index]
    second = await call(ctx, "okta.suspend_user", user="ann@example.com")
    assert second == {"changed": False, "status": "SUSPENDED", "user_id": user_id, "login": "ann@example.com"}
    assert [(r.method, r.path) for r in state.mutations()] == [("POST", f"/api/v1/users/{user_id}/lifecycle/suspend")]


async def test_unsuspend_is_the_inverse(org: tuple[okta.OktaState, str], ctx: ActionContext) -> None:
    state, _ = org
    user_id = state.add_user("bob@example.com", status="SUSPENDED")["id"]
    result = await call(ctx, "okta.unsuspend_user", user=user_id)
    assert result["changed"] is True and result["status"] == "ACTIVE"
    assert state.find_user(user_id)["status"] == "ACTIVE"  # type: ignore[index]
    assert (await call(ctx, "okta.unsuspend_user", user=user_id))["changed"] is False
    assert len(state.mutations()) == 1


async def test_protected_account_is_refused_without_a_call(org: tuple[okta.OktaState, str], ctx: ActionContext) -> None:
    state, _ = org
    user_id = state.add_user("break.glass@example.com")["id"]
    with pytest.raises(ActionError) as refused:
        await call(ctx, "okta.suspend_user", user="BREAK.GLASS@example.com")
    assert refused.value.code == "protected_account"
    assert state.requests == []
    with pytest.raises(ActionError) as by_id:
        await call(ctx, "okta.suspend_user", user=user_id)
    assert by_id.value.code == "protected_account"
    assert state.mutations() == []
    assert state.find_user(user_id)["status"] == "ACTIVE"  # type: ignore[index]


async def test_dry_run_makes_no_call(org: tuple[okta.OktaState, str], ctx: ActionContext) -> None:
    state, _ = org
    state.add_user("ann@example.com")
    ctx.dry_run = True
    result = await call(ctx, "okta.suspend_user", user="ann@example.com")
    assert result == {"changed": False, "dry_run": True, "would": "suspend ann@example.com in Okta"}
    assert state.requests == []
    assert state.find_user("ann@example.com")["status"] == "ACTIVE"  # type: ignore[index]


async def test_unknown_user_is_e0000007(org: tuple[okta.OktaState, str], ctx: ActionContext) -> None:
    with pytest.raises(ActionError) as missing:
        await call(ctx, "okta.suspend_user", user="nobody@example.com")
    assert missing.value.code == "E0000007"
    assert not missing.value.retryable
    assert "Resource not found: nobody@example.com (User)" in str(missing.value)
    assert len(org[0].requests) == 1


async def test_okta_refusal_carries_the_vendor_cause(org: tuple[okta.OktaState, str], ctx: ActionContext) -> None:
    state, _ = org
    state.add_user("gone@example.com", status="DEPROVISIONED")
    with pytest.raises(ActionError) as refused:
        await call(ctx, "okta.suspend_user", user="gone@example.com")
    assert refused.value.code == "E0000001"
    assert "Cannot suspend a user that is not active" in str(refused.value)


async def test_rate_limited_requests_are_retried(org: tuple[okta.OktaState, str], ctx: ActionContext) -> None:
    state, _ = org
    state.add_user("ann@example.com")
    state.fail_next(2, status=429, reset_in=0)
    result = await call(ctx, "okta.suspend_user", user="ann@example.com")
    assert result["changed"] is True
    assert [(r.method, r.status) for r in state.requests] == [
        ("GET", 429),
        ("GET", 429),
        ("GET", 200),
        ("POST", 200),
    ]


async def test_persistent_server_errors_give_up_after_bounded_attempts(
    org: tuple[okta.OktaState, str], ctx: ActionContext
) -> None:
    state, _ = org
    state.add_user("ann@example.com")
    state.fail_next(10, status=500)
    with pytest.raises(ActionError) as failed:
        await call(ctx, "okta.suspend_user", user="ann@example.com")
    assert failed.value.retryable
    assert failed.value.code == "E0000009"
    assert "after 3 attempts" in str(failed.value)
    assert [(r.method, r.status) for r in state.requests] == [("GET", 500)] * 3


async def test_bad_token_is_e0000011_and_never_shown(
    org: tuple[okta.OktaState, str],
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, url = org
    state.add_user("ann@example.com")
    state.fail_next(1, status=503)
    wrong = "wrong-token-91c2"
    ctx = ActionContext(settings=settings_for(url, monkeypatch, token=wrong), http=session, idempotency_key="k")
    with caplog.at_level(logging.DEBUG), pytest.raises(ActionError) as refused:
        await call(ctx, "okta.suspend_user", user="ann@example.com")
    assert refused.value.code == "E0000011"
    assert not refused.value.retryable
    assert "Invalid token provided" in str(refused.value)
    assert caplog.records, "the 503 retry is logged"
    for text in [str(refused.value), caplog.text]:
        assert wrong not in text and TOKEN not in text


async def test_missing_okta_connection_says_what_to_configure(session: aiohttp.ClientSession) -> None:
    ctx = ActionContext(settings=ResponderSettings(), http=session, idempotency_key="k")
    with pytest.raises(ActionError, match=r"responder\.okta") as missing:
        await call(ctx, "okta.suspend_user", user="ann@example.com")
    assert missing.value.code == "not_configured"


def channel_settings(url: str, monkeypatch: pytest.MonkeyPatch, **hooks: str) -> ResponderSettings:
    channels = {}
    for name, path in hooks.items():
        variable = f"CUSTODES_TEST_HOOK_{name.upper()}"
        monkeypatch.setenv(variable, f"{url}{path}")
        channels[name] = {"url": f"env:{variable}"}
    return ResponderSettings.model_validate({"channels": channels})


async def test_webhook_delivers_and_retries_after_429(
    hooks: tuple[chat.ChatState, str], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = hooks
    settings = channel_settings(url, monkeypatch, soc="/hooks/soc")
    ctx = ActionContext(settings=settings, http=session, idempotency_key="k")
    state.fail_next(1, status=429, retry_after=30)
    result = await call(ctx, "notify.webhook", channel="soc", text="Ann suspended")
    assert result == {"status": 200, "delivered": True, "channel": "soc"}
    assert state.attempts == {"soc": 2}
    assert state.messages_for("soc") == [{"text": "Ann suspended"}]


async def test_webhook_posts_the_payload_when_given(
    hooks: tuple[chat.ChatState, str], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = hooks
    ctx = ActionContext(
        settings=channel_settings(url, monkeypatch, teams="/hooks/teams"), http=session, idempotency_key="k"
    )
    card = {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive"}]}
    await call(ctx, "notify.webhook", channel="teams", text="ignored", payload=card)
    assert state.messages_for("teams") == [card]


async def test_webhook_dry_run_and_refusals(
    hooks: tuple[chat.ChatState, str], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = hooks
    settings = channel_settings(url, monkeypatch, soc="/hooks/soc-secret")
    ctx = ActionContext(settings=settings, http=session, idempotency_key="k", dry_run=True)
    result = await call(ctx, "notify.webhook", channel="soc", text="hello")
    assert result == {
        "delivered": False,
        "dry_run": True,
        "would": "post a message to the soc channel",
        "body": {"text": "hello"},
    }
    assert state.attempts == {}
    assert catalog.get("notify.webhook").describe({"channel": "soc", "text": "x"}) == (
        "post a message to the soc channel"
    )
    ctx.dry_run = False
    with pytest.raises(ActionError) as refused:
        await call(ctx, "notify.webhook", channel="soc", text="x", payload={"username": "bot"})
    assert refused.value.code == "no_text"
    state.fail_next(5, status=500)
    with pytest.raises(ActionError) as failed:
        await call(ctx, "notify.webhook", channel="soc", text="hello")
    assert failed.value.retryable and state.attempts == {"soc-secret": 4}
    assert "soc-secret" not in str(refused.value) + str(failed.value)
    with pytest.raises(ActionError) as unknown:
        await call(ctx, "notify.webhook", channel="ops", text="hello")
    assert unknown.value.code == "not_configured" and "channels: soc" in str(unknown.value)
    bad = channel_settings("ftp://example.com", monkeypatch, ftp="/x")
    with pytest.raises(ActionError) as invalid:
        await call(
            ActionContext(settings=bad, http=session, idempotency_key="k"),
            "notify.webhook",
            channel="ftp",
            text="hello",
        )
    assert invalid.value.code == "invalid_argument"


async def test_unreachable_host_is_a_retryable_connection_error(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(chat.create_app()) as url:
        pass
    ctx = ActionContext(
        settings=channel_settings(url, monkeypatch, soc="/hooks/soc"), http=session, idempotency_key="k"
    )
    with pytest.raises(ActionError) as unreachable:
        await call(ctx, "notify.webhook", channel="soc", text="hello")
    assert unreachable.value.code == "connection_error"
    assert unreachable.value.retryable
    assert "after 3 attempts" in str(unreachable.value)


async def test_broken_vendor_json_is_a_clear_error(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(body=b'{"id": ', content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/users/{user}", broken)
    async with running(app) as url:
        ctx = ActionContext(settings=settings_for(url, monkeypatch), http=session, idempotency_key="k")
        with pytest.raises(ActionError) as broken_json:
            await call(ctx, "okta.suspend_user", user="ann@example.com")
    assert broken_json.value.code == "invalid_response"
    assert not broken_json.value.retryable


async def test_a_web_page_or_text_for_an_answer_is_said_in_one_line(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    pages = {
        "page": "<!DOCTYPE HTML>\n<html><head>\n<title>Sign in -\n Corporate Proxy</title></head><body>...",
        "text": "Not Found:\nno such user\n",
    }

    async def refused(request: web.Request) -> web.Response:
        return web.Response(status=404, text=pages[request.match_info["user"]], content_type="text/html")

    app = web.Application()
    app.router.add_get("/api/v1/users/{user}", refused)
    async with running(app) as url:
        ctx = ActionContext(settings=settings_for(url, monkeypatch), http=session, idempotency_key="k")
        said = {}
        for user in pages:
            with pytest.raises(ActionError) as refusal:
                await call(ctx, "okta.suspend_user", user=user)
            said[user] = str(refusal.value)
    where = f"GET {url}: HTTP 404: "  # the sandbox's port named
    assert said == {
        "page": f"{where}an HTML page titled 'Sign in - Corporate Proxy', not an API's answer: is the address the "
        "vendor's API?",
        "text": f"{where}Not Found: no such user",
    }


async def test_an_answer_past_the_body_limit_is_refused_unread(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vendor (or anything at its address) answering with gigabytes was read whole into memory."""
    monkeypatch.setattr(http, "MAX_BODY_BYTES", 4 * 2**20)
    sent: list[int] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.match_info["user"] == "fine":  # under the limit: read as ever
            return web.json_response({"id": "u1", "status": "SUSPENDED", "padding": "x" * (3 * 2**20)})
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if request.match_info["user"] == "declared":
            response.content_length = 64 * 2**20
        await response.prepare(request)
        try:
            for _ in range(64):
                await response.write(b" " * 2**20)
                sent.append(1)
        except ConnectionError:
            pass
        return response

    app = web.Application()
    app.router.add_get("/api/v1/users/{user}", answer)
    async with running(app) as url:
        ctx = ActionContext(settings=settings_for(url, monkeypatch), http=session, idempotency_key="k")
        assert (await call(ctx, "okta.suspend_user", user="fine"))["changed"] is False
        for user in ("declared", "streamed"):
            sent.clear()
            with pytest.raises(ActionError) as refusal:
                await call(ctx, "okta.suspend_user", user=user)
            assert refusal.value.code == "response_too_large" and not refusal.value.retryable
            assert str(refusal.value) == (
                f"GET {url}: HTTP 200: the answer is larger than 4 MiB, more than an API's page; not read (is the "
                "address the vendor's API?)"
            )
            assert len(sent) < 64


def test_retry_delay_honours_retry_after_and_okta_reset() -> None:
    now = 1_700_000_000.0
    assert http.retry_delay(429, {"Retry-After": "7"}, now=now) == 7.0
    assert http.retry_delay(429, {"Retry-After": "0.5"}, now=now) == 0.5
    assert http.retry_delay(503, {"Retry-After": formatdate(now + 12, usegmt=True)}, now=now) == pytest.approx(12)
    assert http.retry_delay(429, {"X-Rate-Limit-Reset": str(int(now) + 20)}, now=now) == 20.0
    assert http.retry_delay(429, {"X-Rate-Limit-Reset": str(int(now) - 5)}, now=now) == 0.0
    assert http.retry_delay(500, {"X-Rate-Limit-Reset": str(int(now) + 20)}, now=now) is None
    assert http.retry_delay(429, {}, now=now) is None
