"""The in-process Sigma matcher, modifier by modifier, plus loading, routing and findings."""

from __future__ import annotations

import base64
import os
import random
import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import FieldMappingTransformation

from custodes.detections.findings import findings_for
from custodes.detections.sigma import regexes
from custodes.detections.sigma.compiler import CompiledRule, _glob_check
from custodes.detections.sigma.engine import SigmaEngine
from custodes.detections.sigma.index import RuleIndex
from custodes.detections.sigma.loader import load_rules
from custodes.detections.sigma.regexes import backtracks
from custodes.detections.sigma.requirement import Requirement
from custodes.detections.sigma.ruleset import RuleSet
from custodes.model import Event, LogSource, Severity, stable_id

RULE_ID = "5f9a3c2e-1b7d-4e8f-9a6b-0c1d2e3f4a5b"


def rule_text(detection: str, *, rule_id: str = RULE_ID, logsource: str = "product: test") -> str:
    body = textwrap.indent(textwrap.dedent(detection).strip("\n"), "    ")
    return (
        f"title: Test rule\nid: {rule_id}\nstatus: test\nlevel: high\n"
        "description: A rule written for a test.\n"
        "tags:\n    - attack.initial-access\n    - attack.t1078\n    - detection.threat-hunting\n"
        f"logsource:\n    {logsource}\ndetection:\n{body}\n"
    )


def load(tmp_path: Path, text: str, name: str = "rule.yml", **kwargs: Any) -> RuleSet:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_rules([path], **kwargs)


def compile_detection(tmp_path: Path, detection: str) -> CompiledRule:
    ruleset = load(tmp_path, rule_text(detection))
    assert ruleset.rejections == []
    (rule,) = ruleset.rules
    return rule


def check(rule: CompiledRule, matching: list[dict[str, Any]], other: list[dict[str, Any]]) -> None:
    for event in matching:
        assert rule.match(event), f"should match: {event}"
    for event in other:
        assert not rule.match(event), f"should not match: {event}"


# Strings ----------------------------------------------------------------------------------------------


def test_equality_is_case_insensitive_by_default(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        r"""
        selection:
            Image: 'C:\Windows\System32\cmd.exe'
        condition: selection
        """,
    )
    check(
        rule,
        [{"Image": r"c:\windows\system32\CMD.EXE"}, {"Image": r"C:\Windows\System32\cmd.exe"}],
        [{"Image": "cmd.exe"}, {"Image": r"C:\Windows\System32\cmd.exe "}, {"Other": "x"}, {"Image": None}],
    )


def test_cased_modifier_is_case_sensitive(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            Image|cased: 'Cmd.exe'
            Name|cased|contains: 'Bad'
        condition: selection
        """,
    )
    check(
        rule,
        [{"Image": "Cmd.exe", "Name": "aBadName"}],
        [{"Image": "cmd.exe", "Name": "aBadName"}, {"Image": "Cmd.exe", "Name": "abadname"}],
    )


def test_contains_startswith_endswith(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            CommandLine|contains: 'Invoke-Mimikatz'
            Image|startswith: 'C:\\Tools\\'
            ParentImage|endswith:
                - '\\explorer.exe'
                - '\\cmd.exe'
        condition: selection
        """,
    )
    base = {
        "CommandLine": "x INVOKE-mimikatz y",
        "Image": "c:\\tools\\a.exe",
        "ParentImage": "C:\\x\\CMD.exe",
    }
    check(
        rule,
        [base, {**base, "ParentImage": "\\explorer.exe"}],
        [
            {**base, "CommandLine": "Invoke-Mimi"},
            {**base, "Image": "D:\\C:\\Tools\\a.exe"},
            {**base, "ParentImage": "C:\\cmd.exe.bak"},
        ],
    )


def test_wildcards_and_escapes(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        r"""
        wild:
            Value: 'a*b?c'
        star:
            Literal: 'price\*2'
        question:
            Question: 'why\?'
        backslash:
            Path: 'C:\\*'
        condition: wild or star or question or backslash
        """,
    )
    check(
        rule,
        [
            {"Value": "abXc"},
            {"Value": "A-long\nmiddle-BXC"},
            {"Literal": "PRICE*2"},
            {"Question": "why?"},
            {"Path": "c:\\anything"},
        ],
        [
            {"Value": "abc"},
            {"Value": "abXYc"},
            {"Literal": "price-2"},
            {"Literal": "price*22"},
            {"Question": "whyX"},
            {"Path": "C:anything"},
        ],
    )


def test_value_lists_are_or_linked_and_all_modifier_and_links(tmp_path: Path) -> None:
    any_of = compile_detection(
        tmp_path,
        """
        selection:
            CommandLine|contains:
                - 'whoami'
                - 'net user'
        condition: selection
        """,
    )
    check(any_of, [{"CommandLine": "cmd /c whoami"}, {"CommandLine": "NET USER x"}], [{"CommandLine": "dir"}])
    all_of = compile_detection(
        tmp_path,
        """
        selection:
            CommandLine|contains|all:
                - 'whoami'
                - '/priv'
        condition: selection
        """,
    )
    check(all_of, [{"CommandLine": "WHOAMI /PRIV"}], [{"CommandLine": "whoami"}, {"CommandLine": "x /priv"}])


def test_windash_expands_dash_and_slash(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            CommandLine|windash|contains: ' -enc '
        condition: selection
        """,
    )
    check(
        rule,
        [{"CommandLine": "ps -enc abc"}, {"CommandLine": "ps /ENC abc"}],
        [{"CommandLine": "ps enc abc"}],
    )


def test_base64offset_matches_encoded_text(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            CommandLine|base64offset|contains: 'IEX'
        condition: selection
        """,
    )
    # "IEX" encodes to "SUVY" at offset 0; behind one other byte ("xIEX" -> "eElFWA==") it shows as "lFW".
    check(
        rule,
        [{"CommandLine": "powershell -e SUVY"}, {"CommandLine": "-e eElFWA=="}],
        [{"CommandLine": "IEX"}],
    )


# Regular expressions ----------------------------------------------------------------------------------


def test_regex_search_is_case_sensitive_by_default(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            CommandLine|re: 'ab+c'
        condition: selection
        """,
    )
    check(rule, [{"CommandLine": "xxabbbcyy"}], [{"CommandLine": "ABBC"}, {"CommandLine": "ac"}])


@pytest.mark.parametrize(
    ("modifier", "pattern", "matching", "other"),
    [
        ("|re|i", "^ab+c$", "ABBC", "xabc"),
        ("|re|m", "^second$", "first\nsecond", "first second"),
        ("|re|s", "first.second", "first\nsecond", "first\n\nsecond"),
        ("|re", "(?i)^mixed$", "MIXED", "mixed!"),
    ],
)
def test_regex_flags(tmp_path: Path, modifier: str, pattern: str, matching: str, other: str) -> None:
    rule = compile_detection(
        tmp_path,
        f"""
        selection:
            Text{modifier}: '{pattern}'
        condition: selection
        """,
    )
    check(rule, [{"Text": matching}], [{"Text": other}])


# Networks and numbers ---------------------------------------------------------------------------------


def test_cidr_v4_and_v6(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            SourceIp|cidr:
                - '10.0.0.0/8'
                - '2001:db8::/32'
        condition: selection
        """,
    )
    check(
        rule,
        [{"SourceIp": "10.1.2.3"}, {"SourceIp": "2001:db8::1"}, {"SourceIp": ["8.8.8.8", "10.0.0.1"]}],
        [
            {"SourceIp": "11.0.0.1"},
            {"SourceIp": "2001:db9::1"},
            {"SourceIp": "not-an-ip"},
            {"SourceIp": "10.0.0.1.5"},
            {"SourceIp": 10},
        ],
    )


def test_numbers_match_numbers_and_numeric_strings(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            EventID: 4688
        condition: selection
        """,
    )
    check(
        rule,
        [{"EventID": 4688}, {"EventID": "4688"}, {"EventID": 4688.0}, {"EventID": [1, 4688]}],
        [{"EventID": 4689}, {"EventID": "4688x"}, {"EventID": "46_88"}, {"EventID": True}, {}],
    )
    quoted = compile_detection(
        tmp_path,
        """
        selection:
            EventID: '4688'
            Ratio: 1.5
        condition: selection
        """,
    )
    check(quoted, [{"EventID": 4688, "Ratio": "1.5"}], [{"EventID": 4688, "Ratio": 1}])


@pytest.mark.parametrize(
    ("modifier", "matching", "other"),
    [
        ("lt", [9, "9", -1.5], [10, 11, "ten"]),
        ("lte", [10, "10.0"], [10.5]),
        ("gt", [11, "11"], [10, None]),
        ("gte", [10, 99], [9.99]),
    ],
)
def test_numeric_comparisons(tmp_path: Path, modifier: str, matching: list[Any], other: list[Any]) -> None:
    rule = compile_detection(
        tmp_path,
        f"""
        selection:
            Count|{modifier}: 10
        condition: selection
        """,
    )
    check(rule, [{"Count": value} for value in matching], [{"Count": value} for value in other] + [{}])


def test_booleans(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            Enabled: true
        condition: selection
        """,
    )
    check(rule, [{"Enabled": True}, {"Enabled": "True"}], [{"Enabled": False}, {"Enabled": 1}, {}])


# Presence ---------------------------------------------------------------------------------------------


def test_null_matches_missing_or_null_fields(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            OriginalFileName: null
        condition: selection
        """,
    )
    check(rule, [{}, {"OriginalFileName": None}], [{"OriginalFileName": ""}, {"OriginalFileName": "a.exe"}])


def test_exists_true_and_false(tmp_path: Path) -> None:
    present = compile_detection(
        tmp_path,
        """
        selection:
            errorCode|exists: true
        condition: selection
        """,
    )
    check(present, [{"errorCode": ""}, {"errorCode": 0}, {"errorCode": []}], [{}, {"errorCode": None}])
    absent = compile_detection(
        tmp_path,
        """
        selection:
            errorCode|exists: false
        condition: selection
        """,
    )
    check(absent, [{}, {"errorCode": None}], [{"errorCode": ""}, {"errorCode": "AccessDenied"}])


def test_fieldref_compares_two_fields(tmp_path: Path) -> None:
    equal = compile_detection(
        tmp_path,
        """
        selection:
            TargetUserName|fieldref: SubjectUserName
        condition: selection
        """,
    )
    check(
        equal,
        [{"TargetUserName": "Alice", "SubjectUserName": "alice"}],
        [{"TargetUserName": "alice", "SubjectUserName": "bob"}, {"TargetUserName": "alice"}, {}],
    )
    prefix = compile_detection(
        tmp_path,
        """
        selection:
            Image|fieldref|startswith: ParentDir
        condition: selection
        """,
    )
    check(
        prefix,
        [{"Image": "C:\\Temp\\x.exe", "ParentDir": "c:\\temp\\"}],
        [{"Image": "C:\\Other\\x.exe", "ParentDir": "C:\\Temp\\"}],
    )


# Event shapes -----------------------------------------------------------------------------------------


def test_list_valued_fields_match_any_element(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            groups: 'Domain Admins'
        condition: selection
        """,
    )
    check(
        rule,
        [{"groups": ["Users", "domain admins"]}, {"groups": [["nested", "DOMAIN ADMINS"]]}],
        [{"groups": []}],
    )


def test_all_modifier_on_a_list_field_checks_each_value_against_any_element(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            groups|all:
                - 'Admins'
                - 'Backup'
        condition: selection
        """,
    )
    check(rule, [{"groups": ["backup", "admins", "users"]}], [{"groups": ["admins"]}, {"groups": "admins"}])


def test_dotted_field_names_resolve_nested_dicts(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            eventName: 'CreateAccessKey'
            requestParameters.userName: 'bob'
        condition: selection
        """,
    )
    check(
        rule,
        [
            {"eventName": "CreateAccessKey", "requestParameters": {"userName": "Bob"}},
            {"eventName": "CreateAccessKey", "requestParameters.userName": "bob"},
        ],
        [
            {"eventName": "CreateAccessKey", "requestParameters": {"userName": "alice"}},
            {"eventName": "CreateAccessKey", "requestParameters": "bob"},
            {"eventName": "CreateAccessKey"},
        ],
    )


def test_dotted_paths_go_through_lists_and_dotted_keys(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            resources.ARN|endswith: ':user/bob'
        selection_literal:
            detail.a.b: 'deep'
        condition: 1 of selection*
        """,
    )
    check(
        rule,
        [
            {"resources": [{"ARN": "arn:aws:s3:::bucket"}, {"ARN": "arn:aws:iam::1:user/bob"}]},
            {"detail": {"a.b": "deep"}},
            {"detail": {"a": {"b": "DEEP"}}},
        ],
        [{"resources": [{"ARN": "arn:aws:iam::1:user/alice"}, {"type": "x"}]}, {"detail": {"a": "b"}}],
    )


def test_keywords_search_every_string_of_the_event(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        keywords:
            - 'mimikatz'
            - 'sekurlsa::*'
        condition: keywords
        """,
    )
    check(
        rule,
        [
            {"CommandLine": "C:\\Tools\\MIMIKATZ.exe"},
            {"deep": {"list": [1, {"value": "run sekurlsa::logonpasswords"}]}},
        ],
        [{"CommandLine": "mimi katz"}, {"count": 5}, {"mimikatz": 1}],
    )


def test_records_nested_as_deep_as_a_json_decoder_allows_are_matched(tmp_path: Path) -> None:
    """A line may nest 1,024 levels (orjson's limit): keywords and nested list values are read by a loop, not
    recursion, so such a record is matched rather than stopping `rules match` or the service."""
    keywords = compile_detection(tmp_path, "keywords:\n    - 'mimikatz'\ncondition: keywords")
    deep: Any = "run mimikatz"
    lists: Any = "admin"
    for _ in range(1020):
        deep, lists = {"a": deep}, [lists]
    check(keywords, [{"deep": deep}], [{"deep": {"a": "quiet"}}])
    field = compile_detection(tmp_path, "sel:\n    user: admin\ncondition: sel")
    check(field, [{"user": lists}], [{"user": [["x"]]}])


def test_keywords_with_all_modifier(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        keywords:
            '|all':
                - 'error'
                - 'denied'
        condition: keywords
        """,
    )
    check(rule, [{"a": "Error", "b": ["access DENIED"]}], [{"a": "error"}])


# Conditions -------------------------------------------------------------------------------------------


def test_one_of_pattern_and_all_of_them(tmp_path: Path) -> None:
    one_of = compile_detection(
        tmp_path,
        """
        selection_a:
            A: 1
        selection_b:
            B: 2
        other:
            C: 3
        condition: 1 of selection_* and other
        """,
    )
    check(one_of, [{"A": 1, "C": 3}, {"B": 2, "C": 3}], [{"A": 1, "B": 2}, {"C": 3}])
    all_of = compile_detection(
        tmp_path,
        """
        selection_a:
            A: 1
        selection_b:
            B: 2
        condition: all of them
        """,
    )
    check(all_of, [{"A": 1, "B": 2}], [{"A": 1}, {"B": 2}])


def test_not_and_parentheses(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            EventID: 1
        filter_a:
            User: 'SYSTEM'
        filter_b:
            Image|endswith: '\\trusted.exe'
        condition: selection and not (filter_a or filter_b)
        """,
    )
    check(
        rule,
        [{"EventID": 1, "User": "bob", "Image": "x.exe"}, {"EventID": 1}],
        [{"EventID": 1, "User": "system"}, {"EventID": 1, "Image": "C:\\trusted.exe"}, {"EventID": 2}],
    )


def test_detection_lists_of_maps_are_or_linked(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            - Image|endswith: '\\a.exe'
              User: 'bob'
            - Image|endswith: '\\b.exe'
        condition: selection
        """,
    )
    check(rule, [{"Image": "\\a.exe", "User": "Bob"}, {"Image": "\\b.exe"}], [{"Image": "\\a.exe"}])


def test_a_list_of_conditions_matches_when_any_does(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        first:
            A: 1
        second:
            B: 2
        condition:
            - first
            - second
        """,
    )
    check(rule, [{"A": 1}, {"B": 2}], [{"A": 2}])


# Loading ----------------------------------------------------------------------------------------------


def test_compiled_rule_metadata(tmp_path: Path) -> None:
    rule = compile_detection(tmp_path, "selection:\n    A: 1\ncondition: selection\n")
    assert rule.id == RULE_ID
    assert rule.title == "Test rule"
    assert rule.level is Severity.HIGH
    assert rule.tags == ["attack.initial-access", "attack.t1078", "detection.threat-hunting"]
    assert rule.logsource == LogSource(product="test")
    assert rule.description == "A rule written for a test."
    assert rule.source == tmp_path / "rule.yml"


def test_unresolved_expand_placeholder_is_rejected(tmp_path: Path) -> None:
    text = rule_text(
        """
        selection:
            eventName: 'ConsoleLogin'
        filter:
            SourceIp|expand: '%admin_ips%'
        condition: selection and not filter
        """
    )
    ruleset = load(tmp_path, text)
    assert ruleset.rules == []
    (rejection,) = ruleset.rejections
    assert rejection.rule_id == RULE_ID
    assert rejection.title == "Test rule"
    assert "unresolved placeholder %admin_ips%" in rejection.reason
    assert rejection.line is not None
    assert text.splitlines()[rejection.line - 1].strip().startswith("SourceIp|expand")


def test_timestamp_modifiers_are_rejected(tmp_path: Path) -> None:
    ruleset = load(tmp_path, rule_text("selection:\n    Time|hour: 3\ncondition: selection\n"))
    assert ruleset.rules == []
    assert "timestamp part modifier |hour" in ruleset.rejections[0].reason


def test_undefined_identifier_in_condition_is_rejected_at_the_condition(tmp_path: Path) -> None:
    text = rule_text("selection:\n    A: 1\ncondition: selection and missing\n")
    ruleset = load(tmp_path, text)
    (rejection,) = ruleset.rejections
    assert "'missing' not defined" in rejection.reason
    assert rejection.line is not None
    assert text.splitlines()[rejection.line - 1].strip().startswith("condition:")


def test_invalid_rules_are_rejected_with_pysigma_reasons(tmp_path: Path) -> None:
    text = rule_text("selection:\n    A|nosuchmodifier: 1\ncondition: selection\n").replace(
        "level: high", "level: huge"
    )
    ruleset = load(tmp_path, text)
    (rejection,) = ruleset.rejections
    assert "'huge' is not a valid Sigma rule level" in rejection.reason
    assert "Unknown modifier" in rejection.reason
    assert rejection.line == 4


def test_invalid_yaml_and_duplicate_keys_have_positions(tmp_path: Path) -> None:
    broken = load(tmp_path, "title: x\ndetection: [unclosed\n", name="broken.yml")
    (rejection,) = broken.rejections
    assert rejection.reason.startswith("invalid YAML")
    assert rejection.line is not None and rejection.column is not None
    duplicate = load(tmp_path, "title: a\ntitle: b\n", name="duplicate.yml")
    (rejection,) = duplicate.rejections
    assert "duplicate key 'title'" in rejection.reason
    assert (rejection.line, rejection.column) == (2, 1)
    assert str(rejection).startswith(f"{tmp_path / 'duplicate.yml'}:2:1: ")


def test_multi_document_files_with_a_global_action(tmp_path: Path) -> None:
    text = """\
action: global
title: Shared title
logsource:
    product: test
detection:
    condition: selection
---
id: 11111111-1111-4111-8111-111111111111
detection:
    selection:
        A: 1
---
id: 22222222-2222-4222-8222-222222222222
detection:
    selection:
        B|re: '('
---
action: bogus
"""
    ruleset = load(tmp_path, text)
    assert [(rule.id, rule.title) for rule in ruleset.rules] == [
        ("11111111-1111-4111-8111-111111111111", "Shared title")
    ]
    unknown, invalid_regex = ruleset.rejections
    assert unknown.reason == "Unknown Sigma collection action 'bogus' in rule 4"
    assert invalid_regex.rule_id == "22222222-2222-4222-8222-222222222222"
    assert "Regular expression '(' is invalid" in invalid_regex.reason
    assert (invalid_regex.line, invalid_regex.column) == (14, 1)


def test_correlation_and_filter_rules_naming_unknown_rules_are_rejected(tmp_path: Path) -> None:
    correlation = """\
title: Many failed logins
id: 0e95725d-7320-415d-80f7-004da920fc11
correlation:
    type: event_count
    rules:
        - failed-login
    group-by:
        - user
    timespan: 5m
    condition:
        gte: 10
"""
    sigma_filter = """\
title: Ignore service accounts
id: 7b1a6d0e-2f7c-4a8e-9d55-6c1f2b3a4d5e
logsource:
    product: test
filter:
    rules:
        - 5f9a3c2e-1b7d-4e8f-9a6b-0c1d2e3f4a5b
    selection:
        User|startswith: 'svc-'
    condition: not selection
"""
    (tmp_path / "correlation.yml").write_text(correlation)
    (tmp_path / "filter.yaml").write_text(sigma_filter)
    ruleset = load_rules([tmp_path])
    reasons = {rejection.title: rejection.reason for rejection in ruleset.rejections}
    assert reasons == {
        "Many failed logins": "refers to unknown rule 'failed-login'",
        "Ignore service accounts": "the filter refers to unknown rule(s): 5f9a3c2e-1b7d-4e8f-9a6b-0c1d2e3f4a5b",
    }


def test_folders_are_walked_and_problems_recorded_per_file(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "good.yaml").write_text(rule_text("selection:\n    A: 1\ncondition: selection\n"))
    (tmp_path / "copy.yml").write_text(rule_text("selection:\n    A: 2\ncondition: selection\n"))
    (tmp_path / "empty.yml").write_text("")
    (tmp_path / "list.yml").write_text("- a\n- b\n")
    (tmp_path / "notes.txt").write_text("not a rule")
    os.mkfifo(tmp_path / "pipe.yml")  # neither walked nor read when named: reading it would wait for a writer
    ruleset = load_rules([tmp_path, tmp_path / "missing", tmp_path / "pipe.yml"])
    assert [rule.source for rule in ruleset.rules] == [tmp_path / "copy.yml"]
    reasons = {rejection.file.name: rejection.reason for rejection in ruleset.rejections}
    assert reasons == {
        "missing": "no such file or directory",
        "pipe.yml": "not a regular file (a FIFO or a device)",
        "empty.yml": "the file contains no Sigma rule",
        "list.yml": "YAML document 1 is a list, not a mapping",
        "good.yaml": f"duplicate rule id {RULE_ID} (first loaded from {tmp_path / 'copy.yml'})",
    }


def test_processing_pipeline_is_applied_at_load_time(tmp_path: Path) -> None:
    pipeline = ProcessingPipeline(items=[ProcessingItem(FieldMappingTransformation({"Image": "process.executable"}))])
    ruleset = load(
        tmp_path,
        rule_text("selection:\n    Image|endswith: '\\cmd.exe'\ncondition: selection\n"),
        pipeline=pipeline,
    )
    (rule,) = ruleset.rules
    check(rule, [{"process": {"executable": "C:\\cmd.exe"}}], [{"Image": "C:\\cmd.exe"}])


# Engine and findings ----------------------------------------------------------------------------------


def make_event(logsource: LogSource, raw: dict[str, Any], actor: str | None = "alice") -> Event:
    return Event(
        id="evt-1",
        time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        source="cloudtrail",
        logsource=logsource,
        raw=raw,
        actor=actor,
    )


def test_engine_routes_events_by_logsource(tmp_path: Path) -> None:
    (tmp_path / "aws.yml").write_text(
        rule_text(
            "selection:\n    eventName: StopLogging\ncondition: selection\n",
            logsource="product: aws\n    service: cloudtrail",
        )
    )
    (tmp_path / "any_aws.yml").write_text(
        rule_text(
            "selection:\n    eventName: StopLogging\ncondition: selection\n",
            rule_id="9d1e2f3a-4b5c-4d6e-8f7a-0b1c2d3e4f5a",
            logsource="product: aws",
        )
    )
    (tmp_path / "okta.yml").write_text(
        rule_text(
            "selection:\n    eventName: StopLogging\ncondition: selection\n",
            rule_id="1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
            logsource="product: okta\n    service: okta",
        )
    )
    engine = SigmaEngine(load_rules([tmp_path]))
    cloudtrail = LogSource(product="AWS", service="CloudTrail")
    assert [rule.id for rule in engine.match(make_event(cloudtrail, {"eventName": "StopLogging"}))] == [
        "9d1e2f3a-4b5c-4d6e-8f7a-0b1c2d3e4f5a",
        RULE_ID,
    ]
    assert engine.match(make_event(cloudtrail, {"eventName": "StartLogging"})) == []
    other_service = LogSource(product="aws", service="guardduty")
    assert [rule.id for rule in engine.rules_for(other_service)] == ["9d1e2f3a-4b5c-4d6e-8f7a-0b1c2d3e4f5a"]
    assert engine.rules_for(LogSource()) == ()
    assert engine.rules_for(cloudtrail) is engine.rules_for(LogSource("aws", "cloudtrail"))


def test_findings_for_matched_rules(tmp_path: Path) -> None:
    rule = compile_detection(tmp_path, "selection:\n    eventName: StopLogging\ncondition: selection\n")
    event = make_event(LogSource(product="test"), {"eventName": "StopLogging"})
    (finding,) = findings_for(event, [rule])
    dedup_key = stable_id("sigma", RULE_ID, "alice")
    assert finding.dedup_key == dedup_key
    assert finding.id == stable_id("finding", dedup_key, "evt-1")
    assert finding.detector == "sigma"
    assert finding.rule_id == RULE_ID
    assert finding.title == "Test rule"
    assert finding.severity is Severity.HIGH
    assert finding.entity == "alice"
    assert finding.event_ids == ["evt-1"]
    assert finding.tags == ["attack.initial-access", "attack.t1078"]
    assert finding.first_seen == finding.last_seen == event.time
    assert finding.source == "cloudtrail"
    assert finding.description == "A rule written for a test."
    assert findings_for(event, []) == []


# Specification coverage: the remaining modifiers and condition forms -----------------------------------


def test_neq_negates_the_item_so_a_missing_field_matches(tmp_path: Path) -> None:
    # pySigma 1.5 turns `|neq` into a negated detection item: not (field equals any of the values).
    rule = compile_detection(
        tmp_path,
        """
        selection:
            eventName: 'CreateUser'
            userType|neq:
                - 'Root'
                - 42
        condition: selection
        """,
    )
    check(
        rule,
        [
            {"eventName": "CreateUser", "userType": "IAMUser"},
            {"eventName": "CreateUser"},
            {"eventName": "CreateUser", "userType": 43},
        ],
        [
            {"eventName": "CreateUser", "userType": "root"},
            {"eventName": "CreateUser", "userType": "42"},
            {"eventName": "CreateUser", "userType": 42},
            {"eventName": "DeleteUser", "userType": "IAMUser"},
        ],
    )


UTF16_ENCODINGS = {
    "wide": "cmd".encode("utf-16-le"),
    "utf16be": "cmd".encode("utf-16-be"),
    # pySigma 1.5 writes the byte order mark as UTF-8 (EF BB BF) before the UTF-16LE text, not as FF FE; the
    # matcher follows pySigma's typed value (no SigmaHQ rule uses |utf16)
    "utf16": "\ufeff".encode() + "cmd".encode("utf-16-le"),
}


@pytest.mark.parametrize("modifier", sorted(UTF16_ENCODINGS))
def test_utf16_modifiers_with_base64(tmp_path: Path, modifier: str) -> None:
    rule = compile_detection(
        tmp_path,
        f"""
        selection:
            Payload|{modifier}|base64: 'cmd'
        condition: selection
        """,
    )
    encoded = {name: base64.b64encode(data).decode() for name, data in UTF16_ENCODINGS.items()}
    others = [text for name, text in encoded.items() if name != modifier]
    check(rule, [{"Payload": encoded[modifier]}], [{"Payload": text} for text in [*others, "Y21k", "cmd"]])


def test_wide_base64offset_contains_finds_the_text_at_every_offset(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            CommandLine|wide|base64offset|contains: 'ping'
        condition: selection
        """,
    )
    encoded = [base64.b64encode(f"{prefix}ping 1.2.3.4".encode("utf-16-le")).decode() for prefix in ("", "x", "xy")]
    check(
        rule,
        [{"CommandLine": f"powershell -enc {text}"} for text in encoded],
        [{"CommandLine": base64.b64encode(b"ping").decode()}, {"CommandLine": "ping"}],
    )


def test_base64_matches_the_whole_encoded_value(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            Data|base64: 'secret'
        condition: selection
        """,
    )
    check(rule, [{"Data": "c2VjcmV0"}], [{"Data": "xc2VjcmV0"}, {"Data": "secret"}, {"Data": "c2VjcmV0Cg=="}])


def test_windash_covers_every_dash_variant(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            CommandLine|windash|contains: '-accepteula'
        condition: selection
        """,
    )
    variants = ["-", "/", "\u2013", "\u2014", "\u2015"]
    check(
        rule,
        [{"CommandLine": f"procdump {dash}AcceptEula"} for dash in variants],
        [{"CommandLine": "procdump accepteula"}, {"CommandLine": "procdump _accepteula"}],
    )


def test_cased_wildcards_and_escapes(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        r"""
        selection:
            Name|cased: 'Ab*C?\*'
        condition: selection
        """,
    )
    check(
        rule,
        [{"Name": "AbxyzCd*"}, {"Name": "AbCd*"}],
        [{"Name": "abxyzCd*"}, {"Name": "AbxyzCd"}, {"Name": "AbxyzCdd"}, {"Name": "ABxyzcd*"}],
    )


def test_regex_escapes_are_kept_and_anchors_are_explicit(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        r"""
        selection:
            Image|re: '\\Temp\\[a-z]{3}\.exe$'
        condition: selection
        """,
    )
    check(
        rule,
        [{"Image": r"C:\Temp\abc.exe"}, {"Image": r"D:\x\Temp\xyz.exe"}],
        [{"Image": r"C:\Temp\abcd.exe"}, {"Image": r"C:\Temp\abc.exe.bak"}, {"Image": r"C:\Temp\abcXexe"}],
    )


def test_mixed_value_types_on_one_field(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            Value:
                - 7
                - 'abc*'
                - true
                - null
        condition: selection
        """,
    )
    check(
        rule,
        [{"Value": 7}, {"Value": "7"}, {"Value": "ABCdef"}, {"Value": True}, {"Value": "TRUE"}, {}, {"Value": None}],
        [{"Value": 8}, {"Value": "xabc"}, {"Value": False}, {"Value": ""}],
    )


def test_null_and_exists_on_dotted_paths(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        selection:
            eventName: 'GetObject'
            errorCode: null
            additionalEventData.bytesTransferredOut|exists: true
        condition: selection
        """,
    )
    check(
        rule,
        [{"eventName": "GetObject", "additionalEventData": {"bytesTransferredOut": 10}}],
        [
            {"eventName": "GetObject", "additionalEventData": {}},
            {"eventName": "GetObject", "additionalEventData": {"bytesTransferredOut": None}},
            {"eventName": "GetObject", "errorCode": "AccessDenied", "additionalEventData": {"bytesTransferredOut": 1}},
        ],
    )


def test_keyword_numbers_and_field_conditions_together(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        keywords:
            - 4625
        selection:
            Channel: 'Security'
        condition: keywords and selection
        """,
    )
    check(
        rule,
        [{"Channel": "security", "Message": "event 4625 seen"}],
        [{"Channel": "Security", "EventID": 4625}, {"Channel": "System", "Message": "4625"}],
    )


def test_one_of_them_and_negated_patterns(tmp_path: Path) -> None:
    one_of_them = compile_detection(
        tmp_path,
        """
        first:
            A: 1
        second:
            B: 2
        condition: 1 of them
        """,
    )
    check(one_of_them, [{"A": 1}, {"B": 2}, {"A": 1, "B": 2}], [{"A": 2, "B": 1}, {}])
    patterns = compile_detection(
        tmp_path,
        """
        selection_image:
            Image|endswith: '\\\\rundll32.exe'
        selection_cli:
            CommandLine|contains: 'javascript:'
        filter_main_signed:
            Signed: 'true'
        filter_optional_vendor:
            Company: 'Vendor'
        condition: all of selection_* and not 1 of filter_*
        """,
    )
    base = {"Image": "C:\\rundll32.exe", "CommandLine": "x javascript:y"}
    check(
        patterns,
        [base, {**base, "Signed": "false", "Company": "Other"}],
        [
            {"Image": base["Image"]},
            {"CommandLine": base["CommandLine"]},
            {**base, "Signed": True},
            {**base, "Company": "vendor"},
        ],
    )


def test_nested_parentheses_and_double_negation(tmp_path: Path) -> None:
    rule = compile_detection(
        tmp_path,
        """
        a:
            A: 1
        b:
            B: 1
        c:
            C: 1
        condition: not (a and not (b or c))
        """,
    )
    check(rule, [{}, {"A": 1, "B": 1}, {"A": 1, "C": 1}, {"B": 1}], [{"A": 1}, {"A": 1, "B": 2}])


# Index ------------------------------------------------------------------------------------------------


def write_rules(tmp_path: Path, detections: dict[str, str]) -> RuleSet:
    for number, (name, detection) in enumerate(detections.items()):
        rule_id = f"00000000-0000-4000-8000-{number:012d}"
        text = rule_text(detection, rule_id=rule_id).replace("title: Test rule", f"title: {name}")
        (tmp_path / f"{name}.yml").write_text(text)
    ruleset = load_rules([tmp_path])
    assert ruleset.rejections == []
    return ruleset


def test_index_files_rules_by_exact_values_substrings_or_not_at_all(tmp_path: Path) -> None:
    ruleset = write_rules(
        tmp_path,
        {
            "a_exact": "selection:\n    eventName: 'StopLogging'\n    userAgent|contains: 'cli'\n"
            "condition: selection\n",
            "b_either": "first:\n    eventName: 'DeleteTrail'\nsecond:\n    eventSource: 'cloudtrail.amazonaws.com'\n"
            "condition: first or second\n",
            "c_substring": "selection:\n    userAgent|contains|all:\n        - 'python'\n        - 'boto'\n"
            "condition: selection\n",
            "d_keyword": "keywords:\n    - 'mimikatz'\ncondition: keywords\n",
            "e_negated": "filter:\n    eventName: 'GetObject'\ncondition: not filter\n",
            "f_number": "selection:\n    EventID: 4688\ncondition: selection\n",
            "g_short": "selection:\n    userAgent|contains: 'ab'\ncondition: selection\n",
        },
    )
    index = RuleIndex(ruleset.rules)
    assert index.stats == {"rules": 7, "exact": 3, "substring": 2, "always": 2}
    assert [rule.title for rule in index.rules if rule.requirements == ()] == ["e_negated", "g_short"]

    def titles(rules: list[CompiledRule]) -> list[str]:
        return [rule.title for rule in rules]

    always = ["e_negated", "g_short"]
    assert titles(index.candidates({"eventName": "ListBuckets"})) == always
    # a_exact's eventName is expected often (a field compared with few values): it is filed under its userAgent
    # substring too, and is a candidate only when an event meets both; so is c_substring (two short substrings)
    assert titles(index.candidates({"eventName": "STOPLOGGING"})) == always
    assert titles(index.candidates({"userAgent": "aws-cli/2"})) == always
    assert titles(index.candidates({"eventName": "STOPLOGGING", "userAgent": "AWS-CLI/2"})) == ["a_exact", *always]
    assert titles(index.candidates({"userAgent": "Python/3.11"})) == always
    assert titles(index.candidates({"eventSource": ["x", "CloudTrail.amazonaws.com"]})) == ["b_either", *always]
    assert titles(index.candidates({"userAgent": "Boto3/1.0 Python/3.11"})) == ["c_substring", *always]
    assert titles(index.candidates({"deep": [{"text": "run MimiKatz"}]})) == ["d_keyword", *always]
    # a field number is looked up by numeric value, as the rule compares it: numbers, numeric strings, lists
    value: object
    for value in (4688, 4688.0, "4688", " 4688", "4688.0", ["1", 4688], [[4688]]):
        assert titles(index.candidates({"EventID": value})) == ["e_negated", "f_number", "g_short"], value
        assert index.match({"EventID": value}) == [rule for rule in ruleset.rules if rule.match({"EventID": value})]
    for value in (4689, "4688x", True, {"n": 4688}, None, "x"):
        assert titles(index.candidates({"EventID": value})) == always, value
        assert index.match({"EventID": value}) == [rule for rule in ruleset.rules if rule.match({"EventID": value})]
    event = {"eventName": "StopLogging", "userAgent": "aws-cli/2 ab", "EventID": "4688"}
    assert titles(index.candidates({"userAgent": "aws-cli/2"})) == always
    assert titles(index.match(event)) == ["a_exact", "e_negated", "f_number", "g_short"]
    assert index.match(event) == [rule for rule in ruleset.rules if rule.match(event)]


def test_engine_with_and_without_index_agree(tmp_path: Path) -> None:
    ruleset = write_rules(
        tmp_path,
        {
            "one": "selection:\n    eventName:\n        - 'A'\n        - 'B*'\ncondition: selection\n",
            "two": "selection:\n    eventName: 'B'\n    n|gt: 3\ncondition: selection\n",
            "three": "selection:\n    eventName|cased: 'Ab'\ncondition: selection\n",
        },
    )
    indexed, plain = SigmaEngine(ruleset), SigmaEngine(ruleset, indexed=False)
    logsource = LogSource(product="test")
    for value in ["a", "B", "Bx", "AB", "Ab", "ab", 4, None, ["x", "b"], {"k": "a"}]:
        for n in [1, 5]:
            record = {"eventName": value, "n": n}
            assert indexed.match_record(logsource, record) == plain.match_record(logsource, record)
    assert indexed.index_for(logsource) is indexed.index_for(LogSource(product="TEST"))


@pytest.mark.parametrize(
    ("modifier", "pattern", "required"),
    [
        ("|re", ".+:assumed-role/aws:.+", ":assumed-role/aws:"),
        ("|re", "^Cmd\\.exe /c [a-z]+ Whoami$", "cmd.exe /c "),
        ("|re|i", ".+:assumed-role/aws:.+", None),
        ("|re", "(?i)abcdef", None),
        ("|re", "abc|def", None),
        ("|re", "ab[0-9]+cd", None),
    ],
)
def test_case_sensitive_regexes_require_their_longest_literal(
    tmp_path: Path, modifier: str, pattern: str, required: str | None
) -> None:
    rule = compile_detection(tmp_path, f"selection:\n    arn{modifier}: '{pattern}'\ncondition: selection\n")
    expected = () if required is None else (Requirement(contains=frozenset({("arn", required)})),)
    assert rule.requirements == expected


def test_wildcard_patterns_match_as_their_regex_would_in_linear_time(tmp_path: Path) -> None:
    """`*a*b*`-style values were one backtracking regex, quadratic or worse on a crafted value (a script block of
    100,000 characters took seconds per rule); they are now literal segments found in order, with the same answers."""
    rng = random.Random(7)
    for _ in range(20_000):
        segments = ["".join(rng.choice("ab\\.") for _ in range(rng.randint(0, 3))) for _ in range(rng.randint(2, 5))]
        text = "".join(rng.choice("ab\\.") for _ in range(rng.randint(0, 12)))
        expected = re.fullmatch(".*".join(map(re.escape, segments)), text, re.DOTALL) is not None
        assert _glob_check([segments])(text) is expected, (segments, text)
    rule = compile_detection(tmp_path, "selection:\n    Image: '*\\\\*.exe'\ncondition: selection\n")
    crafted = "\\" * 200_000  # no '.exe' anywhere: each '\\' once began a fresh backtracking search
    check(rule, [{"Image": crafted + "x.EXE"}, {"Image": "C:\\a\\b.exe"}], [{"Image": crafted}, {"Image": "b.exe"}])


def test_patterns_that_backtrack_without_bound_cannot_stall_matching(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SigmaHQ's Invoke-Obfuscation VAR launcher pattern took 0.44 s on a command line ending in 22 `)`, four
    times more for each two more: one crafted event could hold matching for hours."""
    shapes = {r"(?:.*\)){1,}x": True, r"(a+)+$": True, r"(a|aa)+c": True, r"(\s+\S+)*z": True}
    shapes |= {r"abc": False, r"a+b+": False, r"(?:ab){2,3}": False, r"(?>a+)+b": False, r"\d{1,5}(?:/c|/r)": False}
    assert {shape: backtracks(shape) for shape in shapes} == shapes
    launcher = r'cmd.{0,5}(?:/c|/r)(?:\s|)"set\s[a-zA-Z]{3,6}.*(?:\{\d\}){1,}\\"\s+?-f(?:.*\)){1,}.*"'
    rule = compile_detection(tmp_path, f"selection:\n    CommandLine|re: '{launcher}'\ncondition: selection\n")
    crafted = 'cmd /c "set abcd {0}\\" -f' + ")" * 60
    check(rule, [{"CommandLine": crafted + '"'}], [{"CommandLine": crafted}, {"CommandLine": "cmd /c set"}])
    monkeypatch.setattr(regexes, "SEARCH_SECONDS", 0.05)
    search = regexes.search_test(r"(a|aa)+c", 0)  # one even the guarded engine cannot cut short
    with caplog.at_level("WARNING", logger="custodes.detections.sigma.regexes"):
        assert search("a" * 80) is True and search("aac") is True and search("b") is False
    assert "took more than 0.05 s on a 80-character value; counted as a match" in caplog.text
