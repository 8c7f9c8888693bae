"""Reading log files (`connectors.files.iter_records`, what `replay`, `rules match` and `eval scoring` read with):
records per second for plain NDJSON and for the same records as SIEM exports, side by side with another tree.

    .venv/bin/python bench/file_reading.py                                   # the working tree alone
    git worktree add /tmp/before REV && .venv/bin/python bench/file_reading.py --against /tmp/before/src

300,000 CloudTrail-shaped records (seeded) are written as NDJSON, as Elasticsearch hits (`elasticdump`'s lines), as
Splunk's JSON export lines (each record JSON within `_raw`) and as a Microsoft 365 audit log search's rows (each within
`AuditData`); and five of their fields as CSV rows, with an ISO 8601 time and with the Azure portal's display form.
Each tree reads each file in a process of its own, the trees alternating, `--repeat` times; the best rate is
printed. A tree without export reading reads the exports as the wrappers they are (the same number of records).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent


def write_files(folder: Path, count: int) -> dict[str, Path]:
    """The same records as NDJSON, Elasticsearch hits, Splunk export lines and audit search rows, and as CSVs."""
    rng = random.Random(1)
    names = ("GetObject", "PutObject", "ConsoleLogin", "AssumeRole")
    records: list[dict[str, Any]] = [
        {
            "eventID": f"e{n}",
            "eventTime": "2024-03-04T10:00:00Z",
            "eventSource": "s3.amazonaws.com",
            "eventName": rng.choice(names),
            "userIdentity": {"type": "IAMUser", "userName": f"u{rng.randrange(500)}", "accountId": "111122223333"},
            "sourceIPAddress": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}",
            "requestParameters": {"bucketName": "reports", "key": f"k{n}.csv"},
        }
        for n in range(count)
    ]
    shapes: dict[str, Callable[[int, dict[str, Any]], dict[str, Any]]] = {
        "ndjson": lambda n, r: r,
        "es hits": lambda n, r: {"_index": "logs-aws", "_id": str(n), "_score": 1.0, "_source": r},
        "splunk export": lambda n, r: {"preview": False, "offset": n, "result": {"_raw": orjson.dumps(r).decode()}},
        "audit search": lambda n, r: {"CreationDate": r["eventTime"], "AuditData": orjson.dumps(r).decode()},
    }
    files = {}
    for name, shape in shapes.items():
        path = folder / f"{name.replace(' ', '-')}.ndjson"
        path.write_bytes(b"\n".join(orjson.dumps(shape(n, r)) for n, r in enumerate(records)) + b"\n")
        files[name] = path
    for name, (header, when) in CSV_TIMES.items():
        path = folder / f"{name.replace(' ', '-')}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["eventID", header, "eventName", "userName", "sourceIPAddress"])
            for r in records:
                row = [r["eventID"], when, r["eventName"], r["userIdentity"]["userName"], r["sourceIPAddress"]]
                writer.writerow(row)
        files[name] = path
    return files


CSV_TIMES: dict[str, tuple[str, str]] = {
    "csv": ("TimeGenerated", "2024-03-04T10:00:00Z"),
    "portal csv": ("TimeGenerated [UTC]", "3/4/2024, 10:00:00.000 AM"),
}
"""The CSV files' time column and time: ISO 8601, and as the Azure portal exports a Log Analytics query."""


def child(path: Path) -> None:
    """Read the file once and print records per second."""
    from custodes.connectors.files import iter_records

    started = time.perf_counter()
    count = sum(1 for _ in iter_records(path))
    print(f"{count} {count / (time.perf_counter() - started):.0f}")


def rate(source: Path, path: Path) -> tuple[int, float]:
    """(records, records/s) of one read of `path` by the tree at `source`."""
    env = os.environ | {"PYTHONPATH": str(source)}
    done = subprocess.run(  # noqa: S603 (made here)
        [sys.executable, __file__, "--child", str(path)], env=env, capture_output=True, text=True, check=True
    )
    count, speed = done.stdout.split()
    return int(count), float(speed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", type=Path, help="another tree's importable source folder")
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    trees = {"working tree": ROOT / "src"} | ({str(args.against): args.against} if args.against else {})
    with tempfile.TemporaryDirectory(prefix="custodes-bench-") as folder:
        files = write_files(Path(folder), args.records)
        print(f"{'file':<14} {'tree':<28} {'records':>9} {'records/s':>11}")
        for name, path in files.items():
            best: dict[str, tuple[int, float]] = {}
            for _ in range(args.repeat):
                for tree, source in trees.items():
                    count, speed = rate(source, path)
                    if speed > best.get(tree, (0, 0.0))[1]:
                        best[tree] = (count, speed)
            for tree, (count, speed) in best.items():
                print(f"{name:<14} {tree:<28} {count:>9,} {speed:>11,.0f}")


if __name__ == "__main__":
    main()
