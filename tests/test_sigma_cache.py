"""The on-disk cache of compiled rule sets: the same rules as loading their files, invalidated, and safe."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from custodes.connectors.windows import flatten, rendered_records
from custodes.detections.sigma.cache import cache_folder, load_rules_cached
from custodes.detections.sigma.loader import load_rules
from custodes.detections.sigma.pipelines import pipeline_named
from custodes.detections.sigma.ruleset import RuleSet

SIGMAHQ = Path(__file__).resolve().parents[2] / "shared" / "sigmahq"
WINDOWS = SIGMAHQ / "rules" / "windows" / "process_creation"
AWS = SIGMAHQ / "rules" / "cloud" / "aws"

RULE = """title: Test rule
id: 6f2d5c1e-0b7a-4d3e-9a51-2c1f0e8d7b6a
logsource: {product: aws, service: cloudtrail}
detection:
  selection: {eventName: %s}
  condition: selection
"""


def _summary(ruleset: RuleSet) -> list[tuple[object, ...]]:
    return [
        (
            rule.id,
            rule.title,
            rule.level,
            rule.tags,
            rule.logsource,
            rule.description,
            rule.source,
            rule.requirements,
            rule.contextual,
            rule.conditions,
        )
        for rule in ruleset.rules
    ]


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json"))


def test_a_cached_rule_set_is_the_loaded_one_and_matches_alike(_rule_cache: Path) -> None:
    fresh = load_rules([WINDOWS])
    first = load_rules_cached([WINDOWS], None)  # loads the files and writes the entry
    assert len(_entries(_rule_cache)) == 1
    cached = load_rules_cached([WINDOWS], None)  # read back from the entry
    assert len(fresh.rules) > 1000
    assert _summary(cached) == _summary(fresh) == _summary(first)
    assert [str(r) for r in cached.rejections] == [str(r) for r in fresh.rejections]
    assert cached.known == fresh.known and cached.silent == fresh.silent

    records = [
        flatten(record)
        for sample in sorted((SIGMAHQ / "regression_data" / "rules" / "windows" / "process_creation").rglob("*.json"))
        for record in rendered_records(sample)
    ]
    assert len(records) > 50
    hits = 0
    for record in records:
        expected = [rule.id for rule in fresh.rules if rule.match(record)]
        assert [rule.id for rule in cached.rules if rule.match(record)] == expected
        hits += len(expected)
    assert hits > 50


def test_a_pipeline_and_every_change_to_a_rule_give_a_new_entry(tmp_path: Path, _rule_cache: Path) -> None:
    rule = tmp_path / "rule.yml"
    rule.write_text(RULE % "StopLogging")
    assert load_rules_cached([tmp_path], "cloudtrail").rules[0].match({"eventName": "StopLogging"})
    rule.write_text(RULE % "DeleteTrail")
    changed = load_rules_cached([tmp_path], "cloudtrail")
    assert changed.rules[0].match({"eventName": "DeleteTrail"})
    assert not changed.rules[0].match({"eventName": "StopLogging"})
    load_rules_cached([tmp_path], None)
    assert len(_entries(_rule_cache)) == 3
    with_pipeline = load_rules([AWS], pipeline=pipeline_named("cloudtrail"))
    assert _summary(load_rules_cached([AWS], "cloudtrail")) == _summary(with_pipeline)
    assert _summary(load_rules_cached([AWS], "cloudtrail")) == _summary(with_pipeline)


def test_a_tampered_or_foreign_entry_is_not_read(tmp_path: Path, _rule_cache: Path) -> None:
    (tmp_path / "rule.yml").write_text(RULE % "StopLogging")
    load_rules_cached([tmp_path], None)
    (entry,) = _entries(_rule_cache)
    checksum, _, body = entry.read_bytes().partition(b"\n")
    entry.write_bytes(checksum + b"\n" + body.replace(b"stoplogging", b"deletetrail"))
    ruleset = load_rules_cached([tmp_path], None)  # the checksum fails: loaded from the file, entry rewritten
    assert ruleset.rules[0].match({"eventName": "StopLogging"})
    assert not ruleset.rules[0].match({"eventName": "DeleteTrail"})
    assert orjson.loads(entry.read_bytes().partition(b"\n")[2])["rules"][0][0] == ruleset.rules[0].id

    body = entry.read_bytes().partition(b"\n")[2].replace(b"stoplogging", b"deletetrail")
    entry.write_bytes(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    entry.chmod(0o666)  # writable by others: never read, whatever it holds
    assert load_rules_cached([tmp_path], None).rules[0].match({"eventName": "StopLogging"})


def test_the_cache_is_off_or_refused_when_the_folder_is_not_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert cache_folder({"CUSTODES_CACHE_DIR": str(shared)}) is None
    assert cache_folder({"CUSTODES_CACHE_DIR": "off"}) is None
    created = cache_folder({"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert created == tmp_path / "xdg" / "custodes" / "rulesets"
    assert created.stat().st_mode & 0o777 == 0o700
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rule.yml").write_text(RULE % "StopLogging")
    monkeypatch.setenv("CUSTODES_CACHE_DIR", "off")
    assert len(load_rules_cached([tmp_path / "rules"], None).rules) == 1
    assert not os.listdir(tmp_path / "xdg" / "custodes" / "rulesets")


EVERY_KIND = """title: Every kind of value
id: 0d6c3b1a-5e2f-4a7b-8c9d-1e2f3a4b5c6d
logsource: {product: test}
detection:
  strings:
    name|contains|all: ['ab', 'cd']
    path|endswith: ['\\\\a.exe', '\\\\b.exe']
    path|startswith: 'C:\\\\'
  cased:
    name|cased: 'AbCd'
  wild:
    name: 'a?c*d'
  regex:
    cmd|re|i: '^run .*now$'
  network:
    ip|cidr: ['10.0.0.0/8', 'fd00::/8']
  compare:
    size|gte: 100
  number:
    code: [4688, 4689]
  flag:
    enabled: true
  missing:
    gone: null
  present:
    here|exists: true
  reference:
    copy|fieldref|contains: name
  words:
    - 'mimikatz'
    - 42
  condition: (strings and not cased) or wild or regex or (network and compare) or (number and flag) or
    (missing and present) or reference or words
"""

EVENTS: list[dict[str, Any]] = [
    {"name": "xxabcdyy", "path": "C:\\\\x\\\\a.exe"},
    {"name": "AbCd", "path": "C:\\\\x\\\\a.exe"},
    {"name": "aXcYYd"},
    {"cmd": "RUN it NOW"},
    {"ip": "10.1.2.3", "size": "150"},
    {"ip": "fd00::1", "size": 99},
    {"code": "4688", "enabled": True},
    {"code": 4689.0, "enabled": "true"},
    {"here": 1},
    {"here": None},
    {"copy": "the abcd copy", "name": "ABCD"},
    {"other": ["x", {"deep": "run MIMIKATZ"}]},
    {"n": 42},
    {"n": "answer 42"},
    {},
]


def test_every_kind_of_value_matches_alike_when_read_back(tmp_path: Path) -> None:
    (tmp_path / "rule.yml").write_text(EVERY_KIND)
    fresh = load_rules([tmp_path])
    assert not fresh.rejections and len(fresh.rules) == 1
    load_rules_cached([tmp_path], None)
    cached = load_rules_cached([tmp_path], None)
    assert _summary(cached) == _summary(fresh)
    expected = [fresh.rules[0].match(event) for event in EVENTS]
    assert [cached.rules[0].match(event) for event in EVENTS] == expected
    assert 5 < sum(expected) < len(EVENTS)
