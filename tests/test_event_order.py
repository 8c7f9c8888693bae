"""Event time whatever the arrival order: a replay shuffled, or source by source, scores as a time-ordered run."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from custodes.config import DatabaseSettings, Settings
from custodes.connectors.envelope import to_event
from custodes.connectors.files import FileConnector, iter_records
from custodes.detections.scoring.simulate import SCENARIOS, SimulationSettings, simulate
from custodes.model import Event
from custodes.services import Services
from custodes.store.tables import findings, scoring_scores

FORMATS: dict[str, dict[str, Any]] = {
    "okta": {"format": "okta"},
    "cloudtrail": {"format": "cloudtrail"},
    "gworkspace": {"format": "google_workspace"},
    "entra": {"format": "generic", "fields": {"time": "createdDateTime|activityDateTime"}},
    "endpoint": {"format": "generic"},
}


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("org")
    simulate(SimulationSettings(population=40, days=18, seed=7, warmup_days=8, scenarios=SCENARIOS[:3]), out)
    return out


def settings_for(org: Path, db: Path) -> Settings:
    (db.parent / "rules").mkdir(parents=True, exist_ok=True)
    (db.parent / "playbooks").mkdir(exist_ok=True)
    key = db.parent / "pseudonym.key"
    key.write_text("9f" * 32)
    return Settings.model_validate(
        {
            "database": DatabaseSettings(url=f"sqlite+aiosqlite:///{db}").model_dump(),
            "sources": FORMATS,
            "detection": {"rules": [str(db.parent / "rules")]},
            "playbooks": {"paths": [str(db.parent / "playbooks")]},
            "scoring": {
                "directory": str(org / "directory.json"),
                "warmup_days": 5,
                "threshold": 40,
                "pseudonym_key": f"file:{key}",
            },
        }
    )


Outcome = tuple[dict[tuple[str, str], float], set[tuple[str, str, str]], set[tuple[str, str]]]


async def outcome(services: Services) -> Outcome:
    """Risk per person-day, the scoring findings (rule, entity, day) a run stored, and the person-days a finding
    is owed for: risk at the threshold with points of the day's own, the person past their own warm-up."""
    settings = services.settings.scoring
    table = scoring_scores
    async with services.store.transaction() as tx:
        rows = list(await tx.conn.execute(sa.select(table.c.entity, table.c.day, table.c.risk, table.c.detail)))
        risks = {(r.entity, str(r.day)): round(r.risk, 6) for r in rows}
        owed = {
            (r.entity, str(r.day))
            for r in rows
            if r.risk >= settings.threshold
            and r.detail["points"] > 0
            and min(c["history_days"] for c in r.detail["contributions"]) >= settings.warmup_days
        }
        query = sa.select(findings.c.rule_id, findings.c.entity, findings.c.first_seen)
        found = {
            (r.rule_id, r.entity, str(r.first_seen)[:10])
            for r in await tx.conn.execute(query.where(findings.c.detector == "scoring"))
        }
    return risks, found, owed


def events_of(org: Path, settings: Settings) -> list[Event]:
    return [
        to_event(record, settings.source(source), source)
        for source in FORMATS
        for _, record, _ in iter_records(org / f"{source}.ndjson")
    ]


async def time_ordered(org: Path, db: Path) -> Outcome:
    """The reference: every source merged in event-time order, scored live batch by batch."""
    settings = settings_for(org, db)
    events = sorted(events_of(org, settings), key=lambda e: (e.time, e.id))
    async with await Services.open(settings) as services:
        for start in range(0, len(events), 1000):
            await services.pipeline.ingest(events[start : start + 1000])
        await services.pipeline.settle(rescore=False, close=True)
        return await outcome(services)


async def replayed(org: Path, db: Path, files: list[tuple[str, Path]]) -> Any:
    """Risks and stored scoring findings after replaying `files` one after the other, and the findings a fresh
    re-score of the store raises (what the store's events alone imply, whatever came before)."""
    settings = settings_for(org, db)
    async with await Services.open(settings) as services:
        for source, path in files:
            connector = FileConnector(f"replay:{path}", source, settings.source(source), [path])
            await services.pipeline.replay(connector, close=True)
        risks, stored, _ = await outcome(services)
        scoring = services.pipeline.scoring
        assert scoring is not None
        await scoring.rescore(services.store)
        implied = {(f.rule_id, f.entity, str(f.first_seen)[:10]) for f in scoring.engine.take_findings()}
        return risks, stored, implied


async def test_shuffled_and_source_by_source_replays_score_as_a_time_ordered_run(org: Path, tmp_path: Path) -> None:
    risks, found, owed = await time_ordered(org, tmp_path / "a" / "store.db")
    assert len(risks) > 300 and any(risk >= 40 for risk in risks.values()) and found
    rng = random.Random(3)
    shuffled: list[tuple[str, Path]] = []
    (tmp_path / "shuffled").mkdir()
    for source in FORMATS:
        lines = (org / f"{source}.ndjson").read_bytes().splitlines()
        rng.shuffle(lines)
        path = tmp_path / "shuffled" / f"{source}.ndjson"
        path.write_bytes(b"\n".join(lines) + b"\n")
        shuffled.append((source, path))
    rng.shuffle(shuffled)
    shuffled_risks, shuffled_found, shuffled_implied = await replayed(org, tmp_path / "b" / "store.db", shuffled)
    assert shuffled_risks == risks
    by_source = [(source, org / f"{source}.ndjson") for source in reversed(FORMATS)]
    by_source_risks, by_source_found, by_source_implied = await replayed(org, tmp_path / "c" / "store.db", by_source)
    assert by_source_risks == risks
    assert shuffled_implied == by_source_implied and shuffled_implied <= shuffled_found
    assert by_source_implied <= by_source_found
    # every day a finding is owed for (its final risk crosses the threshold with points of its own, the person past
    # their own warm-up) was flagged in both runs (a finding the same day or, within the cooldown, earlier);
    # mid-day (provisional) findings can differ with what had arrived at the time
    assert owed
    for run in (found, shuffled_found):
        flagged = {(entity, day) for _, entity, day in run}
        for entity, day in owed:
            assert any(e == entity and d <= day for e, d in flagged), (entity, day)


async def test_replay_closes_the_last_date_and_a_late_source_is_counted(org: Path, tmp_path: Path) -> None:
    settings = settings_for(org, tmp_path / "store.db")
    async with await Services.open(settings) as services:
        scoring = services.pipeline.scoring
        assert scoring is not None
        connector = FileConnector("r1", "okta", settings.source("okta"), [org / "okta.ndjson"])
        await services.pipeline.replay(connector, close=True)
        last = max(e.time for e in events_of(org, settings) if e.source == "okta")
        closed = scoring.engine.closed_through
        assert closed is not None and closed >= last.date().toordinal() - 1  # the last local date
        async with services.store.transaction() as tx:
            days = {r.day for r in await tx.conn.execute(sa.select(scoring_scores.c.day))}
        assert max(days).toordinal() >= last.date().toordinal() - 1
        # a live batch of endpoint events for dates already closed: counted late for its source, then re-scored
        endpoint = [e for e in events_of(org, settings) if e.source == "endpoint"][:500]
        await services.pipeline.ingest(endpoint)
        assert scoring.engine.late_by_source["endpoint"] > 0
        late = scoring.engine.late_by_source["endpoint"]
    async with await Services.open(settings) as services:
        assert services.pipeline.scoring is not None
        assert services.pipeline.scoring.engine.late_by_source["endpoint"] == late


def test_correlation_findings_are_the_same_in_any_order_within_the_lateness_bound(tmp_path: Path) -> None:
    from test_sigma_correlation import CORRELATION, EVENT_COUNT, Harness, correlation, load, okta

    ruleset = load(tmp_path, correlation(EVENT_COUNT))
    rng = random.Random(11)
    events = []
    for burst in range(40):
        user = f"user{burst % 7}"
        size = rng.choice([3, 4, 5, 6, 8])  # bursts of 5 or more within 10 minutes fire
        start = burst * 3600.0
        events += [okta(start + rng.uniform(0, 540), user=user) for _ in range(size)]
    in_order = sorted(events, key=lambda e: e.time)
    # arrival delayed by up to 5 minutes per event: out of order, never more than one timespan (10 m) behind
    arrival = sorted(events, key=lambda e: e.time.timestamp() + rng.uniform(0, 300))
    assert arrival != in_order

    def fired(order: list[Event]) -> set[tuple[str | None, str, str, int]]:
        found = Harness(ruleset).feed(order)
        return {(f.entity, f.rule_id, f.first_seen.isoformat(), len(f.event_ids)) for f in found}

    expected = fired(in_order)
    assert len(expected) >= 10 and {rule for _, rule, _, _ in expected} == {CORRELATION}
    assert fired(arrival) == expected


def test_eval_scoring_on_shuffled_files_scores_as_on_ordered_ones(org: Path, tmp_path: Path) -> None:
    from custodes.config import ScoringSettings
    from custodes.detections.scoring.evaluate import evaluate, load_labels

    labels = load_labels(org / "labels.json")
    settings = ScoringSettings(directory=org / "directory.json", warmup_days=5)
    ordered = [org / f"{source}.ndjson" for source in FORMATS]
    rng = random.Random(5)
    shuffled = []
    for path in ordered:
        lines = path.read_bytes().splitlines()
        lines.append(b'{"published": "9999-12-31T23:59:59Z", "eventType": "user.session.start"}')
        rng.shuffle(lines)
        (tmp_path / path.name).write_bytes(b"\n".join(lines) + b"\n")
        shuffled.append(tmp_path / path.name)
    a, b = evaluate(ordered, labels, settings), evaluate(shuffled, labels, settings)
    assert a.events == b.events > 10_000
    assert (a.recall, a.mean_percentile, a.percentiles) == (b.recall, b.mean_percentile, b.percentiles)
    assert (a.false_findings, a.true_findings, a.days) == (b.false_findings, b.true_findings, b.days)
