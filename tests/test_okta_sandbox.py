"""The Okta and chat simulators speak their vendors' protocols over real loopback HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from conftest import OKTA_TOKEN as TOKEN
from custodes.sandbox import chat, okta
from custodes.sandbox.server import running

AUTH = {"Authorization": f"SSWS {TOKEN}"}


async def get(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with session.get(url, headers=headers or AUTH) as response:
        return response.status, await response.json(), response


def assert_okta_error(body: Any, code: str, summary: str) -> None:
    assert set(body) == {"errorCode", "errorSummary", "errorLink", "errorId", "errorCauses"}
    assert body["errorCode"] == code
    assert body["errorLink"] == code
    assert body["errorSummary"] == summary
    assert body["errorId"].startswith("oae")


async def test_running_serves_on_an_ephemeral_loopback_port_and_stops(session: aiohttp.ClientSession) -> None:
    async with running(chat.create_app()) as url:
        assert url.startswith("http://127.0.0.1:")
        async with session.post(f"{url}/hooks/soc", json={"text": "hi"}) as response:
            assert response.status == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        async with session.post(f"{url}/hooks/soc", json={"text": "hi"}):
            pass


async def test_missing_or_wrong_token_is_e0000011(
    org: tuple[okta.OktaState, str], session: aiohttp.ClientSession
) -> None:
    state, url = org
    state.add_user("ann@example.com")
    for headers in (
        {"Accept": "application/json"},
        {"Authorization": "SSWS wrong"},
        {"Authorization": TOKEN},
    ):
        status, body, response = await get(session, f"{url}/api/v1/users/ann@example.com", **headers)
        assert status == 401
        assert_okta_error(body, "E0000011", "Invalid token provided")
        assert body["errorCauses"] == []
        assert "X-Rate-Limit-Remaining" in response.headers


async def test_user_lookup_by_id_or_login(org: tuple[okta.OktaState, str], session: aiohttp.ClientSession) -> None:
    state, url = org
    seeded = state.add_user("ann@example.com", first_name="Ann", last_name="Lee")
    assert seeded["id"].startswith("00u") and len(seeded["id"]) == 20
    for key in (seeded["id"], "ann@example.com", "ANN%40example.com"):
        status, body, _ = await get(session, f"{url}/api/v1/users/{key}")
        assert status == 200
        assert body["id"] == seeded["id"]
        assert body["status"] == "ACTIVE"
        assert body["profile"] == {
            "firstName": "Ann",
            "lastName": "Lee",
            "email": "ann@example.com",
            "login": "ann@example.com",
            "mobilePhone": None,
        }
        assert body["created"].endswith("Z") and body["lastUpdated"] and body["statusChanged"]
        assert body["_links"]["suspend"]["href"] == f"{url}/api/v1/users/{seeded['id']}/lifecycle/suspend"


async def test_unknown_user_is_e0000007(org: tuple[okta.OktaState, str], session: aiohttp.ClientSession) -> None:
    _, url = org
    status, body, _ = await get(session, f"{url}/api/v1/users/nobody@example.com")
    assert status == 404
    assert_okta_error(body, "E0000007", "Not found: Resource not found: nobody@example.com (User)")


async def test_lifecycle_transitions_and_refusals(
    org: tuple[okta.OktaState, str], session: aiohttp.ClientSession
) -> None:
    state, url = org
    user_id = state.add_user("bob@example.com")["id"]
    lifecycle = f"{url}/api/v1/users/{user_id}/lifecycle"

    async def post(operation: str) -> tuple[int, Any]:
        async with session.post(f"{lifecycle}/{operation}", headers=AUTH) as response:
            return response.status, await response.json()

    assert await post("suspend") == (200, {})
    assert state.find_user(user_id)["status"] == "SUSPENDED"  # type: ignore[index]
    status, body = await post("suspend")
    assert status == 400
    assert_okta_error(body, "E0000001", "Api validation failed: suspendUser")
    assert body["errorCauses"] == [{"errorSummary": "Cannot suspend a user that is not active"}]
    assert await post("unsuspend") == (200, {})
    assert state.find_user("bob@example.com")["status"] == "ACTIVE"  # type: ignore[index]
    status, body = await post("unsuspend")
    assert status == 400
    assert body["errorCauses"] == [{"errorSummary": "Cannot unsuspend a user that is not suspended"}]
    assert [(r.method, r.status) for r in state.mutations()] == [("POST", 200), ("POST", 400)] * 2


async def test_listing_pages_with_one_link_header_per_rel(
    org: tuple[okta.OktaState, str], session: aiohttp.ClientSession
) -> None:
    state, url = org
    ids = [state.add_user(f"user{n}@example.com")["id"] for n in range(3)]
    status, first, response = await get(session, f"{url}/api/v1/users?limit=2")
    assert status == 200
    assert [user["id"] for user in first] == ids[:2]
    links = response.headers.getall("link")
    assert links[0] == f'<{url}/api/v1/users?limit=2>; rel="self"'
    assert links[1].endswith('>; rel="next"') and len(links) == 2
    following = links[1][1 : links[1].index(">")]
    status, second, response = await get(session, following)
    assert [user["id"] for user in second] == ids[2:]
    assert [link.endswith('rel="self"') for link in response.headers.getall("link")] == [True]


async def test_rate_limit_window_headers_and_429(session: aiohttp.ClientSession) -> None:
    now = [1_700_000_000.0]
    state = okta.OktaState(token=TOKEN, rate_limit=2, rate_window_seconds=60, clock=lambda: now[0])
    async with running(okta.create_app(state)) as url:
        seen = []
        for _ in range(3):
            status, body, response = await get(session, f"{url}/api/v1/users")
            seen.append((status, response.headers["X-Rate-Limit-Remaining"]))
            assert response.headers["X-Rate-Limit-Limit"] == "2"
            assert response.headers["X-Rate-Limit-Reset"] == "1700000060"
        assert seen == [(200, "1"), (200, "0"), (429, "0")]
        assert_okta_error(body, "E0000047", "API call exceeded rate limit due to too many requests.")
        now[0] += 60
        status, _, response = await get(session, f"{url}/api/v1/users")
        assert (status, response.headers["X-Rate-Limit-Reset"]) == (200, "1700000120")


async def test_injected_faults_then_recovery(org: tuple[okta.OktaState, str], session: aiohttp.ClientSession) -> None:
    state, url = org
    state.fail_next(1, status=429, reset_in=5)
    state.fail_next(1, status=503)
    status, body, response = await get(session, f"{url}/api/v1/users")
    assert status == 429 and body["errorCode"] == "E0000047"
    assert response.headers["X-Rate-Limit-Remaining"] == "0"
    assert int(response.headers["X-Rate-Limit-Reset"]) >= int(state.clock()) + 4
    status, body, _ = await get(session, f"{url}/api/v1/users")
    assert status == 503 and body["errorCode"] == "E0000009"
    status, _, _ = await get(session, f"{url}/api/v1/users")
    assert status == 200
    assert [(r.method, r.path, r.status) for r in state.requests] == [
        ("GET", "/api/v1/users", 429),
        ("GET", "/api/v1/users", 503),
        ("GET", "/api/v1/users", 200),
    ]
    with pytest.raises(ValueError, match="429 or a 5xx"):
        state.fail_next(status=404)


async def test_unknown_endpoint_is_an_okta_error(
    org: tuple[okta.OktaState, str], session: aiohttp.ClientSession
) -> None:
    _, url = org
    status, body, response = await get(session, f"{url}/api/v1/nothing")
    assert status == 404 and body["errorCode"] == "E0000007"
    assert "X-Rate-Limit-Limit" in response.headers


def test_seeding_validates_status_and_uniqueness() -> None:
    state = okta.OktaState()
    state.add_user("ann@example.com", status="SUSPENDED")
    with pytest.raises(ValueError, match="already exists"):
        state.add_user("ANN@example.com")
    with pytest.raises(ValueError, match="unknown Okta user status"):
        state.add_user("bob@example.com", status="GONE")


async def test_chat_hook_records_messages_and_refuses_bad_payloads(session: aiohttp.ClientSession) -> None:
    state = chat.ChatState()
    async with running(chat.create_app(state)) as url:

        async def post(body: bytes) -> tuple[int, str]:
            async with session.post(f"{url}/hooks/soc", data=body) as response:
                return response.status, await response.text()

        assert await post(b'{"text": "hello"}') == (200, "ok")
        assert await post(b"not json") == (400, "invalid_payload")
        assert await post(b"[1]") == (400, "invalid_payload")
        assert await post(b'{"username": "x"}') == (400, "no_text")
        state.fail_next(1, status=429, retry_after=7)
        async with session.post(f"{url}/hooks/soc", json={"text": "again"}) as response:
            assert (response.status, response.headers["Retry-After"]) == (429, "7")
        state.fail_next(1, status=500)
        assert await post(b'{"text": "x"}') == (500, "internal_error")
    assert state.messages_for("soc") == [{"text": "hello"}]
    assert state.attempts == {"soc": 6}
