"""A served Custodes with a console worth looking at: findings and events from a signed webhook, day scores for
several people, a run waiting for approval, connector health and audit entries."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from custodes.config import ConsoleSettings, DatabaseSettings, Settings
from custodes.detections.scoring.risk import Contribution, DayScore
from custodes.detections.scoring.service import pseudonymizer_for, score_row
from custodes.model import utcnow
from custodes.sandbox.oidc import OidcState
from custodes.server.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custodes.server.serve import serving
from custodes.services import Services
from custodes.store import Store, upserts
from custodes.store.database import ConnectorStatus
from custodes.store.tables import scoring_scores

ROOT = Path(__file__).resolve().parents[1]
TOKENS = {
    "viewer": "tok-viewer-0123456789",
    "analyst": "tok-analyst-0123456789",
    "approver": "tok-approver-0123456789",
    "approver2": "tok-approver2-0123456789",
    "admin": "tok-admin-0123456789",
    "legal": "tok-legal-0123456789",
}
ROLE_OF = {"approver2": "approver"}
PLAYBOOK = """\
name: contain
description: Tell the SOC channel before containing a person
trigger: {manual: true}
inputs:
  user: {type: string, required: true}
steps:
  - id: tell
    uses: notify.webhook
    with: {channel: soc, text: "containing {{ inputs.user }}"}
    approval: {approvers: [], count: 1, expires_after: 3600}
"""
PEOPLE = ["alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]


@dataclass(frozen=True, slots=True)
class Served:
    """The console's base URL, the services behind it and the waiting run's id."""

    url: str
    services: Services
    run_id: str


def settings_for(database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with a token per role, the Sigma rule pack, one approval playbook and a signed webhook."""
    for name, token in TOKENS.items():
        monkeypatch.setenv(f"T_{name.upper()}", token)
    monkeypatch.setenv("T_HOOK", "hook-secret-0123456789")
    monkeypatch.setenv("T_CHAT", "http://127.0.0.1:9/unused")
    (tmp_path / "playbooks").mkdir(exist_ok=True)
    (tmp_path / "playbooks" / "contain.yml").write_text(PLAYBOOK)
    settings = Settings.model_validate(
        {
            "detection": {"rules": [str(ROOT / "detections" / "rules")]},
            "playbooks": {"paths": [str(tmp_path / "playbooks")]},
            "responder": {"channels": {"soc": {"url": "env:T_CHAT"}}},
            "webhooks": {
                "generic": {"kind": "generic", "source": "okta", "auth": {"scheme": "hmac", "secret": "env:T_HOOK"}}
            },
            "server": {
                "api_tokens": [
                    {"name": f"{name}-token", "token": f"env:T_{name.upper()}", "role": ROLE_OF.get(name, name)}
                    for name in TOKENS
                ]
            },
        }
    )
    settings.database = database
    return settings


async def post_events(url: str, records: list[dict[str, Any]]) -> None:
    """Send Okta-shaped records through the signed generic webhook."""
    body = orjson.dumps(records)
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign("hook-secret-0123456789", stamp, body),
    }
    async with aiohttp.ClientSession() as http, http.post(f"{url}/webhooks/generic", data=body, headers=headers) as r:
        assert r.status == 202, await r.text()


def okta_record(n: int, actor: str, event_type: str, at: datetime) -> dict[str, Any]:
    """One Okta System Log record."""
    return {
        "uuid": f"e{n}",
        "published": at.isoformat().replace("+00:00", "Z"),
        "eventType": event_type,
        "actor": {"alternateId": actor},
        "client": {"ipAddress": f"203.0.113.{n % 250 + 1}"},
        "outcome": {"result": "SUCCESS"},
    }


def day_score(entity: str, day: date, risk: float, *, usb: float = 0, uploads: float = 0) -> DayScore:
    """A stored day score with contributions the explanation can put in sentences."""
    contributions = []
    if usb:
        contributions.append(Contribution("usb", usb, 0.0, 0.1, usb * 4, 6.0, 0.0, None, 40, ["e1"]))
    if uploads:
        contributions.append(Contribution("cloud_upload", uploads, 0.5, 0.4, uploads * 0.8, 2.0, 5.5, 12, 40, ["e2"]))
    return DayScore(entity, "person", day, sum(c.points for c in contributions), risk, contributions, {}, [], [])


async def write_scores(store: Store, scores: list[DayScore]) -> None:
    """Store day scores as the scoring service does."""
    now = utcnow()
    async with store.transaction() as tx:
        statement = upserts.upsert(
            tx.conn.dialect.name, scoring_scores, ("entity", "day"), ("risk", "points", "place", "detail", "event_ids")
        )
        await upserts.write(tx.conn, statement, [score_row(score, now) for score in scores])


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def signed_in(url: str, who: str) -> aiohttp.ClientSession:
    """A browser-like client (cookie jar) signed in with a role's token."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.get(f"{url}/signin") as r:
        form = csrf_of(await r.text())
    async with http.post(
        f"{url}/signin", data={"token": TOKENS[who], "csrf": form, "next": "/"}, allow_redirects=False
    ) as r:
        assert r.status == 303, await r.text()
    return http


async def page(http: aiohttp.ClientSession, url: str, path: str) -> tuple[int, str]:
    async with http.get(f"{url}{path}", allow_redirects=False) as r:
        return r.status, await r.text()


async def api(url: str, method: str, path: str, who: str, json: Any = None) -> tuple[int, Any]:
    """Call the REST API as one of TOKENS."""
    headers = {"Authorization": f"Bearer {TOKENS[who]}"}
    async with aiohttp.ClientSession() as http, http.request(method, f"{url}{path}", json=json, headers=headers) as r:
        return r.status, await r.json()


async def seed(url: str, services: Services) -> str:
    """Events and findings for everyone, 14 days of scores, connector health and a waiting run (its id)."""
    now = datetime.now(UTC).replace(microsecond=0)
    records = [
        okta_record(n, person, kind, now - timedelta(minutes=n))
        for n, (person, kind) in enumerate(
            [
                (PEOPLE[0], "user.mfa.factor.deactivate"),
                (PEOPLE[0], "user.session.start"),
                (PEOPLE[0], "application.user_membership.add"),
                (PEOPLE[1], "user.mfa.factor.deactivate"),
                (PEOPLE[2], "user.session.start"),
            ],
            start=1,
        )
    ]
    await post_events(url, records)
    for _ in range(100):
        async with services.store.transaction() as tx:
            if await tx.list_findings(limit=10):
                break
        await asyncio.sleep(0.05)
    pseudonym = await pseudonymizer_for(services.settings.scoring, services.store)
    today = now.date()
    scores = []
    for back in range(14):
        day = today - timedelta(days=back)
        scores.append(day_score(pseudonym(PEOPLE[0]), day, 60.0 - back * 3.5, usb=3 if back < 2 else 0, uploads=14))
        scores.append(day_score(pseudonym(PEOPLE[1]), day, 22.0 - back, uploads=6))
        scores.append(day_score(pseudonym(PEOPLE[2]), day, 4.0))
    await write_scores(services.store, scores)
    async with services.store.transaction() as tx:
        await tx.save_connector_status(
            ConnectorStatus(
                "okta-prod",
                "okta",
                events_total=120_431,
                last_round_events=212,
                events_per_second=35.3,
                newest_event=now - timedelta(seconds=42),
                last_success=now - timedelta(seconds=30),
                updated_at=now,
            )
        )
        await tx.save_connector_status(
            ConnectorStatus(
                "cloudtrail",
                "cloudtrail",
                events_total=9_812,
                newest_event=now - timedelta(hours=3),
                last_success=now - timedelta(hours=2),
                last_error="AccessDenied: s3:GetObject on the trail bucket (check the role's policy)",
                last_error_at=now - timedelta(minutes=4),
                consecutive_failures=7,
                updated_at=now,
            )
        )
    status, run = await api(
        url, "POST", "/api/playbooks/contain/runs", "approver", {"inputs": {"user": PEOPLE[0]}, "entity": PEOPLE[0]}
    )
    assert status == 201 and run["status"] == "waiting", run
    return str(run["id"])


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[Served]:
    """Custodes serving on a free loopback port, seeded."""
    async with await Services.open(settings) as services, serving(services, "127.0.0.1", 0) as url:
        run_id = await seed(url, services)
        yield Served(url, services, run_id)


SSO_CLIENT = "custodes-console"
SSO_SECRET = "sso-client-secret-0123456789"
SSO_ROLES = {"soc-approvers": "approver", "soc-admins": "admin", "auditors": "viewer"}
SSO_USERS = {
    "carol": ("Carol Approver", ("staff", "soc-approvers")),
    "vic": ("Vic Viewer", ("staff", "auditors")),
    "mallory": ("Mallory Contractor", ("contractors",)),
}
SSO_PASSWORD = "correct horse battery staple"


def sso_provider() -> OidcState:
    """A simulated identity provider with an approver, a viewer and a person in no mapped group."""
    state = OidcState()
    for username, (name, groups) in SSO_USERS.items():
        state.add_user(username, SSO_PASSWORD, name, groups)
    return state


def with_sso(settings: Settings, issuer: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """`settings` signing in to the console through the provider at `issuer` (groups mapped by SSO_ROLES)."""
    monkeypatch.setenv("T_SSO", SSO_SECRET)
    settings.console = ConsoleSettings.model_validate(
        {"oidc": {"issuer": issuer, "client_id": SSO_CLIENT, "client_secret": "env:T_SSO", "roles": SSO_ROLES}}
    )
    return settings


def register_console(state: OidcState, console_url: str) -> None:
    """Register the console as the provider's client, with its callback as the one redirect URI."""
    state.register(SSO_CLIENT, SSO_SECRET, f"{console_url}/signin/oidc/callback")
