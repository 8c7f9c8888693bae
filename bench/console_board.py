"""The console's risk board on a large store: 100,000 people scored for one day (and 100,000 entities).

Run: .venv/bin/python bench/console_board.py [--people 100000] [--database-url URL] [--repeat 20]

Figures: (1) the board's ranking query alone (one page of 50, the first page and a deep page), median of the
repeats; (2) GET / through `custodes serve`'s application over loopback HTTP with a signed-in session (query,
reasons in sentences, template), median of the repeats; (3) a person's page reached by pseudonym (the pseudonym is
matched against every entity id: the store keeps no pseudonym table). The store is SQLite in a temporary directory
unless a PostgreSQL URL is given (a fresh schema, dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
import sqlalchemy as sa

from custodes.config import DatabaseSettings, Settings
from custodes.detections.scoring.risk import Contribution, DayScore
from custodes.detections.scoring.service import score_row
from custodes.server.console import queries
from custodes.server.serve import serving
from custodes.services import Services
from custodes.store import Store, upserts
from custodes.store.database import drop_schema
from custodes.store.tables import entities, scoring_scores

DAY = date(2026, 11, 19)
TOKEN = "bench-console-token"


def score(n: int) -> DayScore:
    """Person n's score: a spread of risks with one or two contributions to explain."""
    contributions = [Contribution("cloud_upload", n % 17, 0.5, 0.4, (n % 17) * 0.8, 2.0, 3.0, 12, 40, [f"e{n}"])]
    if n % 5 == 0:
        contributions.append(Contribution("usb", 2, 0.0, 0.1, 6.0, 6.0, 0.0, None, 40, [f"u{n}"]))
    points = sum(c.points for c in contributions)
    return DayScore(f"p-{n:016x}", "person", DAY, points, points + (n * 7919) % 1000 / 10, contributions, {}, [], [])


async def seed(store: Store, people: int) -> None:
    """Day scores and entity rows for `people` people, in batches of 5,000."""
    now = datetime.now(UTC)
    async with store.transaction() as tx:
        statement = upserts.upsert(
            tx.conn.dialect.name, scoring_scores, ("entity", "day"), ("risk", "points", "place", "detail", "event_ids")
        )
        scores = [score(n) for n in range(people)]
        for place, ranked in enumerate(sorted(scores, key=lambda s: -s.risk), start=1):
            ranked.place = place  # a closed day, in review order (here by risk)
        for start in range(0, people, 5000):
            rows = [score_row(scores[n], now) for n in range(start, min(people, start + 5000))]
            await upserts.write(tx.conn, statement, rows)
            await tx.conn.execute(
                sa.insert(entities),
                [
                    {
                        "id": f"user{n}@example.com",
                        "kind": "person",
                        "display_name": None,
                        "attributes": {},
                        "first_seen": now - timedelta(days=90),
                        "last_seen": now,
                    }
                    for n in range(start, min(people, start + 5000))
                ],
            )


async def median_ms(repeat: int, work: Callable[[], Awaitable[None]]) -> float:
    """The median wall time of `work` in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def main(people: int, database_url: str | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        schema = f"bench_{uuid.uuid4().hex[:10]}" if database_url else None
        database = (
            DatabaseSettings(url=database_url, schema_name=schema)
            if database_url
            else DatabaseSettings(url=f"sqlite+aiosqlite:///{Path(tmp) / 'store.db'}")
        )
        try:
            await run(database, people, repeat)
        finally:
            if database_url and schema:
                await drop_schema(database_url, schema)


async def run(database: DatabaseSettings, people: int, repeat: int) -> None:
    os.environ["BENCH_CONSOLE_TOKEN"] = TOKEN
    settings = Settings.model_validate(
        {
            "detection": {"rules": []},
            "server": {"api_tokens": [{"name": "bench", "token": "env:BENCH_CONSOLE_TOKEN", "role": "viewer"}]},
        }
    )
    settings.database = database
    async with await Services.open(settings) as services:
        started = time.perf_counter()
        await seed(services.store, people)
        print(
            f"store: {database.url.split(':')[0]}; seeded {people:,} day scores and entities "
            f"in {time.perf_counter() - started:.1f} s"
        )

        for label, offset in (("first page", 0), ("page 1000", min(people - 50, 999 * 50))):

            async def page(offset: int = offset) -> None:
                async with services.store.transaction() as tx:
                    rows = await queries.ranked(tx, DAY, closed=True, limit=51, offset=offset)
                assert len(rows) == 51

            print(f"ranking query, {label} (50 rows + 1, reasons): {await median_ms(repeat, page):.2f} ms median")

        async with serving(services, "127.0.0.1", 0) as url:
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as http:
                async with http.get(f"{url}/signin") as r:
                    csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
                assert csrf
                async with http.post(f"{url}/signin", data={"token": TOKEN, "csrf": csrf.group(1), "next": "/"}) as r:
                    assert r.status == 200

                async def board() -> None:
                    async with http.get(f"{url}/?day={DAY}") as r:
                        assert r.status == 200 and "Later in the queue" in await r.text()

                print(f"GET / (risk board, 50 people) over HTTP: {await median_ms(repeat, board):.2f} ms median")

                async def person() -> None:
                    async with http.get(f"{url}/people/{score(7).entity}") as r:
                        assert r.status == 200

                # a pseudonym in a URL is matched against every known entity (the API's Call.person)
                took = await median_ms(max(3, repeat // 4), person)
                print(f"GET /people/<pseudonym> over HTTP: {took:.2f} ms median")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite in a temp dir)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.people, args.database_url, args.repeat))
