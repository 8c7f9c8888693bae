"""Need to know on a large store: what hiding a restricted case's findings and person costs the lists.

Run: .venv/bin/python bench/need_to_know.py [--people 20000] [--restricted-every 20] [--database-url URL]
[--repeat 20]

The store holds `people` day scores and entities (as bench/console_board.py seeds them), one finding and one case
per person, every `restricted-every`th case restricted to someone else. Figures, median of the repeats, each beside
its reference in the same run: (1) one page of `GET /api/findings`'s query (newest 50) for a principal on no
access list, against the same query without need to know; (2) one page of the risk board's ranking, likewise. The
store is SQLite in a temporary directory unless a PostgreSQL URL is given (a fresh schema, dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from console_board import DAY, median_ms, seed
from custodes.cases import needtoknow
from custodes.config import DatabaseSettings
from custodes.model import Severity
from custodes.server.console import queries
from custodes.store import Store
from custodes.store.cases import case_access, case_members, cases
from custodes.store.database import drop_schema
from custodes.store.tables import findings


def case_rows(people: int, every: int) -> tuple[list[dict[str, Any]], ...]:
    """Findings, cases, members and access rows: one finding and one case per person, every `every`th restricted."""
    now = datetime.now(UTC)
    found, opened, members, access = [], [], [], []
    for n in range(people):
        person, ident, case_id = f"user{n}@example.com", f"f{n:08d}", f"case-{n:016x}"
        at = now - timedelta(seconds=people - n)
        found.append(
            {
                "id": ident,
                "dedup_key": ident,
                "detector": "sigma",
                "rule_id": "bench.rule",
                "title": "Bench finding",
                "severity": int(Severity.HIGH),
                "entity": person,
                "tags": [],
                "event_ids": [],
                "count": 1,
                "status": "open",
                "first_seen": at,
                "last_seen": at,
                "created_at": at,
            }
        )
        restricted = n % every == 0
        status = "escalated_hr" if restricted else "new"
        opened.append(
            {
                "id": case_id,
                "subject": person,
                "title": "Bench case",
                "status": status,
                "priority": "medium",
                "opened_by": "bench",
                "opened_at": at,
                "updated_at": at,
                "restricted": restricted,
                "legal_hold": restricted,
            }
        )
        members.append({"case_id": case_id, "kind": "finding", "ref": ident, "added_by": "bench", "added_at": at})
        if restricted:
            access.append({"case_id": case_id, "principal": "hr-partner", "granted_by": "bench", "granted_at": at})
    return found, opened, members, access


async def run(database: DatabaseSettings, people: int, every: int, repeat: int) -> None:
    store = await Store.open(database)
    try:
        await seed(store, people)
        async with store.transaction() as tx:
            for table, rows in zip((findings, cases, case_members, case_access), case_rows(people, every), strict=True):
                for start in range(0, len(rows), 5000):
                    await tx.conn.execute(sa.insert(table), rows[start : start + 5000])
        async with store.transaction() as tx:
            await tx.conn.execute(sa.text("ANALYZE"))  # the statistics autovacuum (or SQLite's optimize) would keep
        print(
            f"store: {database.url.split(':')[0]}; {people:,} people, findings and cases, "
            f"{len(range(0, people, every)):,} cases restricted"
        )

        async def findings_page(hide: bool) -> None:
            async with store.transaction() as tx:
                page = await tx.list_findings(limit=50, hide=needtoknow.hidden("finding", "viewer") if hide else None)
            assert len(page) == 50

        async def board_page(hide: bool) -> None:
            async with store.transaction() as tx:
                hidden = needtoknow.hidden_keys("viewer") if hide else None
                page = await queries.ranked(tx, DAY, closed=True, limit=51, hide=hidden)
            assert len(page) == 51

        for label, work in (("GET /api/findings query (50)", findings_page), ("risk board ranking (51)", board_page)):
            plain = await median_ms(repeat, partial(work, False))
            hidden = await median_ms(repeat, partial(work, True))
            print(f"{label}: {hidden:.2f} ms median with need to know; reference without: {plain:.2f} ms")
    finally:
        await store.close()


async def main(people: int, every: int, database_url: str | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        schema = f"bench_{uuid.uuid4().hex[:10]}" if database_url else None
        database = (
            DatabaseSettings(url=database_url, schema_name=schema)
            if database_url
            else DatabaseSettings(url=f"sqlite+aiosqlite:///{Path(tmp) / 'store.db'}")
        )
        try:
            await run(database, people, every, repeat)
        finally:
            if database_url and schema:
                await drop_schema(database_url, schema)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--restricted-every", type=int, default=20)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.people, args.restricted_every, args.database_url, args.repeat))
