"""The console over real HTTP: signed sessions and CSRF, every page, roles on every button (and the server refusing
anyway), pseudonyms for viewers, and the risk board's paged, indexed query."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa

from console_support import (
    PEOPLE,
    TOKENS,
    Served,
    csrf_of,
    day_score,
    page,
    served,
    settings_for,
    signed_in,
    write_scores,
)
from custodes.cases import book, needtoknow
from custodes.config import DatabaseSettings
from custodes.detections.scoring.service import pseudonymizer_for
from custodes.server.console import queries
from custodes.server.console.pages import PAGE_SIZE


@pytest.fixture
async def console(database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    async with served(settings_for(database, tmp_path, monkeypatch)) as running:
        yield running


async def test_sign_in_sets_a_signed_strict_session(console: Served) -> None:
    url = console.url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{url}/approvals", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/signin?next=/approvals"
        async with http.get(f"{url}/signin?next=/approvals") as r:
            html = await r.text()
            assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert r.headers["X-Frame-Options"] == "DENY"
            assert 'id="sso"' not in html  # single sign-on is not configured
        assert (await page(http, url, "/signin/oidc"))[0] == 404
        form = csrf_of(html)
        async with http.post(f"{url}/signin", data={"token": TOKENS["analyst"], "next": "/"}) as r:
            assert r.status == 403 and "expired or came from another site" in await r.text()
        async with http.get(f"{url}/signin") as r:
            form = csrf_of(await r.text())
        async with http.post(f"{url}/signin", data={"token": "wrong", "csrf": form, "next": "/"}) as r:
            assert r.status == 401 and "not known here" in await r.text()
            form = csrf_of(await r.text())
        async with http.post(
            f"{url}/signin",
            data={"token": TOKENS["analyst"], "csrf": form, "next": "https://evil.example/x"},
            allow_redirects=False,
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/"  # no open redirect
            raw = r.headers.getall("Set-Cookie")
        session_cookie = next(c for c in raw if c.startswith("custodes_session="))
        assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie and "Path=/" in session_cookie
        assert TOKENS["analyst"] not in session_cookie
        status, html = await page(http, url, "/")
        assert status == 200 and "analyst-token" in html and 'class="role">analyst' in html
        # a POST from another site is refused even with the session cookie
        async with http.post(
            f"{url}/rules/x/disable", data={"csrf": csrf_of(html)}, headers={"Origin": "https://evil.example"}
        ) as r:
            assert r.status == 403 and "security token" in await r.text()
        async with http.post(f"{url}/signout", data={"csrf": csrf_of(html)}, allow_redirects=False) as r:
            assert r.status == 303
        assert (await page(http, url, "/"))[0] == 303


async def test_a_tampered_or_orphaned_session_is_refused(console: Served) -> None:
    url = console.url
    http = await signed_in(url, "admin")
    async with http:
        value = next(c for c in http.cookie_jar if c.key == "custodes_session").value
    body, signature = value.rsplit(".", 1)

    async def status_with(cookie: str) -> int:
        async with (
            aiohttp.ClientSession() as bare,
            bare.get(f"{url}/", headers={"Cookie": f"custodes_session={cookie}"}, allow_redirects=False) as r,
        ):
            return r.status

    for forged in (f"{body}x.{signature}", f"{body}.{signature[:-2]}AA", "garbage", ""):
        assert await status_with(forged) == 303
    assert await status_with(value) == 200
    # a token removed from the configuration ends its sessions
    console.services.settings.server.api_tokens = [
        t for t in console.services.settings.server.api_tokens if t.name != "admin-token"
    ]
    assert await status_with(value) == 303


async def test_undecodable_cookies_and_forms_get_a_page_not_a_500(console: Served) -> None:
    url = console.url
    async with aiohttp.ClientSession() as bare:
        for cookie in ("e30.\u00e9", "\u00e9.\u00e9"):  # non-ASCII text where the signature goes
            headers = {"Cookie": f"custodes_session={cookie}"}
            async with bare.get(f"{url}/", headers=headers, allow_redirects=False) as r:
                assert r.status == 303  # no session: to the sign-in page
    urlencoded = {"Content-Type": "application/x-www-form-urlencoded"}
    broken_multipart = {"Content-Type": "multipart/form-data; boundary=b"}
    http = await signed_in(url, "admin")
    async with http:
        for path in ("/signin", "/rules/x/disable"):
            for body, headers in ((b"token=\xff&csrf=\xff", urlencoded), (b"--b\r\n", broken_multipart)):
                async with http.post(f"{url}{path}", data=body, headers=headers) as r:
                    assert r.status == 400 and "form could not be read" in await r.text(), (path, body)
        assert (await page(http, url, "/"))[0] == 200


async def test_every_page_as_admin(console: Served) -> None:
    url = console.url
    pseudonym = await pseudonymizer_for(console.services.settings.scoring, console.services.store)
    alice = pseudonym(PEOPLE[0])
    http = await signed_in(url, "admin")
    async with http:
        status, board = await page(http, url, "/")
        assert status == 200
        ranked = re.findall(r'href="/people/(p-[^"]+)"', board)
        assert ranked[:3] == [alice, pseudonym(PEOPLE[1]), pseudonym(PEOPLE[2])]
        assert "60.0" in board and "first USB use" in board and "alice" not in board
        status, person = await page(http, url, f"/people/{alice}")
        assert status == 200 and "<svg" in person and "Risk over 14 days" in person
        assert "user.mfa.factor.deactivate" in person and "Okta MFA Factor" in person
        status, html = await page(http, url, "/approvals")
        assert status == 200 and console.run_id[:12] in html and "Approve plan" in html
        assert "containing alice@example.com" in html  # admins and approvers see the exact plan
        status, html = await page(http, url, f"/runs/{console.run_id}")
        assert status == 200 and "waiting" in html
        status, html = await page(http, url, "/playbooks")
        assert status == 200 and "contain" in html and ">valid<" in html
        assert re.search(r">Last hour<.*<td>\d+ runs? of 100</td>", html, re.DOTALL)  # the default hourly cap
        status, html = await page(http, url, "/rules")
        assert status == 200 and "Okta MFA Factor Removed or Reset" in html and "Disable" in html
        status, html = await page(http, url, "/connectors")
        assert status == 200 and "okta-prod" in html and "AccessDenied" in html
        lag = re.search(r'class="num">(\d+) s<', html)
        assert lag and 42 <= int(lag.group(1)) < 600  # the newest event was 42 s old when seeded
        status, html = await page(http, url, "/audit")
        assert status == 200 and "run.request" in html
        status, html = await page(http, url, "/audit?verify=1")
        assert status == 200 and re.search(r"The chain holds: \d+ entries recomputed", html)
        async with console.services.store.transaction() as tx:
            await tx.conn.execute(sa.text("UPDATE audit_log SET actor = 'someone else' WHERE seq = 2"))
        status, html = await page(http, url, "/audit?verify=1")
        assert status == 200 and "The chain is broken at entry 2: its content does not match its hash" in html
        async with http.get(f"{url}/people?q={PEOPLE[0]}", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == f"/people/{PEOPLE[0]}"
        assert (await page(http, url, "/people?q="))[0] == 400
        status, html = await page(http, url, "/?page=0")
        assert status == 400 and "page: must be" in html
        status, html = await page(http, url, "/runs/nope")
        assert status == 404 and "no run" in html


async def test_a_viewer_sees_pseudonyms_and_no_buttons_and_is_refused(console: Served) -> None:
    url = console.url
    alice = (await pseudonymizer_for(console.services.settings.scoring, console.services.store))(PEOPLE[0])
    http = await signed_in(url, "viewer")
    async with http:
        status, html = await page(http, url, "/approvals")
        assert status == 200 and console.run_id[:12] in html
        assert "Approve" not in html and "alice" not in html and "shown to approvers" in html
        status, html = await page(http, url, "/rules")
        assert status == 200 and '/disable"' not in html and ">Disable<" not in html
        status, html = await page(http, url, "/playbooks")
        assert "Validate a playbook" not in html
        status, html = await page(http, url, "/audit")
        assert status == 403 and "needs the admin role" in html
        status, person = await page(http, url, f"/people/{alice}")
        assert status == 200 and "alice" not in person.split("</header>", 1)[1]
        status, person = await page(http, url, "/people/alice@example.com")  # a name links it to its pseudonym
        assert status == 403 and "reveal" in person
        # the server refuses what the page does not offer, even with a valid CSRF token
        status, html = await page(http, url, "/")
        form = {"csrf": csrf_of(html), "step": "tell", "plan_hash": "0" * 16}
        async with http.post(f"{url}/runs/{console.run_id}/approve", data=form) as r:
            assert r.status == 403 and "needs the approver role" in await r.text()
        async with http.post(f"{url}/rules/okta_mfa_factor_removed/disable", data={"csrf": form["csrf"]}) as r:
            assert r.status == 403
    async with console.services.store.transaction() as tx:
        run = await tx.get_run(console.run_id)
    assert run is not None and run.status.value == "waiting"


async def test_approve_a_run_exactly_as_planned(console: Served) -> None:
    url = console.url
    http = await signed_in(url, "approver")
    async with http:
        status, html = await page(http, url, "/approvals")
        assert status == 200
        plan_hash = re.findall(r'name="plan_hash" value="(\w+)"', html)[0]
        form = {"csrf": csrf_of(html), "step": "tell", "plan_hash": plan_hash}
        async with http.post(f"{url}/runs/{console.run_id}/approve", data=form) as r:
            # the approver requested this run: separation of duties
            assert r.status == 403 and "cannot also decide" in await r.text()
    http = await signed_in(url, "approver2")
    async with http:
        _status, html = await page(http, url, "/approvals")
        form["csrf"] = csrf_of(html)
        async with http.post(f"{url}/runs/{console.run_id}/approve", data={**form, "csrf": ""}) as r:
            assert r.status == 403
        async with http.post(f"{url}/runs/{console.run_id}/approve", data={**form, "comment": "ok"}) as r:
            assert r.status == 200 and str(r.url).endswith("?done=approved")
            assert "Approved: the run continues" in await r.text()
        assert "Nothing is waiting" in (await page(http, url, "/approvals"))[1]
    async with console.services.store.transaction() as tx:
        entries = await tx.audit_entries()
    approvals = [e for e in entries if e.action == "approval.approve"]
    assert approvals and approvals[0].actor == "api:approver2-token" and approvals[0].details["comment"] == "ok"


async def test_admin_disables_and_enables_a_rule(console: Served) -> None:
    url = console.url
    http = await signed_in(url, "admin")
    async with http:
        _status, html = await page(http, url, "/rules")
        rule = re.findall(r'action="/rules/([^/"]+)/disable"', html)[0]
        async with http.post(f"{url}/rules/{rule}/disable", data={"csrf": csrf_of(html)}) as r:
            assert r.status == 200 and f'action="/rules/{rule}/enable"' in await r.text()
        assert rule in console.services.pipeline.disabled_rules
        async with http.post(f"{url}/rules/{rule}/enable", data={"csrf": csrf_of(html)}) as r:
            assert r.status == 200
        assert rule not in console.services.pipeline.disabled_rules


async def board_pages(console: Served, day: date) -> tuple[list[list[str]], list[str]]:
    """The people on each of the day's three board pages, and the pages' HTML."""
    http = await signed_in(console.url, "viewer")
    shown, pages = [], []
    async with http:
        for number in (1, 2, 3):
            status, html = await page(http, console.url, f"/?day={day}&page={number}")
            assert status == 200
            shown.append(re.findall(r'href="/people/(p-[0-9a-f]{16})"', html))
            pages.append(html)
            assert ("Later in the queue" in html) == (number < 3)
    assert [len(rows) for rows in shown] == [PAGE_SIZE, PAGE_SIZE, 5]
    return shown, pages


@pytest.mark.parametrize("closed", [False, True])
async def test_the_board_pages_through_an_index_in_review_order(console: Served, closed: bool) -> None:
    store = console.services.store
    day = date.today() + timedelta(days=1)
    count = 2 * PAGE_SIZE + 5
    scores = [day_score(f"p-{n:016x}", day, float(n)) for n in range(count)]
    if closed:  # the engine's review order: here every third person first, then the others by risk
        order = sorted(range(count), key=lambda n: (n % 3 != 0, -n))
        for place, n in enumerate(order, start=1):
            scores[n].place = place
    await write_scores(store, scores)
    shown, pages = await board_pages(console, day)
    everyone = [n for rows in shown for n in rows]
    expected = order if closed else list(reversed(range(count)))
    assert everyone == [f"p-{n:016x}" for n in expected]
    assert ("People in review order" in pages[0]) == closed and ("the day is still open" in pages[0]) == (not closed)
    async with store.transaction() as tx:
        assert await queries.day_closed(tx, day) == closed
    statement = queries.ranking_query(day, closed=closed, limit=PAGE_SIZE, offset=PAGE_SIZE)
    compiled = str(statement.compile(compile_kwargs={"literal_binds": True}))
    order_by = "ORDER BY scoring_scores.place" if closed else "ORDER BY scoring_scores.risk DESC"
    assert "LIMIT 50 OFFSET 50" in compiled and order_by in compiled
    if store.dialect == "sqlite":
        hiding = queries.ranking_query(
            day, closed=closed, limit=PAGE_SIZE, offset=PAGE_SIZE, hide=needtoknow.hidden_keys("viewer")
        )
        index = "ix_scoring_scores_day_place" if closed else "ix_scoring_scores_day_risk"
        for query in (compiled, str(hiding.compile(compile_kwargs={"literal_binds": True}))):
            async with store.transaction() as tx:
                plan = (await tx.conn.execute(sa.text(f"EXPLAIN QUERY PLAN {query}"))).all()
            detail = " ".join(str(row[-1]) for row in plan)
            assert f"USING INDEX {index}" in detail and "TEMP B-TREE" not in detail, detail


async def test_an_analyst_acknowledges_a_finding(console: Served) -> None:
    url = console.url
    async with console.services.store.transaction() as tx:
        [finding] = [f for f in await tx.list_findings(limit=50) if f.entity == PEOPLE[1]]
    bob = f"/people/{(await pseudonymizer_for(console.services.settings.scoring, console.services.store))(PEOPLE[1])}"
    http = await signed_in(url, "viewer")
    async with http:
        status, html = await page(http, url, bob)
        assert status == 200 and finding.title in html and "Acknowledge" not in html
        async with http.post(
            f"{url}/findings/{finding.id}/status", data={"csrf": csrf_of(html), "status": "closed"}
        ) as r:
            assert r.status == 403 and "needs the analyst role" in await r.text()
    http = await signed_in(url, "analyst")
    async with http:
        status, html = await page(http, url, bob)
        assert f'action="/findings/{finding.id}/status"' in html
        form = {"csrf": csrf_of(html), "status": "acknowledged", "next": bob}
        async with http.post(f"{url}/findings/{finding.id}/status", data=form) as r:
            assert r.status == 200 and "Updated." in await r.text()
        async with http.post(f"{url}/findings/{finding.id}/status", data={**form, "status": "gone"}) as r:
            assert r.status == 400 and "status:" in await r.text()
    async with console.services.store.transaction() as tx:
        stored = await tx.get_finding(finding.id)
        entries = await tx.audit_entries()
    assert stored is not None and stored.status.value == "acknowledged"
    assert any(e.action == "finding.update" and e.actor == "api:analyst-token" for e in entries)


async def book_grant(console: Served, case_id: str, principal: str) -> None:
    async with console.services.store.transaction() as tx:
        await book.grant(tx, case_id, "api:admin-token", [principal])


async def test_case_pages_respect_roles_and_need_to_know(console: Served) -> None:
    url = console.url
    alice = (await pseudonymizer_for(console.services.settings.scoring, console.services.store))(PEOPLE[0])
    viewer = await signed_in(url, "viewer")
    analyst = await signed_in(url, "analyst")
    async with viewer, analyst:
        status, queue = await page(viewer, url, "/cases")
        assert status == 200 and alice in queue and "alice@" not in queue
        async with console.services.store.transaction() as tx:
            [case] = await book.list_cases(tx, principal="", subject=PEOPLE[0])
        path = f"/cases/{case['id']}"
        assert f'href="{path}"' in queue
        status, html = await page(viewer, url, path)
        assert status == 200 and "Timeline" in html and '<form method="post" action="/cases/' not in html
        async with viewer.post(f"{url}{path}/comment", data={"csrf": csrf_of(html), "text": "hi"}) as r:
            assert r.status == 403 and "needs the analyst role" in await r.text()
        status, html = await page(analyst, url, path)
        assert "Move the case on" in html and "Close case" in html and "Benign: suppress" in html
        form = {"csrf": csrf_of(html), "status": "escalated_hr", "need_to_know": "approver-token", "reason": "HR"}
        async with analyst.post(f"{url}{path}/update", data=form) as r:
            assert r.status == 200 and "Updated." in await r.text()
        status, html = await page(viewer, url, path)
        assert status == 404
        assert case["id"] not in (await page(viewer, url, "/cases"))[1]
        status, html = await page(analyst, url, path)
        assert "legal hold" in html and "Lift legal hold" not in html, "only legal or an admin may lift it"
        async with analyst.post(f"{url}{path}/hold/lift", data={"csrf": csrf_of(html), "reason": "x"}) as r:
            assert r.status == 403 and "needs the legal role" in await r.text()
        async with await signed_in(url, "legal") as legal:
            status, html = await page(legal, url, path)
            assert status == 404, "legal not on the access list does not see the case"
        await book_grant(console, case["id"], "legal-token")
        async with await signed_in(url, "legal") as legal:
            status, html = await page(legal, url, path)
            assert "Lift legal hold" in html
            lift = {"csrf": csrf_of(html), "reason": "matter settled"}
            async with legal.post(f"{url}{path}/hold/lift", data=lift) as r:
                lifted = await r.text()
            assert r.status == 200 and "Updated." in lifted and "Lift legal hold" not in lifted
        status, person = await page(analyst, url, f"/people/{alice}")
        assert f'href="{path}"' in person, "the person's finding links to its case"
