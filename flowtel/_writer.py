"""The Writer stage: batches from a channel into PostgreSQL, one transaction at a time."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from flowtel._database import CommitResult, Database
from flowtel._model import Batch

# Batches already waiting in the channel are merged up to this many events per transaction:
# fewer, larger COPYs when the Writer falls behind, no added latency when it keeps up.
MAX_ROWS_PER_COMMIT = 20_000


async def write_batches(
    db: Database,
    receive: trio.MemoryReceiveChannel[Batch],
    on_commit: Callable[[CommitResult, Batch], None],
    *,
    max_rows: int = MAX_ROWS_PER_COMMIT,
) -> None:
    """Commit every batch received until the channel closes, then close our end.

    `on_commit(result, batch)` is called after each transaction with what it stored; when
    several waiting batches were merged into one transaction, `batch` is their union (events,
    rejects and checkpoints in arrival order).
    """
    async with receive:
        async for first in receive:
            await _commit_waiting(db, first, receive, on_commit, max_rows)
            del first  # committed batches (MBs) are not held while the next one is awaited


async def _commit_waiting(
    db: Database,
    first: Batch,
    receive: trio.MemoryReceiveChannel[Batch],
    on_commit: Callable[[CommitResult, Batch], None],
    max_rows: int,
) -> None:
    """Commit `first` with the batches already waiting behind it, up to `max_rows` events."""
    parts = [first]
    rows = len(first.events)
    while rows < max_rows:
        try:
            more = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        parts.append(more)
        rows += len(more.events)
    started = trio.current_time()
    result = await db.commit_many([(part, _stream_of(part)) for part in parts])
    result = attrs.evolve(result, seconds=trio.current_time() - started)
    on_commit(result, parts[0] if len(parts) == 1 else _union(parts))


def _stream_of(batch: Batch) -> str | None:
    return batch.checkpoints[0].stream if batch.checkpoints else None


def _union(parts: list[Batch]) -> Batch:
    return attrs.evolve(
        parts[0],
        events=[e for p in parts for e in p.events],
        rejected=[r for p in parts for r in p.rejected],
        checkpoints=[c for p in parts for c in p.checkpoints],
        raw_events=[r for p in parts for r in p.raw_events],
    )
