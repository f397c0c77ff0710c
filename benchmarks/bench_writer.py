"""How fast the Writer stores events, next to a bare COPY of the same rows.

    FLOWTEL_BENCH_DSN=postgresql://postgres@127.0.0.1:5432/test \\
        /tmp/venv/bin/python benchmarks/bench_writer.py [N]

Each measurement runs in a fresh database (created and dropped here; the DSN's user must be
allowed to CREATE DATABASE). Without FLOWTEL_BENCH_DSN an embedded server is started.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flowtel._database import _EVENT_COLUMNS, _event_row, open_database
from flowtel._model import Batch, Checkpoint, Event
from tests import pg

T0 = dt.datetime(2026, 1, 27, tzinfo=dt.UTC)
TYPES = ["page_view", "click", "api_call", "form_submit", "scroll", "purchase"]


def synthetic(n: int) -> list[Event]:
    sessions = [uuid.uuid4() for _ in range(600)]
    users = [uuid.uuid4() for _ in range(300)]
    return [
        Event(
            id=uuid.uuid4(),
            occurred_at=T0 + dt.timedelta(milliseconds=i * 7),
            session_id=sessions[i % 600],
            user_id=users[i % 300],
            type=TYPES[i % 6],
            name=f"event_{i % 9973:06x}",
            properties={"page": f"/p/{i % 50}", "ms": i % 1000},
            device_type="mobile",
            browser="Chrome",
        )
        for i in range(n)
    ]


def in_fresh_database(server: pg.Server, run: Callable[[str], Coroutine[Any, Any, float]]) -> float:
    dsn = server.create_database()
    try:
        return trio.run(run, dsn)
    finally:
        server.drop_database(dsn)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    if os.environ.get("FLOWTEL_BENCH_DSN"):
        os.environ[pg.ENV_DSN] = os.environ["FLOWTEL_BENCH_DSN"]
    server = pg.start_server()
    events = synthetic(n)
    print(f"{n:,} synthetic events; server {server.admin_dsn.split('@')[-1]}")

    for size in (5_000, 20_000):

        async def writer(dsn: str, size: int = size) -> float:
            async with open_database(dsn) as db:
                start = time.perf_counter()
                for i in range(0, n, size):
                    cp = Checkpoint(stream="bench", source="feed", events=i + size)
                    await db.commit(Batch(events[i : i + size], [], [cp]))
                elapsed = time.perf_counter() - start
                assert await db.count_events() == n
                return elapsed

        elapsed = in_fresh_database(server, writer)
        print(
            f"Database.commit, batches of {size:>6,}: {n / elapsed:>9,.0f} rows/s ({elapsed:.2f} s)"
        )

    async def bare_copy(dsn: str) -> float:
        async with open_database(dsn) as db:
            rows = [_event_row(e) for e in events]
            start = time.perf_counter()
            async with db._connection() as conn:
                await db._aio(conn.execute, "CREATE TABLE plain (LIKE events INCLUDING DEFAULTS)")
                await db._aio(
                    conn.copy_records_to_table, "plain", records=rows, columns=_EVENT_COLUMNS
                )
            return time.perf_counter() - start

    elapsed = in_fresh_database(server, bare_copy)
    print(f"bare COPY into a plain table (1 go):  {n / elapsed:>9,.0f} rows/s ({elapsed:.2f} s)")
    server.stop()


if __name__ == "__main__":
    main()
