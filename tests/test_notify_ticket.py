"""Email over real SMTP (aiosmtpd), Jira and ServiceNow tickets over real loopback HTTP against the
simulators (auth, vendor errors, 429 Retry-After, replay without a second ticket), and case notes."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from custodes.config import ResponderSettings
from custodes.responder import catalog, http
from custodes.responder.registry import ActionContext, ActionError
from custodes.sandbox import jira, servicenow
from custodes.sandbox.server import running
from custodes.store import Store
from custodes.store.tables import case_notes

JIRA_TOKEN = "jira-token-9c1d"
SNOW_PASSWORD = "snow-pass-41aa"
SMTP_PASSWORD = "smtp-pass-77b2"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "retry_policy", http.RetryPolicy(attempts=3, max_wait=0.05, backoff=0.01))


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIRA_EMAIL", "soc@example.com")
    monkeypatch.setenv("JIRA_TOKEN", JIRA_TOKEN)
    monkeypatch.setenv("SNOW_USER", "custodes")
    monkeypatch.setenv("SNOW_PASSWORD", SNOW_PASSWORD)
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)


async def call(name: str, ctx: ActionContext, **arguments: Any) -> dict[str, Any]:
    spec = catalog.get(name)
    result: dict[str, Any] = await spec.fn(ctx, **spec.validate(arguments))
    return result


# Jira -------------------------------------------------------------------------------------------


@pytest.fixture
async def jira_site() -> AsyncIterator[tuple[jira.JiraState, str]]:
    state = jira.JiraState(email="soc@example.com", api_token=JIRA_TOKEN)
    async with running(jira.create_app(state)) as url:
        yield state, url


def jira_settings(url: str) -> ResponderSettings:
    return ResponderSettings.model_validate(
        {"jira": {"base_url": url, "email": "env:JIRA_EMAIL", "api_token": "env:JIRA_TOKEN", "project": "SEC"}}
    )


async def test_jira_issue_is_created_once_per_step(
    jira_site: tuple[jira.JiraState, str], session: aiohttp.ClientSession
) -> None:
    state, url = jira_site
    ctx = ActionContext(jira_settings(url), session, "0123abcd" * 4)
    created = await call(
        "ticket.jira_create",
        ctx,
        summary="Mass download by alice@example.com",
        description="Finding f1.\nSeverity high.\n\nSee the evidence bundle.",
        priority="High",
        labels=["insider"],
    )
    assert created == {"changed": True, "key": "SEC-1", "id": "10001", "url": f"{url}/browse/SEC-1"}
    fields = state.issues[0]["fields"]
    assert fields["labels"] == ["custodes-" + "0123abcd" * 4, "insider"]
    assert fields["description"]["content"][0]["content"] == [
        {"type": "text", "text": "Finding f1."},
        {"type": "hardBreak"},
        {"type": "text", "text": "Severity high."},
    ]
    assert fields["priority"] == {"name": "High"}

    replay = await call("ticket.jira_create", ctx, summary="Mass download by alice@example.com")
    assert replay == {"changed": False, "key": "SEC-1", "id": "10001", "url": f"{url}/browse/SEC-1"}
    assert len(state.issues) == 1

    other = ActionContext(jira_settings(url), session, "other-step-key")
    assert (await call("ticket.jira_create", other, summary="Second"))["key"] == "SEC-2"


async def test_jira_throttling_is_retried_and_errors_carry_the_vendor_message(
    jira_site: tuple[jira.JiraState, str], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = jira_site
    state.fail_next(2, status=429, retry_after=0)
    ctx = ActionContext(jira_settings(url), session, "k-throttled")
    assert (await call("ticket.jira_create", ctx, summary="Throttled"))["changed"] is True
    assert state.requests == 4  # two 429s, the search, the create

    with pytest.raises(ActionError) as invalid:
        await call("ticket.jira_create", ctx.__class__(ctx.settings, session, "k2"), summary="x", project="NOPE")
    assert invalid.value.code == "invalid_project"
    assert "HTTP 400: project: Specify a valid project ID or key" in str(invalid.value)

    monkeypatch.setenv("JIRA_TOKEN", "wrong-token")
    with pytest.raises(ActionError) as refused:
        await call("ticket.jira_create", ActionContext(jira_settings(url), session, "k3"), summary="x")
    assert refused.value.code == "http_401"
    assert "Client must be authenticated" in str(refused.value)
    assert JIRA_TOKEN not in str(refused.value) and "wrong-token" not in str(refused.value)


# ServiceNow -------------------------------------------------------------------------------------


@pytest.fixture
async def instance() -> AsyncIterator[tuple[servicenow.ServiceNowState, str]]:
    state = servicenow.ServiceNowState(username="custodes", password=SNOW_PASSWORD)
    async with running(servicenow.create_app(state)) as url:
        yield state, url


def snow_settings(url: str) -> ResponderSettings:
    return ResponderSettings.model_validate(
        {"servicenow": {"base_url": url, "username": "env:SNOW_USER", "password": "env:SNOW_PASSWORD"}}
    )


async def test_servicenow_incident_is_created_once_per_step(
    instance: tuple[servicenow.ServiceNowState, str], session: aiohttp.ClientSession
) -> None:
    state, url = instance
    ctx = ActionContext(snow_settings(url), session, "step-key-1")
    created = await call(
        "ticket.servicenow_create", ctx, short_description="Insider: alice", description="details", urgency=1
    )
    assert created["changed"] is True and created["number"] == "INC0010001"
    record = state.incidents[0]
    assert record["correlation_id"] == "step-key-1" and record["urgency"] == "1" and record["impact"] == "2"

    state.fail_next(1, status=429, retry_after=0)
    state.fail_next(1, status=503)
    replay = await call("ticket.servicenow_create", ctx, short_description="Insider: alice")
    assert replay["changed"] is False and replay["sys_id"] == record["sys_id"]
    assert len(state.incidents) == 1


async def test_servicenow_errors_carry_message_and_detail(
    instance: tuple[servicenow.ServiceNowState, str], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = instance
    monkeypatch.setenv("SNOW_PASSWORD", "nope")
    with pytest.raises(ActionError) as refused:
        await call("ticket.servicenow_create", ActionContext(snow_settings(url), session, "k"), short_description="x")
    assert refused.value.code == "http_401"
    assert "User Not Authenticated; Required to provide Auth information" in str(refused.value)
    assert "nope" not in str(refused.value)

    state.fail_next(5, status=500)
    monkeypatch.setenv("SNOW_PASSWORD", SNOW_PASSWORD)
    with pytest.raises(ActionError) as failing:
        await call("ticket.servicenow_create", ActionContext(snow_settings(url), session, "k"), short_description="x")
    assert failing.value.retryable is True and "after 3 attempts" in str(failing.value)
    assert state.incidents == []


async def test_ticket_dry_runs_make_no_request(
    jira_site: tuple[jira.JiraState, str],
    instance: tuple[servicenow.ServiceNowState, str],
    session: aiohttp.ClientSession,
) -> None:
    settings = jira_settings(jira_site[1]).model_copy(update={"servicenow": snow_settings(instance[1]).servicenow})
    ctx = ActionContext(settings, session, "k", dry_run=True)
    assert "open a Jira issue" in (await call("ticket.jira_create", ctx, summary="s"))["would"]
    assert "ServiceNow incident" in (await call("ticket.servicenow_create", ctx, short_description="s"))["would"]
    assert jira_site[0].requests == 0 and instance[0].requests == 0


# email ------------------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler keeping messages; the first `transient` DATA commands get 451."""

    def __init__(self, transient: int = 0) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.transient = transient

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.transient:
            self.transient -= 1
            return "451 4.3.0 Temporary failure, try again"
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos), content))
        return "250 2.0.0 OK"


def authenticator(server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"relay" and data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def smtp_settings(port: int) -> ResponderSettings:
    return ResponderSettings.model_validate(
        {
            "smtp": {
                "host": "127.0.0.1",
                "port": port,
                "sender": "custodes@example.com",
                "username": "relay",
                "password": "env:SMTP_PASSWORD",
            }
        }
    )


async def test_email_is_submitted_with_auth(smtp: tuple[Mailbox, int], session: aiohttp.ClientSession) -> None:
    box, port = smtp
    ctx = ActionContext(smtp_settings(port), session, "mail-key-1")
    result = await call(
        "notify.email", ctx, to=["soc@example.com", "lead@example.com"], subject="[HIGH] Mass download", body="Look."
    )
    assert result["delivered"] is True and result["message_id"] == "<mail-key-1@custodes>"
    assert result["accepted"] == ["soc@example.com", "lead@example.com"] and result["refused"] == []
    sender, recipients, content = box.messages[0]
    assert sender == "custodes@example.com" and recipients == ["soc@example.com", "lead@example.com"]
    assert b"Subject: [HIGH] Mass download" in content and b"Message-ID: <mail-key-1@custodes>" in content
    assert SMTP_PASSWORD.encode() not in content


async def test_email_transient_replies_are_retried_and_auth_failures_reported(
    smtp: tuple[Mailbox, int], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    box, port = smtp
    box.transient = 2
    ctx = ActionContext(smtp_settings(port), session, "mail-key-2")
    assert (await call("notify.email", ctx, to=["soc@example.com"], subject="s", body="b"))["delivered"] is True
    assert len(box.messages) == 1

    monkeypatch.setenv("SMTP_PASSWORD", "bad-password")
    with pytest.raises(ActionError) as refused:
        await call(
            "notify.email",
            ActionContext(smtp_settings(port), session, "k"),
            to=["a@example.com"],
            subject="s",
            body="b",
        )
    assert refused.value.code == "smtp_535" and refused.value.retryable is False
    assert "bad-password" not in str(refused.value)

    with pytest.raises(ActionError) as bad:
        await call("notify.email", ctx, to=["not-an-address"], subject="s", body="b")
    assert bad.value.code == "invalid_argument"
    with pytest.raises(ActionError, match="line break"):
        await call("notify.email", ctx, to=["a@example.com"], subject="s\r\nBcc: x@evil.test", body="b")
    assert len(box.messages) == 1


# case notes -------------------------------------------------------------------------------------


async def test_case_note_is_stored_once_and_audited(store: Store, session: aiohttp.ClientSession) -> None:
    ctx = ActionContext(ResponderSettings(), session, "note-key", run_id="run-9", store=store, actor="analyst")
    first = await call("case.note", ctx, case="alice@example.com", text="Suspended pending review.")
    again = await call("case.note", ctx, case="alice@example.com", text="Suspended pending review.")
    assert first["changed"] is True and again == {**first, "changed": False}
    async with store.transaction() as tx:
        rows = (await tx.conn.execute(sa.select(case_notes))).mappings().all()
        audit = [e for e in await tx.audit_entries() if e.action == "case.note"]
    assert [(r["case_id"], r["author"], r["text"], r["run_id"]) for r in rows] == [
        ("alice@example.com", "analyst", "Suspended pending review.", "run-9")
    ]
    assert len(audit) == 1 and audit[0].subject == "alice@example.com" and audit[0].actor == "analyst"
