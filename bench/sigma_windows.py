"""The whole SigmaHQ Windows corpus against the regression events: events/s and resident memory.

Every SigmaHQ rule is loaded (as `custodes rules lint` does); the Windows rules (3,000+) are matched against the
evtx records of `regression_data`, flattened to the field view Sigma's Windows rules are written against. Each
event is routed by the logsource of the rule its sample was recorded for (a process-creation event meets the
1,400 process-creation rules, a registry event the registry rules), with the index and without it.

Run: `.venv/bin/python bench/sigma_windows.py`.
"""

from __future__ import annotations

import gc
import platform
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from custodes.connectors.windows import flatten, rendered_records
from custodes.detections.sigma.engine import SigmaEngine
from custodes.detections.sigma.loader import load_rules
from custodes.detections.sigma.ruleset import RuleSet
from custodes.model import LogSource

ROOT = Path(__file__).resolve().parents[1]
SIGMAHQ = ROOT.parent / "shared" / "sigmahq"
MIN_SECONDS = 2.0


def resident_mib() -> float:
    """This process's resident set size (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def regression_events(ruleset: RuleSet) -> list[tuple[LogSource, dict[str, Any]]]:
    """(logsource of the sample's rule, flattened record) for every record of every Windows sample."""
    logsources = {rule.id: rule.logsource for rule in ruleset.rules}
    events: list[tuple[LogSource, dict[str, Any]]] = []
    seen: set[Path] = set()
    for info in sorted((SIGMAHQ / "regression_data").rglob("info.yml")):
        metadata = yaml.load(info.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
        logsource = next((logsources[r["id"]] for r in metadata["rule_metadata"] if r["id"] in logsources), None)
        if logsource is None or logsource.product != "windows":
            continue
        for case in metadata.get("regression_tests_info") or []:
            sample = SIGMAHQ / Path(case["path"]).with_suffix(".json")
            if sample not in seen:
                seen.add(sample)
                events.extend((logsource, flatten(record)) for record in rendered_records(sample))
    return events


def rate(engine: SigmaEngine, events: list[tuple[LogSource, dict[str, Any]]]) -> tuple[float, int]:
    """Events per CPU second over as many passes as take `MIN_SECONDS`, and the matches of one pass."""
    match = engine.match_record
    matches = sum(len(match(logsource, record)) for logsource, record in events)  # also builds the indexes
    passes, seconds = 0, 0.0
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        while seconds < MIN_SECONDS:
            for logsource, record in events:
                match(logsource, record)
            passes += 1
            seconds = time.process_time() - start
    finally:
        gc.enable()
    return passes * len(events) / seconds, matches


def main() -> None:
    gc.collect()
    before = resident_mib()
    start = time.process_time()
    ruleset = load_rules(sorted(SIGMAHQ.glob("rules*")))
    load_seconds = time.process_time() - start
    gc.collect()
    loaded = resident_mib()
    windows = [rule for rule in ruleset.rules if rule.logsource.product == "windows"]
    windows_set = RuleSet(rules=windows)
    events = regression_events(ruleset)
    indexed, plain = SigmaEngine(windows_set), SigmaEngine(windows_set, indexed=False)
    indexed_rate, indexed_matches = rate(indexed, events)
    plain_rate, plain_matches = rate(plain, events)
    gc.collect()
    with_indexes = resident_mib()
    routes = {logsource for logsource, _ in events}
    routed = sum(len(indexed.rules_for(logsource)) for logsource, _ in events) / len(events)
    size = sum(len(orjson.dumps(record)) for _, record in events) / len(events)

    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    print(f"corpus: {len(ruleset.rules):,} rules compiled, {len(ruleset.rejections)} rejected")
    print(f"  loaded in {load_seconds:.1f} s CPU")
    print(f"windows: {len(windows):,} rules; {len(events)} regression events ({size:.0f} bytes as JSON)")
    print(f"  in {len(routes)} logsources")
    print(f"routing: {routed:,.0f} rules apply to an event on average")
    print()
    print(f"custodes  indexed        {indexed_rate:>10,.0f} events/s")
    print(f"custodes  no index       {plain_rate:>10,.0f} events/s")
    print(f"ratio: the index is {indexed_rate / plain_rate:.1f}x")
    print(f"matches: {indexed_matches} indexed, {plain_matches} without the index")
    print()
    print(f"resident memory: {before:.0f} MiB before loading, {loaded:.0f} MiB with the whole corpus loaded")
    print(f"  (+{loaded - before:.0f} MiB), {with_indexes:.0f} MiB with the indexes of {len(routes)} routes built")
    assert indexed_matches == plain_matches, "the index changed the matches"


if __name__ == "__main__":
    main()
