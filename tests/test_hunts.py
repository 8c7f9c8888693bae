"""Hunts with the real clients against the simulators: CloudTrail in S3 (moto) and LookupEvents (simulator),
matched in process; Elasticsearch (Lucene) and Splunk (SPL export) pushed down; slots claimed exactly once."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from apscheduler.triggers.cron import CronTrigger

from conftest import ROOT
from custodes.config import ConnectorSettings, DatabaseSettings, Secret, Settings
from custodes.connectors import cloudtrail as ct
from custodes.errors import CustodesError
from custodes.hunts import records
from custodes.hunts.definition import load_hunts
from custodes.hunts.runner import HuntRunner
from custodes.hunts.scheduler import job_store_url, latest_slot
from custodes.sandbox import cloudtrail as ct_sim
from custodes.sandbox import elasticsearch as es_sim
from custodes.sandbox import splunk as splunk_sim
from custodes.sandbox.server import running
from custodes.services import Services

RULES = ROOT / "detections" / "rules" / "aws"
TAMPERING = "9e4a7c13-2d5b-4f6e-8a1c-7b3d9f0e2c54"
OTHER_KEY = "3c8e1f5a-7b2d-4a9e-b6c4-0d1f2e3a4b85"
ACCOUNT = "123456789123"
BUCKET = "trail-bucket"
AWS_KEYS = {"access_key_id": Secret("testing", "env:AWS_KEY"), "secret_access_key": Secret("testing", "env:AWS_SECRET")}
T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


def record(n: int, name: str, source: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "eventVersion": "1.08",
        "eventID": f"00000000-0000-0000-0000-{n:012d}",
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.9",
        "userIdentity": {"type": "IAMUser", "userName": "mallory", "arn": f"arn:aws:iam::{ACCOUNT}:user/mallory"},
        **extra,
    }


RECORDS = [
    record(1, "StopLogging", "cloudtrail.amazonaws.com", T0 + timedelta(minutes=5)),
    record(2, "DescribeTrails", "cloudtrail.amazonaws.com", T0 + timedelta(minutes=6)),
    record(3, "CreateAccessKey", "iam.amazonaws.com", T0 + timedelta(minutes=7), requestParameters={"userName": "ceo"}),
    record(
        4, "CreateAccessKey", "iam.amazonaws.com", T0 + timedelta(minutes=8), requestParameters={"userName": "mallory"}
    ),
    record(5, "DeleteTrail", "cloudtrail.amazonaws.com", T0 + timedelta(hours=2)),  # outside the window
]
WINDOW = (T0, T0 + timedelta(hours=1))


def hunt_file(folder: Path, name: str, connector: str, **extra: str) -> None:
    lines = [f"name: {name}", f"rules:\n  paths: [{RULES}]", f"source:\n  connector: {connector}", "lookback: PT1H"]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")


def settings_for(database: DatabaseSettings, tmp_path: Path, connectors: dict[str, ConnectorSettings]) -> Settings:
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    settings = Settings(database=database, connectors=connectors)
    settings.detection.rules = [RULES]
    settings.playbooks.paths = [empty]
    settings.scoring.enabled = False
    settings.hunts.paths = [tmp_path / "hunts"]
    (tmp_path / "hunts").mkdir(exist_ok=True)
    return settings


async def hunt_once(settings: Settings, name: str, **kwargs: Any) -> tuple[records.HuntRun | None, Services]:
    services = await Services.open(settings)
    runner = HuntRunner(settings, services.pipeline, load_hunts(settings.hunts.paths, settings))
    return await runner.run(name, *WINDOW, **kwargs), services


async def found_rules(services: Services) -> dict[str, list[str]]:
    async with services.store.transaction() as tx:
        findings = await tx.list_findings()
    by_rule: dict[str, list[str]] = {}
    for finding in findings:
        by_rule.setdefault(finding.rule_id, []).extend(finding.event_ids)
    return by_rule


# loading -----------------------------------------------------------------------------------------------
def test_hunt_files_report_errors_at_their_line_and_column(tmp_path: Path) -> None:
    folder = tmp_path / "hunts"
    folder.mkdir()
    (folder / "bad.yaml").write_text(
        "name: bad\nsource:\n  connector: nowhere\nschedule: '61 * * * *'\nlookback: -5\nextra: 1\n"
    )
    (folder / "unknown.yaml").write_text("name: unknown\nsource:\n  connector: nowhere\nlookback: 60\n")
    settings = Settings(connectors={"okta": ConnectorSettings(kind="okta")})
    with pytest.raises(CustodesError) as caught:
        load_hunts([folder], settings)
    text = str(caught.value)
    assert f"{folder / 'bad.yaml'}:5:11 (lookback): lookback must be positive" in text
    assert f"{folder / 'bad.yaml'}:6:1 (extra): unknown field 'extra'" in text
    assert f"{folder / 'unknown.yaml'}:3:14 (source.connector): unknown connector 'nowhere'" in text
    (folder / "bad.yaml").write_text("name: bad\nsource: {connector: okta}\nschedule: '61 * * * *'\nlookback: 60\n")
    (folder / "unknown.yaml").unlink()
    with pytest.raises(CustodesError) as caught:
        load_hunts([folder], settings)
    text = str(caught.value)
    assert "bad.yaml:1:1" in text and "invalid schedule '61 * * * *'" in text
    (folder / "bad.yaml").write_text("name: bad\nsource: {connector: okta}\nlookback: 60\n")
    with pytest.raises(CustodesError, match=r"bad.yaml:2:21 \(source.connector\): a okta connector cannot be"):
        load_hunts([folder], settings)


def test_the_shipped_hunts_load() -> None:
    loaded = load_hunts([ROOT / "hunts"], Settings())
    assert {item.hunt.name for item in loaded} == {"cloudtrail-audit-tampering", "iam-privilege-abuse"}


async def test_the_shipped_hunts_take_their_rules_from_the_rule_pack_in_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed as a package, Custodes runs in an empty folder: once their connectors are configured, the shipped
    hunts run the shipped rules (`detection.rules`), not rules from a folder relative to the working folder."""
    monkeypatch.chdir(tmp_path)
    connectors = {
        "trail-bucket": ConnectorSettings(kind="cloudtrail_s3", credentials=AWS_KEYS, options={"bucket": BUCKET}),
        "cloudtrail-api": ConnectorSettings(kind="cloudtrail_lookup", credentials=AWS_KEYS),
    }
    settings = Settings(database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"))
    settings.connectors = connectors
    settings.scoring.enabled = False
    async with await Services.open(settings) as services:
        runner = HuntRunner(settings, services.pipeline, load_hunts(settings.hunts.paths, settings))
        planned = {name: {item.rule.id for item in runner.plan(name).in_process} for name in runner.hunts}
    assert planned == {
        "cloudtrail-audit-tampering": {TAMPERING},
        "iam-privilege-abuse": {OTHER_KEY, "3b18e24c-a3f8-4e20-8cb6-57ba0a9dc352"},
    }


def test_latest_slot_is_the_last_fire_time_not_after_now() -> None:
    cron = CronTrigger.from_crontab("*/15 * * * *", timezone="UTC")
    assert latest_slot(cron, T0 + timedelta(minutes=44, seconds=59)) == T0 + timedelta(minutes=30)
    assert latest_slot(cron, T0) == T0
    yearly = CronTrigger.from_crontab("0 0 1 1 *", timezone="UTC")
    assert latest_slot(yearly, T0) == datetime(2025, 1, 1, tzinfo=UTC)
    assert job_store_url(DatabaseSettings(url="postgresql+asyncpg://u:p@h/db")) == "postgresql+psycopg://u:p@h/db"


# CloudTrail --------------------------------------------------------------------------------------------
@pytest.fixture
async def trail_bucket(moto_url: str) -> str:
    """A trail bucket holding RECORDS in two log files of their delivery days."""
    async with aiohttp.ClientSession() as session, session.post(f"{moto_url}/moto-api/reset") as answer:
        assert answer.status == 200

    def fill() -> None:
        s3 = ct.client("s3", ct.AwsOptions(endpoint_url=moto_url), {"access_key_id": "t", "secret_access_key": "t"})
        s3.create_bucket(Bucket=BUCKET)
        prefix = f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2025/03/04/{ACCOUNT}_CloudTrail_us-east-1"
        for n, part in enumerate((RECORDS[:3], RECORDS[3:])):
            body = gzip.compress(orjson.dumps({"Records": part}))
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}_20250304T10{n}0Z_f{n}.json.gz", Body=body)

    await asyncio.to_thread(fill)
    return moto_url


async def test_a_bucket_hunt_matches_the_window_in_process(
    trail_bucket: str, database: DatabaseSettings, tmp_path: Path
) -> None:
    options = {"endpoint_url": trail_bucket, "bucket": BUCKET}
    entry = ConnectorSettings(kind="cloudtrail_s3", credentials=AWS_KEYS, options=options)
    settings = settings_for(database, tmp_path, {"trail": entry})
    hunt_file(tmp_path / "hunts", "trail", "trail", schedule="'*/5 * * * *'")
    run, services = await hunt_once(settings, "trail")
    async with services:
        assert run is not None and run.status == "succeeded", run
        assert run.events_scanned == 4  # the window's records; the later DeleteTrail is outside it
        assert run.pushed_down == [] and {item["rule_id"] for item in run.in_process} >= {TAMPERING, OTHER_KEY}
        assert all("CloudTrail has no query language" in item["reason"] for item in run.in_process)
        found = await found_rules(services)
        assert set(found) == {TAMPERING, OTHER_KEY}
        assert found[OTHER_KEY] == [_ids(services)[2]]
        assert len(run.findings) == 2
        async with services.store.transaction() as tx:
            stored = await records.list_runs(tx, "trail")
        assert [item.id for item in stored] == [run.id]
        assert stored[0].window_start == WINDOW[0] and stored[0].events_scanned == 4


def _ids(services: Services) -> list[str]:
    from custodes.connectors.envelope import to_event

    source = services.settings.source("cloudtrail")
    return [to_event(item, source, "cloudtrail").id for item in RECORDS]


async def test_a_lookup_hunt_reads_lookupevents_and_claims_its_slot_once(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    state = ct_sim.CloudTrailState(rate_per_second=50)
    state.add(RECORDS)
    async with running(ct_sim.create_app(state)) as url:
        options = {"endpoint_url": url, "page_size": 2}
        entry = ConnectorSettings(kind="cloudtrail_lookup", credentials=AWS_KEYS, options=options)
        settings = settings_for(database, tmp_path, {"api": entry})
        hunt_file(tmp_path / "hunts", "api", "api", schedule="'0 * * * *'")
        slot = WINDOW[1]
        services = await Services.open(settings)
        async with services:
            hunts = load_hunts(settings.hunts.paths, settings)
            first = HuntRunner(settings, services.pipeline, hunts, worker="a")
            second = HuntRunner(settings, services.pipeline, hunts, worker="b")
            results = await asyncio.gather(first.run("api", *WINDOW, slot=slot), second.run("api", *WINDOW, slot=slot))
            done = [result for result in results if result is not None]
            assert len(done) == 1 and done[0].trigger == "schedule" and done[0].events_scanned == 4
            assert set(await found_rules(services)) == {TAMPERING, OTHER_KEY}
            assert await first.run("api", *WINDOW, slot=slot) is None  # recorded: not read again
            async with services.store.transaction() as tx:
                stored = await records.list_runs(tx, "api")
            assert [(item.slot, item.worker) for item in stored] == [(slot, done[0].worker)]
            assert sum(1 for request in state.requests if request) >= 2  # paged through the simulator


# SIEM push-down ----------------------------------------------------------------------------------------
@pytest.fixture
async def elastic() -> AsyncIterator[tuple[es_sim.ElasticsearchState, str]]:
    state = es_sim.ElasticsearchState()
    for item in RECORDS:
        state.index("cloudtrail-2025.03", item["eventID"], {**item, "@timestamp": item["eventTime"]})
    async with running(es_sim.create_app(state)) as url:
        yield state, url


async def elastic_hunt(
    url: str, database: DatabaseSettings, tmp_path: Path, **options: Any
) -> tuple[records.HuntRun | None, Services]:
    """Run the hunt `es` once over the Elasticsearch simulator's CloudTrail index."""
    options = {"hosts": [url], "index": "cloudtrail-*", "page_size": 2, **options}
    entry = ConnectorSettings(kind="elasticsearch", source="cloudtrail", options=options)
    settings = settings_for(database, tmp_path, {"es": entry})
    hunt_file(tmp_path / "hunts", "es", "es")
    return await hunt_once(settings, "es")


async def test_an_elasticsearch_hunt_pushes_exact_rules_down_as_lucene(
    elastic: tuple[es_sim.ElasticsearchState, str], database: DatabaseSettings, tmp_path: Path
) -> None:
    run, services = await elastic_hunt(elastic[1], database, tmp_path)
    async with services:
        assert run is not None and run.status == "succeeded", run
        pushed = {item["rule_id"]: item["query"] for item in run.pushed_down}
        assert TAMPERING in pushed and "StopLogging" in pushed[TAMPERING]
        in_process = {item["rule_id"]: item["reason"] for item in run.in_process}
        assert OTHER_KEY in in_process and "field reference" in in_process[OTHER_KEY].lower()
        assert set(await found_rules(services)) == {TAMPERING, OTHER_KEY}
        # the SIEM answered the pushed queries with the one StopLogging record; in process read the window's 4
        assert run.events_scanned == 1 + 4


async def test_an_esql_connector_hunt_matches_every_rule_in_process(
    elastic: tuple[es_sim.ElasticsearchState, str], database: DatabaseSettings, tmp_path: Path
) -> None:
    run, services = await elastic_hunt(elastic[1], database, tmp_path, esql="FROM cloudtrail-*")
    async with services:
        assert run is not None and run.status == "succeeded", run
        assert run.pushed_down == [] and all("ES|QL" in item["reason"] for item in run.in_process)
        assert set(await found_rules(services)) == {TAMPERING, OTHER_KEY}


async def test_an_elasticsearch_hunt_matches_rules_reading_enrichment_in_process(
    elastic: tuple[es_sim.ElasticsearchState, str], database: DatabaseSettings, tmp_path: Path
) -> None:
    """`custodes.off_hours` exists only in process: pushed down, the SIEM would silently find nothing."""
    rules = tmp_path / "rules"
    rules.mkdir()
    rule_id = "7d1c2b3a-0000-4000-8000-0000000000e1"
    (rules / "in_hours.yml").write_text(
        f"title: Trail stopped in working hours\nid: {rule_id}\nlogsource: {{product: aws, service: cloudtrail}}\n"
        "detection:\n  selection:\n    eventName: StopLogging\n    custodes.off_hours: false\n"
        "  condition: selection\nlevel: high\n"
    )
    options = {"hosts": [elastic[1]], "index": "cloudtrail-*"}
    entry = ConnectorSettings(kind="elasticsearch", source="cloudtrail", options=options)
    settings = settings_for(database, tmp_path, {"es": entry})
    (tmp_path / "hunts" / "es.yaml").write_text(
        f"name: es\nrules:\n  paths: [{rules}]\nsource: {{connector: es}}\nlookback: PT1H\n"
    )
    run, services = await hunt_once(settings, "es")
    async with services:
        assert run is not None and run.status == "succeeded", run
        assert run.pushed_down == []
        assert [item["rule_id"] for item in run.in_process] == [rule_id]
        assert "custodes.off_hours" in run.in_process[0]["reason"]
        found = await found_rules(services)
        assert list(found) == [rule_id] and len(found[rule_id]) == 1  # StopLogging at 10:05 UTC on a Tuesday


@pytest.fixture
async def splunk() -> AsyncIterator[tuple[splunk_sim.SplunkState, str]]:
    state = splunk_sim.SplunkState()
    for item in RECORDS:
        at = datetime.fromisoformat(item["eventTime"])
        state.index(
            at, orjson.dumps(item).decode(), index="aws", eventSource=item["eventSource"], eventName=item["eventName"]
        )
    async with running(splunk_sim.create_app(state)) as url:
        yield state, url


async def test_a_splunk_hunt_pushes_exact_rules_down_as_an_export_search(
    splunk: tuple[splunk_sim.SplunkState, str], database: DatabaseSettings, tmp_path: Path
) -> None:
    state, url = splunk
    host, port = url.removeprefix("http://").split(":")
    options = {"host": host, "port": int(port), "scheme": "http", "search": "search index=aws", "verify": False}
    credentials = {"username": Secret(state.username, "env:U"), "password": Secret(state.password, "env:P")}
    entry = ConnectorSettings(kind="splunk", source="cloudtrail", credentials=credentials, options=options)
    settings = settings_for(database, tmp_path, {"splunk": entry})
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "stop.yml").write_text(
        "title: Trail stopped\nid: 7d1c2b3a-0000-4000-8000-000000000001\n"
        "logsource: {product: aws, service: cloudtrail}\n"
        "detection:\n  selection:\n    eventSource: cloudtrail.amazonaws.com\n    eventName: StopLogging\n"
        "  condition: selection\nlevel: high\n"
    )
    (tmp_path / "hunts" / "spl.yaml").write_text(
        f"name: spl\nrules:\n  paths: [{tmp_path / 'rules'}]\nsource: {{connector: splunk}}\nlookback: PT1H\n"
    )
    run, services = await hunt_once(settings, "spl")
    async with services:
        assert run is not None and run.status == "succeeded", run
        assert [item["rule_id"] for item in run.pushed_down] == ["7d1c2b3a-0000-4000-8000-000000000001"]
        assert run.in_process == [] and run.events_scanned == 1
        searches = [form.get("search", "") for _method, path, form in state.requests if path.endswith("/export")]
        assert searches and all(
            "StopLogging" in search and search.startswith("search index=aws ") for search in searches
        )
        assert set(await found_rules(services)) == {"7d1c2b3a-0000-4000-8000-000000000001"}
