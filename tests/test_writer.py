"""The Writer stage against a real PostgreSQL."""

from __future__ import annotations

import attrs
import pytest
import trio

from flowtel._database import CommitResult, open_database
from flowtel._model import Batch
from flowtel._writer import write_batches

try:
    from tests.test_database import batch, checkpoint, make_events
except ImportError:
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
