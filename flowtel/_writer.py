"""The Writer stage: batches from a channel into PostgreSQL, one transaction at a time per lane.

With `lanes` > 1, several connections commit at once, so that PostgreSQL works on one batch
while the client encodes the next (a single connection left the client idle, everything
queued behind the commit in progress, 2 to 3 s of a fast 3M run). The order that matters is
kept:
- every batch of one stream goes through one lane, in order, so a stream's checkpoint never
  gets ahead of its own uncommitted events;
- a batch without events (a new shard's checkpoint, carved off a stream by a split) commits
  before any batch after it is handed on, so that at every moment the saved streams cover
  everything not yet committed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import attrs
import trio

from flowtel._database import CommitResult, Database
from flowtel._model import Batch

# Batches already waiting in the channel are merged up to this many events per transaction:
# fewer, larger COPYs when the Writer falls behind, no added latency when it keeps up.
MAX_ROWS_PER_COMMIT = 20_000

OnCommit = Callable[[CommitResult, Batch], None]


async def write_batches(
    db: Database,
    receive: trio.MemoryReceiveChannel[Batch],
    on_commit: OnCommit,
    *,
    max_rows: int = MAX_ROWS_PER_COMMIT,
    lanes: int = 1,
) -> None:
    """Commit every batch received until the channel closes, then close our end.

    `lanes` is the number of connections committing at once (FLOWTEL_WRITERS).

    `on_commit(result, batch)` is called after each transaction with what it stored; when
    several waiting batches were merged into one transaction, `batch` is their union (events,
    rejects and checkpoints in arrival order). A batch's checkpoints are of one stream (the
    Normalizer makes one batch per page).
    """
    if lanes <= 1:
        await _write_lane(db, receive, on_commit, max_rows)
        return
    async with receive, trio.open_nursery() as nursery:
        # Batches handed to the lanes and not committed yet: three a lane, one committing
        # and two to merge into its next transaction, as a single Writer has (the channel's
        # two and the sender's). With two a lane, every transaction held a single page, and
        # the CPU of three times as many transactions ate the gain.
        router = _Router(trio.Semaphore(3 * lanes))
        for _ in range(lanes):
            send, lane_receive = trio.open_memory_channel[Batch](math.inf)  # bounded above
            lane = _Lane(send, router.handed)
            router.lanes.append(lane)
            nursery.start_soon(_write_lane, db, lane_receive, on_commit, max_rows, lane)
        await router.route(receive)


@attrs.define(eq=False)
class _Lane:
    """One connection's queue, and what has been handed to it and is not committed yet."""

    send: trio.MemorySendChannel[Batch]
    handed: trio.Semaphore  # the router's, released as each batch commits
    batches: int = 0
    rows: int = 0
    streams: Counter[str] = attrs.field(factory=Counter)
    barrier: Batch | None = None  # a batch the router waits for, and its signal
    barrier_committed: trio.Event = attrs.field(factory=trio.Event)

    def hand(self, batch: Batch) -> None:
        self.batches += 1
        self.rows += len(batch.events)
        stream = _stream_of(batch)
        if stream is not None:
            self.streams[stream] += 1
        if not batch.events:
            self.barrier, self.barrier_committed = batch, trio.Event()
        self.send.send_nowait(batch)

    def committed(self, parts: list[Batch]) -> None:
        for part in parts:
            self.handed.release()
            self.batches -= 1
            self.rows -= len(part.events)
            stream = _stream_of(part)
            if stream is not None:
                self.streams[stream] -= 1
                if not self.streams[stream]:
                    del self.streams[stream]
            if part is self.barrier:
                self.barrier = None
                self.barrier_committed.set()


@attrs.define(eq=False)
class _Router:
    handed: trio.Semaphore
    lanes: list[_Lane] = attrs.field(factory=list)

    async def route(self, receive: trio.MemoryReceiveChannel[Batch]) -> None:
        try:
            while True:
                await self.handed.acquire()  # before receiving: no batch held while waiting
                try:
                    batch = await receive.receive()
                except trio.EndOfChannel:
                    return
                lane = self._lane_for(_stream_of(batch))
                lane.hand(batch)
                del batch  # not held while the next one is awaited
                if lane.barrier is not None:
                    await lane.barrier_committed.wait()
        finally:
            for lane in self.lanes:
                lane.send.close()

    def _lane_for(self, stream: str | None) -> _Lane:
        """The lane that has the stream's batches still in flight; else the least loaded."""
        if stream is not None:
            for lane in self.lanes:
                if stream in lane.streams:
                    return lane
        return min(self.lanes, key=lambda lane: (lane.rows, lane.batches))


async def _write_lane(
    db: Database,
    receive: trio.MemoryReceiveChannel[Batch],
    on_commit: OnCommit,
    max_rows: int,
    lane: _Lane | None = None,
) -> None:
    async with receive:
        async for first in receive:
            parts = await _commit_waiting(db, first, receive, on_commit, max_rows)
            if lane is not None:
                lane.committed(parts)
            del first, parts  # committed batches (MBs) are not held while the next is awaited


async def _commit_waiting(
    db: Database,
    first: Batch,
    receive: trio.MemoryReceiveChannel[Batch],
    on_commit: OnCommit,
    max_rows: int,
) -> list[Batch]:
    """Commit `first` with the batches already waiting behind it, up to `max_rows` events;
    returns the batches committed."""
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
    return parts


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
