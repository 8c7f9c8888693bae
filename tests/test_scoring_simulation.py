"""The organisation simulator and `custodes eval scoring`: vendor-format output, labels, and insiders caught."""

from __future__ import annotations

import csv
import errno
import io
import random
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from typer.testing import CliRunner

from custodes.cli import app
from custodes.config import ScoringSettings
from custodes.connectors.envelope import to_event
from custodes.connectors.files import iter_records
from custodes.detections.scoring import timesort
from custodes.detections.scoring.evaluate import PROGRESS_EVENTS, Repeats, evaluate, load_labels, most_catchable
from custodes.detections.scoring.simulate import (
    DEVICE_SCENARIOS,
    SCENARIOS,
    Simulation,
    SimulationSettings,
    simulate,
)
from custodes.errors import CustodesError
from custodes.model import Event, LogSource
from custodes.sources import SourceSettings
from elastic_shapes import elastic_cloudtrail, elastic_entra, elastic_okta, elastic_workspace
from sentinel_shapes import aws_cloudtrail, sentinel_audit

runner = CliRunner()


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("org")
    simulate(SimulationSettings(population=100, days=30, seed=23, warmup_days=20, scenarios=SCENARIOS[:5]), out)
    return out


def test_simulation_writes_vendor_records_the_file_connector_reads(org: Path) -> None:
    okta = [to_event(r, SourceSettings(format="okta"), "okta") for _, r, _ in iter_records(org / "okta.ndjson")]
    assert okta and all(e.actor and e.actor.endswith("@corp.example") and not e.warnings for e in okta)
    trail = [
        to_event(r, SourceSettings(format="cloudtrail"), "ct") for _, r, _ in iter_records(org / "cloudtrail.ndjson")
    ]
    assert trail and all(e.action and e.actor for e in trail)
    ecs = [to_event(r, SourceSettings(format="generic"), "ep") for _, r, _ in iter_records(org / "endpoint.ndjson")]
    assert {e.action for e in ecs} >= {"usb-device-connected", "removable-media-write", "logged-in", "send"}
    entra = [r for _, r, _ in iter_records(org / "entra.ndjson")]
    assert all("userPrincipalName" in r or "activityDisplayName" in r for r in entra)
    drive = [r for _, r, _ in iter_records(org / "gworkspace.ndjson")]
    assert drive and all(r["id"]["applicationName"] == "drive" for r in drive)
    times = [e.time for e in okta]
    assert times == sorted(times)
    people = orjson.loads((org / "directory.json").read_bytes())
    assert len(people) == 100 and {"department", "title", "timezone", "aliases", "hosts"} <= set(people[0])
    assert any(p["departure_date"] for p in people)


def test_labels_name_each_incident_in_json_and_csv(org: Path) -> None:
    from_json = load_labels(org / "labels.json")
    from_csv = load_labels(org / "labels.csv")
    assert [(x.person, x.start) for x in from_json] == [(x.person, x.start) for x in from_csv]
    assert {x.scenario for x in from_json} == set(SCENARIOS[:5])
    assert all(x.start <= x.end for x in from_json)
    with (org / "labels.csv").open() as handle:
        assert next(csv.reader(handle)) == ["incident", "scenario", "person", "role", "start", "end"]


def test_knobs_change_the_draw(tmp_path: Path) -> None:
    a = simulate(
        SimulationSettings(population=40, days=31, seed=1, warmup_days=20, scenarios=("mfa_fatigue",)), tmp_path / "a"
    )
    b = simulate(
        SimulationSettings(population=40, days=31, seed=2, warmup_days=20, scenarios=("mfa_fatigue",)), tmp_path / "b"
    )
    assert a.events != b.events
    assert [x.person for x in a.labels] != [x.person for x in b.labels] or a.labels[0].start != b.labels[0].start
    quiet = simulate(
        SimulationSettings(population=40, days=31, seed=1, warmup_days=20, noise=0.0, insiders=0), tmp_path / "c"
    )
    assert quiet.labels == []

    def failures(folder: Path) -> int:  # benign MFA failures are noise; the insider's push bombing is too
        return sum(1 for _, r, _ in iter_records(folder / "okta.ndjson") if r["outcome"]["result"] == "FAILURE")

    assert failures(tmp_path / "c") == 0 < failures(tmp_path / "a")
    with pytest.raises(ValueError, match="unknown scenario"):
        simulate(SimulationSettings(scenarios=("nope",)), tmp_path / "d")


@pytest.mark.parametrize(("seed", "scenarios"), [(23, SCENARIOS[:5]), (24, SCENARIOS[5:])])
def test_every_injected_insider_is_caught(tmp_path: Path, seed: int, scenarios: tuple[str, ...]) -> None:
    knobs = SimulationSettings(population=120, days=30, seed=seed, warmup_days=20, scenarios=scenarios)
    sim = simulate(knobs, tmp_path)
    settings = ScoringSettings(directory=tmp_path / "directory.json", pseudonymise=False)
    # Four or five incidents within ten days among 120 people compete for the slots: a budget of 5 a day.
    result = evaluate(sim.files, load_labels(tmp_path / "labels.json"), settings, budget_share=0.04)
    assert {i.scenario for i in result.incidents} == set(scenarios)
    missed = [(i.scenario, i.best_rank) for i in result.incidents if not i.caught]
    assert missed == [], f"not within the top {result.budget} before the incident ended: {missed}"
    assert result.mean_percentile >= 97
    assert all(i.delay_days is not None and i.delay_days >= 0 for i in result.incidents)


def test_eval_scoring_command_reports_json(org: Path) -> None:
    files = sorted(org.glob("*.ndjson"))
    args = ["eval", "scoring", "--labels", str(org / "labels.csv"), "--directory", str(org / "directory.json")]
    for path in files:
        args += ["--events", str(path)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["population"] == 100 and set(report["recall"]) >= {"25", "50", "100"}
    assert report["days"] == 30  # the simulated days: the empty date the engine closes before them is not one
    assert report["incidents_caught"] <= report["incidents_catchable"] <= len(report["incidents"])
    assert len(report["incidents"]) == 5 and report["mean_percentile"] > 90
    scenarios = report["scenarios"]  # the same measures, scenario by scenario, adding up to the whole
    assert [s["scenario"] for s in scenarios] == sorted({i["scenario"] for i in report["incidents"]})
    assert sum(s["incidents"] for s in scenarios) == 5
    assert sum(s["caught"] for s in scenarios) == report["incidents_caught"]
    assert sum(s["malicious_user_days"] for s in scenarios) == report["malicious_user_days"]
    within = sum(s["recall_at_budget"] * s["malicious_user_days"] for s in scenarios)
    assert within / report["malicious_user_days"] == pytest.approx(report["recall"][str(report["budget"])], abs=1e-3)
    text = runner.invoke(app, args)
    assert text.exit_code == 0 and f"by scenario, within the top {report['budget']}/day" in text.output
    for s in scenarios:
        assert f"{s['caught']}/{s['incidents']}" in text.output
    missing = runner.invoke(app, ["eval", "scoring", "--events", "/nope.ndjson", "--labels", str(org / "labels.csv")])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_simulate_command(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["simulate", str(tmp_path), "--population", "30", "--days", "31", "--scenario", "layoff_dropbox", "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["people"] == 30 and summary["incidents"] >= 1 and (tmp_path / "labels.csv").exists()
    bad = runner.invoke(app, ["simulate", str(tmp_path / "x"), "--scenario", "nope"])
    assert bad.exit_code == 2 and "unknown scenario" in bad.output
    short = runner.invoke(app, ["simulate", str(tmp_path / "s"), "--population", "30", "--days", "20", "--json"])
    assert short.exit_code == 0, short.output
    assert orjson.loads(short.stdout)["incidents"] >= 1
    too_short = runner.invoke(app, ["simulate", str(tmp_path / "t"), "--days", "20", "--warmup-days", "15"])
    assert too_short.exit_code == 2 and "--days" in too_short.output and "--warmup-days" in too_short.output
    out_of_range = {
        ("--population", "0"): "--population 0 is too small: 20 people or more",
        ("--days", "0"): "--days 0 is too short: 11 or more",
        ("--days", "99999"): "--days 99999 runs past today: the simulated days start on 2024-03-04, so",
        ("--noise", "-1"): "--noise -1.0 is below 0",
        ("--insiders", "-2"): "--insiders -2 is out of range: 0 to half the people (150)",
        ("--insiders", "151"): "--insiders 151 is out of range: 0 to half the people (150)",
        ("--warmup-days", "0"): "--warmup-days 0 is below 1",
    }
    for option, message in out_of_range.items():
        refused = runner.invoke(app, ["simulate", str(tmp_path / "r"), *option])
        assert refused.exit_code == 2 and message in " ".join(refused.output.split()), (option, refused.output)
    assert not (tmp_path / "r").exists()


def test_eval_sorts_a_file_out_of_time_order_and_says_so(
    org: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ScoringSettings(directory=org / "directory.json", pseudonymise=False)
    labels = load_labels(org / "labels.json")
    files = sorted(org.glob("*.ndjson"))
    reversed_endpoint = tmp_path / "endpoint.ndjson"
    lines = (org / "endpoint.ndjson").read_bytes().splitlines()
    reversed_endpoint.write_bytes(b"\n".join(reversed(lines)) + b"\n")
    read: list[int] = []
    ordered = evaluate(files, labels, settings, progress=read.append)
    assert read == sorted(read) and read[0] == PROGRESS_EVENTS and read[-1] == ordered.events > PROGRESS_EVENTS
    shuffled = evaluate([reversed_endpoint if f.name == "endpoint.ndjson" else f for f in files], labels, settings)
    assert ordered.warnings == []
    assert shuffled.mean_percentile == ordered.mean_percentile
    assert [w for w in shuffled.warnings if "out of time order" in w and "endpoint.ndjson" in w]
    monkeypatch.setattr(timesort, "RUN_EVENTS", 1000)  # sorted in runs spilled to disk, then merged
    spilled = evaluate([reversed_endpoint if f.name == "endpoint.ndjson" else f for f in files], labels, settings)
    assert replace(spilled, seconds=0.0) == replace(shuffled, seconds=0.0)


def test_eval_scores_records_read_again_once_and_says_so(org: Path, tmp_path: Path) -> None:
    settings = ScoringSettings(directory=org / "directory.json", pseudonymise=False)
    labels = load_labels(org / "labels.json")
    files = sorted(org.glob("*.ndjson"))
    once = evaluate(files, labels, settings)
    lines = (org / "endpoint.ndjson").read_bytes().splitlines()
    third = len(lines) // 3
    early, late = tmp_path / "early.ndjson", tmp_path / "late.ndjson"  # two exports overlapping by a third
    early.write_bytes(b"\n".join(lines[: 2 * third]) + b"\n")
    late.write_bytes(b"\n".join(lines[third:]) + b"\n")
    others = [f for f in files if f.name != "endpoint.ndjson"]
    overlapping = evaluate([*others, early, late], labels, settings)
    twice = evaluate([*files, org / "okta.ndjson", org / "." / "okta.ndjson"], labels, settings)
    for result in (overlapping, twice):
        assert replace(result, seconds=0.0, warnings=[]) == replace(once, seconds=0.0, warnings=[])
    assert overlapping.warnings == [
        f"{third} records repeat a record read before them (the same record at the same time: exports that overlap, "
        "or a record written twice) and were scored once"
    ]
    assert twice.warnings == [f"files given more than once were read once: {org / 'okta.ndjson'}"]


def test_exports_from_siems_and_vendor_apis_are_evaluated_as_the_records_they_hold(org: Path, tmp_path: Path) -> None:
    settings = ScoringSettings(directory=org / "directory.json", pseudonymise=False)
    labels = load_labels(org / "labels.json")
    files = sorted(org.glob("*.ndjson"))
    once = evaluate(files, labels, settings)

    def records(name: str) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in (org / name).read_bytes().splitlines() if line.strip()]

    def splunk_csv(rows: list[dict[str, Any]]) -> bytes:
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["_time", "_raw", "sourcetype"])
        writer.writerows(["0", orjson.dumps(r).decode(), "aws:cloudtrail"] for r in rows)
        return text.getvalue().encode()

    trail = records("cloudtrail.ndjson")
    half = len(trail) // 2
    hits = [{"_index": "logs-endpoint", "_id": str(n), "_source": r} for n, r in enumerate(records("endpoint.ndjson"))]
    exports = {  # each source as a SOC engineer would save it from where it is kept
        "search.json": orjson.dumps({"took": 9, "hits": {"total": {"value": len(hits)}, "hits": hits}}),
        "export.ndjson": b"\n".join(
            orjson.dumps({"preview": False, "offset": n, "result": {"_raw": orjson.dumps(r).decode(), "_time": "0"}})
            for n, r in enumerate(records("okta.ndjson"))
        ),
        "lookup.json": orjson.dumps(
            {"Events": [{"EventId": r["eventID"], "CloudTrailEvent": orjson.dumps(r).decode()} for r in trail[:half]]}
        ),
        "splunk.csv": splunk_csv(trail[half:]),
        "signins.json": orjson.dumps({"@odata.context": "https://graph", "value": records("entra.ndjson")}),
        "activities.json": orjson.dumps({"kind": "admin#reports#activities", "items": records("gworkspace.ndjson")}),
    }
    for name, data in exports.items():
        (tmp_path / name).write_bytes(data)
    exported = evaluate([tmp_path / name for name in exports], labels, settings)
    assert replace(exported, seconds=0.0) == replace(once, seconds=0.0)


def test_cloudtrail_okta_workspace_and_entra_as_elastics_integrations_index_them_are_evaluated_as_their_own_logs(
    org: Path, tmp_path: Path
) -> None:
    settings = ScoringSettings(directory=org / "directory.json", pseudonymise=False)
    labels = load_labels(org / "labels.json")
    files = sorted(org.glob("*.ndjson"))
    once = evaluate(files, labels, settings)
    shapes = {
        "cloudtrail": elastic_cloudtrail,
        "okta": elastic_okta,
        "gworkspace": elastic_workspace,
        "entra": elastic_entra,
    }
    indexed = [f for f in files if f.stem not in shapes]
    for name, shape in shapes.items():
        records = [orjson.loads(line) for line in (org / f"{name}.ndjson").read_bytes().splitlines() if line.strip()]
        ecs = tmp_path / f"logs-{name}.ndjson"  # as pulled from Elasticsearch: no event.original by default
        ecs.write_bytes(b"\n".join(orjson.dumps(shape(record)) for record in records))
        indexed.append(ecs)
    assert replace(evaluate(indexed, labels, settings), seconds=0.0) == replace(once, seconds=0.0)


def portal_shown(text: str) -> str:
    """An ISO 8601 time as the Azure portal shows it in UTC (`2/25/2025, 9:19:25.391 AM`)."""
    when = datetime.fromisoformat(text).astimezone(UTC)
    hour = when.hour % 12 or 12
    clock = f"{hour}:{when:%M:%S}.{when.microsecond // 1000:03d} {'AM' if when.hour < 12 else 'PM'}"
    return f"{when.month}/{when.day}/{when.year}, {clock}"


@pytest.mark.parametrize("saved", ["answer", "portal_csv"])
def test_entra_and_cloudtrail_logs_saved_from_sentinel_are_evaluated_as_the_vendors_own(
    tmp_path: Path, saved: str
) -> None:
    """The sign-ins, directory audits and CloudTrail records as Log Analytics' `SigninLogs`, `AuditLogs` and
    `AWSCloudTrail` rows, as one query of these tables (`union`) answers: each row holds its own table's columns. The
    answer saved from the query API, or exported from the Azure portal as CSV (every value text, the time column
    `TimeGenerated [UTC]` in the portal's display form)."""
    org = tmp_path / "org"
    scenarios = ("privilege_abuse", "mfa_fatigue", "departure_mass_download")
    simulate(SimulationSettings(population=60, days=30, seed=29, warmup_days=20, scenarios=scenarios), org)
    settings = ScoringSettings(directory=org / "directory.json", pseudonymise=False)
    labels = load_labels(org / "labels.json")
    files = sorted(org.glob("*.ndjson"))
    once = evaluate(files, labels, settings)
    entra = [orjson.loads(line) for line in (org / "entra.ndjson").read_bytes().splitlines() if line.strip()]
    rows = [
        {
            "TimeGenerated": r["createdDateTime"],
            "Type": "AADNonInteractiveUserSignInLogs"
            if "nonInteractiveUser" in (r.get("signInEventTypes") or [])
            else "SigninLogs",
            "UserPrincipalName": r["userPrincipalName"],
            "ResultType": str((r.get("status") or {}).get("errorCode", 0)),
            **{name: orjson.dumps(r.get(key) or {}).decode() for name, key in SIGNIN_OBJECTS.items()},
            "AutonomousSystemNumber": r.get("autonomousSystemNumber"),
        }
        if "userPrincipalName" in r
        else sentinel_audit(r, as_text=True)
        for r in entra
    ]
    trail = [orjson.loads(line) for line in (org / "cloudtrail.ndjson").read_bytes().splitlines() if line.strip()]
    rows += [aws_cloudtrail(r) for r in trail]
    rows.sort(key=lambda row: datetime.fromisoformat(row["TimeGenerated"]))  # `| sort by TimeGenerated asc`
    columns = sorted({name for row in rows for name in row})
    kinds = {"Status": "dynamic", "DeviceDetail": "dynamic", "LocationDetails": "dynamic", "InitiatedBy": "dynamic"}
    kinds |= {"TargetResources": "dynamic", "TimeGenerated": "datetime", "AutonomousSystemNumber": "int"}
    if saved == "answer":
        table = {
            "name": "PrimaryResult",
            "columns": [{"name": n, "type": kinds.get(n, "string")} for n in columns],
            "rows": [[row.get(n) for n in columns] for row in rows],
        }
        path = tmp_path / "sentinel.json"
        path.write_bytes(orjson.dumps({"tables": [table]}))
    else:
        path = tmp_path / "sentinel.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([f"{n} [UTC]" if kinds.get(n) == "datetime" else n for n in columns])
            for row in rows:
                shown = {**row, "TimeGenerated": portal_shown(row["TimeGenerated"])}
                writer.writerow(["" if shown.get(n) is None else str(shown[n]) for n in columns])
    given = [f for f in files if f.name not in ("entra.ndjson", "cloudtrail.ndjson")] + [path]
    tables = Counter(row["Type"] for row in rows)
    assert tables["SigninLogs"] > 100 and tables["AuditLogs"] > 0 and tables["AWSCloudTrail"] > 100
    assert replace(evaluate(given, labels, settings), seconds=0.0) == replace(once, seconds=0.0)


SIGNIN_OBJECTS = {"Status": "status", "DeviceDetail": "deviceDetail", "LocationDetails": "location"}
"""`SigninLogs`' `dynamic` columns, by Graph's name of each."""


def test_records_of_one_time_are_kept_unless_the_same_record() -> None:
    repeats = Repeats()
    when = datetime(2024, 3, 4, 9, tzinfo=UTC)
    later = when + timedelta(microseconds=1)
    first, other = {"user": "ann", "n": 1}, {"n": 1, "user": "bob"}
    kept = [
        not repeats.repeated(when, first),
        not repeats.repeated(when, other),  # another record of the same time
        not repeats.repeated(when, {"n": 1, "user": "ann"}),  # the first again, its keys in another order
        not repeats.repeated(later, first),  # the same content at another time is another event
        not repeats.repeated(later, dict(first)),
    ]
    assert kept == [True, True, False, True, False] and repeats.count == 2


def test_events_sorted_in_runs_on_disk_come_back_as_sorted_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    start = datetime(2024, 3, 4, tzinfo=UTC)
    events = []
    for number in range(1, 2501):
        when = start + timedelta(seconds=rng.randrange(900), microseconds=rng.randrange(3))  # ties included
        raw = {"n": number, "nested": {"list": [1, "two", None], "text": "é\u2028"}, "big": 10**30 + number}
        events.append((when, number, Event(f"f:{number}", when, "f", LogSource(product="x"), raw)))
    expected = sorted(events, key=lambda item: (item[0], item[1]))
    for run in (10_000, 7, 1000):  # in memory alone; many runs and an uneven last one
        monkeypatch.setattr(timesort, "RUN_EVENTS", run)
        assert list(timesort.in_time_order(iter(events), LogSource(product="x"))) == expected, run

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "open", full)  # the disk is full: said with what to do
    with pytest.raises(CustodesError, match=r"cannot write a run .* \(No space left on device\): set TMPDIR"):
        list(timesort.in_time_order(iter(events), LogSource(product="x")))


def test_eval_refuses_backwards_labels_and_warns_on_unknown_people(org: Path, tmp_path: Path) -> None:
    rows = orjson.loads((org / "labels.json").read_bytes())
    rows = rows["labels"] if isinstance(rows, dict) else rows
    backwards = [dict(rows[0], start="2024-03-20T12:00:00Z", end="2024-03-19T12:00:00Z")]
    (tmp_path / "backwards.json").write_bytes(orjson.dumps(backwards))
    with pytest.raises(CustodesError, match=r"label #1 .*end .* is before start"):
        load_labels(tmp_path / "backwards.json")
    header = "incident,scenario,person,role,start,end\n"
    broken = {
        "no_person.csv": (
            header + "i1,s,,insider,2024-03-19T12:00:00Z,2024-03-20T12:00:00Z\n",
            "line 2: person is missing",
        ),
        "bad_end.csv": (
            header + "i1,s,a@b.example,insider,2024-03-19T12:00:00Z,later\n",
            "line 2: end 'later' is not a",
        ),
        "scalar.json": ('{"labels": 5}', r"labels are a JSON list of objects"),
        "not_object.json": ('[["a"]]', "label #1: a label is an object with person, start and end"),
        "bool_time.json": ('[{"person": "a", "start": true, "end": 1}]', "label #1: start True is not a time"),
        "other.csv": ("user,when\na@b.example,2024-03-19\n", r"not a labels CSV: its header lacks person, start, end"),
        "no_end.csv": ("person,start\n", r"not a labels CSV: its header lacks end \(line 1 holds 'person', 'start'\)"),
        "empty.csv": ("", r"header lacks person, start, end \(line 1 holds nothing\)"),
        "binary.csv": ("\x00\x01\x02", r"not a labels CSV: .* holds '\\x00\\x01\\x02'"),
        "unlabelled.json": ('{"seed": 1}', r'a JSON object of labels holds them under "labels"'),
    }
    for name, (text, message) in broken.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(CustodesError, match=message):
            load_labels(tmp_path / name)
    stranger = [*rows, dict(rows[0], incident="ghost", person="nobody@elsewhere.example")]
    (tmp_path / "stranger.json").write_bytes(orjson.dumps(stranger))
    settings = ScoringSettings(directory=org / "directory.json", pseudonymise=False)
    result = evaluate([org / "okta.ndjson"], load_labels(tmp_path / "stranger.json"), settings)
    assert [w for w in result.warnings if "neither the directory nor the events" in w and "nobody@" in w]
    (tmp_path / "none.json").write_text('{"labels": []}')
    warned: list[str] = []
    assert load_labels(tmp_path / "none.json", warnings=warned) == []
    assert len(warned) == 1 and warned[0].startswith(f"{tmp_path / 'none.json'} holds no labels")
    assert "only false findings are measured" in warned[0]
    benign = evaluate([org / "okta.ndjson"], [], settings).to_json()  # nothing to recall: no figure pretends to be one
    assert benign["malicious_user_days"] == 0 and benign["mean_percentile"] is None
    assert set(benign["recall"].values()) == {None}
    for share in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(CustodesError, match=rf"--budget-share {share} is out of range"):
            evaluate([org / "okta.ndjson"], [], settings, budget_share=share)


def test_eval_says_how_many_records_of_each_file_it_could_not_score_and_why(org: Path, tmp_path: Path) -> None:
    lines = (org / "endpoint.ndjson").read_bytes().splitlines()
    first = orjson.loads(lines[50])  # the next record's own: in time order where they go
    failed = {"category": ["authentication"], "action": "logon-failed", "outcome": "failure"}
    unusable = [
        b'{"a":' * 2000 + b"1" + b"}" * 2000,  # deeper than a JSON reader goes
        b'{"event": {"category": ["authentication"]',  # cut short
        b"[1, 2]",  # JSON, but not a record
        orjson.dumps({**first, "@timestamp": None}),  # no time
        orjson.dumps({**first, "@timestamp": "1985-01-01T00:00:00Z"}),  # before the accepted window
        orjson.dumps({**first, "user": ["not", "a", "user"]}),  # no actor the engine reads
        orjson.dumps({"@timestamp": first["@timestamp"], "kind": "unknown vendor"}),  # a shape it does not know
        orjson.dumps({"@timestamp": first["@timestamp"], "event": failed, "user": {"name": "no-such-user"}}),  # sprayed
    ]
    mixed = tmp_path / "endpoint.ndjson"
    mixed.write_bytes(b"\n".join([*lines[:50], *unusable, *lines[50:]]) + b"\n")
    settings = ScoringSettings(directory=org / "directory.json", pseudonymise=False)
    clean = evaluate([org / "endpoint.ndjson"], [], settings)
    result = evaluate([mixed], [], settings)
    assert clean.warnings == [] and result.events == clean.events + 3
    assert result.warnings == [
        f"{mixed}: 5 records were not scored: 3 not a JSON object, 1 without a time, 1 with a time outside the "
        f"accepted window (custodes.timewindow) (the first: {mixed}:51:5122: invalid JSON (depth limit exceeded))",
        "endpoint.ndjson: 2 records named no actor the scoring engine reads, are of a shape it does not know, or are "
        "no act of a person's own (an Entra non-interactive sign-in) and were not scored",
        "endpoint.ndjson: 1 records were failed sign-ins by names the directory does not hold (password spraying, "
        "typos) and were not scored: each name would have been an entity of its own",
    ]


def test_a_labelled_person_whose_zone_is_not_one_is_evaluated_in_the_default_zone(org: Path, tmp_path: Path) -> None:
    people = orjson.loads((org / "directory.json").read_bytes())
    labels = load_labels(org / "labels.json")
    insider = next(p for p in people if p["id"] == labels[0].person)
    insider["timezone"] = "Mars/Base"
    (tmp_path / "directory.json").write_bytes(orjson.dumps(people))
    settings = ScoringSettings(directory=tmp_path / "directory.json", pseudonymise=False)
    result = evaluate([org / "endpoint.ndjson"], labels, settings)
    assert result.warnings[0] == (
        "1 people in the directory have a time zone that is neither an IANA name (Europe/London) nor a Windows one "
        f"(GMT Standard Time), so their days are UTC's: {insider['id']}: 'Mars/Base'"
    )
    assert result.incidents and result.malicious_user_days > 0


def test_a_stray_early_record_leaves_a_gap_that_is_said_and_learns_nothing(org: Path, tmp_path: Path) -> None:
    lines = (org / "endpoint.ndjson").read_bytes().splitlines()
    record = orjson.loads(lines[0])
    stray = orjson.dumps({**record, "@timestamp": "2023-12-01T12:00:00Z"})  # months before the rest
    (tmp_path / "endpoint.ndjson").write_bytes(b"\n".join([stray, *lines]) + b"\n")
    settings = ScoringSettings(directory=org / "directory.json", pseudonymise=False)
    labels = load_labels(org / "labels.json")
    files = sorted(org.glob("*.ndjson"))
    clean = evaluate(files, labels, settings)
    result = evaluate(
        [tmp_path / "endpoint.ndjson" if f.name == "endpoint.ndjson" else f for f in files], labels, settings
    )
    gap = [w for w in result.warnings if "have no event at all" in w]
    assert gap and gap[0].startswith(
        "93 dates between the first and the last event have no event at all (from 2023-12-02"
    )
    # the empty dates are neither days of the report nor learning dates: what is scored after them is unchanged
    assert result.days == clean.days + 1
    assert (result.false_findings, result.mean_percentile, result.recall) == (
        clean.false_findings,
        clean.mean_percentile,
        clean.recall,
    )


def test_shapes_change_the_organisation_not_just_the_draw(tmp_path: Path) -> None:
    def other_machine_logons(shape: str) -> tuple[int, int, int]:
        knobs = SimulationSettings(population=60, days=12, seed=5, warmup_days=2, shape=shape, insiders=0)
        written: list[int] = []
        simulate(knobs, tmp_path / shape, written.append)
        assert written == list(range(1, 13))  # the progress of the days written
        people = {
            p["aliases"][1]: p["hosts"][0] for p in orjson.loads((tmp_path / shape / "directory.json").read_bytes())
        }
        roaming = usb = visits = 0
        for _, record, _ in iter_records(tmp_path / shape / "endpoint.ndjson"):
            action = record.get("event", {}).get("action") if isinstance(record.get("event"), dict) else None
            if action == "logged-in" and record["host"]["name"] != people.get(record["user"]["name"]):
                roaming += 1
            usb += action == "usb-device-connected"
            visits += action == "http-request" and record["url"]["domain"] in ("pastebin.com", "www.dropbox.com")
        return roaming, usb, visits

    office, noisy = other_machine_logons("office"), other_machine_logons("noisy")
    assert office[0] == 0 and noisy[0] > 20
    assert noisy[1] > office[1] and noisy[2] > office[2]
    with pytest.raises(ValueError, match="unknown --shape"):
        simulate(SimulationSettings(shape="flat"), tmp_path / "x")


def assert_every_insider_caught(sim: Simulation, folder: Path) -> None:
    """Every incident of `sim` (written to `folder`) ranked within a budget of 4 % of people a day."""
    settings = ScoringSettings(directory=folder / "directory.json", pseudonymise=False)
    result = evaluate(sim.files, load_labels(folder / "labels.json"), settings, budget_share=0.04)
    missed = [(i.scenario, i.best_rank) for i in result.incidents if not i.caught]
    assert missed == [], f"not within the top {result.budget} before the incident ended: {missed}"


def test_the_endpoint_shape_is_seen_only_through_endpoints_with_a_bare_directory(tmp_path: Path) -> None:
    knobs = SimulationSettings(population=120, days=30, seed=25, warmup_days=20, shape="endpoint")
    sim = simulate(knobs, tmp_path)
    assert [p.name for p in sim.files] == ["endpoint.ndjson"] and sorted(tmp_path.glob("*.ndjson")) == sim.files
    directory = orjson.loads((tmp_path / "directory.json").read_bytes())
    assert all(set(p) == {"id", "display_name", "department", "title", "timezone", "aliases"} for p in directory)
    assert {label.scenario for label in sim.labels} == set(SCENARIOS[:5])
    assert_every_insider_caught(sim, tmp_path)
    with pytest.raises(ValueError, match="--shape endpoint shows endpoint records only"):
        simulate(SimulationSettings(shape="endpoint", scenarios=("mfa_fatigue",)), tmp_path / "x")


def test_the_devices_shape_shows_logons_and_removable_media_only(tmp_path: Path) -> None:
    knobs = SimulationSettings(population=120, days=30, seed=26, warmup_days=20, shape="devices")
    sim = simulate(knobs, tmp_path)
    assert [p.name for p in sim.files] == ["endpoint.ndjson"]
    actions = {record["event"]["action"] for _, record, _ in iter_records(tmp_path / "endpoint.ndjson")}
    assert actions == {"logged-in", "logged-off", "usb-device-connected", "usb-device-disconnected"}
    directory = orjson.loads((tmp_path / "directory.json").read_bytes())
    assert all("hosts" not in p and "watchlists" not in p for p in directory)
    assert {label.scenario for label in sim.labels} == set(DEVICE_SCENARIOS)
    assert_every_insider_caught(sim, tmp_path)
    with pytest.raises(ValueError, match="--shape devices shows endpoint records only, so --scenario layoff_dropbox"):
        simulate(SimulationSettings(shape="devices", scenarios=("layoff_dropbox",)), tmp_path / "x")


def test_the_desktops_shape_adds_unlocks_shared_machines_desks_late_sessions_and_missing_logons(tmp_path: Path) -> None:
    knobs = SimulationSettings(population=120, days=30, seed=27, warmup_days=20, shape="desktops")
    sim = simulate(knobs, tmp_path)
    logons: dict[tuple[str, str], list[datetime]] = {}
    logoffs: set[tuple[str, str]] = set()
    hosts: set[str] = set()
    used: dict[str, Counter[str]] = {}
    for _, record, _ in iter_records(tmp_path / "endpoint.ndjson"):
        action, when = record["event"]["action"], datetime.fromisoformat(record["@timestamp"])
        key = (record["user"]["name"], when.date().isoformat())
        if action == "logged-in":
            logons.setdefault(key, []).append(when)
            hosts.add(record["host"]["name"])
            used.setdefault(record["user"]["name"], Counter())[record["host"]["name"]] += 1
        elif action == "logged-off":
            logoffs.add(key)
    assert {label.scenario for label in sim.labels} == set(DEVICE_SCENARIOS)
    assert sum(len(times) > 3 for times in logons.values()) > 100  # screen unlocks are logons
    assert sum(host.startswith("LAB-") for host in hosts) >= 5  # a pool of shared machines
    assert len(logoffs - set(logons)) > 0  # a day's only logon missing from the records
    people = orjson.loads((tmp_path / "directory.json").read_bytes())
    zones = {alias: ZoneInfo(p["timezone"]) for p in people for alias in p["aliases"]}
    insiders = {label.person.partition("@")[0].replace(".", "") for label in sim.labels}
    admins = {alias for p in people if p["department"] == "IT" for alias in p["aliases"]}  # they roam every day
    owners = {counts.most_common(1)[0][0]: user for user, counts in used.items()}
    at_desks = {
        user
        for user, counts in used.items()
        if user not in insiders | admins and any(owners.get(host, user) != user for host in counts)
    }
    assert len(at_desks) >= 5  # now and then at a colleague's desk
    late_days: dict[str, int] = {}
    for (user, _), times in logons.items():
        if user not in insiders and any(when.astimezone(zones[user]).hour >= 20 for when in times):
            late_days[user] = late_days.get(user, 0) + 1
    late = [user for user, days in late_days.items() if days >= 3]
    assert len(late) >= 2  # after-hours logons as a habit (on three days or more), not only the insiders'
    assert_every_insider_caught(sim, tmp_path)


def test_most_catchable_is_a_maximum_matching_of_incidents_to_daily_places() -> None:
    d = [date(2024, 3, day) for day in range(1, 6)]
    # Three incidents act only on day 1 with one place a day: one of them at most.
    assert most_catchable({"a": [d[0]], "b": [d[0]], "c": [d[0]]}, 1) == 1
    assert most_catchable({"a": [d[0]], "b": [d[0]], "c": [d[0]]}, 2) == 2
    # A greedy choice of day 1 for "a" would block "b"; the matching moves "a" to day 2.
    assert most_catchable({"a": [d[0], d[1]], "b": [d[0]], "c": [d[1], d[2]]}, 1) == 3
    # Chains of moves: each incident shares its first day with the next one's only day.
    chain = {"a": [d[0], d[1]], "b": [d[1], d[2]], "c": [d[2], d[3]], "d": [d[3], d[4]], "e": [d[0]]}
    assert most_catchable(chain, 1) == 5
    assert most_catchable({"a": [], "b": [d[4]]}, 3) == 1


def test_labels_cover_every_local_day_a_malicious_act_falls_on(tmp_path: Path) -> None:
    """An act begun before midnight whose writes run past it labels both local days (the copies are the act)."""
    knobs = SimulationSettings(population=60, days=40, seed=5, warmup_days=20, insiders=6, scenarios=SCENARIOS[:1])
    sim = simulate(knobs, tmp_path)
    people = {p["id"]: p for p in orjson.loads((tmp_path / "directory.json").read_bytes())}
    labelled = {
        (label.person, label.start.astimezone(ZoneInfo(people[label.person]["timezone"])).date())
        for label in sim.labels
    }
    insiders = {alias: label.person for label in sim.labels for alias in people[label.person]["aliases"]}
    writes = set()
    for _, record, _ in iter_records(tmp_path / "endpoint.ndjson"):
        if not isinstance(record["event"], dict) or record["event"]["action"] != "removable-media-write":
            continue  # Teleport sessions name their event with a string
        person = insiders.get(record["user"]["name"])
        if person is not None:
            when = datetime.fromisoformat(record["@timestamp"]).astimezone(ZoneInfo(people[person]["timezone"]))
            if when.hour >= 21 or when.hour < 3:  # the leak's late-night copies, not the person's earlier habits
                writes.add((person, when.date()))
    assert writes and writes <= labelled


def test_a_simulation_in_the_cert_layout_is_evaluated_as_its_ndjson_is(tmp_path: Path) -> None:
    args = ["simulate", str(tmp_path), "--population", "120", "--days", "30", "--warmup-days", "20", "--seed", "26"]
    written = runner.invoke(app, [*args, "--shape", "devices", "--layout", "cert", "--json"])
    assert written.exit_code == 0, written.output
    files = orjson.loads(written.stdout)["cert"]
    assert {Path(f).name for f in files} >= {"logon.csv", "device.csv", "LDAP.csv", "insiders.csv"}
    assert (tmp_path / "logon.csv").read_text().splitlines()[0] == "id,date,user,pc,activity"
    refused = runner.invoke(app, ["simulate", str(tmp_path / "x"), "--layout", "cert"])
    assert refused.exit_code == 2 and "--layout cert writes logons and devices only" in refused.output
    settings = ScoringSettings(directory=tmp_path / "directory.json", pseudonymise=False)
    ndjson = evaluate(
        [tmp_path / "endpoint.ndjson"], load_labels(tmp_path / "labels.json"), settings, budget_share=0.04
    )
    warnings: list[str] = []
    labels = load_labels(tmp_path / "answers", warnings=warnings)
    assert warnings == [] and {label.role for label in labels} == {"insider", "compromised"}
    cert_settings = settings.model_copy(update={"directory": tmp_path / "LDAP.csv"})
    events = [tmp_path / "logon.csv", tmp_path / "device.csv"]
    cert = evaluate(events, labels, cert_settings, budget_share=0.04)
    assert cert.warnings == [] and cert.events == ndjson.events and cert.population == ndjson.population
    assert sorted((i.scenario, i.caught) for i in cert.incidents) == sorted(
        (i.scenario, i.caught) for i in ndjson.incidents
    )
    # The details list records: a labelled day whose only act is a file write (not in these files) is not one.
    assert 0 < cert.malicious_user_days <= ndjson.malicious_user_days


def test_job_seekers_rise_for_a_few_days_in_a_row_or_over_weeks_above_their_own_rate(tmp_path: Path) -> None:
    """Where the organisation leaves room, some job seekers copy a little on most working days for weeks, at several
    times their own rate before; the others copy a lot on three to five days in a row."""
    knobs = SimulationSettings(
        population=300, days=60, seed=8, warmup_days=10, insiders=12, scenarios=("job_search_usb",), shape="devices"
    )
    sim = simulate(knobs, tmp_path)
    people = {p["id"]: p for p in orjson.loads((tmp_path / "directory.json").read_bytes())}
    days: dict[str, set[date]] = {}
    for label in sim.labels:
        zone = ZoneInfo(people[label.person]["timezone"])
        days.setdefault(label.person, set()).add(label.start.astimezone(zone).date())
    connections: Counter[tuple[str, bool]] = Counter()  # (person, during their acts) -> connections
    aliases = {alias: person for person in days for alias in people[person]["aliases"]}
    for _, record, _ in iter_records(tmp_path / "endpoint.ndjson"):
        person = aliases.get(record.get("user", {}).get("name"))
        if person is not None and record["event"]["action"] == "usb-device-connected":
            when = datetime.fromisoformat(record["@timestamp"]).astimezone(ZoneInfo(people[person]["timezone"]))
            connections[(person, min(days[person]) <= when.date() <= max(days[person]))] += 1
    weeks = [person for person, acts in days.items() if (max(acts) - min(acts)).days >= 9]
    short = [person for person, acts in days.items() if (max(acts) - min(acts)).days <= 4]
    assert weeks and short and len(weeks) + len(short) == len(days)
    for person in weeks:
        acts = days[person]
        assert all(day.weekday() < 5 for day in acts)  # at work
        before = (min(acts) - knobs.start).days
        rate_before = connections[(person, False)] / before  # a generous bound: days after the acts count too
        rate_during = connections[(person, True)] / ((max(acts) - min(acts)).days + 1)
        assert rate_during > 2 * rate_before, person
    for person in short:
        assert len(days[person]) >= 3 and sorted(days[person]) == [
            min(days[person]) + timedelta(days=n) for n in range(len(days[person]))
        ]


def test_an_after_hours_leak_is_by_someone_who_never_used_a_drive_however_long_before_it_starts(tmp_path: Path) -> None:
    """Benign people take up USB now and then; the insider picked for the after-hours leak (CERT scenario 1: someone
    who used neither drives nor late hours) keeps the habits they were picked for until the act."""
    knobs = SimulationSettings(
        population=100,
        days=200,
        noise=4.0,
        seed=4,
        warmup_days=10,
        insiders=20,
        scenarios=("after_hours_usb_leak",),
        shape="devices",
    )
    sim = simulate(knobs, tmp_path)
    people = {p["id"]: p for p in orjson.loads((tmp_path / "directory.json").read_bytes())}
    first: dict[str, datetime] = {}
    for label in sim.labels:
        first[label.person] = min(first.get(label.person, label.start), label.start)
    assert len(first) == 20
    aliases = {alias: person for person in first for alias in people[person]["aliases"]}
    connected: Counter[str] = Counter()  # insider -> drive connections before their first act
    others = 0  # everyone else's: drives are in use around them
    for _, record, _ in iter_records(tmp_path / "endpoint.ndjson"):
        if record["event"]["action"] != "usb-device-connected":
            continue
        person = aliases.get(record["user"]["name"])
        if person is None:
            others += 1
        elif datetime.fromisoformat(record["@timestamp"]) < first[person]:
            connected[person] += 1
    assert others and not connected


def test_a_missed_incident_is_shown_with_its_best_day_and_the_points_the_budget_took(tmp_path: Path) -> None:
    """After a miss on data of one's own the question is why: the report gives the malicious day that came closest,
    what its score held and the points of the places within the budget."""
    knobs = SimulationSettings(population=100, days=25, warmup_days=10, seed=3, shape="devices", insiders=10)
    sim = simulate(knobs, tmp_path)
    settings = ScoringSettings(directory=tmp_path / "directory.json", pseudonymise=False)
    result = evaluate(sim.files, load_labels(tmp_path / "labels.json"), settings)
    missed = [i for i in result.incidents if not i.caught]
    assert missed and all(i.best_day is not None and i.best_day.rank == i.best_rank for i in result.incidents)
    for i in missed:
        best = i.best_day
        assert best is not None and best.rank > result.budget and best.reasons
        assert i.first_day <= best.day <= i.last_day and best.budget_points[0] <= best.budget_points[1]
    args = ["eval", "scoring", "--labels", str(tmp_path / "labels.json")]
    args += ["--directory", str(tmp_path / "directory.json")]
    args += [arg for path in sim.files for arg in ("--events", str(path))]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert "Incidents missed: their best-ranked malicious day" in text and "[bold]" not in text
    for i in missed:
        best = i.best_day
        assert best is not None
        low, high = best.budget_points
        said = f"{i.incident} ({i.scenario}), {best.day}: rank {best.rank}, {best.points:.1f} points"
        said += f" (risk {best.risk:.1f}); the top {result.budget} had {low:.1f}-{high:.1f}"
        assert f"{said} - {best.reasons[0]}" in text
    report = orjson.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert [i["best_day"]["rank"] for i in report["incidents"]] == [i.best_rank for i in result.incidents]
