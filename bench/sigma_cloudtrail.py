"""CloudTrail throughput with every SigmaHQ AWS rule: Custodes' engine and the pySigma SQLite backend, one run.

Events are generated from the OTRF CloudTrail records (their shapes, names and nesting) with fresh ids, times,
users and addresses; a tenth of them take the `eventName`/`eventSource` and plain field values of a random rule's
selection, so that rules match now and then. Both sides get the same JSON lines and report CPU seconds of this
process (one core; the figures are robust to other load on the machine):

- Custodes: orjson parsing alone, matching alone (indexed, and without the index), parsing plus matching;
- the SQLite approach (Zircolite's): parse, flatten nested keys with dots, load one `TEXT COLLATE NOCASE`
  column per field into an in-memory table, run each rule's SQL from `sigma.backends.sqlite`.

Run: `.venv/bin/python bench/sigma_cloudtrail.py [--events N]`.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml
from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection

from custodes.detections.sigma.engine import SigmaEngine
from custodes.detections.sigma.loader import load_rules
from custodes.model import LogSource

ROOT = Path(__file__).resolve().parents[1]
SIGMAHQ = ROOT.parent / "shared" / "sigmahq"
TEMPLATES = ROOT.parent / "shared" / "datasets" / "otrf-cloudtrail"
CLOUDTRAIL = LogSource(product="aws", service="cloudtrail")
SEED = 7


def aws_rule_files() -> list[Path]:
    """Every SigmaHQ rule file whose logsource is AWS (CloudTrail)."""
    found = []
    for path in sorted(p for folder in SIGMAHQ.glob("rules*") for p in folder.rglob("*.yml")):
        for document in yaml.load_all(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader):
            if isinstance(document, dict) and (document.get("logsource") or {}).get("product") == "aws":
                found.append(path)
                break
    return found


def rule_selections(paths: list[Path]) -> list[dict[str, str]]:
    """Plain field values (no modifiers) of every selection of the rules: what a matching event carries."""
    selections = []
    for path in paths:
        for document in yaml.load_all(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader):
            detection = document.get("detection") if isinstance(document, dict) else None
            for name, body in (detection or {}).items():
                maps = body if isinstance(body, list) else [body]
                for item in maps:
                    if name == "condition" or not isinstance(item, dict):
                        continue
                    plain = {}
                    for key, value in item.items():
                        if "|" in key:
                            continue
                        values = value if isinstance(value, list) else [value]
                        if values and all(isinstance(v, str) and "*" not in v and "?" not in v for v in values):
                            plain[key] = values
                    if "eventName" in plain:
                        selections.append(plain)
    return [
        {key: random.Random(index).choice(values) for key, values in selection.items()}
        for index, selection in enumerate(selections)
    ]


def generate(count: int, selections: list[dict[str, str]]) -> list[bytes]:
    """`count` CloudTrail records as JSON lines, shaped like the OTRF templates."""
    rng = random.Random(SEED)
    templates = [
        orjson.loads(line)
        for path in sorted(TEMPLATES.glob("*.json"))
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]
    users = [f"user{number:03d}" for number in range(200)]
    lines = []
    for number in range(count):
        record = dict(rng.choice(templates))
        record["eventID"] = f"{rng.getrandbits(128):032x}"
        record["eventTime"] = (
            f"2024-05-{1 + number % 28:02d}T{number % 24:02d}:{number % 60:02d}:{rng.randrange(60):02d}Z"
        )
        record["sourceIPAddress"] = (
            f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        )
        record["awsRegion"] = rng.choice(["us-east-1", "eu-west-1", "ap-south-1"])
        identity = dict(record.get("userIdentity") or {})
        identity["userName"] = rng.choice(users)
        record["userIdentity"] = identity
        if rng.random() < 0.1:
            for key, value in rng.choice(selections).items():
                _set_path(record, key.split("."), value)
        lines.append(orjson.dumps(record))
    return lines


def _set_path(record: dict[str, Any], parts: list[str], value: str) -> None:
    """Set a dotted path, copying the nested dicts on the way (templates are shared)."""
    if len(parts) == 1:
        record[parts[0]] = value
        return
    child = record.get(parts[0])
    child = dict(child) if isinstance(child, dict) else {}
    record[parts[0]] = child
    _set_path(child, parts[1:], value)


def cpu(function: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Fewest CPU seconds of `repeat` runs, and the last result.

    The cyclic garbage collector is paused while timing (as `timeit` does): a streaming engine keeps no event,
    but a benchmark that holds 200,000 parsed records would otherwise spend its time re-scanning them.
    """
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.process_time()
            result = function()
            best = min(best, time.process_time() - start)
        finally:
            gc.enable()
    return best, result


# Custodes ---------------------------------------------------------------------------------------------


def custodes_matches(engine: SigmaEngine, records: list[dict[str, Any]]) -> set[tuple[str, int]]:
    match = engine.match_record
    found = set()
    for number, record in enumerate(records):
        for rule in match(CLOUDTRAIL, record):
            found.add((rule.id, number))
    return found


def parse_only(lines: list[bytes]) -> None:
    loads = orjson.loads
    for line in lines:
        loads(line)


def parse_and_match(engine: SigmaEngine, lines: list[bytes]) -> int:
    match, loads, logsource = engine.match_record, orjson.loads, CLOUDTRAIL
    matched = 0
    for line in lines:
        matched += len(match(logsource, loads(line)))
    return matched


# SQLite (Zircolite) -----------------------------------------------------------------------------------


def flatten(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested keys joined with dots; lists kept as their JSON text (as Zircolite stores them)."""
    for key, value in record.items():
        name = prefix + key
        if isinstance(value, dict):
            yield from flatten(value, name + ".")
        elif isinstance(value, list):
            yield name, orjson.dumps(value).decode()
        elif isinstance(value, bool):
            yield name, "true" if value else "false"
        else:
            yield name, value


def sqlite_matches(
    lines: list[bytes], queries: dict[str, list[str]], fields: list[str]
) -> tuple[set[tuple[str, int]], float, float]:
    """Parse, flatten, load and query; the match set and the CPU seconds of loading and of querying.

    The table has a column for every field of the events and of the rules, as the backend's runtime
    (`ensure_fields`) adds them, so that a rule naming a field no event carries still runs.
    """
    start = time.process_time()
    rows = [dict(flatten(orjson.loads(line))) for line in lines]
    columns: dict[str, str] = {name.lower(): name for name in fields}
    for row in rows:
        for name in row:
            columns.setdefault(name.lower(), name)
    position = {lower: index for index, lower in enumerate(columns)}
    connection = sqlite3.connect(":memory:")
    connection.create_function("regexp", 2, _regexp, deterministic=True)
    definition = ", ".join(f"{_quote(name)} TEXT COLLATE NOCASE" for name in columns.values())
    connection.execute(f"CREATE TABLE logs (row_id INTEGER PRIMARY KEY, {definition})")
    placeholders = ", ".join("?" * (len(columns) + 1))
    insert = f"INSERT INTO logs VALUES ({placeholders})"  # noqa: S608 - placeholders only
    table_rows = []
    for number, row in enumerate(rows):
        values: list[Any] = [number] + [None] * len(columns)
        for name, value in row.items():
            values[1 + position[name.lower()]] = value
        table_rows.append(values)
    connection.executemany(insert, table_rows)
    connection.commit()
    loaded = time.process_time() - start

    start = time.process_time()
    found: set[tuple[str, int]] = set()
    for rule_id, rule_queries in queries.items():
        for query in rule_queries:
            sql = query.replace("SELECT * FROM logs", "SELECT row_id FROM logs", 1)
            found.update((rule_id, row_id) for (row_id,) in connection.execute(sql))
    queried = time.process_time() - start
    connection.close()
    return found, loaded, queried


def _regexp(pattern: str, value: Any) -> bool:
    return value is not None and re.search(pattern, str(value)) is not None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()

    files = aws_rule_files()
    ruleset = load_rules(files)
    engine, plain = SigmaEngine(ruleset), SigmaEngine(ruleset, indexed=False)
    loaded_ids = {rule.id for rule in ruleset.rules}
    backend = sqliteBackend()
    queries = {}
    fields: set[str] = set()
    for path in files:
        for rule in SigmaCollection.from_yaml(path.read_text(encoding="utf-8")).rules:
            if str(rule.id) in loaded_ids:
                queries[str(rule.id)] = list(backend.convert_rule(rule))
                fields.update(backend.required_fields(rule))
    lines = generate(args.events, rule_selections(files))
    count = len(lines)
    size = sum(len(line) for line in lines) / count
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    print(f"rules: {len(ruleset.rules)} AWS rules compiled ({len(ruleset.rejections)} rejected), {len(queries)} in SQL")
    print(f"events: {count:,} CloudTrail records, {size:.0f} bytes each on average")
    print(f"index: {engine.index_for(CLOUDTRAIL).stats}")

    parse_seconds, _ = cpu(lambda: parse_only(lines), repeat=3)
    records = [orjson.loads(line) for line in lines]
    match_seconds, ours = cpu(lambda: custodes_matches(engine, records), repeat=3)
    plain_seconds, ours_plain = cpu(lambda: custodes_matches(plain, records))
    both_seconds, _ = cpu(lambda: parse_and_match(engine, lines), repeat=3)
    sqlite_seconds, (reference, load_seconds, query_seconds) = cpu(
        lambda: sqlite_matches(lines, queries, sorted(fields))
    )

    def rate(seconds: float) -> str:
        return f"{count / seconds:>12,.0f} events/s  ({seconds:6.2f} s CPU)"

    print()
    print(f"custodes  orjson parsing only            {rate(parse_seconds)}")
    print(f"custodes  matching only (indexed)        {rate(match_seconds)}")
    print(f"custodes  matching only (no index)       {rate(plain_seconds)}")
    print(f"custodes  parsing + matching             {rate(both_seconds)}")
    print(f"sqlite    parse + flatten + load         {rate(load_seconds)}")
    print(f"sqlite    rule queries                   {rate(query_seconds)}")
    print(f"sqlite    total (Zircolite approach)     {rate(sqlite_seconds)}")
    print()
    print(f"ratio: custodes parsing + matching is {sqlite_seconds / both_seconds:.1f}x the SQLite approach")
    print(f"matches: custodes {len(ours):,}, without index {len(ours_plain):,}, sqlite {len(reference):,}")
    assert ours == ours_plain, "the index changed the matches"
    if ours != reference:
        print(f"  differ on {len(ours ^ reference)} (rule, event) pairs")


if __name__ == "__main__":
    main()
