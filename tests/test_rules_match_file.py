"""`rules match` over files: the line screen never hides a match, workers give the output of one process.

The oracle decodes every line and tests every rule on every record (no index, no screen); `rules match` must print
exactly its matches, with the same warnings, whatever the spelling of the JSON and the number of workers.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from typer.testing import CliRunner

from custodes.cli import app
from custodes.config import load_settings
from custodes.connectors.envelope import ID_KEYS, event_id, to_event
from custodes.connectors.files import BOM, Screen, iter_range, iter_records, ndjson_ranges
from custodes.detections.sigma import filematch
from custodes.detections.sigma.filematch import RecordMatcher
from custodes.detections.sigma.loader import load_rules
from custodes.errors import CustodesError
from custodes.sources import DEFAULT_SOURCES, SourceFormatName, SourceSettings, builtin_source, is_override

runner = CliRunner()
Row = tuple[int, Any, str | None]

RULES = {
    "quote": ("Quote and backslash", "commandLine|contains: 'say \"hi\" C:\\\\temp'"),
    "slash": ("Slash", "path|endswith: '/etc/shadow'"),
    "digits": ("Digits only", "amount|contains: '1000'"),
    "float": ("A float's text", "ratio: '0.3'"),
    "kelvin": ("Kelvin folds to k", "unit|startswith: 'kel'"),
    "keyword": ("Keyword", "keywords: ['exfiltrate']"),
    "bool": ("Boolean", "flag: 'true'"),
    "exact": ("Exact name", "eventName: ConsoleLogin"),
    "value": ("Text record", "value|contains: 'badline'"),
}


def write_rules(folder: Path) -> Path:
    folder.mkdir()
    for number, (name, (title, detection)) in enumerate(RULES.items()):
        field, value = detection.split(": ", 1)
        body = (
            f"  keywords: {value}\n  condition: keywords"
            if field == "keywords"
            else f"  sel:\n    {field}: {value}\n  condition: sel"
        )
        (folder / f"{name}.yml").write_text(
            f"title: {title}\nid: 00000000-0000-4000-8000-{number:012d}\nstatus: test\nlevel: high\n"
            f"logsource: {{product: test}}\ndetection:\n{body}\n"
        )
    return folder


def spell(value: str, rng: random.Random) -> str:
    """A JSON string literal for `value`, each character escaped as \\uXXXX now and then, letter case changed."""
    out = ['"']
    for char in value:
        if rng.random() < 0.5 and char.isalpha():
            char = char.upper() if rng.random() < 0.5 else char.lower()
        if rng.random() < 0.08 or char in '"\\' or ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}" if rng.random() < 0.5 or char not in '"\\' else "\\" + char)
        elif char == "/" and rng.random() < 0.3:
            out.append("\\/")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


TEXTS = [
    'say "hi" C:\\temp now',
    "/etc/shadow",
    "/etc/passwd",
    "ConsoleLogin",
    "consolelogin",
    "Exfiltrate the data",
    "\u212aelvin",
    "kelvin",
    "nothing here",
    "1000",
    "naïve",
]
NUMBERS = [
    "1e3",
    "1000",
    "1.0E3",
    "0.29999999999999999",
    "0.3",
    "1e-05",
    "12345678901234567890.5",
    "7",
    "true",
    "false",
]
FIELDS = ["commandLine", "path", "amount", "ratio", "unit", "note", "flag", "eventName"]


def random_lines(rng: random.Random, count: int) -> list[str]:
    """NDJSON lines in every spelling; the first an object (a file starting otherwise could be one JSON document)."""
    lines = ['{"note": "first"}']
    for _ in range(count - 1):
        roll = rng.random()
        if roll < 0.05:
            lines.append(rng.choice(["badline {", "{broken badline", "", "   ", "[1, 2]", '"exfiltrate"', "42"]))
            continue
        members = []
        for field in rng.sample(FIELDS, rng.randint(1, 4)):
            value = rng.choice(NUMBERS) if rng.random() < 0.3 else spell(rng.choice(TEXTS), rng)
            members.append(f'"{field}":{rng.choice(["", " "])}{value}')
        if rng.random() < 0.1:
            members.append(f'"nested":{{"deep":[{spell(rng.choice(TEXTS), rng)}]}}')
        line = "{" + ",".join(members) + "}"
        if rng.random() < 0.05:
            line = line[:-1]  # malformed, shaped like an object at the start only
        lines.append(line + ("\r" if rng.random() < 0.1 else ""))
    return lines


def oracle(rules: Path, events: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """Every line decoded, every rule tested on every record: (rule id, line) of each match, and the warnings."""
    loaded = load_rules([rules]).rules
    matcher = RecordMatcher(load_rules([rules]), None, "file")
    found: list[tuple[str, int]] = []
    warnings: list[str] = []
    for number, record, warning in iter_records(events):
        if warning:
            warnings.append(warning)
        raw = record if isinstance(record, dict) else to_event(record, SourceSettings(format="generic"), "file").raw
        found.extend((rule.id, number) for rule in loaded if rule.match(raw))
        assert [rule.id for rule in matcher.match(record)] == [rule.id for rule in loaded if rule.match(raw)]
    return found, warnings


def run_match(rules: Path, events: Path, *extra: str) -> tuple[list[tuple[str, int]], str]:
    result = runner.invoke(app, ["rules", "match", "--rules", str(rules), "--events", str(events), *extra])
    assert result.exit_code == 0, result.output
    found = [json.loads(line) for line in result.stdout.splitlines()]
    return [(item["rule_id"], item["line"]) for item in found], result.stderr


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_screen_never_hides_a_match_whatever_the_spelling(tmp_path: Path, seed: int) -> None:
    rules = write_rules(tmp_path / "rules")
    events = tmp_path / "events.ndjson"
    events.write_text("\n".join(random_lines(random.Random(seed), 3000)) + "\n", encoding="utf-8")
    screen = RecordMatcher(load_rules([rules]), None, "file").screen()
    assert screen is not None
    decoded = sum(1 for _ in iter_records(events, screen))
    assert decoded < 2900  # the screen skips lines, so the comparison below tests it
    expected, warnings = oracle(rules, events)
    assert {rule for rule, _ in expected} == {f"00000000-0000-4000-8000-{n:012d}" for n in range(len(RULES))}
    found, stderr = run_match(rules, events, "--workers", "1")
    assert found == expected
    shown = [line.removeprefix("warning: ") for line in stderr.splitlines() if line.startswith("warning: ")]
    assert warnings and shown == warnings  # every malformed line here is not shaped like an object


def test_the_spelling_cases_each_need_the_screen_to_take_their_line(tmp_path: Path) -> None:
    """Each line below matches only as the rule reads the value (escape, float text, folding), not as written."""
    rules = write_rules(tmp_path / "rules")
    events = tmp_path / "events.ndjson"
    lines = [
        '{"commandLine": "say \\u0022hi\\" C:\\\\temp"}',
        '{"path": "\\/etc\\/shadow"}',
        '{"amount": 1e3}',
        '{"ratio": 0.29999999999999999}',
        '{"unit": "\u212aelvin"}',
        '{"note": "exfiltr\\u0061te"}',
        '{"flag": true}',
        '{"eventName": "CONSOLELOGIN"}',
        "badline",
        '{"note": "harmless"}',
    ]
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected, _ = oracle(rules, events)
    assert [line for _, line in expected] == list(range(1, 10))
    found, _ = run_match(rules, events)
    assert found == expected


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_splunk_export_is_matched_as_the_records_its_results_hold(tmp_path: Path, workers: str) -> None:
    """Each record is JSON within the result's `_raw`, where a line's bytes do not spell values as JSON does."""
    rules = write_rules(tmp_path / "rules")
    plain = [line for line in random_lines(random.Random(7), 3000) if line.startswith("{") and line.endswith("}")]
    plain.append(json.dumps({"commandLine": 'say "hi" C:\\temp'}))  # no \u escape: only the decoded value tells
    wrapped = [
        orjson.dumps({"preview": False, "offset": n, "result": {"_raw": line, "_time": "2024-03-04T10:00:00Z"}})
        for n, line in enumerate(plain)
    ]
    (tmp_path / "plain.ndjson").write_text("\n".join(plain) + "\n", encoding="utf-8")
    events = tmp_path / "export.ndjson"
    events.write_bytes(b"\n".join(wrapped) + b"\n")
    expected, _ = oracle(rules, tmp_path / "plain.ndjson")
    assert len({rule for rule, _ in expected}) == len(RULES) - 1  # all but the one for lines that are not JSON
    assert oracle(rules, events)[0] == expected
    assert run_match(rules, events, "--workers", workers)[0] == expected


def test_the_compiled_screen_is_cached_and_a_damaged_one_is_compiled_again(tmp_path: Path, _rule_cache: Path) -> None:
    rules = write_rules(tmp_path / "rules")
    events = tmp_path / "events.ndjson"
    events.write_text("\n".join(random_lines(random.Random(5), 500)) + "\n", encoding="utf-8")
    expected, _ = oracle(rules, events)
    assert run_match(rules, events, "--workers", "1")[0] == expected
    (stored,) = _rule_cache.glob("*.hsdb")
    assert stored.stat().st_mode & 0o777 == 0o600
    assert run_match(rules, events, "--workers", "1")[0] == expected  # read back from the entry
    body = stored.read_bytes().partition(b"\n")[2]
    damaged = bytearray(body)
    damaged[len(damaged) // 2] ^= 0xFF  # a damaged database with a valid entry checksum: Hyperscan refuses it
    stored.write_bytes(hashlib.sha256(damaged).hexdigest().encode() + b"\n" + bytes(damaged))
    assert run_match(rules, events, "--workers", "1")[0] == expected
    assert stored.read_bytes().partition(b"\n")[2] == body  # compiled again and stored


def test_workers_print_what_one_process_prints(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules")
    events = tmp_path / "events.ndjson"
    lines = random_lines(random.Random(7), 4000)
    for at in (0, 1000, 2000, 3999):
        lines[at] = "badline {"  # a warning in every worker's range
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one, one_err = run_match(rules, events, "--workers", "1")
    three, three_err = run_match(rules, events, "--workers", "3")
    assert three == one and one
    assert one == oracle(rules, events)[0]
    assert three_err == one_err and one_err.count("badline") == 0 and one_err.count("invalid JSON") >= 4


def test_a_pipe_is_read_once_by_one_process(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules")
    events = tmp_path / "events.ndjson"
    events.write_text("\n".join(random_lines(random.Random(11), 800)) + "\n", encoding="utf-8")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    writer = threading.Thread(target=lambda: pipe.write_bytes(events.read_bytes()))
    writer.start()
    found, _ = run_match(rules, pipe, "--workers", "2")
    writer.join()
    assert found == oracle(rules, events)[0] and found


def test_a_failing_worker_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = write_rules(tmp_path / "rules")
    events = tmp_path / "events.ndjson"
    events.write_text("\n".join(random_lines(random.Random(9), 500)) + "\n", encoding="utf-8")
    real = iter_range  # the function filematch imports, replaced there below

    def failing(
        path: Path, start: int, stop: int, screen: Screen | None = None, ended: Callable[[int], object] | None = None
    ) -> Iterator[tuple[int, Any, str | None]]:
        if start > 0:  # the forked workers' ranges
            raise CustodesError.at(path, "cannot read log file: disk gone")
        return real(path, start, stop, screen, ended)

    monkeypatch.setattr(filematch, "iter_range", failing)
    result = runner.invoke(app, ["rules", "match", "--rules", str(rules), "--events", str(events), "--workers", "2"])
    assert result.exit_code == 2 and f"{events}: cannot read log file: disk gone" in result.stderr
    assert "Traceback" not in result.output


def test_ranges_cut_ndjson_at_line_ends_and_read_it_whole(tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    lines = [orjson.dumps({"n": n, "pad": "x" * (n % 50)}).decode() for n in range(500)]
    events.write_text("\n".join(lines) + "\n")
    ranges = ndjson_ranges(events, 4)
    assert ranges is not None and len(ranges) == 4
    assert ranges[0][0] == 0 and ranges[-1][1] == events.stat().st_size
    assert all(stop == start for (_, stop), (start, _) in itertools.pairwise(ranges))
    rows: list[Row] = []
    counted: list[int] = []
    for span in ranges:  # each range numbered from 1, its count given at its end
        rows.extend((number + sum(counted), record, warning) for number, record, warning in iter_range(events, *span))
        list(iter_range(events, *span, ended=counted.append))
    assert rows == list(iter_records(events)) and sum(counted) == 500
    many = ndjson_ranges(events, 1000)
    assert many is not None and len(many) <= 500  # never more ranges than lines
    packed = tmp_path / "events.ndjson.gz"
    packed.write_bytes(gzip.compress(events.read_bytes()))
    document = tmp_path / "records.json"
    document.write_text(json.dumps({"Records": [{"n": 1}, {"n": 2}]}))
    assert ndjson_ranges(packed, 2) is None and ndjson_ranges(document, 2) is None
    marked = tmp_path / "marked.ndjson"  # a byte order mark before the first line is no part of it
    marked.write_bytes(BOM + events.read_bytes())
    spans = ndjson_ranges(marked, 4)
    assert spans is not None and spans[0][0] == len(BOM)
    assert [row for span in spans for row in iter_range(marked, *span)][:1] == rows[:1]


def test_a_cert_csv_is_matched_row_by_row_as_its_ecs_records_in_one_process(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "usb.yml").write_text(
        "title: USB connected\nid: 6f1c1a52-7f0e-4d37-9a39-3d1c9b0f7c11\nlogsource: {product: windows}\n"
        "detection:\n  sel:\n    event.action: usb-device-connected\n  condition: sel\nlevel: low\n"
    )
    events = tmp_path / "device.csv"
    activities = ("Connect", "Disconnect")
    rows = [
        f"{{D{n}}},01/0{4 + n // 1000}/2010 09:{n % 60:02d}:00,DTAA/U{n},PC-{n},{activities[n % 2]}"
        for n in range(3000)
    ]
    events.write_text("id,date,user,pc,activity\n" + "\n".join(rows) + "\n")
    assert ndjson_ranges(events, 2) is None  # never cut into byte ranges: a CSV row may span lines
    found, _ = run_match(rules, events, "--workers", "2")
    assert (
        found
        == oracle(rules, events)[0]
        == [("6f1c1a52-7f0e-4d37-9a39-3d1c9b0f7c11", n + 2) for n in range(0, 3000, 2)]
    )


@pytest.mark.parametrize("fmt", sorted(ID_KEYS))
def test_event_ids_read_alone_are_the_envelopes(fmt: str) -> None:
    settings = SourceSettings(format=cast("SourceFormatName", fmt))  # ID_KEYS is keyed by format names
    for record in ({ID_KEYS[fmt]: "vendor-1", "other": 1}, {"other": 2}, {ID_KEYS[fmt]: ["a"]}, "text"):
        assert event_id(record, settings, "src") == to_event(record, settings, "src").id


@pytest.mark.parametrize("fields", [{}, {"id": "meta.uid|event.id"}, {"id": "uid"}])
def test_generic_event_ids_read_alone_are_the_envelopes(fields: dict[str, str]) -> None:
    settings = SourceSettings(format="generic", fields=fields)
    records = [
        {"event": {"id": "e-1"}, "meta": {"uid": 7}},
        {"event": {"id": None}, "meta": {"uid": "u-2"}, "uid": ["x"]},
        {"event.id": "dotted", "uid": True},
        {"other": 3},
        [1, 2],
    ]
    for record in records:
        assert event_id(record, settings, "src") == to_event(record, settings, "src").id


def test_a_builtin_source_needs_no_settings_unless_configuration_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, environ={})
    for name in DEFAULT_SOURCES:
        assert builtin_source(None, name, {}) == settings.source(name) == DEFAULT_SOURCES[name]
    assert builtin_source(None, "m365", {}) is None  # not built in: the settings say it is unknown
    assert builtin_source(tmp_path / "given.yaml", "cloudtrail", {}) is None
    assert builtin_source(None, "cloudtrail", {"CUSTODES_CONFIG": "elsewhere.yaml"}) is None
    assert builtin_source(None, "cloudtrail", {"CUSTODES_SOURCES__CLOUDTRAIL__PRODUCT": "x"}) is None
    assert builtin_source(None, "cloudtrail", {"CUSTODES_DATABASE_URL": "sqlite+aiosqlite:///x"}) is None
    assert builtin_source(None, "cloudtrail", {"CUSTODES_API_TOKEN": "x", "HOME": "/"}) == DEFAULT_SOURCES["cloudtrail"]
    (tmp_path / "custodes.yaml").write_text("sources:\n  cloudtrail: {format: generic, fields: {id: eventID}}\n")
    assert builtin_source(None, "cloudtrail", {}) is None
    assert load_settings(None, environ={}).source("cloudtrail").format == "generic"


def test_rules_match_on_a_builtin_source_loads_no_settings_model_and_a_config_file_still_counts(tmp_path: Path) -> None:
    rules = tmp_path / "login.yml"
    rules.write_text(
        "title: Console login\nid: 00000000-0000-4000-8000-000000000001\n"
        "logsource: {product: aws, service: cloudtrail}\n"
        "detection:\n  sel:\n    eventName: ConsoleLogin\n  condition: sel\n"
    )
    events = tmp_path / "events.ndjson"
    events.write_text('{"eventName": "ConsoleLogin", "eventID": "e1"}\n{"eventName": "Other"}\n', encoding="utf-8")
    probe = (
        "import sys\nfrom custodes.cli.main import main\nsys.argv = ['custodes', *sys.argv[1:]]\ntry:\n    main()\n"
        "except SystemExit:\n    pass\nprint('settings' if 'custodes.config' in sys.modules else 'none')"
    )
    command = [sys.executable, "-c", probe, "rules", "match", "-r", str(rules), "-e", str(events), "-s", "cloudtrail"]
    environment = {key: value for key, value in os.environ.items() if not is_override(key) and key != "CUSTODES_CONFIG"}
    subprocess.run(command, capture_output=True, cwd=tmp_path, env=environment, check=True)  # the rules cached
    plain = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=environment, check=True)
    *matches, loaded = plain.stdout.splitlines()
    assert loaded == "none"
    assert [json.loads(line)["line"] for line in matches] == [1]
    assert json.loads(matches[0])["event_id"] == event_id(
        {"eventID": "e1"}, DEFAULT_SOURCES["cloudtrail"], "cloudtrail"
    )
    generic = SourceSettings(format="generic", product="aws", service="cloudtrail", fields={"id": "eventName"})
    (tmp_path / "custodes.yaml").write_text(
        "sources:\n  cloudtrail: {format: generic, product: aws, service: cloudtrail, fields: {id: eventName}}\n"
    )
    configured = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=environment, check=True)
    *matches, loaded = configured.stdout.splitlines()
    assert loaded == "settings"
    assert json.loads(matches[0])["event_id"] == event_id({"eventName": "ConsoleLogin"}, generic, "cloudtrail")
