"""Custodes' own rules: all load, each carries examples that pass, and they catch real vendor records."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from custodes.config import EnrichmentSettings
from custodes.connectors.envelope import to_event
from custodes.connectors.textlogs import parse_syslog_line
from custodes.detections.scoring.identity import load_directory
from custodes.detections.sigma.engine import SigmaEngine
from custodes.detections.sigma.enrichment import EventContext
from custodes.detections.sigma.examples import read_examples, rule_files, run_examples
from custodes.detections.sigma.loader import load_rules
from custodes.detections.sigma.pipelines import pipeline_named
from custodes.model import Event, LogSource
from custodes.sources import SourceSettings

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "detections" / "rules"
PANTHER = ROOT.parent / "shared" / "datasets" / "panther-rule-tests"


def test_every_rule_loads_and_its_examples_pass() -> None:
    ruleset = load_rules([RULES])
    assert ruleset.rejections == [] and len(ruleset.rules) >= 20
    for file in rule_files([RULES]):
        found = read_examples(file)
        assert found.problems == [], file
        for rule_id in found.rule_ids:
            kinds = {example.kind for example in found.examples if example.rule_id == rule_id}
            assert kinds == {"match", "no_match"}, f"{file}: rule {rule_id} needs both kinds of examples"
        results = run_examples(found.examples, ruleset.rules, ruleset.correlations)
        assert [r.message for r in results if not r.passed] == []


@pytest.mark.parametrize(
    ("dataset", "fmt", "panther_rule", "title"),
    [
        ("gsuite", "google_workspace", "GSuite.DriveVisibilityChanged", None),
        (
            "gsuite",
            "google_workspace",
            "GSuite.ExternalMailForwarding",
            "Google Workspace Mail Forwarding to Another Domain",
        ),
    ],
)
def test_pack_rules_on_real_records(dataset: str, fmt: str, panther_rule: str, title: str | None) -> None:
    settings = SourceSettings(format=fmt)  # type: ignore[arg-type]
    engine = SigmaEngine(load_rules([RULES], pipeline=pipeline_named(fmt)))
    titles: set[str] = set()
    with (PANTHER / f"{dataset}.ndjson").open(encoding="utf-8") as cases:
        for line in cases:
            case = json.loads(line)
            if case["rule_id"] == panther_rule and case["expected_result"]:
                titles.update(rule.title for rule in engine.match(to_event(case["log"], settings, dataset)))
    assert (title in titles) if title else titles == set()


def test_drive_downloads_in_the_panther_data_are_caught() -> None:
    settings = SourceSettings(format="google_workspace")
    engine = SigmaEngine(load_rules([RULES / "google_workspace"]))
    downloads = 0
    with (PANTHER / "gsuite.ndjson").open(encoding="utf-8") as cases:
        for line in cases:
            log = json.loads(line)["log"]
            hit = {rule.title for rule in engine.match(to_event(log, settings, "gws"))}
            is_download = log.get("name") == "download" and (log.get("id") or {}).get("applicationName") == "drive"
            assert ("Google Drive File Downloaded" in hit) == is_download
            downloads += is_download
    assert downloads >= 1


def _event(raw: dict[str, Any], logsource: LogSource, actor: str, time: str) -> Event:
    return Event("e1", datetime.fromisoformat(time), "src", logsource, raw, actor=actor)


def test_enrichment_reaches_only_contextual_rules_and_leaves_the_record_alone(tmp_path: Path) -> None:
    directory = tmp_path / "people.json"
    directory.write_text(
        json.dumps(
            [
                {"id": "mallory@example.com", "timezone": "America/New_York", "notice_date": "2026-11-10"},
                {"id": "alice@example.com", "timezone": "Asia/Tokyo", "departure_date": "2026-12-01"},
                {"id": "bob@example.com", "watchlists": {"privileged": "2026-01-01"}},
            ]
        )
    )
    context = EventContext.create(EnrichmentSettings(), people=load_directory(directory), default_timezone="UTC")
    engine = SigmaEngine(load_rules([RULES / "m365"]), context=context)
    m365 = LogSource("m365", "audit")
    raw = {"Workload": "SharePoint", "Operation": "FileDownloaded", "UserId": "mallory@example.com"}
    # 23:30 UTC on a Friday is 18:30 in New York: after working hours; mallory gave notice.
    event = _event(raw, m365, "mallory@example.com", "2026-11-20T23:30:00+00:00")
    assert context.context(event) == {
        "person": "mallory@example.com",
        "timezone": "America/New_York",
        "local_time": "2026-11-20T18:30:00-05:00",
        "local_hour": 18,
        "local_weekday": "fri",
        "off_hours": True,
        "watchlists": ["departing", "on_notice"],
        "days_to_departure": None,
    }
    titles = {rule.title for rule in engine.match(event)}
    assert titles == {
        "SharePoint or OneDrive File Downloaded",
        "SharePoint or OneDrive File Downloaded Outside Working Hours",
        "Departing User Downloads, Shares Anonymously or Exports a Mailbox",
    }
    assert "custodes" not in event.raw
    # The same instant is 08:30 on Saturday in Tokyo (a weekend); alice leaves on 1 December.
    alice = _event({**raw, "UserId": "alice@example.com"}, m365, "alice@example.com", "2026-11-20T23:30:00+00:00")
    assert context.context(alice)["off_hours"] is True
    assert context.context(alice)["days_to_departure"] == 10
    assert "Departing User Downloads, Shares Anonymously or Exports a Mailbox" in {r.title for r in engine.match(alice)}
    # bob, in working hours (UTC by default) and only privileged: the plain download rule alone.
    bob = _event({**raw, "UserId": "bob@example.com"}, m365, "bob@example.com", "2026-11-20T10:00:00+00:00")
    assert [rule.title for rule in engine.match(bob)] == ["SharePoint or OneDrive File Downloaded"]
    assert context.context(bob)["watchlists"] == ["privileged"]
    # A record carrying `custodes` itself does not reach plain rules through it, nor is it trusted by `match`.
    forged = _event(
        {**raw, "UserId": "bob@example.com", "custodes": {"off_hours": True}}, m365, "bob", "2026-11-20T10:00:00+00:00"
    )
    assert [rule.title for rule in engine.match(forged)] == ["SharePoint or OneDrive File Downloaded"]
    rules = load_rules([RULES]).rules
    assert sum(rule.contextual for rule in rules) == 9 and len(rules) == 33


def test_a_drive_the_machine_logs_is_matched_as_its_owners(tmp_path: Path) -> None:
    """Windows logs a removable drive recognised (6416) under the machine's own account, Defender a USB drive
    mounted under SYSTEM's: the departing-user rules know whose machine it is from the directory's `hosts`; a person's
    own account is still theirs, and an account the directory does not hold is nobody's."""
    directory = tmp_path / "people.json"
    people = [
        {"id": "mallory@example.com", "hosts": ["WS-0142"], "departure_date": "2026-12-01"},
        {"id": "alice@example.com", "hosts": ["WS-0150"]},
    ]
    directory.write_text(json.dumps(people))
    context = EventContext.create(EnrichmentSettings(), people=load_directory(directory))
    engine = SigmaEngine(load_rules([RULES / "windows"]), context=context)
    windows = SourceSettings(format="windows")
    data = {"SubjectUserName": "WS-0142$", "SubjectUserSid": "S-1-5-18", "ClassName": "DiskDrive"}
    raw = {"EventID": 6416, "Channel": "Security", "Computer": "WS-0142.corp.example.com", **data}
    raw |= {"TimeGenerated": "2026-11-20T10:00:00Z"}
    event = to_event(raw, windows, "winsec")
    assert event.actor == "WS-0142$"
    assert context.context(event, raw)["person"] == "mallory@example.com"
    departing = "Departing User Connects Removable Storage"
    assert departing in {rule.title for rule in engine.match(event)}
    alices = to_event({**raw, "Computer": "WS-0150.corp.example.com", "SubjectUserName": "WS-0150$"}, windows, "w")
    assert departing not in {rule.title for rule in engine.match(alices)}
    for actor, person in (("alice", "alice@example.com"), ("eve", None), (None, "mallory@example.com")):
        assert context.context(replace(event, actor=actor), raw)["person"] == person, actor
    defender = {"ActionType": "UsbDriveMounted", "DeviceName": "ws-0142.corp.example.com"}
    mounted = _event({**defender, "InitiatingProcessAccountName": "system"}, LogSource(), "system", "2026-11-20T10:00")
    assert context.context(mounted, mounted.raw)["watchlists"] == ["departing"]
    line = "Nov 20 10:00:00 ws-0142 kernel: [ 5123.456789] sd 6:0:0:0: [sdb] Attached SCSI removable disk"
    attached = to_event(
        parse_syslog_line(line, datetime(2026, 11, 21, tzinfo=UTC))[0], SourceSettings(format="sudo"), "s"
    )
    assert attached.actor is None and context.context(attached, attached.raw)["person"] == "mallory@example.com"


def test_correlation_example_sequences_run_through_the_correlator() -> None:
    ruleset = load_rules([RULES])
    found = read_examples(RULES / "correlation" / "mass_download.yml")
    sequences = [example for example in found.examples if example.sequence is not None]
    assert {example.kind for example in sequences} == {"match", "no_match"} and len(sequences) == 8
    assert all(result.passed for result in run_examples(sequences, ruleset.rules, ruleset.correlations))
    # The same sequences with their expectation reversed fail, each with a message saying why.
    flipped = [replace(e, kind="no_match" if e.kind == "match" else "match") for e in sequences]
    results = run_examples(flipped, ruleset.rules, ruleset.correlations)
    assert not any(result.passed for result in results)
    assert "should not fire but fires 1 time(s)" in results[0].message
    # One download short of the threshold does not fire.
    first = sequences[0]
    assert first.sequence is not None
    short = replace(first, sequence=(replace(first.sequence[0], repeat=99),))
    assert not run_examples([short], ruleset.rules, ruleset.correlations)[0].passed


def test_malformed_sequences_are_reported_with_their_line(tmp_path: Path) -> None:
    rule = (RULES / "correlation" / "mass_download.yml").read_text(encoding="utf-8").split("\n---\n")[1]
    head = rule.split("custodes:\n")[0]
    bad = tmp_path / "bad.yml"
    bad.write_text(
        head
        + "custodes:\n    examples:\n        match:\n"
        + "            - {Workload: SharePoint}\n"
        + "            - sequence: [{time: yesterday, event: {a: 1}}]\n"
        + "            - sequence: [{time: '2026-11-21T22:00:00Z', event: {a: 1}, repeat: 0}]\n",
        encoding="utf-8",
    )
    problems = [str(problem) for problem in read_examples(bad).problems]
    assert len(problems) == 3
    assert "must be a mapping {sequence: [steps]}" in problems[0]
    assert "'time' must be an ISO 8601 time" in problems[1]
    assert "'repeat' must be a whole number" in problems[2]
