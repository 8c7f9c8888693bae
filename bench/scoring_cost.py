"""Behaviour scoring's cost by instruction count: two revisions of the engine compared without the machine's noise.

    .venv/bin/python bench/scoring_cost.py                    # the working tree against HEAD
    .venv/bin/python bench/scoring_cost.py --against 6d3ce78 --population 300 --days 60 --shape devices --seed 5
    make compiled && .venv/bin/python bench/scoring_cost.py --against build/compiled   # against the compiled build

Wall-clock throughput (bench/scoring.py) varies by a third between identical runs on a shared machine; instructions
do not. One organisation is simulated, then valgrind's callgrind counts the instructions of a process that only
reads its events and of one that reads and scores them (`ScoringEngine.observe` on each, then `flush`), with
`PYTHONHASHSEED=0`, for each revision; the engine's cost is the difference. A revision other than the working tree
is checked out into a temporary git worktree and imported from there; a directory is imported as it is. Identical
engines differ by about 0.1 % (+0.11 % for the working tree against its own HEAD on 60 people and 25 days). Needs
`valgrind` on the PATH; each count takes one to three minutes at the default size.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLLECTED = re.compile(r"Collected : ([0-9]+)")


def child(folder: Path, score: bool) -> None:
    """Read the organisation's events and, with `score`, score them: the process callgrind counts."""
    from custodes.config import ScoringSettings
    from custodes.detections.scoring.engine import ScoringEngine
    from custodes.detections.scoring.evaluate import read_events
    from custodes.detections.scoring.identity import IdentityResolver, load_directory

    settings = ScoringSettings(directory=folder / "directory.json", pseudonymise=False)
    events = list(read_events(sorted(folder.glob("*.ndjson"))))
    if score:
        resolver = IdentityResolver(load_directory(folder / "directory.json"), settings.identities)
        engine = ScoringEngine(settings, resolver, org_domains=["corp.example"])
        for event in events:
            engine.observe(event)
        engine.flush()
    print(len(events))


def instructions(source: Path, folder: Path, score: bool) -> int:
    """Instructions callgrind counts for the child process importing Custodes from `source`."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__]
    command += ["--child", "score" if score else "read", "--folder", str(folder)]
    env = os.environ | {"PYTHONPATH": str(source), "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603 (made here)
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def git(*arguments: str) -> None:
    """Run git on this repository."""
    subprocess.run(["git", "-C", str(ROOT), *arguments], check=True)  # noqa: S603, S607 (git on the PATH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--against",
        default="HEAD",
        help="what the working tree is compared with: a git revision, or a directory holding a `custodes` package",
    )
    parser.add_argument("--population", type=int, default=300)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--warmup-days", type=int, default=10)
    parser.add_argument("--shape", default="devices")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--child", choices=("read", "score"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.folder, args.child == "score")
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not on the PATH: install it (apt-get install valgrind) to count instructions")
    from custodes.detections.scoring.simulate import SHAPES, SimulationSettings, simulate

    if args.shape not in SHAPES:
        parser.error(f"--shape must be one of {', '.join(SHAPES)}")
    with tempfile.TemporaryDirectory() as tmp:
        folder, tree = Path(tmp) / "org", Path(tmp) / "against"
        knobs = SimulationSettings(
            population=args.population,
            days=args.days,
            warmup_days=args.warmup_days,
            seed=args.seed,
            shape=args.shape,
        )
        simulate(knobs, folder)
        events = sum(path.read_bytes().count(b"\n") for path in folder.glob("*.ndjson"))
        built = Path(args.against)
        if built.is_dir():
            against = built.resolve()
        else:
            git("worktree", "add", "--detach", str(tree), args.against)
            against = tree / "src"
        try:
            print(f"{args.shape}, {args.population} people, {args.days} days, seed {args.seed}: {events:,} events")
            print(f"{'engine':>22} {'read only':>15} {'read + score':>15} {'engine':>15} {'per event':>10}")
            costs = []
            for name, source in ((args.against, against), ("working tree", ROOT / "src")):
                read, total = instructions(source, folder, False), instructions(source, folder, True)
                costs.append(total - read)
                print(f"{name:>22} {read:>15,} {total:>15,} {total - read:>15,} {(total - read) / events:>10,.0f}")
            print(f"working tree against {args.against}: {100 * (costs[1] / costs[0] - 1):+.2f} % instructions")
        finally:
            if tree.exists():
                git("worktree", "remove", "--force", str(tree))


if __name__ == "__main__":
    main()
