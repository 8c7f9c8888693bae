"""The pySigma DuckDB backend as a user runs it: convert every rule to SQL and run each over a JSON file.

Run by `rules_match.py` with the Python of a separate virtual environment holding `pysigma-backend-duckdb` and
`duckdb` from PyPI (never dependencies of Custodes), so it imports nothing of Custodes:
`PYTHON peers/duckdb_backend.py RULES_FOLDER EVENTS_FILE`. Prints `{"matches": N, "failed": N}`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(rules: Path, events: Path) -> None:
    """Load the events into DuckDB (`read_json_auto`), then convert and count each rule's matches."""
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
                row = connection.execute(f"SELECT count(*) FROM ({query})").fetchone()  # noqa: S608
            except duckdb.Error:
                failed += 1
                continue
            matches += row[0] if row is not None else 0
    print(json.dumps({"matches": matches, "failed": failed}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
