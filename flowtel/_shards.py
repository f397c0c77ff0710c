"""Time shards of the data: planned from the data's time range, rebalanced as streams finish.

Every shard's bounds are inclusive and neighbours share their edge instant, so ties at an
edge are all fetched by the shard below; the one above stops once its watermark reaches the
edge and leaves out what it got of them (`within_bound`): no event falls between two shards,
and none is written twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import trio

from flowtel._errors import ApiError
from flowtel._model import Checkpoint
from flowtel._pacer import FeedPacer
from flowtel._ratelimit import RateLimiter
from flowtel._timestamps import event_instant, to_ms

log = logging.getLogger("flowtel.shards")

LISTING = "events"  # the events listing's stream: it always starts at the newest event
DAY_MS = 86_400_000


@attrs.frozen
class TimeRange:
    oldest_ms: int  # at or before the oldest event, unless `estimated`
    newest_ms: int
    density: float | None = None  # events per ms, where a sample of the data measured it
    # True: `oldest_ms` was not asked of the API but worked out from its total and `density`;
    # where the data is uneven, some of it may lie below.
    estimated: bool = False


# The count of a feed's faults at three points, with their weights: an expectation over a
# normal distribution in three evaluations (Gauss-Hermite).
FAULT_POINTS = ((1 / 6, -math.sqrt(3)), (2 / 3, 0.0), (1 / 6, math.sqrt(3)))

# What a planned stream holds less than whole pages, where the data's density is known: its
# last page then comes nearly full, where a part of a page costs a request like a whole one.
PAGE_MARGIN = 0.1


def plan(
    time_range: TimeRange,
    *,
    feed_shards: int,
    listing: bool,
    listing_share: float = 0.3,
    events_per_ms: float | None = None,
    page_size: int = 5000,
) -> list[Checkpoint]:
    """The streams of a fresh run.

    With the listing, it takes the newest `listing_share` of the range (it can only walk down
    from the top); the feed's shards split the rest evenly. The oldest shard is open below and
    the newest feed shard open above when there is no listing, so an estimate that is off
    loses nothing. With the data's density, every stream but the oldest shard is sized to
    whole pages less PAGE_MARGIN (rounded down: the oldest takes the rest), and only the
    oldest stream's last page comes partial; where the density proves uneven, no worse than
    even shares.
    """
    oldest, newest = time_range.oldest_ms, time_range.newest_ms

    def whole_pages(span: float) -> float:
        if not events_per_ms:
            return span
        pages = math.floor(span * events_per_ms / page_size)
        return (pages - PAGE_MARGIN) * page_size / events_per_ms if pages >= 1 else span

    streams: list[Checkpoint] = []
    top = newest
    if listing:
        if feed_shards == 0:
            return [Checkpoint(stream=LISTING, source="events")]
        top = newest - int(whole_pages((newest - oldest) * listing_share))
        streams.append(Checkpoint(stream=LISTING, source="events", since_ms=top))
    each = whole_pages((top - oldest) / feed_shards)
    edges = [oldest] + [int(top - each * (feed_shards - i)) for i in range(1, feed_shards + 1)]
    for i in range(feed_shards):
        since = None if i == 0 else edges[i]
        until = None if (i == feed_shards - 1 and not listing) else edges[i + 1]
        streams.append(
            Checkpoint(stream=shard_name(i + 1), source="feed", since_ms=since, until_ms=until)
        )
    return streams


def shard_name(number: int) -> str:
    """The stream name of the feed's shard `number`: `plan` numbers them oldest first."""
    return f"feed-{number:03d}"


@attrs.define
class Shards:
    """The live bounds of a run's streams, shared by their Paginators.

    A Paginator asks `lower_bound(stream)` after each page: a split may have raised it, and
    once the stream's watermark is below it the stream is done. When a stream finishes, the
    run asks `split_largest()` for a new shard carved from the stream that would finish last.

    With `listing_budget` (the listing's bucket) the listing's time left is counted in its
    windows, not from its average speed: its pages come in bursts, and one page too many can
    cost a whole window at the end of a run. With `feed_budget` (the FeedPacer) the feed's is
    too, for all its streams at once: the listing hands its older part to the feed only as
    far as the feed's windows have room for it.
    """

    floor_ms: int  # estimate of the oldest instant, for sizing open-ended shards
    ceiling_ms: int  # the newest instant, for sizing the listing's shard
    min_split_ms: int = 60_000
    clock: Callable[[], float] = trio.current_time
    listing_budget: RateLimiter | None = None
    feed_budget: FeedPacer | None = None
    events_per_ms: float = 0.0  # the data's density on average (0: unknown)
    page_size: int = 5000
    total: int | None = None  # the events the API holds (/internal/stats), if it said
    floor_estimated: bool = False  # `floor_ms` not probed: some data may lie below it
    streams: dict[str, Checkpoint] = attrs.Factory(dict)  # latest known state, active only
    # Per stream: when this run started it, the top of its range and its events then.
    _origin: dict[str, tuple[float, int, int]] = attrs.Factory(dict)
    _next: int = 0
    _feed_speed: float | None = None
    _feed_pages: float = 0.0  # pages the feed's streams have had in this run (see progressed)
    _fetched: int = 0  # events the streams have fetched, in this run and the ones it resumes
    _feed_requests_before: int = 0  # the feed's requests before the streams (range probes)
    _waiting: dict[str, trio.CancelScope] = attrs.Factory(dict)  # streams in a fetch
    # Per new shard: the (events, ms) its parent had walked, for its density until it has its own.
    _inherited: dict[str, tuple[int, int]] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        if self.feed_budget is not None:
            self._feed_requests_before = self.feed_budget.requests - self.feed_budget.throttled

    def add(self, cp: Checkpoint) -> None:
        self.streams[cp.stream] = cp
        self._origin[cp.stream] = (self.clock(), self._top(cp), cp.events)
        self._fetched += cp.events
        if cp.stream.startswith("feed-"):
            with contextlib.suppress(ValueError):
                self._next = max(self._next, int(cp.stream[5:]))

    def lower_bound(self, stream: str) -> int | None:
        cp = self.streams.get(stream)
        return cp.since_ms if cp is not None else None

    def progressed(self, cp: Checkpoint, page_share: float = 1.0) -> None:
        """A stream's page has come. `page_share` is less than 1 for a page that ended early
        (a damaged page mended, _mend.py): the feed's cost of a page, from which the requests
        its streams have left are told, counts it as the share of a page it brought."""
        if cp.source == "feed":
            self._feed_pages += page_share
        if (before := self.streams.get(cp.stream)) is not None:
            self._fetched += cp.events - before.events
        if cp.done:
            self.streams.pop(cp.stream, None)
        elif cp.stream in self.streams:
            # Keep the live lower bound: a split may have raised it since the page left.
            since = self.streams[cp.stream].since_ms
            self.streams[cp.stream] = attrs.evolve(cp, since_ms=_max_bound(cp.since_ms, since))

    def finished(self, stream: str) -> None:
        self.streams.pop(stream, None)

    def emptied(self, stream: str) -> bool:
        """Nothing is left of this stream's range: its bound has reached its watermark (a
        split gave the rest to a new shard, which also takes the ties at the shared instant).
        It is done without another page. Known instants only: never the estimated ceiling."""
        cp = self.streams.get(stream)
        if cp is None or cp.since_ms is None:
            return False
        if cp.until_ms is not None and cp.since_ms > cp.until_ms:
            return True
        return cp.watermark is not None and cp.since_ms >= to_ms(cp.watermark)

    @contextlib.contextmanager
    def fetching(self, stream: str) -> Iterator[trio.CancelScope]:
        """A scope around a stream's fetch, cancelled if a split empties the stream: a
        listing waiting for its next window stops at once instead of spending a request."""
        with trio.CancelScope() as scope:
            self._waiting[stream] = scope
            try:
                yield scope
            finally:
                self._waiting.pop(stream, None)

    def remaining_ms(self, cp: Checkpoint) -> int:
        return max(self._top(cp) - self._bottom(cp), 0)

    def _bottom(self, cp: Checkpoint) -> int:
        return cp.since_ms if cp.since_ms is not None else self._oldest()

    def _oldest(self) -> int:
        """Where the oldest stream, open below, should end: where the API's total leaves no
        events below it, and not below `floor_ms` unless that is only an estimate. Sized from
        `floor_ms` alone (the range probe's bound, below the data by the probe's margin), the
        oldest stream looked 5 pages longer than it was in a 300k run, and a split gave a
        new shard a range with no data (418), a request for nothing."""
        open_below = [cp for cp in self.streams.values() if cp.since_ms is None]
        if self.total is None or len(open_below) != 1:
            return self.floor_ms
        density, _ = self._density(open_below[0])
        if density <= 0:
            return self.floor_ms
        elsewhere = self.page_size * sum(
            self.pages_left(cp) or 0.0 for cp in self.streams.values() if cp.since_ms is not None
        )
        left = max(self.total - self._fetched - elsewhere, 0.0)
        top = self._top(open_below[0])
        bottom = int(top - left / density)
        return min(top, bottom if self.floor_estimated else max(self.floor_ms, bottom))

    def speed(self, cp: Checkpoint) -> float | None:
        """Milliseconds of the range this stream walks per second, so far (None: unknown)."""
        started, top, _ = self._origin.get(cp.stream, (self.clock(), self._top(cp), 0))
        covered, seconds = top - self._top(cp), self.clock() - started
        return covered / seconds if covered > 0 and seconds > 0 else None

    def pages_left(self, cp: Checkpoint) -> float | None:
        """The pages this stream still has to fetch, from the density it has met so far
        (None: nothing to go by)."""
        density, _ = self._density(cp)
        return self.remaining_ms(cp) * density / self.page_size if density > 0 else None

    def _density(self, cp: Checkpoint) -> tuple[float, int]:
        """Events per ms ahead of this stream, and how many events that was measured on: what
        the stream and the one it was split from have walked, else the run's average (taken
        as known to a page's worth)."""
        fetched, covered = self._walked(cp)
        if covered > 0 and fetched > 0:
            return fetched / covered, fetched
        return self.events_per_ms, self.page_size

    def _walked(self, cp: Checkpoint) -> tuple[int, int]:
        """(events, ms) this stream has walked in this run, with what its parent had when
        it was split off. A new shard sized by the run's average density instead would be
        sized wrong by as much as the estimate of the data's oldest instant is: a shard of
        one page's worth then held 1.01 pages, and cost a request for 44 events."""
        _, top, events = self._origin.get(cp.stream, (0.0, self._top(cp), cp.events))
        inherited_events, inherited_ms = self._inherited.get(cp.stream, (0, 0))
        return cp.events - events + inherited_events, top - self._top(cp) + inherited_ms

    def _kept_range(self, cp: Checkpoint, span: int, pages: float, kept: int) -> int:
        """The part of the stream's `span` (ms, `pages` pages' worth) that its next `kept`
        pages cover, so that a split leaves it whole pages: a partial last page costs a
        request like a full one. Less a margin of two standard deviations of the count: a
        range expected to hold n events holds about n +- sqrt(n), and the density it is
        sized by was measured on a sample of its own. One event too many would cost a
        request; a few fetched twice cost nothing."""
        if kept >= pages:
            return span
        _, sample = self._density(cp)
        expected = kept * self.page_size
        deviation = math.sqrt(expected + expected**2 / sample)
        keep = max(expected - 2 * deviation, expected / 2)
        return int(span * keep / (pages * self.page_size))

    def feed_pages_left(self) -> int:
        """The pages the feed's streams have left, as far as the data's density tells."""
        return sum(
            math.ceil(self.pages_left(cp) or 0.0)
            for cp in self.streams.values()
            if cp.stream != LISTING
        )

    def spread(self) -> tuple[Checkpoint, Checkpoint] | None:
        """In the feed's last window (its window has room for everything its streams have
        left), a split of the feed stream with most pages left, if it has more than its share
        of the requests that go at once: the streams' pages then go side by side to the end,
        not one stream's last several one after another. In a virtual live 3M run a stream
        that had 7 of the last window's 36 pages, at 5 to 9 s a page, ended the run 7 s after
        the others. None: nothing to spread."""
        budget = self.feed_budget
        if budget is None or not self._feed_has_room():
            return None
        left = {
            name: self.pages_left(cp) or 0.0 for name, cp in self.streams.items() if name != LISTING
        }
        if not left:
            return None
        busiest = max(left, key=left.__getitem__)
        at_once = max(1, math.floor(budget.concurrency))
        share = math.ceil(sum(math.ceil(pages) for pages in left.values()) / at_once)
        if math.ceil(left[busiest]) <= share:
            return None
        return self.split_largest(busiest)

    def split_largest(self, stream: str | None = None) -> tuple[Checkpoint, Checkpoint] | None:
        """Plan carving the older part off the stream that would finish last (or `stream`):
        (new shard, shrunk stream). Nothing changes until `apply_split`.

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
            if cp.stream == LISTING and (budgeted := self._listing_seconds(cp)) is not None:
                return budgeted
            if cp.stream != LISTING and (paged := self._stream_seconds(cp)) is not None:
                return paged
            speed = speeds[cp.stream] or feed_speed
            return self.remaining_ms(cp) / speed if speed else float(self.remaining_ms(cp))

        slowest = self.streams[stream] if stream else max(self.streams.values(), key=time_left)
        span = self.remaining_ms(slowest)
        cut: int | None = None
        if slowest.stream == LISTING and feed_speed:
            cut = self._listing_cut(slowest, feed_speed)
            if cut == 0:
                return None  # the listing should keep all it has
        if cut is None:
            pages = self.pages_left(slowest)
            min_split = self.min_split_ms
            if pages and self._feed_has_room():
                # The stream keeps whole pages and the new shard takes what is over, which
                # the stream's last page would have held: side by side, at no more requests.
                if pages <= 1 + PAGE_MARGIN:
                    return None
                min_split = 1
            elif span < 2 * min_split:
                return None
            old_speed, new_speed = speeds[slowest.stream], feed_speed
            share = new_speed / (new_speed + old_speed) if old_speed and new_speed else 0.5
            if self._stream_seconds(slowest) is not None:
                share = 0.5  # two feed streams: the same pace a page, so half the pages each
            cut = min(max(int(span * share), min_split), span - min_split)
            if pages:
                # The shrunk stream keeps whole pages, so its last one comes full. Rounded
                # after the minimum, not before: a minimum of 2.1 pages' worth would leave it
                # a last page with a tenth of a page in its range.
                kept = max(1, round((span - cut) / span * pages))
                cut = span - self._kept_range(slowest, span, pages, kept)
        mid = self._bottom(slowest) + cut
        self._next += 1
        new = Checkpoint(
            stream=shard_name(self._next), source="feed", since_ms=slowest.since_ms, until_ms=mid
        )
        return new, attrs.evolve(slowest, since_ms=mid)

    def _stream_seconds(self, cp: Checkpoint) -> float | None:
        """Seconds a feed stream needs for its pages left, once a page's latency is known:
        one page after another, and no faster than its turn in the feed's budget (the pacer
        serves the streams first come, first served). Not its average speed so far, which
        counts the windows it waited for: at the end of a run that made a stream with three
        pages left look slower than the listing, which had seven and no window left."""
        budget = self.feed_budget
        pages = self.pages_left(cp)
        if budget is None or pages is None or budget.page_latency is None:
            return None
        per_page = budget.page_latency
        if budget.mode == "window" and budget.limit and budget.window:
            streams = sum(1 for name in self.streams if name != LISTING)
            per_page = max(per_page, streams * budget.window / budget.limit)
        return pages * per_page

    def _listing_seconds(self, cp: Checkpoint, pages: float | None = None) -> float | None:
        """Seconds the listing needs for its pages left (or `pages`), in its bucket's windows.
        None until its budget has held it back: a listing without limits keeps its speed."""
        if self.listing_budget is None or not self.listing_budget.held_back:
            return None
        if pages is None:
            pages = self.pages_left(cp)
        if pages is None:
            return None
        return self.listing_budget.seconds_for(math.ceil(pages))

    def _listing_cut(self, cp: Checkpoint, feed_speed: float) -> int | None:
        """How much of the listing's range (ms from its bottom) a new feed shard should take
        so that both finish soonest: the listing keeps whole pages, as many as its windows
        allow by the time the new shard is done with the rest. None: no estimate."""
        pages = self.pages_left(cp)
        if pages is None or self._listing_seconds(cp, pages) is None:
            return None
        pacer = self.feed_budget
        if (
            pacer is not None
            and pacer.mode == "learning"
            and self.feed_pages_left() > 0
            and self.listing_budget is not None
            and self.listing_budget.holds_in_next_window(math.ceil(pages))
        ):
            # The feed has shown no limit yet, but may meet one any moment (the live one does
            # after 40 requests): pages handed to it would then wait for its next window and
            # walk there in rounds of its capacity, 5 s each, where the listing does its next
            # window's in a second. Asked again every RESPLIT_EVERY, with more known.
            return 0
        span = self.remaining_ms(cp)
        cuts = []
        for kept in range(math.ceil(pages) + 1):
            keep = self._kept_range(cp, span, pages, kept)
            moved = pages * (span - keep) / span
            listing = self._listing_seconds(cp, kept) or 0.0
            # The finish to expect over the count of the feed's faults, which is about
            # normal (three points, Gauss-Hermite). A listing page kept past its window costs
            # a window for certain; handed to the feed, only where its faults run high.
            finish = 0.0
            for weight, deviations in FAULT_POINTS:
                feed = self._feed_seconds(moved, deviations)
                if feed is None:  # a new shard alone, at the speed feed shards have had
                    feed = (span - keep) / feed_speed
                finish += weight * max(listing, feed)
            cuts.append((finish, -kept, span - keep))  # soonest; then the listing keeps most
        return min(cuts)[2]

    def _feed_seconds(self, more_pages: float, deviations: float = 1.0) -> float | None:
        """Seconds the feed needs, in its learned windows, for what its streams have left and
        `more_pages` besides. None: its budget is not known yet."""
        requests = self._feed_requests(more_pages, deviations)
        if requests is None or self.feed_budget is None:
            return None
        return self.feed_budget.seconds_for(requests)

    def _feed_requests(self, more_pages: float, deviations: float = 1.0) -> int | None:
        """Requests the feed needs for what its streams have left and `more_pages` besides.
        Each page costs the requests a page has cost so far (faults, damaged pages, partial
        last pages), and the feed may meet more faults than that average, or fewer: with
        `deviations` standard deviations more (fewer, below 0) than the average, no fewer
        than one request a page. None: nothing to go by yet."""
        budget = self.feed_budget
        if budget is None or self._feed_pages == 0:
            return None
        pages = math.ceil(more_pages) + self.feed_pages_left()
        requests = budget.requests - budget.throttled - self._feed_requests_before
        per_page = max(1.0, requests / self._feed_pages)
        extra = pages * (per_page - 1)
        return max(pages, math.ceil(pages + extra + deviations * math.sqrt(extra)))

    def _feed_has_room(self) -> bool:
        """Whether the feed's window has room for all its streams have left and a request
        to spare. Then a split need not leave `min_split_ms` on either side: at the end of a
        run the last streams walk their pages side by side, not one stream its last few one
        after another, and a partial page that a split may add costs no window."""
        budget = self.feed_budget
        if budget is None:
            return False
        left, needed = budget.left_in_window(), self._feed_requests(0)
        return left is not None and needed is not None and left >= needed + 1

    def apply_split(self, new: Checkpoint, shrunk: Checkpoint) -> bool:
        """Raise the shrunk stream's bound and add the new shard. Only once the new shard's
        checkpoint is on its way to the database ahead of the shrunk stream's next page:
        otherwise a crash could save the shrunk stream as done without the new shard.

        False, and nothing changes, if the stream finished meanwhile: it walked the new
        shard's range itself. Added anyway, an empty shard (418) split off while its first
        request was out became the parent of the next one, without end: 150,000 of them in
        a CI run whose total was stated four times too large."""
        if shrunk.stream not in self.streams:
            return False
        parent = self.streams[shrunk.stream]
        self._inherited[new.stream] = self._walked(parent)
        self.streams[shrunk.stream] = attrs.evolve(parent, since_ms=shrunk.since_ms)
        self.add(new)
        if self.emptied(shrunk.stream) and shrunk.stream in self._waiting:
            self._waiting[shrunk.stream].cancel()
        log.info(
            "split %s: %s takes the older part, up to %s",
            shrunk.stream,
            new.stream,
            _iso(shrunk.since_ms or 0),
        )
        return True

    def _top(self, cp: Checkpoint) -> int:
        top = cp.until_ms if cp.until_ms is not None else self.ceiling_ms
        return min(top, to_ms(cp.watermark)) if cp.watermark is not None else top


# The first probe's size: the density of this many newest events says where the oldest is.
DENSITY_SAMPLE = 1000


async def discover_range(
    fetcher: Any,
    stats_range: TimeRange | None,
    total: int | None = None,
    newest_events: tuple[list[int], bool] | None = None,
) -> TimeRange | None:
    """The data's time range: from /internal/stats when it says, else from the feed.

    Every probe is a request of the feed's budget. The first asks for the newest
    DENSITY_SAMPLE events, unless `newest_events` gives them: the instants of a first page
    the run keeps (the listing's, or the newest feed shard's), and whether the API has more.
    An answer that holds every event is the range itself. With the API's `total`, their
    density says how far back the oldest should be: that is the range, `estimated`, and no
    probe is sent. A probe below it would cost a request in every run to confirm it, and an
    estimate that is off loses nothing: the oldest shard is open below, and the splits size
    it from the total. Without a total the search goes back further and further until an
    answer is empty: the last empty one is below the oldest.
    """
    if stats_range is not None:
        return stats_range
    spent = fetcher.feed_limiter.requests  # the feed's budget before the probes
    if newest_events is None:
        newest_events = await _newest_instants(fetcher, None, DENSITY_SAMPLE)
    top, more = newest_events
    if not top:
        return None
    newest, sampled_oldest = max(top), min(top)
    if not more:  # that was every event
        return TimeRange(oldest_ms=sampled_oldest, newest_ms=newest)
    density = (len(top) - 1) / (newest - sampled_oldest) if newest > sampled_oldest else None
    if total and total > len(top) > 1 and density:
        oldest = newest - int((total - 1) / density)
        log.info(
            "the data's time range: %s to %s (estimated from the API's total and the "
            "density of the newest %d events; %d of the feed's requests)",
            _iso(oldest),
            _iso(newest),
            len(top),
            fetcher.feed_limiter.requests - spent,
        )
        return TimeRange(oldest, newest, density=density, estimated=True)
    steps = [DAY_MS * 2**k for k in range(16)]
    found = sampled_oldest  # the oldest instant known to hold data
    for step in steps:
        probe = newest - step
        if probe >= found:
            continue  # already known to hold data
        older, _ = await _newest_instants(fetcher, probe, 1)
        if not older:
            log.info(
                "the data's time range: %s to %s (found with %d of the feed's requests)",
                _iso(probe),
                _iso(newest),
                fetcher.feed_limiter.requests - spent,
            )
            return TimeRange(oldest_ms=probe, newest_ms=newest, density=density)
        found = older[0]
    return TimeRange(oldest_ms=found - steps[-1], newest_ms=newest, density=density)


async def _newest_instants(fetcher: Any, until: int | None, limit: int) -> tuple[list[int], bool]:
    """The instants of the newest `limit` events at or before `until` (usable ones only),
    and whether the feed has more."""
    params: dict[str, Any] = {"limit": limit}
    if until is not None:
        params["until"] = until
    try:
        answer = await fetcher.fetch("feed", params, float("inf"))
    except ApiError as exc:
        if exc.status == 418:  # outside the data's range
            return [], False
        raise
    data = answer.body.get("data")
    pagination = answer.body.get("pagination")
    more = not isinstance(pagination, dict) or pagination.get("hasMore") is not False
    return instants_of(data if isinstance(data, list) else []), more


def instants_of(raw_events: list[Any]) -> list[int]:
    """The instants (epoch ms) of the events that have a usable one."""
    return [to_ms(instant) for instant in map(event_instant, raw_events) if instant is not None]


def _max_bound(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
