"""Identity inventory and access review: msal + Graph and Okta over loopback HTTP against the simulators, boto3
IAM against moto in server mode (behind a fault proxy), stored on SQLite and PostgreSQL, reviewed exactly."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
import sqlalchemy as sa
from moto.iam.models import iam_backends
from typer.testing import CliRunner

from conftest import OKTA_TOKEN
from custodes.cli import app
from custodes.config import AccessReviewSettings, ConnectorSettings, DatabaseSettings, Settings
from custodes.inventory import review as reviewing
from custodes.inventory.collect import collect_configured
from custodes.inventory.model import Account, Grant, Snapshot
from custodes.inventory.store import load_accounts, save
from custodes.model import utcnow
from custodes.sandbox import cloudtrail as aws_sim
from custodes.sandbox import graph, okta
from custodes.sandbox.pathfaults import Fault, Faults, proxy_app
from custodes.sandbox.server import running
from custodes.store import Store
from custodes.store.tables import entities, identity_accounts, identity_grants

DAY = 86400.0
FAST = {"attempts": 8, "max_wait": 2.0, "backoff": 0.01}
ACCOUNT = "123456789012"
ADMIN_DOCUMENT = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
SOD = AccessReviewSettings(sod_conflicts=[("Finance Approvers", "Payments Submitters")])


@pytest.fixture
async def tenant() -> AsyncIterator[tuple[graph.GraphState, str]]:
    state = graph.GraphState(reports_limit=2, reports_window=0.3)
    async with running(graph.create_app(state)) as url:
        yield state, url


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[tuple[str, str, Faults]]:
    """A fresh moto: (its URL for seeding, a fault-injecting proxy URL for the collector, the proxy's faults)."""
    async with aiohttp.ClientSession() as session, session.post(f"{moto_url}/moto-api/reset") as answer:
        assert answer.status == 200
    faults = Faults()
    async with running(proxy_app(moto_url, faults, aws_sim.render_aws_fault)) as url:
        yield moto_url, url, faults


def seed_entra(state: graph.GraphState, now: float) -> dict[str, str]:
    ids = {
        "alice": state.add_user("alice@contoso.com", last_sign_in=now - 2 * DAY)["id"],
        "bob": state.add_user("bob@contoso.com", last_sign_in=now - 200 * DAY - 60)["id"],
        "carol": state.add_user("carol@contoso.com", last_sign_in=now - DAY, mfa=False)["id"],
        "dave": state.add_user("dave@contoso.com", enabled=False, mfa=False)["id"],
        "reader": state.add_user("reader@contoso.com", last_sign_in=now - 5 * DAY, mfa=False)["id"],
    }
    odd = state.add_user("odd@contoso.com", last_sign_in=now, created=now - 400 * DAY)
    ids["odd"] = odd["id"]
    record = state.users[-1]
    record["accountEnabled"] = "yes"
    record["signInActivity"]["lastSignInDateTime"] = "last tuesday"
    state.registrations.pop()  # the report has no row for this user: MFA state unknown
    state.add_group("Finance Approvers", ["alice@contoso.com", "bob@contoso.com"])
    state.add_group("Engineering", ["bob@contoso.com", "carol@contoso.com", "reader@contoso.com"])
    state.add_role("Global Administrator", ["alice@contoso.com"])
    state.add_role("Privileged Role Administrator", ["carol@contoso.com"])
    state.add_role("Global Reader", ["reader@contoso.com"])
    return ids


def seed_okta(state: okta.OktaState, now: float) -> dict[str, str]:
    ids = {
        "alice": state.add_user("alice@contoso.com")["id"],
        "erin": state.add_user("erin@contoso.com")["id"],
        "frank": state.add_user("frank@contoso.com", status="SUSPENDED")["id"],
    }
    state.set_last_login("alice@contoso.com", now - 3 * DAY)
    state.set_last_login("erin@contoso.com", now - 100 * DAY - 60)
    state.set_last_login("frank@contoso.com", now - 300 * DAY)
    state.enroll_factor("alice@contoso.com", "push")
    state.enroll_factor("erin@contoso.com", "sms", status="PENDING_ACTIVATION")
    state.assign_role("erin@contoso.com", "SUPER_ADMIN")
    state.assign_role("frank@contoso.com", "ORG_ADMIN")
    state.add_group("Payments Submitters", ["alice@contoso.com", "frank@contoso.com"])
    state.add_group("Everyone", ["alice@contoso.com", "erin@contoso.com", "frank@contoso.com"])
    created = datetime.fromtimestamp(now, UTC).isoformat()
    state.users["00ubadrecord0000001"] = {
        "id": "00ubadrecord0000001",
        "status": "ACTIVE",
        "created": created,
        "lastLogin": "yesterday",
        "profile": {"email": "hal@contoso.com", "firstName": "Hal"},
    }
    ids["hal"] = "00ubadrecord0000001"
    return ids


def seed_iam(url: str) -> dict[str, str]:
    """IAM users: alice (console, MFA, admin policy, a key used now), gina (e-mail tag, admin through a group
    inline policy, no MFA), deploy-bot (no console: a service; a key created 120 days ago and never used)."""
    iam = boto3.client(
        "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    for name, tags in (("alice", []), ("gina", [{"Key": "email", "Value": "gina@contoso.com"}]), ("deploy-bot", [])):
        iam.create_user(UserName=name, Tags=tags)
    for name in ("alice", "gina"):
        iam.create_login_profile(UserName=name, Password="Correct-Horse-9")
    policy = iam.create_policy(PolicyName="break-glass", PolicyDocument=ADMIN_DOCUMENT)["Policy"]["Arn"]
    iam.attach_user_policy(UserName="alice", PolicyArn=policy)
    device = iam.create_virtual_mfa_device(VirtualMFADeviceName="alice")["VirtualMFADevice"]["SerialNumber"]
    iam.enable_mfa_device(
        UserName="alice", SerialNumber=device, AuthenticationCode1="123456", AuthenticationCode2="654321"
    )
    iam.create_group(GroupName="ops")
    iam.add_user_to_group(GroupName="ops", UserName="gina")
    iam.put_group_policy(GroupName="ops", PolicyName="ops-admin", PolicyDocument=ADMIN_DOCUMENT)
    alice_key = iam.create_access_key(UserName="alice")["AccessKey"]
    bot_key = iam.create_access_key(UserName="deploy-bot")["AccessKey"]["AccessKeyId"]
    boto3.client(
        "iam",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=alice_key["AccessKeyId"],
        aws_secret_access_key=alice_key["SecretAccessKey"],
    ).list_groups()
    # What no API can set in moto: history (when a key was created, when a password was last used).
    backend = iam_backends[ACCOUNT]["aws"]
    long_ago = datetime.now(UTC) - timedelta(days=120, minutes=1)
    backend.access_keys[bot_key].create_date = long_ago
    backend.users["deploy-bot"].create_date = long_ago
    gina: Any = backend.users["gina"]
    gina.password_last_used = datetime.now(UTC) - timedelta(days=10)
    return {"bot_key": bot_key, "alice_key": alice_key["AccessKeyId"]}


def settings_for(
    database: DatabaseSettings, graph_url: str, tenant: graph.GraphState, okta_url: str, aws_url: str
) -> Settings:
    return Settings(
        database=database,
        access_review=SOD,
        connectors={
            "entra": ConnectorSettings(
                kind="entra",
                credentials={"client_secret": "env:TEST_ENTRA_SECRET"},
                options={
                    "tenant_id": tenant.tenant,
                    "client_id": tenant.client_id,
                    "graph_url": graph_url,
                    "login_endpoint": graph_url,
                    "page_size": 2,
                    "requests_per_window": 50,
                    "window_seconds": 0.3,
                    "timeout_seconds": 2,
                    "retry": FAST,
                },
            ),
            "okta": ConnectorSettings(
                kind="okta",
                credentials={"token": "env:TEST_OKTA_TOKEN"},
                options={"base_url": okta_url, "page_size": 2, "retry": FAST},
            ),
            "aws": ConnectorSettings(
                kind="aws_iam",
                credentials={"access_key_id": "env:TEST_AWS_KEY", "secret_access_key": "env:TEST_AWS_SECRET"},
                options={"endpoint_url": aws_url, "retry": FAST},
            ),
        },
    )


async def test_inventory_review_of_a_seeded_org_is_exact(
    tenant: tuple[graph.GraphState, str],
    org: tuple[okta.OktaState, str],
    aws: tuple[str, str, Faults],
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (gstate, gurl), (ostate, ourl), (moto_url, aws_url, aws_faults) = tenant, org, aws
    for name, value in {
        "TEST_ENTRA_SECRET": gstate.client_secret,
        "TEST_OKTA_TOKEN": OKTA_TOKEN,
        "TEST_AWS_KEY": "testing",
        "TEST_AWS_SECRET": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    now = time.time()
    entra_ids, okta_ids = seed_entra(gstate, now), seed_okta(ostate, now)
    keys = await asyncio.to_thread(seed_iam, moto_url)
    gstate.faults.add(Fault(status=429, retry_after=0.05, path="/v1.0/users"))
    gstate.faults.add(Fault(status=500, path="/v1.0/groups"))
    ostate.fail_next(1, status=429, reset_in=0.2)
    ostate.faults.add(Fault(status=503, path="/api/v1/groups"))
    aws_faults.add(Fault(status=503))
    aws_faults.add(Fault(status=429))
    settings = settings_for(store.settings, gurl, gstate, ourl, aws_url)

    async with aiohttp.ClientSession() as http:
        outcomes = await collect_configured(settings, store, http)
        again = await collect_configured(settings, store, http)
    assert [(o.connector, o.accounts, o.warnings, o.error) for o in outcomes] == [
        ("entra", 6, 2, None),
        ("okta", 4, 2, None),
        ("aws", 3, 0, None),
    ]
    assert again == outcomes, "a second collection replaces the first"

    # paging and throttling: every page read, each fault answered once and retried
    users_calls = [status for _, path, status, _ in gstate.requests if path == "/v1.0/users"]
    assert users_calls.count(200) == 6 and users_calls.count(429) == 1, "3 pages of 2 users, twice"
    report = "/v1.0/reports/authenticationMethods/userRegistrationDetails"
    assert 429 in [status for _, path, status, _ in gstate.requests if path == report], "the reports throttle"
    assert gstate.faults.pending == [] and ostate.faults.pending == [] and aws_faults.pending == []
    okta_pages = [r for r in ostate.calls("GET") if r.path == "/api/v1/users" and r.status == 200]
    assert ["after=" in r.query for r in okta_pages] == [False, True, False, True]
    assert {r.status for r in ostate.calls("GET")} == {200, 429, 503}

    result = reviewing.review(await load_accounts(store), settings.access_review, utcnow())
    alice = f"entra:{entra_ids['alice']}"
    assert [(d.entity, d.account, d.idle_days, d.privileged) for d in result.dormant] == [
        ("bob@contoso.com", f"entra:{entra_ids['bob']}", 200, False),
        ("deploy-bot", f"aws:arn:aws:iam::{ACCOUNT}:user/deploy-bot", None, False),
        ("erin@contoso.com", f"okta:{okta_ids['erin']}", 100, True),
        ("odd@contoso.com", f"entra:{entra_ids['odd']}", None, False),
    ]
    assert [(p.entity, p.privileges, p.mfa) for p in result.privileged_without_mfa] == [
        ("carol@contoso.com", ["Privileged Role Administrator"], False),
        ("erin@contoso.com", ["SUPER_ADMIN"], False),
        ("gina@contoso.com", ["ops-admin"], False),
    ]
    assert [(u.entity, u.kind, u.grant, u.last_used is None, u.idle_days) for u in result.unused_access] == [
        ("deploy-bot", "access_key", keys["bot_key"], True, 120),
        ("erin@contoso.com", "role", "SUPER_ADMIN", False, 100),
    ]
    assert [(c.entity, c.roles, c.held_by) for c in result.sod_conflicts] == [
        (
            "alice@contoso.com",
            ("Finance Approvers", "Payments Submitters"),
            {"Finance Approvers": [alice], "Payments Submitters": [f"okta:{okta_ids['alice']}"]},
        )
    ]
    assert result.warnings == {
        f"entra:{entra_ids['odd']}": [
            "accountEnabled: not a boolean ('yes'); taken as enabled",
            "signInActivity.lastSignInDateTime: unreadable time 'last tuesday'",
        ],
        f"okta:{okta_ids['hal']}": ["profile.login: missing", "lastLogin: unreadable time 'yesterday'"],
    }
    stricter = reviewing.review(await load_accounts(store), settings.access_review, utcnow(), dormant_days=150)
    assert [d.entity for d in stricter.dormant] == ["bob@contoso.com", "odd@contoso.com"], "deploy-bot is 120 days old"

    # one entity per person across sources; the service account is its own kind; other attributes untouched
    async with store.transaction() as tx:
        rows = {row["id"]: row for row in (await tx.conn.execute(sa.select(entities))).mappings()}
        accounts = (await tx.conn.execute(sa.select(sa.func.count()).select_from(identity_accounts))).scalar_one()
        grants = (await tx.conn.execute(sa.select(sa.func.count()).select_from(identity_grants))).scalar_one()
    assert accounts == 13 and grants > 0
    assert rows["alice@contoso.com"]["attributes"]["inventory"]["providers"] == ["aws_iam", "entra", "okta"]
    assert rows["alice@contoso.com"]["attributes"]["inventory"]["privileged"] is True
    assert len(rows["alice@contoso.com"]["attributes"]["inventory"]["accounts"]) == 3
    assert rows["gina@contoso.com"]["kind"] == "person"
    assert rows["deploy-bot"]["kind"] == "service"
    assert rows["hal@contoso.com"]["attributes"]["inventory"]["providers"] == ["okta"]
    assert keys["alice_key"] not in {u.grant for u in result.unused_access}, "a key used now is in use"


async def test_a_failing_source_keeps_its_previous_inventory(
    org: tuple[okta.OktaState, str], store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = org
    monkeypatch.setenv("TEST_OKTA_TOKEN", OKTA_TOKEN)
    state.add_user("ann@contoso.com")
    state.add_group("Finance Approvers", ["ann@contoso.com"])
    settings = Settings(database=store.settings, access_review=SOD)
    kept = Snapshot("down", "okta", utcnow(), [Account("okta", "00u1", "ANN@contoso.com", "Ann", None, "ACTIVE", True)])
    kept.accounts[0].grants.append(Grant("group", "Payments Submitters"))
    await save(store, [kept], settings)
    token = {"token": "env:TEST_OKTA_TOKEN"}
    settings.connectors = {
        "down": ConnectorSettings(
            kind="okta",
            credentials=token,
            options={"base_url": "http://127.0.0.1:9", "retry": {"attempts": 2, "backoff": 0.01}},
        ),
        "up": ConnectorSettings(kind="okta", credentials=token, options={"base_url": url}),
    }
    async with aiohttp.ClientSession() as http:
        outcomes = await collect_configured(settings, store, http)
    assert [(o.connector, o.accounts, o.error is None) for o in outcomes] == [("down", 0, False), ("up", 1, True)]
    assert outcomes[0].error is not None and "GET" in outcomes[0].error
    stored = await load_accounts(store)
    assert sorted((a.connector, a.entity) for a in stored) == [
        ("down", "ann@contoso.com"),
        ("up", "ann@contoso.com"),
    ]
    conflicts = reviewing.review(stored, settings.access_review, utcnow()).sod_conflicts
    up = next(a for a in stored if a.connector == "up")
    assert [(c.entity, c.held_by) for c in conflicts] == [
        ("ann@contoso.com", {"Finance Approvers": [f"up:{up.native_id}"], "Payments Submitters": ["down:00u1"]})
    ]


def test_access_review_cli_prints_json_and_tables(tmp_path: Path) -> None:
    database = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    config = tmp_path / "custodes.yaml"
    config.write_text(
        f"database: {{url: '{database.url}'}}\n"
        "access_review: {dormant_days: 30, privileged_roles: [Finance Approvers]}\n"
    )
    seen = utcnow() - timedelta(days=45)
    account = Account("entra", "e1", "ann@contoso.com", "Ann", None, "enabled", True, last_sign_in=seen, mfa=False)
    account.grants.append(Grant("group", "Finance Approvers"))

    async def seed() -> None:
        store = await Store.open(database)
        try:
            await save(store, [Snapshot("entra", "entra", utcnow(), [account])], Settings(database=database))
        finally:
            await store.close()

    asyncio.run(seed())
    runner = CliRunner()
    answer = runner.invoke(app, ["access", "review", "-c", str(config), "--json", "--unused-days", "40"])
    assert answer.exit_code == 0, answer.output
    data: dict[str, Any] = json.loads(answer.stdout)
    assert [(d["entity"], d["idle_days"], d["privileged"]) for d in data["dormant"]] == [("ann@contoso.com", 45, True)]
    assert [(p["entity"], p["privileges"]) for p in data["privileged_without_mfa"]] == [
        ("ann@contoso.com", ["Finance Approvers"])
    ]
    assert [(u["kind"], u["grant"], u["idle_days"]) for u in data["unused_access"]] == [
        ("group", "Finance Approvers", 45)
    ]
    assert data["unused_days"] == 40 and data["dormant_days"] == 30
    table = runner.invoke(app, ["access", "review", "-c", str(config), "--dormant-days", "60"])
    assert table.exit_code == 0, table.output
    assert "Privileged accounts without MFA" in table.stdout and "ann@contoso.com" in table.stdout
    assert "Dormant accounts (no sign-in for 60 days)" in table.stdout

    async def audited() -> list[dict[str, Any]]:
        store = await Store.open(database)
        try:
            async with store.transaction() as tx:
                return [entry.details for entry in await tx.audit_entries() if entry.action == "access.review"]
        finally:
            await store.close()

    # each review run by hand is audited with its counts: the evidence of reviews done (docs/compliance.md)
    counts = {"privileged_without_mfa": 1, "sod_conflicts": 0, "accounts": 1}
    assert asyncio.run(audited()) == [
        {"dormant": 1, "unused_access": 1, **counts},
        {"dormant": 0, "unused_access": 0, **counts},
    ]
