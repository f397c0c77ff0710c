"""`ingest`: the one function that owns the nursery in which the stages run.

    Paginator(s) --pages--> Normalizer --batches--> Writer --> PostgreSQL

Each stage is a plain task that receives only the channel ends it uses; closing a send end is
how a stage says it is done.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import attrs
import httpx
import trio

from flowtel._api import Api
from flowtel._database import Database, open_database
from flowtel._errors import ApiError, ConfigError, FeedUnavailable, TransientError, WriteError
from flowtel._mend import Mender
from flowtel._model import Batch, Checkpoint, Event, Page, Rejected
from flowtel._normalize import normalize
from flowtel._pacer import FeedPacer
from flowtel._paginator import Fetcher, fetch_first_page, paginate, within_bound
from flowtel._ratelimit import RateLimiter
from flowtel._retry import Backoff
from flowtel._settings import Settings
from flowtel._shards import (
    LISTING,
    Shards,
    TimeRange,
    discover_range,
    instants_of,
    plan,
    shard_name,
)
from flowtel._stats import RunStats, Summary
from flowtel._timestamps import BadTimestamp, parse_instant, to_ms
from flowtel._tokens import TokenKeeper
from flowtel._writer import write_batches

log = logging.getLogger("flowtel")

STATS_PATH = "/internal/stats"
NORMALIZE_SLICE = 500  # events normalized between two checkpoints (1 to 2 ms)
RESPLIT_EVERY = 2.0  # seconds between asking again for a split that was declined
GC_YOUNG_THRESHOLD = 1_000_000  # allocations between young-generation passes (Python: 700)


@attrs.frozen
class BucketView:
    """A rate bucket as a progress display shows it."""

    name: str
    limit: int | None  # requests per window, as announced or learned (None: not known yet)
    window: float | None  # seconds
    remaining: int | None  # requests left in the current window
    next_slot_in: float  # seconds until a request may go (0: now)
    throttled: int  # 429s received
    in_flight: int  # requests under way
    concurrency: float | None = None  # how many may be under way at once (None: unbounded)
    waited: float = 0.0  # seconds requests spent waiting for a slot, summed


@attrs.define
class Run:
    """A running ingestion, for progress displays and metrics: counters, buckets, streams."""

    stats: RunStats
    fetcher: Fetcher | None = None
    checkpoints: dict[str, Checkpoint] = attrs.Factory(dict)
    api_total: int | None = None
    initial_total: int = 0  # events in the database when the run started
    channels: dict[str, trio.MemorySendChannel[Any]] = attrs.Factory(dict)

    def buckets(self) -> list[BucketView]:
        if self.fetcher is None:
            return []
        listing, feed = self.fetcher.events_limiter, self.fetcher.feed_limiter
        views = [
            BucketView(
                name=listing.name,
                limit=listing.limit,
                window=listing.window,
                remaining=listing.remaining,
                next_slot_in=listing.seconds_to_next_slot(),
                throttled=listing.throttled,
                in_flight=listing.in_flight,
                waited=listing.waited,
            )
        ]
        if self.fetcher.tokens is not None:
            views.append(
                BucketView(
                    name=feed.name,
                    limit=feed.limit,
                    window=feed.window,
                    remaining=None,
                    next_slot_in=feed.seconds_to_next_slot(),
                    throttled=feed.throttled,
                    in_flight=feed.in_flight,
                    concurrency=feed.concurrency,
                    waited=feed.waited,
                )
            )
        return views

    def cursor_life_left(self, now_wall: float | None = None) -> float | None:
        """Seconds of life left in the oldest cursor a stream still relies on."""
        now_wall = time.time() if now_wall is None else now_wall
        left = [
            cp.cursor_expires_at.timestamp() - now_wall
            for cp in self.checkpoints.values()
            if not cp.done and cp.cursor is not None and cp.cursor_expires_at is not None
        ]
        return min(left) if left else None

    def channel_depth(self) -> dict[str, int]:
        """Pages or batches waiting in each channel between the stages."""
        return {
            name: channel.statistics().current_buffer_used
            for name, channel in self.channels.items()
        }

    def committed(self) -> int:
        """Events in the database now (as far as this run knows)."""
        return self.initial_total + self.stats.inserted


async def ingest(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    on_start: Callable[[Run], None] | None = None,
) -> Summary:
    """Pull every event of the API into the database; return what was done.

    Resumes from the checkpoints in the database. `transport` replaces the network (the
    simulator's in-process transport, in tests). `on_start` receives the live `Run`.
    """
    if settings.database_url is None:
        raise ValueError("ingest() needs settings.database_url (the CLI starts an embedded one)")
    run = Run(RunStats(started_at=trio.current_time()))
    with few_gc_passes():
        return await _ingest(settings, run, transport, on_start)


async def _ingest(
    settings: Settings,
    run: Run,
    transport: httpx.AsyncBaseTransport | None,
    on_start: Callable[[Run], None] | None,
) -> Summary:
    assert settings.database_url is not None
    async with (
        connect_database(
            settings.database_url,
            settings.db_reconnect_timeout,
            max_connections=max(3, settings.writers + 1),  # the Writer's, and one more at least
        ) as db,
        db.run_lock(),  # one run per database: a second one gets AlreadyRunning (exit 2)
        http_client(settings, transport) as http,
    ):
        api = Api(http, settings.api_key)
        backoff = Backoff(settings.backoff_base, settings.backoff_cap, settings.max_retries)
        info = await api_stats(api)
        run.api_total = info.total
        run.initial_total = await db.count_events()
        checkpoints = await db.load_checkpoints()
        tokens = await _feed_tokens(settings, api, backoff, checkpoints, run.stats)
        run.fetcher = new_fetcher(settings, api, backoff, tokens, run.stats)
        streams, shards, first = await plan_run(settings, run.fetcher, checkpoints, info)
        run.checkpoints = {cp.stream: cp for cp in streams}
        if on_start is not None:
            on_start(run)
        run_id = await db.record_run_start()
        todo = [cp for cp in streams if not cp.done]
        # Save the plan first, so that a crash before the first page still resumes it.
        await db.commit(Batch([], [], todo))
        await _run_stages(settings, db, run, todo, shards, first)
        summary = await _summarize(db, run)
        await db.record_run_end(run_id, summary.to_dict())
        return summary


def new_fetcher(
    settings: Settings, api: Api, backoff: Backoff, tokens: TokenKeeper | None, stats: RunStats
) -> Fetcher:
    """What a run's Paginators share, with fresh buckets (bench_policy.py builds it here too)."""
    return Fetcher(
        api=api,
        events_limiter=RateLimiter("events"),
        feed_limiter=FeedPacer(concurrency=float(settings.feed_concurrency)),
        tokens=tokens,
        backoff=backoff,
        stats=stats,
        page_size=settings.page_size,
        damaged_page_retries=settings.damaged_page_retries,
        mender=Mender(api, stats) if settings.mend_damaged_pages else None,
    )


async def _run_stages(
    settings: Settings,
    db: Database,
    run: Run,
    streams: list[Checkpoint],
    shards: Shards | None,
    first: list[Page],
) -> None:
    send_pages, receive_pages = trio.open_memory_channel[Page](settings.channel_pages)
    send_batches, receive_batches = trio.open_memory_channel[Batch](settings.channel_pages)
    run.channels = {"pages": send_pages, "batches": send_batches}

    def on_commit(result: Any, batch: Batch) -> None:
        run.stats.inserted += result.inserted
        run.stats.duplicates += result.duplicates
        run.stats.rejected += result.rejected
        run.stats.committed(trio.current_time(), result.inserted, result.seconds)
        for cp in batch.checkpoints:
            run.checkpoints[cp.stream] = cp

    async with trio.open_nursery() as nursery:
        nursery.start_soon(normalize_pages, receive_pages, send_batches, run.stats)
        nursery.start_soon(
            functools.partial(write_batches, lanes=settings.writers),
            db,
            receive_batches,
            on_commit,
        )
        async with send_pages:
            await _paginate_all(nursery, settings, run, streams, shards, send_pages, first)


async def _paginate_all(
    nursery: trio.Nursery,
    settings: Settings,
    run: Run,
    streams: list[Checkpoint],
    shards: Shards | None,
    send_pages: trio.MemorySendChannel[Page],
    first: list[Page],
) -> None:
    """Run a Paginator per stream; each time one finishes, carve a new shard off the stream
    with most left, so the tail of a run never idles on one slow shard. Pages in `first`
    were fetched while planning: they go first (taken out of the list, which the caller
    would otherwise keep alive all run), and their streams go on from them."""
    assert run.fetcher is not None
    fetcher = run.fetcher
    streams = after_pages(streams, first)
    while first:
        await send_pages.send(first.pop(0))
    finished_send, finished_receive = trio.open_memory_channel[str](math.inf)

    async def walk(cp: Checkpoint, send: trio.MemorySendChannel[Page]) -> None:
        await paginate(
            cp,
            fetcher,
            send,
            shards=shards,
            max_resumes_without_progress=settings.max_resumes_without_progress,
            cursor_margin=settings.cursor_margin,
        )
        finished_send.send_nowait(cp.stream)

    for cp in streams:
        nursery.start_soon(walk, cp, send_pages.clone())
    renewing = trio.CancelScope()
    if fetcher.tokens is not None:
        tokens = fetcher.tokens

        async def keep_token_fresh() -> None:
            with renewing:
                await tokens.keep_fresh()

        nursery.start_soon(keep_token_fresh)
    try:
        await _split_as_streams_finish(
            nursery, shards, walk, len(streams), finished_receive, send_pages
        )
    finally:
        renewing.cancel()  # the streams are done: no more tokens


async def _split_as_streams_finish(
    nursery: trio.Nursery,
    shards: Shards | None,
    walk: Callable[[Checkpoint, trio.MemorySendChannel[Page]], Awaitable[None]],
    active: int,
    finished_receive: trio.MemoryReceiveChannel[str],
    send_pages: trio.MemorySendChannel[Page],
) -> None:
    """Until every stream is done: each time one finishes, a new shard carved off the
    stream that would finish last, and in the feed's last window, its work spread."""
    unfilled = 0  # streams that finished without a split to take their place
    split_made = False
    while active:
        # A split declined may be worth it later (the listing keeps pages while the feed's
        # window has no room for them, and may be the last stream left): asked again. So is
        # one that spreads the feed's last window over more streams. After a split, at once:
        # the last window may need several, and one every RESPLIT_EVERY held its busiest
        # streams to a page after another for seconds each.
        wait = 0 if split_made else RESPLIT_EVERY if shards is not None else math.inf
        split_made = False
        with trio.move_on_after(wait):
            stream = await finished_receive.receive()
            active -= 1
            if shards is not None:
                shards.finished(stream)
                unfilled += 1
        if shards is None:
            continue
        split = shards.split_largest() if unfilled else None
        replacing = split is not None
        if split is None:
            split = shards.spread()
        if split is not None:
            new, shrunk = split
            # The new shard's checkpoint goes into the channel before the shrunk stream can
            # send a page with its raised bound (a page without events commits before any
            # page after it): at every moment the saved streams cover everything not yet
            # committed.
            await send_pages.send(Page(new.stream, [], new))
            if shards.apply_split(new, shrunk):
                nursery.start_soon(walk, new, send_pages.clone())
                active += 1
                split_made = True
                if replacing:
                    unfilled -= 1
            else:  # the stream finished during the send, its range walked: nothing to split
                log.info(
                    "%s finished before its split was saved: %s is not needed",
                    shrunk.stream,
                    new.stream,
                )
                await send_pages.send(Page(new.stream, [], attrs.evolve(new, done=True)))


async def normalize_pages(
    receive: trio.MemoryReceiveChannel[Page],
    send: trio.MemorySendChannel[Batch],
    stats: RunStats,
) -> None:
    """The Normalizer stage: pages in, batches out (the work itself is pure and synchronous)."""
    async with receive, send:
        async for page in receive:
            batch = await _batch_of(page)
            if page.raw_events:  # not a checkpoint-only page (a split, a range without data)
                stats.pages += 1
            stats.fetched += len(page.raw_events)
            del page  # neither it nor its batch is held while the next page is awaited
            await send.send(batch)
            del batch


async def _batch_of(page: Page) -> Batch:
    events: list[Event] = []
    rejected: list[Rejected] = []
    for start in range(0, len(page.raw_events), NORMALIZE_SLICE):
        more, more_rejected = normalize(page.raw_events[start : start + NORMALIZE_SLICE])
        events += more
        rejected += more_rejected
        # Let the other tasks in: the Writer's answers from PostgreSQL are handled between
        # slices, not after a whole page (25 ms), which kept every commit waiting and the
        # Writer the slowest stage.
        await trio.lowlevel.checkpoint()
    return Batch(events, rejected, [page.checkpoint], page.raw_events)


async def plan_run(
    settings: Settings, fetcher: Fetcher, checkpoints: list[Checkpoint], info: ApiStats
) -> tuple[list[Checkpoint], Shards | None, list[Page]]:
    """The streams of this run (the saved ones, or a fresh plan over the data's time range),
    the live shard bounds when the feed is in use, and the pages fetched to make the plan
    (to be written first: the streams' checkpoints are from before them)."""
    feed = fetcher.tokens is not None
    listing = settings.source != "feed"
    streams = checkpoints
    time_range = info.time_range
    first: list[Page] = []
    if not streams:
        newest = None
        if feed and time_range is None:
            # The newest events' density says where the oldest are. The listing's first page
            # holds them, on the listing's budget; without the listing, the first page of the
            # newest feed shard (open above) does. Either way its events are kept.
            sample = (
                Checkpoint(stream=LISTING, source="events")
                if listing
                else Checkpoint(stream=shard_name(settings.feed_shards), source="feed")
            )
            page = await fetch_first_page(sample, fetcher)
            first, newest = [page], (instants_of(page.raw_events), not page.checkpoint.done)
        if feed:
            time_range = await discover_range(fetcher, time_range, info.total, newest)
        if not feed or time_range is None:
            source = "feed" if feed else "events"
            streams = [Checkpoint(stream=LISTING if source == "events" else "feed", source=source)]
            first = []  # a listing page without a usable instant: the feed walks it all
        else:
            density = time_range.density
            span = time_range.newest_ms - time_range.oldest_ms
            if density is None and info.time_range is not None and info.total and span > 0:
                density = info.total / span  # the range /internal/stats gave is exact
            streams = plan(
                time_range,
                feed_shards=settings.feed_shards,
                listing=listing,
                listing_share=settings.listing_share,
                events_per_ms=density,
                page_size=settings.page_size,
            )
            bounds = {cp.stream: cp.since_ms for cp in streams}
            first = [within_bound(page, bounds[page.stream]) for page in first]
    active = [cp for cp in streams if not cp.done]
    if not feed or not active:
        return streams, None, first
    if time_range is None:
        time_range = _range_of(active)
    span = max(time_range.newest_ms - time_range.oldest_ms, 1)
    # Not worth splitting below two pages' worth of events.
    per_ms = (info.total or 0) / span
    min_split = int(2 * settings.page_size / per_ms) if per_ms > 0 else 3_600_000
    shards = Shards(
        time_range.oldest_ms,
        time_range.newest_ms,
        floor_estimated=time_range.estimated,
        min_split_ms=min_split,
        listing_budget=fetcher.events_limiter,
        feed_budget=fetcher.feed_limiter,
        events_per_ms=per_ms,
        page_size=settings.page_size,
        total=info.total,
    )
    for cp in after_pages(active, first):
        shards.add(cp)
    fetcher.feed_limiter.expected_requests = shards.feed_pages_left()
    return streams, shards, first


def after_pages(streams: list[Checkpoint], pages: Sequence[Page]) -> list[Checkpoint]:
    """The streams, each from the checkpoint of its page in `pages` if it has one."""
    after = {page.stream: page.checkpoint for page in pages}
    return [after.get(cp.stream, cp) for cp in streams]


def _range_of(streams: list[Checkpoint]) -> TimeRange:
    bounds = [b for cp in streams for b in (cp.since_ms, cp.until_ms) if b is not None]
    bounds += [to_ms(cp.watermark) for cp in streams if cp.watermark is not None]
    if not bounds:
        now = int(time.time() * 1000)
        return TimeRange(now - 30 * 86_400_000, now)
    return TimeRange(min(bounds), max(bounds))


async def _feed_tokens(
    settings: Settings,
    api: Api,
    backoff: Backoff,
    checkpoints: list[Checkpoint],
    stats: RunStats,
) -> TokenKeeper | None:
    """A TokenKeeper when this run may use the feed and a token can be had."""
    if settings.source == "events":
        return None
    keeper = TokenKeeper(api, backoff, stats=stats)
    try:
        await keeper.get()
    except FeedUnavailable as exc:
        if settings.source == "feed" or any(
            cp.source == "feed" and not cp.done for cp in checkpoints
        ):
            raise
        log.warning("the stream feed is not available (%s); using the events listing", exc)
        return None
    return keeper


@attrs.frozen
class ApiStats:
    """What /internal/stats says: the number of events, and their time range if it tells."""

    total: int | None = None
    time_range: TimeRange | None = None


async def api_total(api: Api) -> int | None:
    return (await api_stats(api)).total


async def api_stats(api: Api, attempts: int = 3) -> ApiStats:
    """The API's own count of events (from /internal/stats), and the data's time range.

    Also the first word with the API: a refused key or an unreachable URL is a wrong setting.
    """
    for attempt in range(1, attempts + 1):
        try:
            answer = await api.get(STATS_PATH)
        except ApiError as exc:
            if exc.status == 401:
                raise ConfigError("FLOWTEL_API_KEY was refused by the API (401)") from None
            log.info("could not read the API's totals: %s", exc)
            return ApiStats()
        except TransientError as exc:
            if attempt == attempts:
                raise ConfigError(f"cannot reach FLOWTEL_API_URL {api.base_url}: {exc}") from None
            await trio.sleep(attempt)
        else:
            return ApiStats(_find_total(answer.body), _find_range(answer.body))
    return ApiStats()


def _find_range(body: dict[str, Any]) -> TimeRange | None:
    found = body.get("timeRange")
    if not isinstance(found, dict):
        return None
    try:
        oldest, newest = (to_ms(parse_instant(found.get(k))) for k in ("oldest", "newest"))
    except BadTimestamp:
        return None
    return TimeRange(oldest, newest) if oldest <= newest else None


def _find_total(body: dict[str, Any]) -> int | None:
    for key in ("totalEvents", "events", "total"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, dict):
            found = _find_total(value)
            if found is not None:
                return found
    for value in body.values():
        if isinstance(value, dict):
            found = _find_total(value)
            if found is not None:
                return found
    return None


async def _summarize(db: Database, run: Run) -> Summary:
    stats = run.stats
    done = all(cp.done for cp in run.checkpoints.values())
    return Summary(
        outcome="complete" if done else "incomplete",
        inserted=stats.inserted,
        duplicates=stats.duplicates,
        rejected=stats.rejected,
        requests=stats.requests,
        throttled=stats.throttled,
        retries=stats.retries,
        pages=stats.pages,
        elapsed=trio.current_time() - stats.started_at,
        total_in_database=await db.count_events(),
        api_total=run.api_total,
        per_minute=list(stats.per_minute),
        damaged_pages=stats.damaged_pages,
        mended_pages=stats.mended_pages,
        peak_feed_in_flight=run.fetcher.feed_limiter.peak_in_flight if run.fetcher else 0,
    )


@asynccontextmanager
async def connect_database(
    dsn: str, reconnect_timeout: float = 60.0, max_connections: int = 3, *, look: bool = False
) -> AsyncIterator[Database]:
    """`open_database`, where a database that cannot be reached at the start is a wrong
    setting (exit 2 at the CLI); once open, losing it is a `WriteError` as usual.

    `look=True` (status, check) leaves the schema alone: a look at a database, perhaps the
    wrong one, must not create tables in it. `Database.has_schema` says if they are there."""
    opened: Database | None = None
    try:
        async with open_database(
            dsn,
            schema=not look,
            reconnect_timeout=reconnect_timeout,
            max_connections=max_connections,
        ) as db:
            opened = db
            yield db
    except WriteError as exc:
        if opened is not None and opened.reached:
            raise
        raise ConfigError(f"DATABASE_URL: {exc}") from None


@contextmanager
def few_gc_passes(young: int = GC_YOUNG_THRESHOLD) -> Iterator[None]:
    """Fewer passes of the cyclic garbage collector, restored afterwards.

    A run allocates millions of short-lived containers and keeps several pages of them alive,
    so with Python's threshold (a young pass every 700 allocations) the collector took 30 % of
    the CPU (py-spy, fast profile). Almost nothing a run allocates is cyclic garbage (the
    Api reads bodies so that httpx's Response cycle holds no page), so rarer passes cost
    little memory: 1,000,000 events, fast profile, 24.6 -> 17.5 s of CPU, peak RSS unchanged.
    At 100,000 the passes, mostly triggered inside orjson's decoding of a page, still took 6 %
    (py-spy --native); at 1,000,000, 3M events took 29.1 and 29.4 s of CPU against 30.5 and
    31.1, for 4 MB more RSS. What exists at the start is frozen out of the passes.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    if not settings.verify_tls:
        log.warning("TLS certificate verification is OFF (FLOWTEL_VERIFY_TLS=false)")
    return httpx.AsyncClient(
        base_url=settings.api_url,
        transport=transport,
        timeout=httpx.Timeout(settings.request_timeout, connect=10.0),
        verify=settings.verify_tls,
        headers={"User-Agent": "flowtel"},
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )


def ingest_sync(settings: Settings, **kwargs: Any) -> Summary:
    """`ingest` for scripts and notebooks. Inside a running asyncio loop (Jupyter), it runs
    Trio in a worker thread, since a thread can run one event loop at a time."""
    import asyncio
    import concurrent.futures

    def run() -> Summary:
        return trio.run(lambda: ingest(settings, **kwargs))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()
