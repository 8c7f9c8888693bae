"""`custodes rules match` as a user runs it (whole process: start, load rules, read, match, write) beside its peers.

Two workloads, each tool run as its own process, one after the other in this run (interleaved repetitions, median
reported), with the wall time, CPU time and peak resident memory of that process:

- CloudTrail: 200,000 records generated as in `sigma_cloudtrail.py` (OTRF shapes; a tenth carry the values of a
  random rule's selection, so rules match) in an NDJSON file, against every SigmaHQ AWS rule;
- Windows: 20,000 records (the SigmaHQ regression events, flattened, repeated) against every SigmaHQ Windows rule.

Custodes' matches are checked against the in-process engine's (every rule tested on every record, no index):
they must be identical. The peers are installed at bench time, never as dependencies of Custodes:

- the pySigma DuckDB backend (`pysigma-backend-duckdb` and `duckdb` from PyPI, into a virtual environment of their
  own, `--peers`): every rule converted to SQL and run by DuckDB over the file read with `read_json_auto`
  (`peers/duckdb_backend.py`);
- Zircolite, a GitHub project (on neither PyPI nor npm): cloned from GitHub at bench time, or taken from a checkout
  given with `--zircolite DIR`; its requirements are installed from PyPI into the same environment. It converts the
  same rule files with pySigma and runs them in SQLite (`-j -r RULES`). Where it cannot be had, it is reported as
  not run, with the reason.

Startup (one record) is measured for the AWS rules and for the whole SigmaHQ corpus, with an empty rule-set cache
and with the cache filled. Every tool's Python modules are compiled to bytecode first, as a wheel install leaves
them (Custodes' package, and the Zircolite checkout; the DuckDB backend is installed by pip, which compiles).

Run: `.venv/bin/python bench/rules_match.py [--events N] [--repeat N] [--zircolite DIR] [--skip-slow-peers]`.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

import custodes
from sigma_cloudtrail import SIGMAHQ, aws_rule_files, generate, rule_selections

BENCH = Path(__file__).resolve().parent
CUSTODES = Path(sys.executable).with_name("custodes")
DUCKDB_PACKAGES = ("pysigma-backend-duckdb", "duckdb")
ZIRCOLITE_GIT = "https://github.com/wagga40/Zircolite"
WINDOWS_EVENTS = 20_000
TIME = "/usr/bin/time"  # GNU time (Debian package `time`)


@dataclass
class Tool:
    """A command measured in this run, and what it measured."""

    name: str
    command: list[str]
    output: Path
    repeat: bool = True
    cwd: Path | None = None
    runs: list[tuple[float, float, float]] = field(default_factory=list)
    note: str = ""

    def measure(self, environment: dict[str, str]) -> None:
        """Run once under `/usr/bin/time`: wall s, CPU s (user + system) and peak RSS MB of that process only."""
        with self.output.open("wb") as out:
            done = subprocess.run(  # noqa: S603
                [TIME, "-f", "%e %U %S %M", *self.command],
                stdout=out,
                stderr=subprocess.PIPE,
                check=False,
                env=environment,
                cwd=self.cwd,
            )
        error = done.stderr.decode(errors="replace").strip()
        if done.returncode:
            self.note = f"failed ({done.returncode}): {error[-300:]}"
        wall, user, system, rss = error.splitlines()[-1].split()[-4:]
        self.runs.append((float(wall), float(user) + float(system), int(rss) / 1024))

    @property
    def wall(self) -> float:
        """Median wall seconds."""
        return statistics.median(w for w, _, _ in self.runs)

    @property
    def cpu(self) -> float:
        """Median CPU seconds."""
        return statistics.median(c for _, c, _ in self.runs)

    @property
    def memory(self) -> float:
        """Peak resident MB over the runs."""
        return max(r for _, _, r in self.runs)


def compile_bytecode(folders: Sequence[Path]) -> None:
    """Compile the Python sources of `folders` to bytecode, as an installed wheel is: no tool measured here pays
    for compiling its own modules (an editable install, or a checkout, is otherwise compiled on every run when
    bytecode is not written, e.g. under PYTHONDONTWRITEBYTECODE)."""
    for folder in folders:
        compileall.compile_dir(folder, quiet=1)


def peer_python(folder: Path, packages: Sequence[str]) -> Path | None:
    """The Python of a virtual environment at `folder` holding `packages` from PyPI (installed if missing)."""
    python = folder / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)  # noqa: S603
    done = subprocess.run(  # noqa: S603
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
        capture_output=True,
        check=False,
    )
    if done.returncode:
        print(f"  pip install {' '.join(packages)} failed: {done.stderr.decode(errors='replace')[-300:]}")
        return None
    return python


def zircolite_checkout(given: Path | None, work: Path) -> tuple[Path | None, str]:
    """A Zircolite checkout (given, or cloned from GitHub now) and how it was had, or None and why not."""
    if given is not None:
        return (
            (given, f"checkout {given}")
            if (given / "zircolite.py").is_file()
            else (None, f"no zircolite.py in {given}")
        )
    target = work / "zircolite"
    done = subprocess.run(  # noqa: S603
        ["git", "clone", "--quiet", "--depth", "1", ZIRCOLITE_GIT, str(target)],  # noqa: S607
        capture_output=True,
        check=False,
    )
    if done.returncode:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1]
        return None, f"cannot clone {ZIRCOLITE_GIT} ({reason}); pass a checkout with --zircolite DIR"
    return target, f"cloned from {ZIRCOLITE_GIT}"


def zircolite_command(python: Path | None, checkout: Path | None, events: Path, rules: Path, work: Path) -> list[str]:
    """Zircolite over NDJSON `events` with the Sigma rule files under `rules`, detections to a file in `work`."""
    if python is None or checkout is None:
        return []
    output, log = work / f"zircolite-{events.stem}.json", work / "zircolite.log"
    return [
        str(python),
        str(checkout / "zircolite.py"),
        "-e",
        str(events),
        "-j",
        "-r",
        str(rules),
        "-q",
        "-o",
        str(output),
        "-l",
        str(log),
    ]


def duckdb_command(python: Path | None, events: Path, rules: Path) -> list[str]:
    """The DuckDB backend peer over `events` with the rule files under `rules`."""
    if python is None:
        return []
    return [str(python), str(BENCH / "peers" / "duckdb_backend.py"), str(rules), str(events)]


def zircolite_matches(output: Path) -> int:
    """The number of matched events in a Zircolite detections file."""
    try:
        detections = orjson.loads(output.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return -1
    return sum(int(item.get("count", 0)) for item in detections)


def custodes_matches(output: Path) -> list[tuple[str, int]]:
    """(rule id, line) of each match `custodes rules match` printed."""
    return [(m["rule_id"], m["line"]) for m in map(orjson.loads, output.read_bytes().splitlines())]


def cloudtrail_oracle(rules: Path, lines: list[bytes]) -> list[tuple[str, int]]:
    """The in-process engine's matches (rule id, line), every rule tested, through the envelope as the service maps."""
    from custodes.config import load_settings
    from custodes.connectors.envelope import to_event
    from custodes.detections.sigma.engine import SigmaEngine
    from custodes.detections.sigma.loader import load_rules
    from custodes.detections.sigma.pipelines import pipeline_named

    source = load_settings(None, environ={}).source("cloudtrail")
    engine = SigmaEngine(load_rules([rules], pipeline=pipeline_named(source.pipeline_name)), indexed=False)
    found: list[tuple[str, int]] = []
    for number, line in enumerate(lines, start=1):
        event = to_event(orjson.loads(line), source, "cloudtrail")
        found.extend((rule.id, number) for rule in engine.match(event))
    return found


def windows_oracle(rules: Path, records: list[dict[str, object]], count: int) -> list[tuple[str, int]]:
    """Every rule (as written) tested on every record of the Windows file (records[n % len] on line n + 1)."""
    from custodes.detections.sigma.loader import load_rules

    loaded = load_rules([rules]).rules
    per_record = [[rule.id for rule in loaded if rule.match(record)] for record in records]
    return [(rule_id, number + 1) for number in range(count) for rule_id in per_record[number % len(records)]]


def report(title: str, tools: list[Tool], events: int) -> None:
    """The table of one workload, and each tool's ratio to Custodes (first row)."""
    print(f"\n{title}")
    print(f"{'tool (whole process)':<52} {'wall s':>7} {'events/s':>9} {'CPU s':>7} {'peak MB':>8}  runs (wall s)")
    for tool in tools:
        if not tool.runs:
            print(f"{tool.name:<52} not run: {tool.note}")
            continue
        spread = ", ".join(f"{w:.1f}" for w, _, _ in tool.runs)
        figures = f"{tool.wall:>7.2f} {events / tool.wall:>9,.0f} {tool.cpu:>7.2f} {tool.memory:>8.0f}"
        print(f"{tool.name:<52} {figures}  {spread}")
        if tool.note:
            print(f"{'':<52} {tool.note}")
    custodes = tools[0]
    for peer in tools[1:]:
        if peer.runs:
            print(
                f"Custodes / {peer.name}: {peer.wall / custodes.wall:.2f}x events/s by wall time, "
                f"{peer.cpu / custodes.cpu:.2f}x by CPU time"
            )


def run(tools: list[Tool], repeat: int, environment: dict[str, str]) -> None:
    """Interleaved runs (load on the machine falls on every tool alike); slow peers run once."""
    for round_number in range(repeat):
        for tool in tools:
            if tool.command and (tool.repeat or round_number == 0):
                tool.measure(environment)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs of each tool (median reported)")
    parser.add_argument("--peers", type=Path, default=Path(tempfile.gettempdir()) / "custodes-bench-peers")
    parser.add_argument("--zircolite", type=Path, help="a Zircolite checkout (else cloned from GitHub)")
    parser.add_argument(
        "--skip-slow-peers",
        action="store_true",
        help="leave out the runs of over a minute (Zircolite on CloudTrail, DuckDB on Windows)",
    )
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory(prefix="custodes-bench-") as folder:
        work = Path(folder)
        environment = {**os.environ, "CUSTODES_CACHE_DIR": str(work / "cache")}
        environment.pop("PYTHONDONTWRITEBYTECODE", None)
        duckdb_python = peer_python(args.peers, DUCKDB_PACKAGES)
        checkout, how = zircolite_checkout(args.zircolite, work)
        compile_bytecode([Path(custodes.__file__).parent, *([checkout] if checkout else [])])
        zircolite_python = None
        if checkout is not None and duckdb_python is not None:
            zircolite_python = peer_python(args.peers, ["-r", str(checkout / "requirements.txt")])
        duckdb_state = f"in {args.peers}" if duckdb_python else "not installed"
        print(f"peers: DuckDB backend {duckdb_state}; Zircolite: {how}")

        # CloudTrail ------------------------------------------------------------------------------------------
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
        subprocess.run([*match[:-1], str(one), "--source", "cloudtrail"], capture_output=True, env=environment)  # noqa: S603
        tools = [
            Tool("custodes rules match --source cloudtrail", [*match, "--source", "cloudtrail"], work / "ct0"),
            Tool(
                "pySigma DuckDB backend (DuckDB reads the JSON)",
                duckdb_command(duckdb_python, events, rules),
                work / "ct1",
                note="" if duckdb_python else "pysigma-backend-duckdb could not be installed",
            ),
            Tool(
                "Zircolite (-j -r RULES)",
                [] if args.skip_slow_peers else zircolite_command(zircolite_python, checkout, events, rules, work),
                work / "ct2",
                repeat=False,
                cwd=checkout,  # Zircolite reads its field mappings (config/) from the working folder
                note="" if zircolite_python else how,
            ),
        ]
        if args.skip_slow_peers and zircolite_python:
            tools[2].note = "left out (--skip-slow-peers)"
        run(tools, args.repeat, environment)
        got = custodes_matches(tools[0].output)
        expected = cloudtrail_oracle(rules, lines)
        same = "identical to the in-process engine" if got == expected else f"DIFFERENT ({len(expected)} expected)"
        tools[0].note = f"{len(got):,} matches, {same}"
        if tools[1].runs and tools[1].output.stat().st_size:
            outcome = orjson.loads(tools[1].output.read_bytes())
            tools[1].note = f"{outcome['matches']:,} matches; {outcome['failed']} rules fail to convert or run"
        if tools[2].runs:
            tools[2].note = f"{zircolite_matches(work / 'zircolite-cloudtrail.json'):,} matches (one run)"
        report(
            f"CloudTrail, {len(lines):,} records x {len(files)} AWS rules, median of {args.repeat}", tools, len(lines)
        )

        # Windows ---------------------------------------------------------------------------------------------
        from custodes.detections.sigma.loader import load_rules
        from sigma_windows import regression_events

        folders = [f / "windows" for f in sorted(SIGMAHQ.glob("rules*")) if (f / "windows").is_dir()]
        records = [record for _, record in regression_events(load_rules(folders))]
        windows = work / "windows.ndjson"
        with windows.open("wb") as out:
            for number in range(WINDOWS_EVENTS):
                out.write(orjson.dumps(records[number % len(records)]) + b"\n")
        windows_rules = work / "windows-rules"
        for source in folders:
            shutil.copytree(source, windows_rules / source.parent.name)
        count = sum(1 for _ in windows_rules.rglob("*.yml"))
        print(f"\n{count:,} SigmaHQ Windows rule files, {WINDOWS_EVENTS:,} events ({len(records)} regression records)")
        match = [str(CUSTODES), "rules", "match", "--rules", str(windows_rules), "--events", str(windows)]
        subprocess.run([*match[:-1], str(one)], capture_output=True, env=environment)  # noqa: S603
        slow = args.skip_slow_peers
        tools = [
            Tool("custodes rules match (rules as written)", match, work / "w0"),
            Tool(
                "Zircolite (-j -r RULES)",
                zircolite_command(zircolite_python, checkout, windows, windows_rules, work),
                work / "w1",
                repeat=False,
                cwd=checkout,  # Zircolite reads its field mappings (config/) from the working folder
                note="" if zircolite_python else how,
            ),
            Tool(
                "pySigma DuckDB backend (DuckDB reads the JSON)",
                [] if slow else duckdb_command(duckdb_python, windows, windows_rules),
                work / "w2",
                repeat=False,
                note="left out (--skip-slow-peers)" if slow else "",
            ),
        ]
        run(tools, args.repeat, environment)
        got = custodes_matches(tools[0].output)
        expected = windows_oracle(windows_rules, records, WINDOWS_EVENTS)
        same = "identical to the in-process engine" if got == expected else f"DIFFERENT ({len(expected)} expected)"
        tools[0].note = f"{len(got):,} matches, {same}"
        if tools[1].runs:
            tools[1].note = f"{zircolite_matches(work / 'zircolite-windows.json'):,} matches (one run)"
        if tools[2].runs and tools[2].output.stat().st_size:
            outcome = orjson.loads(tools[2].output.read_bytes())
            tools[2].note = f"{outcome['matches']:,} matches; {outcome['failed']} rules fail (one run)"
        report(
            f"Windows, {WINDOWS_EVENTS:,} records x {count:,} rule files, median of {args.repeat}",
            tools,
            WINDOWS_EVENTS,
        )

        # Startup ---------------------------------------------------------------------------------------------
        print("\nstartup (`rules match` over one record), empty rule-set cache, then filled:")
        for label, paths, extra in (
            ("AWS rules, --source cloudtrail", [rules], ["--source", "cloudtrail"]),
            ("whole SigmaHQ corpus (rules*)", sorted(SIGMAHQ.glob("rules*")), []),
        ):
            command = [str(CUSTODES), "rules", "match", *[f"--rules={p}" for p in paths], "--events", str(one), *extra]
            shutil.rmtree(work / "cache", ignore_errors=True)
            cold = Tool(label, command, work / "startup")
            cold.measure(environment)
            warm = Tool(label, command, work / "startup")
            for _ in range(args.repeat):
                warm.measure(environment)
            print(
                f"  {label:<34} empty cache {cold.wall:5.2f} s ({cold.memory:4.0f} MB)   "
                f"filled {warm.wall:5.2f} s ({warm.memory:4.0f} MB, median of {args.repeat})"
            )


if __name__ == "__main__":
    main()
