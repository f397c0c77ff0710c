"""The Writer stage against a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import asyncpg
import attrs
import pytest
import trio
import trio_asyncio

from flowtel._database import CommitResult, Database, open_database
from flowtel._model import Batch
from flowtel._writer import write_batches

try:
    from tests import pg
    from tests.test_database import batch, checkpoint, make_events
except ImportError:
    import pg  # type: ignore[no-redef]
    from test_database import batch, checkpoint, make_events  # type: ignore[no-redef]


async def test_writes_every_batch_and_closes_the_channel(database_url: str) -> None:
    commits: list[tuple[CommitResult, Batch]] = []
    send, receive = trio.open_memory_channel[Batch](10)
    async with open_database(database_url) as db:
        async with send:
            for i in range(5):
                await send.send(batch(make_events(100, start=i * 50), checkpoint(events=i)))
        # Everything was waiting: merged into one transaction (5 x 100 rows < the budget).
        await write_batches(db, receive, lambda r, b: commits.append((r, b)))
        assert len(commits) == 1
        result, merged = commits[0]
        assert result == CommitResult(inserted=300, duplicates=200, rejected=0)
        assert len(merged.events) == 500
        assert [c.events for c in await db.load_checkpoints()] == [4]  # the last one wins
        assert await db.count_events() == 300
    # Our end is closed: a sender learns the Writer is gone.
    with pytest.raises(trio.ClosedResourceError):
        receive.receive_nowait()


async def test_merges_only_up_to_the_row_budget(database_url: str) -> None:
    sizes: list[int] = []
    send, receive = trio.open_memory_channel[Batch](10)
    async with open_database(database_url) as db:
        async with send:
            for i in range(6):
                await send.send(batch(make_events(100, start=i * 100)))
        await write_batches(db, receive, lambda r, b: sizes.append(len(b.events)), max_rows=250)
        assert sizes == [300, 300]
        assert await db.count_events() == 600


async def test_a_merged_batch_holds_every_raw_page_until_committed(database_url: str) -> None:
    # Each batch's raw page is freed with its events, after the commit (see Batch.raw_events).
    held: list[list[object]] = []
    send, receive = trio.open_memory_channel[Batch](10)
    pages = [[{"page": i, "event": j} for j in range(3)] for i in range(3)]
    async with open_database(database_url) as db:
        async with send:
            for i, page in enumerate(pages):
                events = make_events(3, start=i * 3)
                await send.send(attrs.evolve(batch(events), raw_events=page))
        await write_batches(db, receive, lambda r, b: held.append(b.raw_events))
    assert held == [[event for page in pages for event in page]]


async def test_commits_as_batches_arrive(database_url: str) -> None:
    sizes: list[int] = []
    send, receive = trio.open_memory_channel[Batch](0)
    async with open_database(database_url) as db, trio.open_nursery() as nursery:
        nursery.start_soon(write_batches, db, receive, lambda r, b: sizes.append(r.inserted))
        async with send:
            for i in range(3):
                await send.send(batch(make_events(10, start=i * 10)))
                await trio.sleep(0.05)  # the Writer is idle: each batch commits on its own
    assert sizes == [10, 10, 10]


# ---- lanes: several connections committing at once -------------------------------------


@asynccontextmanager
async def open_transaction(dsn: str) -> AsyncIterator[Any]:
    """A connection of the test's own with a transaction open, rolled back at the end."""
    conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(dsn)
    try:
        await trio_asyncio.aio_as_trio(conn.execute)("BEGIN")
        yield trio_asyncio.aio_as_trio(conn.execute)
    finally:
        await trio_asyncio.aio_as_trio(conn.close)()


async def wait_until_a_writer_waits_for_a_lock(execute: Any) -> None:
    """Until one of flowtel's connections is blocked on a lock the test holds."""
    while True:
        waiting = await execute(
            "SELECT 1 FROM pg_stat_activity"
            " WHERE application_name = 'flowtel' AND wait_event_type = 'Lock'"
        )
        if waiting == "SELECT 1":
            return
        await trio.sleep(0.01)


@attrs.define
class Commits:
    """An `on_commit` that keeps each committed batch and tells when the first came."""

    batches: list[Batch] = attrs.field(factory=list)
    first: trio.Event = attrs.field(factory=trio.Event)

    def __call__(self, result: CommitResult, batch: Batch) -> None:
        self.batches.append(batch)
        self.first.set()

    def streams(self) -> list[str]:
        return [cp.stream for b in self.batches for cp in b.checkpoints]


@asynccontextmanager
async def two_lanes_one_held(
    dsn: str, held: uuid.UUID
) -> AsyncIterator[tuple[Database, trio.MemorySendChannel[Batch], Commits, Any]]:
    """A Writer of two lanes, and the test's own transaction, `hold`, with an uncommitted row
    of id `held`: the COPY of a batch with that id waits until `hold("ROLLBACK")`. Close the
    channel before leaving."""
    commits = Commits()
    send, receive = trio.open_memory_channel[Batch](10)
    async with (
        trio_asyncio.open_loop(),
        open_database(dsn) as db,
        open_transaction(dsn) as hold,
        trio.open_nursery() as nursery,
    ):
        await hold("INSERT INTO events (id, occurred_at) VALUES ($1, now())", held)
        nursery.start_soon(partial(write_batches, lanes=2), db, receive, commits)
        yield db, send, commits, hold


async def test_a_second_lane_commits_while_the_first_waits(database_url: str) -> None:
    # One connection held up by a lock must not hold up the streams of the other lanes.
    events = make_events(6)
    async with two_lanes_one_held(database_url, events[0].id) as (_, send, commits, hold):
        await send.send(batch(events[:3], checkpoint("a")))
        await wait_until_a_writer_waits_for_a_lock(hold)
        await send.send(batch(events[3:], checkpoint("b")))
        with trio.fail_after(10):
            await commits.first.wait()
        assert commits.streams() == ["b"]
        await hold("ROLLBACK")
        await send.aclose()
    assert commits.streams() == ["b", "a"]
    assert pg.fetchval(database_url, "SELECT count(*) FROM events") == 6


async def test_a_streams_batches_commit_in_order_through_one_lane(database_url: str) -> None:
    # Stream a's second batch must not commit (with its checkpoint) while its first waits:
    # a crash then would resume a after events that were never stored.
    events = make_events(9)
    async with two_lanes_one_held(database_url, events[0].id) as (db, send, commits, hold):
        await send.send(batch(events[:3], checkpoint("a", pages=1)))
        await wait_until_a_writer_waits_for_a_lock(hold)
        await send.send(batch(events[3:6], checkpoint("a", pages=2)))
        await send.send(batch(events[6:], checkpoint("b", pages=1)))
        with trio.fail_after(10):
            await commits.first.wait()
        # b went by the free lane; a's second batch waited behind its first.
        assert commits.streams() == ["b"]
        assert [cp.stream for cp in await db.load_checkpoints()] == ["b"]
        await hold("ROLLBACK")
        await send.aclose()
    assert [(cp.stream, cp.pages) for b in commits.batches for cp in b.checkpoints] == [
        ("b", 1),
        ("a", 1),
        ("a", 2),
    ]


async def test_a_batch_without_events_commits_before_any_batch_after_it(
    database_url: str,
) -> None:
    # A split saves the new shard's checkpoint (a batch without events) before the shrunk
    # stream may send pages past its new bound: nothing after it may commit first.
    commits = Commits()
    send, receive = trio.open_memory_channel[Batch](10)
    async with trio_asyncio.open_loop(), open_database(database_url) as db:
        await db.commit(batch([], checkpoint("new")))  # so that the test can lock its row
        async with open_transaction(database_url) as hold, trio.open_nursery() as nursery:
            await hold("SELECT 1 FROM checkpoints WHERE stream = 'new' FOR UPDATE")
            nursery.start_soon(partial(write_batches, lanes=2), db, receive, commits)
            await send.send(batch([], checkpoint("new", since_ms=1)))
            await wait_until_a_writer_waits_for_a_lock(hold)
            await send.send(batch(make_events(3), checkpoint("shrunk", since_ms=2)))
            # A free lane would commit it at once (a few ms): give it a whole second.
            await trio.sleep(1)
            assert commits.batches == []
            await hold("ROLLBACK")
            await send.aclose()
    assert commits.streams() == ["new", "shrunk"]


async def test_a_commit_undone_to_break_a_deadlock_is_tried_again(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Two lanes may insert the same ids (shard edges) in opposite orders. The server then
    # undoes one transaction; the Writer commits it again instead of stopping the run.
    caplog.set_level("INFO", logger="flowtel.database")
    x, y = make_events(2)
    results: list[CommitResult] = []
    async with (
        trio_asyncio.open_loop(),
        open_database(database_url) as db,
        open_transaction(database_url) as other,
        trio.open_nursery() as nursery,
    ):
        # The other transaction waits longer before it looks for a deadlock, so the server
        # undoes the Writer's (its default deadlock_timeout is 1 s).
        await other("SET LOCAL deadlock_timeout = '20s'")
        await other("INSERT INTO events (id, occurred_at) VALUES ($1, now())", y.id)

        async def commit() -> None:
            results.append(await db.commit(batch([x, y], checkpoint("a"))))

        nursery.start_soon(commit)
        await wait_until_a_writer_waits_for_a_lock(other)  # it holds x, and waits for y
        await other("INSERT INTO events (id, occurred_at) VALUES ($1, now())", x.id)
        await other("COMMIT")
    assert results == [CommitResult(inserted=0, duplicates=2, rejected=0)]
    assert any("deadlock detected; trying again" in r.getMessage() for r in caplog.records)
    assert pg.fetch(database_url, "SELECT stream FROM checkpoints") == [{"stream": "a"}]
