"""Real vendor record shapes (Panther's rule tests, `p_*` keys stripped) through the connectors and simulators:
every record is stored untouched, once per vendor id, and unreadable parts become warnings."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson
import pytest

from conftest import OKTA_TOKEN, SHARED
from connector_support import services, stored_raw
from custodes.config import Secret
from custodes.connectors.envelope import FieldError, strict_fields, to_event
from custodes.connectors.github import DEFAULT_SOURCE as GITHUB_SOURCE
from custodes.connectors.github import GitHubAuditLog, GitHubOptions
from custodes.connectors.google import DEFAULT_SOURCE as GOOGLE_SOURCE
from custodes.connectors.google import GoogleWorkspaceActivities, GoogleWorkspaceOptions
from custodes.connectors.okta import OktaLogOptions, OktaSystemLog
from custodes.connectors.runtime import ConnectorRuntime
from custodes.sandbox import github, google, okta
from custodes.sandbox.server import running
from custodes.services import Services
from custodes.sources import SourceSettings

__all__ = ["services"]

DATASETS = SHARED / "datasets" / "panther-rule-tests"


def records(name: str) -> list[dict[str, Any]]:
    lines = (DATASETS / f"{name}.ndjson").read_bytes().splitlines()
    logs = [orjson.loads(line)["log"] for line in lines if line.strip()]
    return [{k: v for k, v in log.items() if not k.startswith("p_")} for log in logs]


def canonical(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def expected_ids(found: list[dict[str, Any]], settings: SourceSettings, source: str) -> set[str]:
    return {to_event(record, settings, source).id for record in found}


async def check(services: Services, source: str, seeded: list[dict[str, Any]], ids: set[str]) -> None:
    stored = await stored_raw(services, source)
    assert len(stored) == len(ids), "one stored event per vendor id"
    seeded_forms = {canonical(record) for record in seeded}
    assert all(canonical(record) in seeded_forms for record in stored), "raw records are stored untouched"


async def test_okta_system_log_shapes(services: Services) -> None:
    seeded = records("okta")
    state = okta.OktaState(token=OKTA_TOKEN)
    for n, record in enumerate(seeded):
        state.add_log_record(record, published=time.time() - 600 + n)
    settings = SourceSettings(format="okta")
    async with running(okta.create_app(state)) as url, aiohttp.ClientSession() as http:
        options = OktaLogOptions(base_url=url, page_size=25)
        source = OktaSystemLog("okta", "okta", settings, http, token=Secret(OKTA_TOKEN, "env:T"), options=options)
        report = await ConnectorRuntime(services.pipeline).poll(source)
    await check(services, "okta", seeded, expected_ids(seeded, settings, "okta"))
    assert report.received == len(expected_ids(seeded, settings, "okta"))


async def test_github_audit_log_shapes(services: Services) -> None:
    seeded = records("github")
    state = github.GitHubState()
    for n, record in enumerate(seeded):
        state.add(record, int((time.time() - 900 + n) * 1000))
    async with running(github.create_app(state)) as url, aiohttp.ClientSession() as http:
        options = GitHubOptions(org=state.org, base_url=url, page_size=50)
        log = GitHubAuditLog("gh", "github", GITHUB_SOURCE, http, token=Secret(state.token, "env:T"), options=options)
        await ConnectorRuntime(services.pipeline).poll(log)
    await check(services, "github", seeded, expected_ids(seeded, GITHUB_SOURCE, "github"))


async def test_google_workspace_activity_shapes(services: Services) -> None:
    seeded = records("gsuite")
    state = google.GoogleState()
    for n, record in enumerate(seeded):
        state.add("admin", record, time.time() - 900 + n)
    async with running(google.create_app(state)) as url, aiohttp.ClientSession() as http:
        options = GoogleWorkspaceOptions(base_url=url, page_size=40, applications=["admin"])
        token = Secret(state.token, "env:T")
        reports = GoogleWorkspaceActivities(
            "gws/admin", "google_workspace", GOOGLE_SOURCE, http, application="admin", token=token, options=options
        )
        await ConnectorRuntime(services.pipeline).poll(reports)
    await check(services, "google_workspace", seeded, expected_ids(seeded, GOOGLE_SOURCE, "google_workspace"))


def test_entra_and_microsoft_shapes_map_without_losing_anything() -> None:
    formats = {"azure_signin": None, "microsoft_graph": "m365"}
    for name, fixed in formats.items():
        for record in records(name):
            category = str(record.get("category", ""))
            chosen = fixed or ("entra_signin_diagnostic" if "SignIn" in category else "entra_audit_diagnostic")
            event = to_event(record, SourceSettings(format=chosen), name)  # type: ignore[arg-type]
            assert event.raw is record
            assert event.time.tzinfo is not None
            assert event.actor is not None or event.warnings or record.get("properties") is not None


def test_an_overlong_name_is_found_where_the_record_holds_it() -> None:
    """Identifiers built from a record's strings name the string they came from, whether it holds them (an
    address in ``host:port``) or they hold it (a Google Workspace service named after its application)."""
    application = "a" * 80
    record = {"id": {"applicationName": application, "time": "2026-11-19T02:00:00Z", "uniqueQualifier": "1"}}
    event = to_event(record, GOOGLE_SOURCE, "google_workspace")
    assert event.logsource == GOOGLE_SOURCE.logsource and event.raw["id"]["applicationName"] == application
    assert event.warnings == [
        "id.applicationName: 97 characters, more than the 64 an event's service may have; service dropped"
    ]
    teleport = {"uid": "t-1", "time": "2026-11-19T02:00:00Z", "event": "session.start", "addr": {}}
    teleport["addr"] = {"remote": "9" * 70 + ":3022"}
    with strict_fields(), pytest.raises(FieldError) as refused:
        to_event(teleport, SourceSettings(format="teleport"), "teleport")
    assert refused.value.field == "addr.remote"
