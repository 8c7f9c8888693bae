"""Console single sign-on over real HTTP against the sandbox OpenID Connect provider: the authorization code flow
with PKCE, roles from groups, and every way a sign-in must fail (each refused with a clear page and no session)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pydantic
import pytest
from yarl import URL

from console_support import (
    SSO_CLIENT,
    SSO_PASSWORD,
    SSO_SECRET,
    Served,
    register_console,
    served,
    settings_for,
    sso_provider,
    with_sso,
)
from custodes.config import DatabaseSettings, OidcSettings, Settings
from custodes.sandbox.oidc import OidcState, create_app
from custodes.sandbox.server import running
from custodes.server.console.oidc import OidcClient, OidcError


@dataclass(frozen=True, slots=True)
class Sso:
    """The console, the provider's base URL and its state."""

    console: Served
    issuer: str
    provider: OidcState


@pytest.fixture
async def sso(database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sso]:
    provider = sso_provider()
    async with running(create_app(provider)) as issuer:
        settings = with_sso(settings_for(database, tmp_path, monkeypatch), issuer, monkeypatch)
        async with served(settings) as console:
            register_console(provider, console.url)
            yield Sso(console, issuer, provider)


def browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def hidden_fields(page: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in re.findall(r'name="?(\w+)"? value="([^"]*)"', page)}


async def to_callback(http: aiohttp.ClientSession, url: str, username: str, next_path: str = "/") -> str:
    """Start a sign-in at the console, sign in at the provider; the callback URL the provider redirects to."""
    async with http.get(f"{url}/signin/oidc?{urlencode({'next': next_path})}", allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        authorize = r.headers["Location"]
        pending = next(c for c in r.headers.getall("Set-Cookie") if c.startswith("custodes_oidc="))
        assert "HttpOnly" in pending and "SameSite=Lax" in pending and "Path=/signin/oidc/callback" in pending
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["state"] and query["nonce"]
    async with http.get(authorize) as r:
        assert r.status == 200, await r.text()
        form = hidden_fields(await r.text())
    login = {**form, "username": username, "password": SSO_PASSWORD}
    async with http.post(authorize.split("?")[0], data=login, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
        return r.headers["Location"]


async def sign_in(http: aiohttp.ClientSession, url: str, username: str) -> tuple[int, str]:
    """The whole flow; the callback's status and page."""
    callback = await to_callback(http, url, username)
    async with http.get(callback, allow_redirects=False) as r:
        return r.status, await r.text()


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url, allow_redirects=False) as r:
        return r.status, await r.text()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def test_sign_in_through_the_provider_acts_with_the_mapped_role(sso: Sso) -> None:
    url = sso.console.url
    async with browser() as http:
        status, page = await get(http, f"{url}/signin?next=/approvals")
        assert status == 200 and 'href="/signin/oidc?next=/approvals"' in page
        callback = await to_callback(http, url, "carol", "/approvals")
        async with http.get(callback, allow_redirects=False) as r:
            page = await r.text()
            assert r.status == 200 and 'content="0; url=/approvals"' in page and "oidc:carol" in page
            cookies = r.headers.getall("Set-Cookie")
        session = next(c for c in cookies if c.startswith("custodes_session="))
        assert "HttpOnly" in session and "SameSite=Strict" in session
        status, page = await get(http, f"{url}/approvals")
        assert status == 200 and "oidc:carol" in page and 'class="role">approver' in page
        plan_hash = re.findall(r'name="plan_hash" value="(\w+)"', page)[0]
        form = {"csrf": csrf_of(page), "step": "tell", "plan_hash": plan_hash, "comment": "ok"}
        async with http.post(f"{url}/runs/{sso.console.run_id}/approve", data=form) as r:
            assert r.status == 200 and "Approved" in await r.text()
        # separation of duties holds for the person as for a token: they cannot decide on a run they requested
        services = sso.console.services
        loaded = next(item for item in services.playbooks if item.playbook.name == "contain")
        own = await services.runner.start_manual(loaded, {"user": "bob@example.com"}, requested_by="api:oidc:carol")
        for _ in range(100):
            async with services.store.transaction() as tx:
                current = await tx.get_run(own.id)
            if current is not None and current.status.value == "waiting":
                break
            await asyncio.sleep(0.02)
        status, page = await get(http, f"{url}/runs/{own.id}")
        own_hash = re.findall(r'name="plan_hash" value="(\w+)"', page)[0]
        form = {"csrf": csrf_of(page), "step": "tell", "plan_hash": own_hash}
        async with http.post(f"{url}/runs/{own.id}/approve", data=form) as r:
            assert r.status == 403 and "oidc:carol requested this run and cannot also decide" in await r.text()
    async with services.store.transaction() as tx:
        entries = await tx.audit_entries()
    approvals = [e for e in entries if e.action == "approval.approve"]
    assert [e.actor for e in approvals] == ["api:oidc:carol"]
    signin = next(e for e in entries if e.action == "console.signin")
    assert signin.actor == "api:oidc:carol" and signin.details["groups"] == ["soc-approvers"]
    assert signin.details["role"] == "approver"


async def test_a_rotated_signing_key_is_read_again(sso: Sso) -> None:
    async with browser() as http:
        assert (await sign_in(http, sso.console.url, "carol"))[0] == 200
    sso.provider.rotate_key()
    async with browser() as http:
        status, page = await sign_in(http, sso.console.url, "carol")
        assert status == 200 and "Signed in" in page


async def test_an_unreachable_provider_is_named(unused_tcp_port: int) -> None:
    settings = OidcSettings.model_validate(
        {
            "issuer": f"http://127.0.0.1:{unused_tcp_port}",
            "client_id": "c",
            "client_secret": "env:T_SSO",
            "roles": {"g": "viewer"},
        },
        context={"environ": {"T_SSO": SSO_SECRET}},
    )
    with pytest.raises(OidcError) as caught:
        await OidcClient(settings).begin("/", "http://127.0.0.1/signin/oidc/callback")
    assert caught.value.status == 502
    assert str(caught.value) == (
        f"The identity provider's discovery document (http://127.0.0.1:{unused_tcp_port}/.well-known/"
        "openid-configuration) could not be read: ClientConnectorError."
    )


async def test_a_viewer_by_group_is_refused_what_the_role_may_not(sso: Sso) -> None:
    url = sso.console.url
    async with browser() as http:
        assert (await sign_in(http, url, "vic"))[0] == 200
        status, page = await get(http, f"{url}/approvals")
        assert status == 200 and 'class="role">viewer' in page and "Approve" not in page
        status, page = await get(http, f"{url}/audit")
        assert status == 403 and "needs the admin role" in page
        form = {"csrf": csrf_of(page), "step": "tell", "plan_hash": "0" * 16}
        async with http.post(f"{url}/runs/{sso.console.run_id}/approve", data=form) as r:
            assert r.status == 403 and "this needs the approver role; you are signed in as viewer" in await r.text()
        # the role follows the current mapping: unmapping the group ends the session
        oidc = sso.console.services.settings.console.oidc
        assert oidc is not None
        del oidc.roles["auditors"]
        status, _page = await get(http, f"{url}/approvals")
        assert status == 303


async def refused(http: aiohttp.ClientSession, callback: str, status: int, message: str, url: str) -> None:
    """The callback answers the sign-in page with `status` and `message`, and no session is started."""
    async with http.get(callback, allow_redirects=False) as r:
        page = await r.text()
        assert r.status == status and message in html.unescape(page), page
        assert not any(c.startswith("custodes_session=") for c in r.headers.getall("Set-Cookie", []))
        assert "Sign in" in page and 'role="alert"' in page
    assert (await get(http, f"{url}/"))[0] == 303


async def test_every_broken_sign_in_is_refused_without_a_session(sso: Sso) -> None:
    url = sso.console.url
    cases: list[tuple[dict[str, object], int, str]] = [
        ({"nonce": "someone-elses-nonce"}, 401, "nonce does not match"),
        ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 900}, 401, "The ID token has expired."),
        ({"foreign_key": True}, 401, "signature does not verify against the identity provider's published keys"),
        ({"aud": "another-client"}, 401, f"issued for another client (its audience is not {SSO_CLIENT})"),
        ({"iss": "https://idp.example"}, 401, "issued by another issuer"),
    ]
    for alteration, status, message in cases:
        sso.provider.alter_next_token(**alteration)  # type: ignore[arg-type]
        async with browser() as http:
            await refused(http, await to_callback(http, url, "carol"), status, message, url)
    async with browser() as http:  # a person in no mapped group
        callback = await to_callback(http, url, "mallory")
        await refused(http, callback, 403, "none of their groups (contractors) is given a Custodes role", url)
    async with browser() as http:  # a state that is not the one this browser started with
        callback = await to_callback(http, url, "carol")
        await refused(http, re.sub(r"state=[^&]+", "state=forged", callback), 400, "state differs", url)
    async with browser() as http:  # no sign-in started in this browser
        callback = await to_callback(http, url, "carol")
        http.cookie_jar.clear()
        await refused(http, callback, 400, "No sign-in was started in this browser", url)
    async with browser() as http:  # a code redeemed once cannot be redeemed again
        callback = await to_callback(http, url, "carol")
        pending = next(c for c in http.cookie_jar if c.key == "custodes_oidc").value
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status == 200
    async with browser() as http:
        http.cookie_jar.update_cookies({"custodes_oidc": pending}, URL(f"{url}/signin/oidc/callback"))
        await refused(http, callback, 401, "refused the code: invalid_grant (the code was already used)", url)


async def test_the_provider_checks_pkce_and_the_client(sso: Sso) -> None:
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    redirect = f"{sso.console.url}/signin/oidc/callback"
    params = {
        "response_type": "code",
        "client_id": SSO_CLIENT,
        "redirect_uri": redirect,
        "scope": "openid",
        "state": "s",
        "nonce": "n",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    async with aiohttp.ClientSession() as http:
        for wrong, problem in (
            ({"redirect_uri": "http://127.0.0.1:9/cb"}, "not registered"),
            ({"code_challenge": ""}, "PKCE"),
        ):
            async with http.get(f"{sso.issuer}/authorize", params={**params, **wrong}) as r:
                assert r.status == 400 and problem in await r.text()

        async def code() -> str:
            login = {**params, "username": "carol", "password": SSO_PASSWORD}
            async with http.post(f"{sso.issuer}/authorize", data=login, allow_redirects=False) as r:
                return parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]

        token = {"grant_type": "authorization_code", "redirect_uri": redirect, "code_verifier": verifier}
        async with http.post(
            f"{sso.issuer}/token",
            data={**token, "code": await code()},
            headers={"Authorization": aiohttp.encode_basic_auth(SSO_CLIENT, "wrong")},
        ) as r:
            assert r.status == 401 and (await r.json())["error"] == "invalid_client"
        basic = {"Authorization": aiohttp.encode_basic_auth(SSO_CLIENT, SSO_SECRET)}
        async with http.post(
            f"{sso.issuer}/token", data={**token, "code": await code(), "code_verifier": "x" * 50}, headers=basic
        ) as r:
            assert r.status == 400 and "code_verifier does not match" in (await r.json())["error_description"]
        async with http.post(f"{sso.issuer}/token", data={**token, "code": await code()}, headers=basic) as r:
            assert r.status == 200 and (await r.json())["id_token"].count(".") == 2


def test_the_settings_refuse_an_unsafe_or_incomplete_provider() -> None:
    base = {"issuer": "https://idp.example", "client_id": "c", "client_secret": "env:T_SSO", "roles": {"g": "viewer"}}
    environ = {"T_SSO": SSO_SECRET}
    for change, problem in (
        ({"issuer": "http://idp.example"}, "console.oidc.issuer"),
        ({"scopes": ["profile"]}, "scopes must include openid"),
        ({"roles": {"g": "root"}}, "console.oidc.roles.g"),
        ({"roles": {}}, "console.oidc.roles"),
    ):
        with pytest.raises(pydantic.ValidationError) as caught:
            Settings.model_validate({"console": {"oidc": {**base, **change}}}, context={"environ": environ})
        errors = caught.value.errors()
        where = ".".join(str(part) for part in errors[0]["loc"])
        assert problem in f"{where}: {errors[0]['msg']}", errors
    settings = Settings.model_validate({"console": {"oidc": base}}, context={"environ": environ})
    assert settings.console.oidc is not None and settings.console.oidc.client_secret.reveal() == SSO_SECRET
    assert SSO_SECRET not in repr(settings.console.oidc)
