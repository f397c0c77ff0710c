"""Time shards of the data: planned from the data's time range, rebalanced as streams finish.

Every shard's bounds are inclusive and neighbours share their edge instant, so ties at an
edge are fetched by both and deduplicate on id: no event falls between two shards.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import attrs
import trio

from flowtel._errors import ApiError
from flowtel._model import Checkpoint
from flowtel._timestamps import BadTimestamp, parse_instant, to_ms

log = logging.getLogger("flowtel.shards")

LISTING = "events"  # the events listing's stream: it always starts at the newest event
DAY_MS = 86_400_000


@attrs.frozen
class TimeRange:
    oldest_ms: int  # at or before the oldest event (an estimate may be earlier, never later)
    newest_ms: int


def plan(
    time_range: TimeRange,
    *,
    feed_shards: int,
    listing: bool,
    listing_share: float = 0.3,
) -> list[Checkpoint]:
    """The streams of a fresh run.

    With the listing, it takes the newest `listing_share` of the range (it can only walk down
    from the top); the feed's shards split the rest evenly. The oldest shard is open below and
    the newest feed shard open above when there is no listing, so an estimate that is off
    loses nothing.
    """
    oldest, newest = time_range.oldest_ms, time_range.newest_ms
    streams: list[Checkpoint] = []
    top = newest
    if listing:
        if feed_shards == 0:
            return [Checkpoint(stream=LISTING, source="events")]
        top = newest - int((newest - oldest) * listing_share)
        streams.append(Checkpoint(stream=LISTING, source="events", since_ms=top))
    edges = [oldest + (top - oldest) * i // feed_shards for i in range(feed_shards + 1)]
    for i in range(feed_shards):
        since = None if i == 0 else edges[i]
        until = None if (i == feed_shards - 1 and not listing) else edges[i + 1]
        streams.append(
            Checkpoint(stream=f"feed-{i + 1:03d}", source="feed", since_ms=since, until_ms=until)
        )
    return streams


@attrs.define
class Shards:
    """The live bounds of a run's streams, shared by their Paginators.

    A Paginator asks `lower_bound(stream)` after each page: a split may have raised it, and
    once the stream's watermark is below it the stream is done. When a stream finishes, the
    run asks `split_largest()` for a new shard carved from the stream that would finish last.
    """

    floor_ms: int  # estimate of the oldest instant, for sizing open-ended shards
    ceiling_ms: int  # the newest instant, for sizing the listing's shard
    min_split_ms: int = 60_000
    clock: Callable[[], float] = trio.current_time
    streams: dict[str, Checkpoint] = attrs.Factory(dict)  # latest known state, active only
    # Per stream: when this run started it, and the top of its range then (for its speed).
    _origin: dict[str, tuple[float, int]] = attrs.Factory(dict)
    _next: int = 0
    _feed_speed: float | None = None

    def add(self, cp: Checkpoint) -> None:
        self.streams[cp.stream] = cp
        self._origin[cp.stream] = (self.clock(), self._top(cp))
        if cp.stream.startswith("feed-"):
            with contextlib.suppress(ValueError):
                self._next = max(self._next, int(cp.stream[5:]))

    def lower_bound(self, stream: str) -> int | None:
        cp = self.streams.get(stream)
        return cp.since_ms if cp is not None else None

    def progressed(self, cp: Checkpoint) -> None:
        if cp.done:
            self.streams.pop(cp.stream, None)
        elif cp.stream in self.streams:
            # Keep the live lower bound: a split may have raised it since the page left.
            since = self.streams[cp.stream].since_ms
            self.streams[cp.stream] = attrs.evolve(cp, since_ms=_max_bound(cp.since_ms, since))

    def finished(self, stream: str) -> None:
        self.streams.pop(stream, None)

    def remaining_ms(self, cp: Checkpoint) -> int:
        bottom = cp.since_ms if cp.since_ms is not None else self.floor_ms
        return max(self._top(cp) - bottom, 0)

    def speed(self, cp: Checkpoint) -> float | None:
        """Milliseconds of the range this stream walks per second, so far (None: unknown)."""
        started, top = self._origin.get(cp.stream, (self.clock(), self._top(cp)))
        covered, seconds = top - self._top(cp), self.clock() - started
        return covered / seconds if covered > 0 and seconds > 0 else None

    def split_largest(self) -> tuple[Checkpoint, Checkpoint] | None:
        """Plan carving the older part off the stream that would finish last: (new shard,
        shrunk stream). Nothing changes until `apply_split`.

        The cut is placed so that both halves should finish together at their speeds (a
        listing walks faster than one feed shard); without speeds, in the middle.
        """
        if not self.streams:
            return None
        speeds = {name: self.speed(cp) for name, cp in self.streams.items()}
        known = [v for name, v in speeds.items() if v and name != LISTING]
        if known:  # remembered: at the end of a run the streams with a speed may be gone
            self._feed_speed = sum(known) / len(known)
        feed_speed = self._feed_speed

        def time_left(cp: Checkpoint) -> float:
            speed = speeds[cp.stream] or feed_speed
            return self.remaining_ms(cp) / speed if speed else float(self.remaining_ms(cp))

        slowest = max(self.streams.values(), key=time_left)
        span = self.remaining_ms(slowest)
        if span < 2 * self.min_split_ms:
            return None
        old_speed, new_speed = speeds[slowest.stream], feed_speed
        share = new_speed / (new_speed + old_speed) if old_speed and new_speed else 0.5
        cut = min(max(int(span * share), self.min_split_ms), span - self.min_split_ms)
        bottom = slowest.since_ms if slowest.since_ms is not None else self.floor_ms
        mid = bottom + cut
        self._next += 1
        new = Checkpoint(
            stream=f"feed-{self._next:03d}", source="feed", since_ms=slowest.since_ms, until_ms=mid
        )
        return new, attrs.evolve(slowest, since_ms=mid)

    def apply_split(self, new: Checkpoint, shrunk: Checkpoint) -> None:
        """Raise the shrunk stream's bound and add the new shard. Only once the new shard's
        checkpoint is on its way to the database ahead of the shrunk stream's next page:
        otherwise a crash could save the shrunk stream as done without the new shard."""
        if shrunk.stream in self.streams:
            self.streams[shrunk.stream] = attrs.evolve(
                self.streams[shrunk.stream], since_ms=shrunk.since_ms
            )
        self.add(new)
        log.info(
            "split %s: %s takes the older part, up to %s",
            shrunk.stream,
            new.stream,
            _iso(shrunk.since_ms or 0),
        )

    def _top(self, cp: Checkpoint) -> int:
        top = cp.until_ms if cp.until_ms is not None else self.ceiling_ms
        return min(top, to_ms(cp.watermark)) if cp.watermark is not None else top


async def discover_range(fetcher: Any, stats_range: TimeRange | None) -> TimeRange | None:
    """The data's time range: from /internal/stats when it says, else from the feed.

    The feed is asked for its newest event, then for the newest at or before instants
    further and further back until none is left: the last empty answer is below the oldest.
    """
    if stats_range is not None:
        return stats_range
    newest = await _newest_at_or_before(fetcher, None)
    if newest is None:
        return None
    found, step = newest, DAY_MS
    for _ in range(16):
        probe = newest - step
        older = await _newest_at_or_before(fetcher, probe)
        if older is None:
            return TimeRange(oldest_ms=probe, newest_ms=newest)
        found, step = older, step * 2
    return TimeRange(oldest_ms=found - step, newest_ms=newest)


async def _newest_at_or_before(fetcher: Any, until: int | None) -> int | None:
    params: dict[str, Any] = {"limit": 1}
    if until is not None:
        params["until"] = until
    try:
        answer = await fetcher.fetch("feed", params, float("inf"))
    except ApiError as exc:
        if exc.status == 418:  # outside the data's range
            return None
        raise
    data = answer.body.get("data")
    if not isinstance(data, list) or not data:
        return None
    first = data[0]
    if not isinstance(first, dict):
        return None
    try:
        return to_ms(parse_instant(first.get("timestamp")))
    except BadTimestamp:
        return None


def _max_bound(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
