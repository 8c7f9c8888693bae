"""Sigma correlation rules: sliding windows in event time, firing, bounds, persistence and pipeline wiring."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from custodes.config import DatabaseSettings, DetectionSettings, PlaybookSettings, Settings
from custodes.detections.sigma.correlation import CORRELATION_DETECTOR, Correlator
from custodes.detections.sigma.engine import SigmaEngine
from custodes.detections.sigma.loader import load_rules
from custodes.detections.sigma.ruleset import RuleSet
from custodes.model import Event, Finding, LogSource, Severity
from custodes.services import Services
from custodes.store import Store

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
OKTA = LogSource("okta", "okta")
AWS = LogSource("aws", "cloudtrail")
FAILED_LOGIN = "6f1e0e3c-1c6a-4d33-9a51-0d3c2a5f0001"
CORRELATION = "6f1e0e3c-1c6a-4d33-9a51-0d3c2a5f0002"

BASE_RULES = f"""
title: Okta failed sign-in
id: {FAILED_LOGIN}
name: failed_login
status: test
logsource: {{product: okta, service: okta}}
detection:
  selection: {{eventType: user.session.start, outcome.result: FAILURE}}
  condition: selection
level: low
---
title: Okta MFA reset
id: 6f1e0e3c-1c6a-4d33-9a51-0d3c2a5f0003
name: mfa_reset
status: test
logsource: {{product: okta, service: okta}}
detection:
  selection: {{eventType: user.mfa.factor.reset_all}}
  condition: selection
---
title: AWS access key created
id: 6f1e0e3c-1c6a-4d33-9a51-0d3c2a5f0004
name: key_created
status: test
logsource: {{product: aws, service: cloudtrail}}
detection:
  selection: {{eventName: CreateAccessKey}}
  condition: selection
---
title: AWS object downloaded
id: 6f1e0e3c-1c6a-4d33-9a51-0d3c2a5f0005
name: object_download
status: test
logsource: {{product: aws, service: cloudtrail}}
detection:
  selection: {{eventName: GetObject}}
  condition: selection
"""


def correlation(body: str, *, level: str = "high", extra: str = "") -> str:
    return f"""
---
title: The correlation
id: {CORRELATION}
status: test
level: {level}
{extra}correlation:
{body}"""


def load(tmp_path: Path, text: str) -> RuleSet:
    path = tmp_path / "rules.yml"
    path.write_text(BASE_RULES + text, encoding="utf-8")
    ruleset = load_rules([path])
    assert not ruleset.rejections, [str(r) for r in ruleset.rejections]
    return ruleset


class Harness:
    """Match events with the base rules and feed the correlator, as the pipeline does."""

    def __init__(self, ruleset: RuleSet, **limits: int) -> None:
        self.engine = SigmaEngine(ruleset)
        self.correlator = Correlator([ruleset], **limits)
        self.correlator.loaded = True  # no store in these tests
        self.ids = itertools.count()

    def feed(self, events: Sequence[Event]) -> list[Finding]:
        found: list[Finding] = []
        for event in events:
            found += self.correlator.feed(event, self.engine.match(event))
        return found + self.correlator.flush()

    def stats(self) -> Any:
        return self.correlator.stats()[CORRELATION]


_ids = itertools.count()


def okta(seconds: float, user: str = "alice", kind: str = "failed", ip: str = "10.0.0.1") -> Event:
    event_type = {"failed": "user.session.start", "mfa": "user.mfa.factor.reset_all", "other": "app.x"}[kind]
    raw = {
        "eventType": event_type,
        "outcome": {"result": "FAILURE"},
        "actor": {"alternateId": user},
        "client": {"ipAddress": ip},
    }
    return Event(f"o{next(_ids)}", T0 + timedelta(seconds=seconds), "okta", OKTA, raw, actor=user)


def aws(seconds: float, user: str = "alice", name: str = "CreateAccessKey", size: int = 0) -> Event:
    raw = {"eventName": name, "userIdentity": {"userName": user}, "additionalEventData": {"bytes": size}}
    return Event(f"a{next(_ids)}", T0 + timedelta(seconds=seconds), "cloudtrail", AWS, raw, actor=user)


EVENT_COUNT = """  type: event_count
  rules: failed_login
  group-by: [actor.alternateId]
  timespan: 10m
  condition: {gte: 5}
"""


def test_event_count_fires_on_the_event_that_fills_a_window(tmp_path: Path) -> None:
    ruleset = load(tmp_path, correlation(EVENT_COUNT))
    harness = Harness(ruleset)
    events = [okta(i * 60) for i in range(5)]
    assert harness.feed(events[:4]) == []
    (finding,) = harness.feed(events[4:])
    assert finding.detector == CORRELATION_DETECTOR
    assert finding.rule_id == CORRELATION
    assert finding.severity is Severity.HIGH
    assert finding.entity == "alice"
    assert finding.event_ids == [event.id for event in events]
    assert finding.count == 5
    assert (finding.first_seen, finding.last_seen) == (events[0].time, events[4].time)
    assert "actor.alternateId=alice" in (finding.description or "")
    assert ruleset.silent == {FAILED_LOGIN}  # generate defaults to false


def test_window_includes_both_ends_and_nothing_beyond(tmp_path: Path) -> None:
    ruleset = load(tmp_path, correlation(EVENT_COUNT))
    exactly = Harness(ruleset).feed([okta(s) for s in (0, 150, 300, 450, 600)])
    assert len(exactly) == 1
    beyond = Harness(ruleset).feed([okta(s) for s in (0, 150, 300, 450, 601)])
    assert beyond == []


def test_out_of_order_events_are_placed_in_event_time(tmp_path: Path) -> None:
    ruleset = load(tmp_path, correlation(EVENT_COUNT))
    harness = Harness(ruleset)
    # Arrival order differs from event time; the window [0, 600] holds five events once the late one arrives.
    assert harness.feed([okta(s) for s in (0, 400, 590)]) == []
    assert harness.feed([okta(200)]) == []
    (finding,) = harness.feed([okta(300)])
    assert finding.first_seen == T0 and finding.last_seen == T0 + timedelta(seconds=590)
    assert finding.count == 5


def test_events_older_than_a_timespan_behind_the_clock_are_late(tmp_path: Path) -> None:
    ruleset = load(tmp_path, correlation(EVENT_COUNT))
    harness = Harness(ruleset)
    assert harness.feed([okta(3600)] + [okta(s) for s in (0, 60, 120, 180, 240)]) == []
    assert harness.stats().late == 5
    # Events of the correlation's log source advance its clock even when they match no base rule.
    harness = Harness(ruleset)
    assert harness.feed([okta(3600, kind="other"), okta(0)]) == []
    assert harness.stats().late == 1


def test_groups_are_isolated(tmp_path: Path) -> None:
    ruleset = load(tmp_path, correlation(EVENT_COUNT))
    harness = Harness(ruleset)
    mixed = [okta(i * 10, user) for i in range(4) for user in ("alice", "bob")]
    assert harness.feed(mixed) == []
    (finding,) = harness.feed([okta(100, "bob")])
    assert finding.entity == "bob"
    assert len(finding.event_ids) == 5
    assert harness.stats().events == 4  # bob's events were dropped by the firing
    missing = okta(110, "carol")
    del missing.raw["actor"]
    assert harness.feed([missing] * 5) == []  # no group-by value: not counted


def test_fires_once_per_window_then_resets(tmp_path: Path) -> None:
    ruleset = load(tmp_path, correlation(EVENT_COUNT))
    harness = Harness(ruleset)
    first = harness.feed([okta(i * 10) for i in range(5)])
    assert len(first) == 1
    assert harness.feed([okta(50 + i * 10) for i in range(4)]) == []
    assert harness.feed([okta(35)]) == []  # at or before the fired window's newest event: already covered
    assert harness.stats().late == 1
    second = harness.feed([okta(100)])
    assert len(second) == 1
    assert second[0].dedup_key == first[0].dedup_key  # same rule and group: the store merges them
    assert set(second[0].event_ids).isdisjoint(first[0].event_ids)


def test_value_count_counts_distinct_values(tmp_path: Path) -> None:
    body = """  type: value_count
  rules: failed_login
  group-by: [client.ipAddress]
  timespan: 1h
  condition: {gte: 3, field: actor.alternateId}
"""
    harness = Harness(load(tmp_path, correlation(body)))
    assert harness.feed([okta(i, user) for i, user in enumerate(["a", "b", "a", "b", "a"])]) == []
    assert harness.feed([okta(10, "c", ip="10.9.9.9")]) == []  # another source address
    (finding,) = harness.feed([okta(20, "c")])
    assert finding.entity is None  # several users: no single entity
    assert finding.count == 6


ALIASED = """  type: temporal
  rules: [mfa_reset, key_created]
  group-by: [user]
  aliases:
    user:
      mfa_reset: actor.alternateId
      key_created: userIdentity.userName
  timespan: 1h
"""


def test_temporal_with_aliases_across_sources(tmp_path: Path) -> None:
    ruleset = load(tmp_path, correlation(ALIASED))
    harness = Harness(ruleset)
    assert harness.feed([okta(0, "alice", kind="mfa"), aws(600, "bob")]) == []
    (finding,) = harness.feed([aws(1200, "alice")])
    assert finding.entity == "alice"
    assert len(finding.event_ids) == 2
    assert harness.feed([okta(4300, "bob", kind="mfa")]) == []  # bob's key is more than an hour before


def test_temporal_ordered_is_order_sensitive(tmp_path: Path) -> None:
    body = ALIASED.replace("type: temporal", "type: temporal_ordered")
    ruleset = load(tmp_path, correlation(body))
    in_order = Harness(ruleset).feed([okta(0, kind="mfa"), aws(60)])
    assert len(in_order) == 1
    reversed_order = Harness(ruleset).feed([aws(0), okta(60, kind="mfa")])
    assert reversed_order == []
    # Event time, not arrival, decides the order.
    late_first = Harness(ruleset).feed([aws(60), okta(0, kind="mfa")])
    assert len(late_first) == 1


def test_temporal_boolean_condition(tmp_path: Path) -> None:
    body = """  type: temporal
  group-by: [user]
  aliases:
    user:
      mfa_reset: actor.alternateId
      key_created: userIdentity.userName
  timespan: 10m
  condition: mfa_reset and not key_created
"""
    harness = Harness(load(tmp_path, correlation(body)))
    # A condition with `not` is judged when the window has closed.
    assert harness.feed([okta(0, "alice", kind="mfa"), okta(0, "bob", kind="mfa"), aws(300, "bob")]) == []
    (finding,) = harness.feed([aws(2000, "carol")])
    assert finding.entity == "alice"


def test_value_sum_fires_immediately_and_value_avg_at_window_close(tmp_path: Path) -> None:
    body = """  type: value_sum
  rules: object_download
  group-by: [userIdentity.userName]
  timespan: 1h
  condition: {gt: 1000, field: additionalEventData.bytes}
"""
    harness = Harness(load(tmp_path, correlation(body)))
    assert harness.feed([aws(0, name="GetObject", size=600)]) == []
    assert len(harness.feed([aws(10, name="GetObject", size=401)])) == 1

    (tmp_path / "avg").mkdir()
    body = body.replace("value_sum", "value_avg").replace("gt: 1000", "gte: 500")
    harness = Harness(load(tmp_path / "avg", correlation(body)))
    assert harness.feed([aws(0, name="GetObject", size=900), aws(10, name="GetObject", size=200)]) == []
    assert harness.feed([aws(3600, name="CreateAccessKey")]) == []  # the window [0, 3600] is still open
    (finding,) = harness.feed([aws(3601, name="CreateAccessKey")])  # the clock has passed its end
    assert finding.count == 2  # the average of 900 and 200


def test_value_percentile_and_median(tmp_path: Path) -> None:
    body = """  type: value_percentile
  rules: object_download
  group-by: [userIdentity.userName]
  timespan: 10m
  condition: {gte: 50, field: additionalEventData.bytes, percentile: 95}
"""
    harness = Harness(load(tmp_path, correlation(body)))
    sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 100]
    harness.feed([aws(i, name="GetObject", size=size) for i, size in enumerate(sizes)])
    (finding,) = harness.feed([aws(2000, name="CreateAccessKey")])
    assert finding.count == 10

    (tmp_path / "median").mkdir()
    body = body.replace("value_percentile", "value_median").replace(", percentile: 95", "")
    harness = Harness(load(tmp_path / "median", correlation(body)))
    harness.feed([aws(i, name="GetObject", size=size) for i, size in enumerate(sizes)])
    assert harness.feed([aws(2000, name="CreateAccessKey")]) == []  # the median is 5.5, the 95th 59.05


def test_lt_judges_whole_bursts_at_window_close(tmp_path: Path) -> None:
    body = EVENT_COUNT.replace("gte: 5", "lt: 3")
    harness = Harness(load(tmp_path, correlation(body)))
    harness.feed([okta(0, "alice"), okta(60, "alice")])  # a burst of two
    harness.feed([okta(s, "bob") for s in (0, 60, 120, 180)])  # a burst of four: its sub-windows are not judged
    assert harness.feed([okta(500, "carol")]) == []
    found = harness.feed([okta(700, "carol", kind="other")])
    assert [finding.entity for finding in found] == ["alice"]


def test_state_is_bounded(tmp_path: Path) -> None:
    harness = Harness(load(tmp_path, correlation(EVENT_COUNT)), max_groups=2, max_events_per_group=3)
    harness.feed([okta(0, "alice"), okta(1, "bob"), okta(2, "carol")])
    stats = harness.stats()
    assert (stats.groups, stats.evicted_groups) == (2, 1)
    harness.feed([okta(3 + i, "carol") for i in range(5)])
    stats = harness.stats()
    assert stats.events == 4 and stats.evicted_events == 3
    # With at most three events kept, five can never be counted.
    assert harness.feed([okta(10 + i, "carol") for i in range(10)]) == []


async def test_state_survives_a_restart(database: DatabaseSettings, tmp_path: Path) -> None:
    ruleset = load(tmp_path, correlation(EVENT_COUNT))
    engine = SigmaEngine(ruleset)

    async def run(events: Sequence[Event]) -> list[Finding]:
        store = await Store.open(database)
        correlator = Correlator([ruleset])
        try:
            async with store.transaction() as tx:
                await correlator.ensure_loaded(tx)
                found = [f for event in events for f in correlator.feed(event, engine.match(event))]
                found += correlator.flush()
                await correlator.save(tx)
            return found
        finally:
            await store.close()

    assert await run([okta(0), okta(60), okta(120, "bob"), okta(180)]) == []
    (finding,) = await run([okta(240), okta(300)])
    assert finding.count == 5
    assert await run([okta(310)]) == []  # the reset was persisted too
    store = await Store.open(database)
    try:
        async with store.transaction() as tx:
            clocks, groups = await tx.load_correlation_state()
        assert clocks == {CORRELATION: (T0 + timedelta(seconds=310)).timestamp()}
        assert {tuple(g.state["values"]) for g in groups} == {("alice",), ("bob",)}
    finally:
        await store.close()


async def test_rows_of_removed_correlations_are_deleted(database: DatabaseSettings, tmp_path: Path) -> None:
    ruleset = load(tmp_path, correlation(EVENT_COUNT))
    store = await Store.open(database)
    try:
        correlator = Correlator([ruleset])
        async with store.transaction() as tx:
            await correlator.ensure_loaded(tx)
            correlator.feed(okta(0), SigmaEngine(ruleset).match(okta(0)))
            await correlator.save(tx)
        async with store.transaction() as tx:
            await Correlator([_other(tmp_path)]).ensure_loaded(tx)
        async with store.transaction() as tx:
            assert await tx.load_correlation_state() == ({}, [])
    finally:
        await store.close()


def _other(tmp_path: Path) -> RuleSet:
    folder = tmp_path / "other"
    folder.mkdir()
    return load(folder, correlation(EVENT_COUNT).replace(CORRELATION, "6f1e0e3c-1c6a-4d33-9a51-0d3c2a5f0099"))


async def test_pipeline_records_correlation_findings(database: DatabaseSettings, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yml").write_text(BASE_RULES + correlation(EVENT_COUNT, extra=""), encoding="utf-8")
    (tmp_path / "playbooks").mkdir()
    settings = Settings(
        database=database,
        detection=DetectionSettings(rules=[rules]),
        playbooks=PlaybookSettings(paths=[tmp_path / "playbooks"]),
    )
    async with await Services.open(settings) as services:
        first = await services.pipeline.ingest([okta(i * 10) for i in range(3)], run_playbooks=False)
        assert first.new_findings == []  # the base rule feeds the correlation only
        second = await services.pipeline.ingest([okta(30), okta(40)], run_playbooks=False)
        (finding,) = second.new_findings
        assert (finding.detector, finding.rule_id, finding.count) == (CORRELATION_DETECTOR, CORRELATION, 5)
        third = await services.pipeline.ingest([okta(50 + i) for i in range(5)], run_playbooks=False)
        assert (third.new_findings, third.merged_findings) == ([], 1)
        async with services.store.transaction() as tx:
            (stored,) = await tx.list_findings()
        assert stored.count == 10 and len(stored.event_ids) == 10


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (EVENT_COUNT.replace("rules: failed_login", "rules: nope"), "refers to unknown rule 'nope'"),
        (
            EVENT_COUNT.replace("rules: failed_login", f"rules: {CORRELATION}"),
            "correlations of correlations are not supported",
        ),
        (
            ALIASED.replace("type: temporal", "type: temporal_ordered") + "  condition: mfa_reset or key_created\n",
            "only defined for 'temporal'",
        ),
        (ALIASED.replace("      key_created: userIdentity.userName\n", ""), "alias 'user' names no field"),
    ],
)
def test_correlations_that_cannot_be_evaluated_are_rejected(tmp_path: Path, body: str, reason: str) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(BASE_RULES + correlation(body), encoding="utf-8")
    ruleset = load_rules([path])
    (rejection,) = ruleset.rejections
    assert reason in rejection.reason
    assert rejection.rule_id == CORRELATION
    assert rejection.line is not None
    assert ruleset.correlations == [] and ruleset.silent == set()


def test_correlation_referring_to_a_rejected_rule_is_rejected(tmp_path: Path) -> None:
    broken = BASE_RULES.replace("condition: selection\nlevel: low", "condition: selection and missing\nlevel: low")
    path = tmp_path / "rules.yml"
    path.write_text(broken + correlation(EVENT_COUNT), encoding="utf-8")
    reasons = {r.rule_id: r.reason for r in load_rules([path]).rejections}
    assert reasons[CORRELATION] == "refers to rule 'failed_login', which was rejected"


def test_generate_true_keeps_base_findings_and_references_work_across_files(tmp_path: Path) -> None:
    (tmp_path / "base.yml").write_text(BASE_RULES, encoding="utf-8")
    (tmp_path / "corr.yml").write_text(
        correlation(EVENT_COUNT.replace("  type:", "  generate: true\n  type:")).removeprefix("\n---\n"),
        encoding="utf-8",
    )
    ruleset = load_rules([tmp_path])
    assert not ruleset.rejections
    assert [c.rules for c in ruleset.correlations] == [(FAILED_LOGIN,)]
    assert ruleset.silent == set()


WINDOWS = LogSource("windows", "security")


def evtx_failure(seconds: float, user: str) -> Event:
    """A refused logon as evtx_dump renders it (the event nested under `Event`)."""
    raw = {
        "Event": {
            "System": {
                "Provider": {"#attributes": {"Name": "Microsoft-Windows-Security-Auditing"}},
                "EventID": 4625,
                "Channel": "Security",
                "Computer": "FILESRV01",
            },
            "EventData": {"TargetUserName": user, "LogonType": 3, "IpAddress": "10.0.0.9"},
        }
    }
    return Event(f"w{next(_ids)}", T0 + timedelta(seconds=seconds), "winsec", WINDOWS, raw, actor=user)


def test_an_evtx_export_is_matched_and_correlated_by_its_flat_fields(tmp_path: Path) -> None:
    """Windows rules name the event's fields flat (`EventID`, `Provider_Name`, `TargetUserName`): a record rendered
    as evtx JSON is matched and grouped by them, the record itself unchanged."""
    text = """
---
title: Windows logon refused
id: 6f1e0e3c-1c6a-4d33-9a51-0d3c2a5f0006
name: windows_logon_refused
status: test
logsource: {product: windows, service: security}
detection:
  selection: {EventID: 4625, Provider_Name: Microsoft-Windows-Security-Auditing}
  condition: selection
level: low""" + correlation("""  type: event_count
  rules: windows_logon_refused
  group-by: [TargetUserName]
  timespan: 10m
  condition: {gte: 5}
""")
    harness = Harness(load(tmp_path, text))
    events = [evtx_failure(n * 30, "alice") for n in range(5)] + [evtx_failure(n * 30, f"u{n}") for n in range(4)]
    assert all(harness.engine.match(event) for event in events)
    (finding,) = harness.feed(events)
    assert finding.rule_id == CORRELATION and finding.entity == "alice"
    assert "TargetUserName" not in events[0].raw
