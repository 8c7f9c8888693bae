"""Sigma filters, per-rule overrides from configuration, and |expand placeholders from configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from custodes.config import DatabaseSettings, DetectionSettings, PlaybookSettings, RuleOverride, Settings
from custodes.detections.sigma.loader import RuleOptions, load_rules
from custodes.detections.sigma.overrides import unknown_overrides
from custodes.detections.sigma.ruleset import RuleSet
from custodes.errors import ConfigError
from custodes.model import Severity
from custodes.services import Services

RULE_ID = "0c5a1a7e-5b7e-4c55-9d0b-2f1f7e0a0001"
OTHER_ID = "0c5a1a7e-5b7e-4c55-9d0b-2f1f7e0a0002"

RULES = f"""
title: Access key created
id: {RULE_ID}
name: key_created
status: test
logsource: {{product: aws, service: cloudtrail}}
detection:
  selection: {{eventName: CreateAccessKey}}
  condition: selection
level: medium
---
title: Trail stopped
id: {OTHER_ID}
status: test
logsource: {{product: aws, service: cloudtrail}}
detection:
  selection: {{eventName: StopLogging}}
  condition: selection
"""


def filter_rule(rules: str, product: str = "aws") -> str:
    return f"""
---
title: Break-glass automation is expected
id: 0c5a1a7e-5b7e-4c55-9d0b-2f1f7e0a00f1
logsource: {{product: {product}}}
filter:
  rules: {rules}
  automation:
    userIdentity.userName|startswith: 'svc-'
  condition: not automation
"""


def load(tmp_path: Path, text: str, options: RuleOptions | None = None) -> RuleSet:
    path = tmp_path / "rules.yml"
    path.write_text(text, encoding="utf-8")
    return load_rules([path], options=options)


def matches(ruleset: RuleSet, rule_id: str, record: dict[str, Any]) -> bool:
    (rule,) = [rule for rule in ruleset.rules if rule.id == rule_id]
    return rule.match(record)


KEY_BY_SERVICE = {"eventName": "CreateAccessKey", "userIdentity": {"userName": "svc-deploy"}}
KEY_BY_PERSON = {"eventName": "CreateAccessKey", "userIdentity": {"userName": "alice"}}


@pytest.mark.parametrize("reference", [RULE_ID, "key_created", f"[{RULE_ID}]"])
def test_filter_applies_to_the_rules_it_names(tmp_path: Path, reference: str) -> None:
    ruleset = load(tmp_path, RULES + filter_rule(reference))
    assert not ruleset.rejections
    assert not matches(ruleset, RULE_ID, KEY_BY_SERVICE)
    assert matches(ruleset, RULE_ID, KEY_BY_PERSON)
    stop = {"eventName": "StopLogging", "userIdentity": {"userName": "svc-deploy"}}
    assert matches(ruleset, OTHER_ID, stop)  # not named by the filter


def test_filter_any_and_logsource(tmp_path: Path) -> None:
    ruleset = load(tmp_path, RULES + filter_rule("any"))
    stop = {"eventName": "StopLogging", "userIdentity": {"userName": "svc-deploy"}}
    assert not matches(ruleset, OTHER_ID, stop)
    (tmp_path / "okta").mkdir()
    ruleset = load(tmp_path / "okta", RULES + filter_rule(RULE_ID, product="okta"))
    assert matches(ruleset, RULE_ID, KEY_BY_SERVICE)  # the filter's logsource does not cover the rule


def test_filter_naming_an_unknown_rule_is_rejected(tmp_path: Path) -> None:
    ruleset = load(tmp_path, RULES + filter_rule("[key_created, no_such_rule]"))
    (rejection,) = ruleset.rejections
    assert rejection.reason == "the filter refers to unknown rule(s): no_such_rule"
    assert rejection.line is not None
    assert matches(ruleset, RULE_ID, KEY_BY_SERVICE)  # not applied at all


def test_filter_with_pipeline_applies_once_per_rule(tmp_path: Path) -> None:
    # The filter's detections are copied per rule, so a pipeline mapping fields does not map them twice.
    from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
    from sigma.processing.transformations import FieldMappingTransformation

    mapping = {"userIdentity.userName": "user", "user": "user.name"}
    pipeline = ProcessingPipeline(items=[ProcessingItem(FieldMappingTransformation(mapping))])  # type: ignore[arg-type]
    path = tmp_path / "rules.yml"
    path.write_text(RULES + filter_rule("any"), encoding="utf-8")
    ruleset = load_rules([path], pipeline=pipeline)
    assert not ruleset.rejections
    assert not matches(ruleset, RULE_ID, {"eventName": "CreateAccessKey", "user": "svc-x"})
    assert not matches(ruleset, OTHER_ID, {"eventName": "StopLogging", "user": "svc-x"})


def test_override_level_disable_and_suppress(tmp_path: Path) -> None:
    overrides = {
        RULE_ID: RuleOverride(
            level="critical",
            suppress=[{"userIdentity.userName": ["svc-deploy", "SVC-BACKUP"]}, {"sourceIPAddress": "10.0.0.1"}],
        ),
        OTHER_ID: RuleOverride(enabled=False),
    }
    ruleset = load(tmp_path, RULES, RuleOptions(overrides=overrides))
    assert [rule.id for rule in ruleset.rules] == [RULE_ID]
    assert ruleset.rules[0].level is Severity.CRITICAL
    assert not matches(ruleset, RULE_ID, KEY_BY_SERVICE)
    assert not matches(ruleset, RULE_ID, {**KEY_BY_PERSON, "userIdentity": {"userName": "svc-backup"}})
    assert not matches(ruleset, RULE_ID, {**KEY_BY_PERSON, "sourceIPAddress": "10.0.0.1"})
    assert matches(ruleset, RULE_ID, {**KEY_BY_PERSON, "sourceIPAddress": "10.0.0.2"})


def test_a_disabled_rule_still_feeds_the_correlations_that_use_it(tmp_path: Path) -> None:
    text = (
        RULES
        + """
---
title: Keys created repeatedly
id: 0c5a1a7e-5b7e-4c55-9d0b-2f1f7e0a00c1
correlation:
  type: event_count
  generate: true
  rules: key_created
  group-by: [userIdentity.userName]
  timespan: 1h
  condition: {gte: 3}
"""
    )
    overrides = {  # by name or by id
        "key_created": RuleOverride(enabled=False),
        "0c5a1a7e-5b7e-4c55-9d0b-2f1f7e0a00c1": RuleOverride(level="low"),
    }
    ruleset = load(tmp_path, text, RuleOptions(overrides=overrides))
    assert RULE_ID in {rule.id for rule in ruleset.rules}
    assert ruleset.silent == {RULE_ID}
    (correlation,) = ruleset.correlations
    assert correlation.level is Severity.LOW


async def test_unknown_override_is_a_located_config_error(tmp_path: Path, database: DatabaseSettings) -> None:
    ruleset = load(tmp_path, RULES)
    overrides = {RULE_ID: RuleOverride(level="high"), "key_created": RuleOverride(), "typo-id": RuleOverride()}
    (problem,) = unknown_overrides(overrides, ruleset.known)
    assert problem.location.field == "detection.overrides.typo-id"
    assert "no rule has id 'typo-id'" in problem.message

    (tmp_path / "playbooks").mkdir()
    settings = Settings(
        database=database,
        detection=DetectionSettings(rules=[tmp_path / "rules.yml"], overrides={"typo-id": RuleOverride()}),
        playbooks=PlaybookSettings(paths=[tmp_path / "playbooks"]),
    )
    with pytest.raises(ConfigError, match=r"\(detection\.overrides\.typo-id\): no rule has id"):
        await Services.open(settings)


EXPAND = """
title: Admin group changed
id: 0c5a1a7e-5b7e-4c55-9d0b-2f1f7e0a00e1
status: test
logsource: {product: okta, service: okta}
detection:
  selection:
    eventType: group.user_membership.add
    target.displayName|expand: '%admin_groups%'
  other:
    actor.alternateId|expand: '%break_glass%'
  condition: selection and not other
"""


def test_placeholders_come_from_configuration(tmp_path: Path) -> None:
    options = RuleOptions(placeholders={"admin_groups": ["Okta Admins", "AWS-*"], "break_glass": ["bg@example.com"]})
    ruleset = load(tmp_path, EXPAND, options)
    assert not ruleset.rejections
    (rule,) = ruleset.rules
    add = {"eventType": "group.user_membership.add", "actor": {"alternateId": "alice@example.com"}}
    assert rule.match({**add, "target": [{"displayName": "okta admins"}]})
    assert rule.match({**add, "target": [{"displayName": "AWS-Prod"}]})
    assert not rule.match({**add, "target": [{"displayName": "Sales"}]})
    assert not rule.match({**add, "actor": {"alternateId": "bg@example.com"}, "target": [{"displayName": "AWS-X"}]})


def test_unresolved_placeholders_are_rejected_by_name(tmp_path: Path) -> None:
    ruleset = load(tmp_path, EXPAND, RuleOptions(placeholders={"break_glass": ["bg@example.com"]}))
    (rejection,) = ruleset.rejections
    assert rejection.reason == "unresolved placeholder %admin_groups% (give the values in detection.placeholders)"
    assert rejection.line is not None
    assert (
        load(tmp_path, EXPAND).rejections[0].reason.startswith("unresolved placeholder %admin_groups%, %break_glass%")
    )
