"""`custodes rules lint|test|convert|stats|match`: output formats, located errors, exit codes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from custodes.cli import app
from custodes.config import load_settings
from custodes.connectors.envelope import to_event
from custodes.detections.sigma.engine import SigmaEngine
from custodes.detections.sigma.loader import load_rules
from custodes.detections.sigma.pipelines import pipeline_named
from custodes.sources import SourceSettings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RULES = ROOT / "detections" / "rules"
STORY = ROOT / "src" / "custodes" / "demo"
runner = CliRunner()

RULE = """title: Secret bucket read
id: 4e5d6c7b-0000-4000-8000-000000000001
status: test
level: high
logsource: {product: aws, service: cloudtrail}
detection:
  sel:
    eventName: GetObject
    requestParameters.bucketName: secret
  condition: sel
custodes:
  examples:
    match:
      - {eventName: GetObject, requestParameters: {bucketName: secret}}
    no_match:
      - {eventName: GetObject, requestParameters: {bucketName: secret}}
"""


def lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_a_rule_rejected_for_a_huge_title_is_reported_in_one_short_line(tmp_path: Path) -> None:
    """The whole title (here 1 MB) was once repeated in the report."""
    rule = tmp_path / "long.yml"
    rule.write_text(
        f"title: {'x' * 1_000_000}\nlogsource: {{product: okta}}\ndetection: {{s: {{a: 1}}, condition: s}}\n"
    )
    result = runner.invoke(app, ["rules", "lint", str(rule)])
    assert result.exit_code == 2
    assert f"long.yml:1:1: rule '{'x' * 117}...': Sigma rule title length must not exceed 256" in result.output
    assert len(result.output) < 1000


def test_match_prints_one_json_object_per_match(tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    events.write_text(
        '{"eventID": "a", "eventSource": "iam.amazonaws.com", "eventName": "CreateAccessKey",'
        ' "userIdentity": {"userName": "m"}, "requestParameters": {"userName": "ceo"}}\n'
        "not json\n"
        '{"eventID": "b", "eventSource": "s3.amazonaws.com", "eventName": "ListBuckets"}\n'
    )
    result = runner.invoke(app, ["rules", "match", "--rules", str(RULES), "--events", str(events)])
    assert result.exit_code == 0, result.output
    (found,) = lines(result.stdout)
    assert found["rule_id"] == "3c8e1f5a-7b2d-4a9e-b6c4-0d1f2e3a4b85" and found["level"] == "high"
    assert found["line"] == 1 and found["rule_title"] == "AWS Access Key Created for Another IAM User"
    assert "events.ndjson:2:1: invalid JSON" in result.stderr


def test_match_with_a_source_routes_by_logsource(tmp_path: Path) -> None:
    args = ["rules", "match", "--rules", str(RULES), "--events", str(STORY / "okta.ndjson")]
    plain = runner.invoke(app, args)
    routed = runner.invoke(app, [*args, "--source", "cloudtrail", "--config", str(tmp_path / "none.yaml")])
    assert routed.exit_code == 2 and "none.yaml: file not found" in routed.stderr
    config = tmp_path / "custodes.yaml"
    config.write_text("sources: {}\n")
    routed = runner.invoke(app, [*args, "--source", "cloudtrail", "--config", str(config)])
    okta = runner.invoke(app, [*args, "--source", "okta", "--config", str(config)])

    def hits(output: str) -> list[tuple[object, object]]:
        return [(found["rule_id"], found["line"]) for found in lines(output)]

    assert hits(plain.stdout) and hits(okta.stdout) == hits(plain.stdout)
    assert routed.exit_code == 0 and lines(routed.stdout) == []


def test_test_reports_each_failing_example_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "rule.yml").write_text(RULE)
    result = runner.invoke(app, ["rules", "test", str(tmp_path), "--json"])
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["examples"] == 2 and report["passed"] == 1
    (failed,) = report["failed"]
    assert (failed["line"], failed["kind"]) == (16, "no_match") and "should not match" in failed["message"]
    text = runner.invoke(app, ["rules", "test", str(tmp_path)])
    assert f"{tmp_path / 'rule.yml'}:16: rule 'Secret bucket read': example should not match" in text.stderr


def test_test_locates_malformed_examples(tmp_path: Path) -> None:
    (tmp_path / "rule.yml").write_text(RULE.replace("    no_match:", "    maybe:"))
    result = runner.invoke(app, ["rules", "test", str(tmp_path)])
    assert result.exit_code == 2 and f"{tmp_path / 'rule.yml'}:15:5: unknown example kind 'maybe'" in result.stderr


def test_convert_json_and_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["rules", "convert", "--target", "esql", "--json", str(RULES / "aws")])
    assert result.exit_code == 0, result.output
    converted = {item["title"]: item for item in json.loads(result.stdout)}
    logging = converted["AWS CloudTrail Logging Disabled or Weakened"]
    assert logging["exact"] and "StopLogging" in logging["query"]
    lucene = runner.invoke(app, ["rules", "convert", "-t", "lucene", str(RULES / "aws")])
    assert "not converted" in lucene.stderr and "field references" in lucene.stderr
    bad = runner.invoke(app, ["rules", "convert", "-t", "kql", str(RULES)])
    assert bad.exit_code == 2 and "unknown target 'kql'" in bad.stderr
    missing = runner.invoke(app, ["rules", "convert", "-t", "splunk", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such file or folder" in missing.stderr


def test_convert_a_folder_as_one_collection_with_its_correlations() -> None:
    for target in ("splunk", "esql", "lucene"):
        result = runner.invoke(app, ["rules", "convert", "--target", target, "--json", str(RULES)])
        assert result.exit_code == 0, result.output
        converted = {item["title"]: item for item in json.loads(result.stdout)}
        mass = converted["Mass Download by One User"]
        if target == "splunk":  # the correlation's query is built from the three rules it refers to
            assert mass["query"] is not None and "| stats count" in mass["query"] and "FileDownloaded" in mass["query"]
            assert not mass["exact"] and "fixed time buckets" in mass["reason"]
        assert not mass["exact"]


def test_convert_reports_rules_reading_enrichment_fields_as_in_process() -> None:
    result = runner.invoke(app, ["rules", "convert", "--target", "lucene", "--json", str(RULES)])
    assert result.exit_code == 0, result.output
    converted = {item["title"]: item for item in json.loads(result.stdout)}
    off_hours = [item for title, item in converted.items() if title.endswith("Outside Working Hours")]
    assert len(off_hours) == 3
    assert all(not item["exact"] and "custodes.off_hours" in item["reason"] for item in off_hours)
    departing = [item for title, item in converted.items() if title.startswith("Departing User")]
    assert departing and all(not item["exact"] and "custodes.watchlists" in item["reason"] for item in departing)
    exact = converted["AWS CloudTrail Logging Disabled or Weakened"]
    assert exact["exact"] and exact["reason"] is None


def test_stats_summarise_rules_and_rejections(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(RULE)
    (tmp_path / "bad.yml").write_text("title: x\nlogsource: {product: aws}\ndetection:\n  condition: nope\n")
    result = runner.invoke(app, ["rules", "stats", "--json", str(tmp_path)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["loaded"] == 1 and stats["rejected"] == 1
    assert stats["by_logsource"] == {"aws/cloudtrail/*": 1} and stats["by_status"] == {"test": 1}
    assert stats["by_level"] == {"high": 1} and sum(stats["rejected_by_reason"].values()) == 1
    table = runner.invoke(app, ["rules", "stats", str(RULES)])
    assert table.exit_code == 0 and "by logsource" in table.stdout and "aws/cloudtrail" in table.stdout


def test_lint_and_stats_count_correlation_rules() -> None:
    pack = RULES
    lint = runner.invoke(app, ["rules", "lint", "--json", str(pack)])
    assert lint.exit_code == 0, lint.output
    assert json.loads(lint.stdout)["correlations"] == 2 and json.loads(lint.stdout)["rejected"] == []
    text = runner.invoke(app, ["rules", "lint", str(pack)])
    assert "33 rules and 2 correlation rules loaded, 0 rejected" in text.stdout
    stats = runner.invoke(app, ["rules", "stats", "--json", str(pack)])
    assert json.loads(stats.stdout)["correlations"] == 2
    failing = runner.invoke(app, ["rules", "test", str(pack / "correlation")])
    assert failing.exit_code == 2 and "refers to unknown rule" in failing.stderr


@pytest.mark.parametrize(
    "rules",
    [
        [SHARED / "sigmahq" / "rules" / "cloud" / "aws"],  # records go straight to the route's index
        [RULES / "aws", SHARED / "sigmahq" / "rules" / "cloud" / "aws"],  # with rules reading `custodes.*`
    ],
    ids=["raw-records", "enriched-events"],
)
def test_match_agrees_with_the_in_process_engine_with_and_without_a_source(
    tmp_path: Path, rules: list[Path], _rule_cache: Path
) -> None:
    """The streamed, indexed `rules match` gives exactly what every rule tested on every event gives, whether it
    reads the rule files or their cached compilation."""
    otrf = SHARED / "datasets" / "otrf-cloudtrail" / "ec2_proxy_s3_exfiltration_2020-09-14011940.json"
    records = [orjson.loads(line) for line in otrf.read_bytes().splitlines() if line.strip()]
    base = records[0]
    for n, (source, name) in enumerate(
        [
            ("cloudtrail.amazonaws.com", "StopLogging"),
            ("cloudtrail.amazonaws.com", "DeleteTrail"),
            ("iam.amazonaws.com", "CreateAccessKey"),
            ("s3.amazonaws.com", "PutBucketPolicy"),
            ("guardduty.amazonaws.com", "DeleteDetector"),
            ("ec2.amazonaws.com", "ModifyInstanceAttribute"),
        ]
    ):
        records.append({**base, "eventID": f"crafted-{n}", "eventSource": source, "eventName": name})
    records.append("not an object")
    path = tmp_path / "trail.ndjson.gz"
    path.write_bytes(gzip.compress(b"\n".join(orjson.dumps(record) for record in records) + b"\n"))
    settings = load_settings(None, environ={})
    cloudtrail = settings.source("cloudtrail")
    with_source = load_rules(rules, pipeline=pipeline_named(cloudtrail.pipeline_name))
    oracle = SigmaEngine(with_source, indexed=False)
    as_written = load_rules(rules)
    generic = SourceSettings(format="generic")
    expected_with: list[tuple[str, int, str]] = []
    expected_without: list[tuple[str, int, str]] = []
    for number, record in enumerate(records, start=1):
        event = to_event(record, cloudtrail, "cloudtrail")
        expected_with += [(rule.id, number, event.id) for rule in oracle.match(event)]
        plain = to_event(record, generic, "file")
        expected_without += [(rule.id, number, plain.id) for rule in as_written.rules if rule.match(plain.raw)]
    assert len({rule for rule, _, _ in expected_with}) >= 4  # the crafted records do match
    for args, expected in (
        (["--source", "cloudtrail"], expected_with),
        ([], expected_without),
    ):
        for _ in ("rule files read", "rule set read from the cache"):
            command = ["rules", "match", *[f"--rules={r}" for r in rules], "--events", str(path), *args]
            result = runner.invoke(app, command)
            assert result.exit_code == 0, result.output
            got = [(m["rule_id"], m["line"], m["event_id"]) for m in map(json.loads, result.stdout.splitlines())]
            assert got == expected, args
            assert f"{len(expected)} matches" in result.stderr
    assert len(list(_rule_cache.glob("*.json"))) == 2  # one entry with the pipeline, one without
