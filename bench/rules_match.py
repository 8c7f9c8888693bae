"""`custodes rules match` as a user runs it (whole process: start, load rules, read, match, write) beside its peers.

200,000 CloudTrail records generated as in `sigma_cloudtrail.py` (OTRF shapes; a tenth carry the values of a
random rule's selection, so rules match) are written to an NDJSON file; every SigmaHQ AWS rule is copied to a
folder. Each tool then runs as its own process, one after the other in this run, and the wall time and peak
resident memory of that process are reported:

- Custodes: `custodes rules match --rules DIR --events FILE --source cloudtrail` (its matches are checked against
  the in-process engine's, event by event: they must be identical);
- the pySigma DuckDB backend (`pysigma-backend-duckdb` with `duckdb`, installed into this venv from PyPI if
  missing; never a dependency of Custodes): every rule converted to SQL and run by DuckDB over the same file
  read with `read_json_auto`;
- Zircolite is a GitHub project that is on neither PyPI nor npm; where it cannot be fetched it is reported as
  not run.

Startup (one record) is measured for the AWS rules and for the whole SigmaHQ corpus.

Run: `.venv/bin/python bench/rules_match.py [--events N]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

from sigma_cloudtrail import SIGMAHQ, aws_rule_files, generate, rule_selections

ROOT = Path(__file__).resolve().parents[1]
CUSTODES = Path(sys.executable).with_name("custodes")
PEERS = ("pysigma-backend-duckdb", "duckdb")
WINDOWS_EVENTS = 20_000
TIME = "/usr/bin/time"  # GNU time (Debian package `time`)


def measured(command: list[str], stdout: Path) -> tuple[float, float, float, int]:
    """Run `command` (stdout to a file) under `/usr/bin/time`: its wall seconds, CPU seconds (user + system),
    peak RSS in MB and exit status.

    `time` measures the process it starts itself, so the RSS of this (large) bench process does not count. CPU
    seconds are less disturbed by other load on the machine than wall seconds (DuckDB uses every core).
    """
    with stdout.open("wb") as out:
        done = subprocess.run(  # noqa: S603
            [TIME, "-f", "%e %U %S %M", *command], stdout=out, stderr=subprocess.PIPE, check=False
        )
    error = done.stderr.decode(errors="replace").strip()
    if done.returncode:
        print(f"  {command[0]} failed ({done.returncode}): {error[-600:]}")
    wall, user, system, rss = error.splitlines()[-1].split()[-4:]
    return float(wall), float(user) + float(system), int(rss) / 1024, done.returncode


def ensure_peers() -> bool:
    """Install the DuckDB backend and DuckDB into this venv if missing (bench only)."""
    if importlib.util.find_spec("sigma_backend_duckdb") and importlib.util.find_spec("duckdb"):
        return True
    print(f"installing {', '.join(PEERS)} from PyPI into {sys.prefix} (bench only)")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *PEERS], check=False)  # noqa: S603
    return done.returncode == 0


def duckdb_peer(rules: Path, events: Path) -> None:
    """The DuckDB backend's whole process: convert every rule, run each query over the JSON file, print matches."""
    import duckdb
    from sigma.collection import SigmaCollection
    from sigma_backend_duckdb import DuckDBBackend

    backend = DuckDBBackend()
    connection = duckdb.connect()
    connection.execute(  # the bench's own temporary file
        f"CREATE TABLE logs AS SELECT * FROM read_json_auto('{events}', format='newline_delimited')"  # noqa: S608
    )
    matches = failed = 0
    for path in sorted(rules.rglob("*.yml")):
        try:
            queries = backend.convert(SigmaCollection.from_yaml(path.read_text(encoding="utf-8")))
        except Exception:
            failed += 1
            continue
        for query in queries:
            try:
                matches += connection.execute(f"SELECT count(*) FROM ({query})").fetchone()[0]  # type: ignore[index]  # noqa: S608
            except duckdb.Error:
                failed += 1
    print(orjson.dumps({"matches": matches, "failed": failed}).decode())


def oracle(rules: Path, lines: list[bytes]) -> list[tuple[str, int]]:
    """The in-process engine's matches (rule id, line), through the envelope as the service maps events."""
    from custodes.config import load_settings
    from custodes.connectors.envelope import to_event
    from custodes.detections.sigma.engine import SigmaEngine
    from custodes.detections.sigma.loader import load_rules
    from custodes.detections.sigma.pipelines import pipeline_named

    source = load_settings(None, environ={}).source("cloudtrail")
    engine = SigmaEngine(load_rules([rules], pipeline=pipeline_named(source.pipeline_name)))
    found: list[tuple[str, int]] = []
    for number, line in enumerate(lines, start=1):
        event = to_event(orjson.loads(line), source, "cloudtrail")
        found.extend((rule.id, number) for rule in engine.match(event))
    return found


def windows(work: Path, repeat: int) -> None:
    """20,000 Windows regression events (the samples' records, flattened, repeated) x every Windows rule."""
    from custodes.detections.sigma.loader import load_rules
    from sigma_windows import regression_events

    folders = [folder / "windows" for folder in sorted(SIGMAHQ.glob("rules*")) if (folder / "windows").is_dir()]
    records = [record for _, record in regression_events(load_rules(folders))]
    events = work / "windows.ndjson"
    with events.open("wb") as out:
        for number in range(WINDOWS_EVENTS):
            out.write(orjson.dumps(records[number % len(records)]) + b"\n")
    rules = work / "windows-rules"
    for folder in folders:
        shutil.copytree(folder, rules / folder.parent.name)
    count = sum(1 for _ in rules.rglob("*.yml"))
    print(f"\n{count:,} SigmaHQ Windows rule files, {WINDOWS_EVENTS:,} events ({len(records)} regression records)")
    tools = {
        "custodes rules match (rules as written)": [
            str(CUSTODES),
            "rules",
            "match",
            "--rules",
            str(rules),
            "--events",
            str(events),
        ],
        "pySigma DuckDB backend (DuckDB reads the JSON)": [
            sys.executable,
            __file__,
            "--peer-duckdb",
            str(rules),
            str(events),
        ],
    }
    runs: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(repeat):
        for name, command in tools.items():
            wall, cpu, rss, _status = measured(command, work / "windows.out")
            runs[name].append(wall)
            print(f"  {name:<50} {wall:7.2f} s {WINDOWS_EVENTS / wall:>8,.0f} events/s {cpu:7.2f} s CPU {rss:5.0f} MB")
    medians = {name: statistics.median(walls) for name, walls in runs.items()}
    names = list(medians)
    print(f"Custodes / DuckDB backend, events/s (medians): {medians[names[1]] / medians[names[0]]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each tool (median reported)")
    parser.add_argument("--windows", action="store_true", help="also the Windows regression events x Windows rules")
    parser.add_argument("--peer-duckdb", nargs=2, type=Path, metavar=("RULES", "EVENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_duckdb:
        duckdb_peer(*args.peer_duckdb)
        return
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="custodes-bench-") as folder:
        work = Path(folder)
        rules = work / "aws-rules"
        rules.mkdir()
        files = aws_rule_files()
        for path in files:
            shutil.copy(path, rules / path.name)
        lines = generate(args.events, rule_selections(files))
        events = work / "cloudtrail.ndjson"
        events.write_bytes(b"\n".join(lines) + b"\n")
        one = work / "one.ndjson"
        one.write_bytes(lines[0] + b"\n")
        size = events.stat().st_size / 1e6
        print(f"{len(files)} SigmaHQ AWS rules, {len(lines):,} CloudTrail records ({size:.0f} MB NDJSON)")

        match = [str(CUSTODES), "rules", "match", "--rules", str(rules), "--events", str(events)]
        tools: dict[str, list[str]] = {
            "custodes rules match --source cloudtrail": [*match, "--source", "cloudtrail"],
            "custodes rules match (no --source)": match,
        }
        if ensure_peers():
            tools["pySigma DuckDB backend (DuckDB reads the JSON)"] = [
                sys.executable,
                __file__,
                "--peer-duckdb",
                str(rules),
                str(events),
            ]
        else:
            print("pysigma-backend-duckdb could not be installed: not run")
        print("Zircolite: not run (a GitHub project, on neither PyPI nor npm; only those registries are reachable)")
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in tools}
        outputs = {name: work / f"out{number}" for number, name in enumerate(tools)}
        for _ in range(args.repeat):  # interleaved, so that load on the machine falls on every tool alike
            for name, command in tools.items():
                wall, cpu, rss, _status = measured(command, outputs[name])
                runs[name].append((wall, cpu, rss))

        first = next(iter(tools))
        got = [(m["rule_id"], m["line"]) for m in map(orjson.loads, outputs[first].read_bytes().splitlines())]
        expected = oracle(rules, lines)
        same = "identical to the in-process engine" if got == expected else f"DIFFERENT ({len(expected)} expected)"
        notes = {first: f"{len(got):,} matches, {same}"}
        duckdb = "pySigma DuckDB backend (DuckDB reads the JSON)"
        if duckdb in tools and outputs[duckdb].stat().st_size:
            outcome = orjson.loads(outputs[duckdb].read_bytes())
            notes[duckdb] = f"{outcome['matches']:,} matches, {outcome['failed']} rules fail in DuckDB"

        print(
            f"\n{f'tool (whole process), median of {args.repeat}':<50} "
            f"{'wall s':>7} {'events/s':>9} {'CPU s':>6} {'MB':>5}"
        )
        medians: dict[str, tuple[float, float]] = {}
        for name, measures in runs.items():
            wall = statistics.median(w for w, _, _ in measures)
            cpu = statistics.median(c for _, c, _ in measures)
            rss = max(r for _, _, r in measures)
            medians[name] = (wall, cpu)
            spread = ", ".join(f"{w:.1f}" for w, _, _ in measures)
            print(f"{name:<50} {wall:>7.2f} {len(lines) / wall:>9,.0f} {cpu:>6.2f} {rss:>5.0f}  wall: {spread}")
            if name in notes:
                print(f"{'':<50} {notes[name]}")
        if duckdb in medians:
            ratio_wall = medians[duckdb][0] / medians[first][0]
            ratio_cpu = medians[duckdb][1] / medians[first][1]
            print(
                f"\nCustodes (--source) / DuckDB backend: {ratio_wall:.2f}x by wall time, {ratio_cpu:.2f}x by CPU time"
            )

        if args.windows:
            windows(work, args.repeat)

        print("\nstartup (one record):")
        for label, paths, extra in (
            ("AWS rules, --source cloudtrail", [rules], ["--source", "cloudtrail"]),
            ("whole SigmaHQ corpus (rules*)", sorted(SIGMAHQ.glob("rules*")), []),
        ):
            command = [str(CUSTODES), "rules", "match", *[f"--rules={p}" for p in paths], "--events", str(one)]
            wall, cpu, rss, _ = measured([*command, *extra], work / "startup.out")
            print(f"  {label:<40} {wall:6.2f} s  {cpu:6.2f} s CPU  {rss:5.0f} MB")


if __name__ == "__main__":
    main()
