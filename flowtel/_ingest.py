"""`ingest`: the one function that owns the nursery in which the stages run.

    Paginator(s) --pages--> Normalizer --batches--> Writer --> PostgreSQL

Each stage is a plain task that receives only the channel ends it uses; closing a send end is
how a stage says it is done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from flowtel._api import Api
from flowtel._database import Database, open_database
from flowtel._errors import ApiError, ConfigError, FeedUnavailable, TransientError, WriteError
from flowtel._model import Batch, Checkpoint, Page
from flowtel._normalize import normalize
from flowtel._paginator import Fetcher, paginate
from flowtel._ratelimit import RateLimiter
from flowtel._retry import Backoff
from flowtel._settings import Settings
from flowtel._stats import RunStats, Summary
from flowtel._tokens import TokenKeeper
from flowtel._writer import write_batches

log = logging.getLogger("flowtel")

STATS_PATH = "/internal/stats"
FEED_STREAM = "feed"
EVENTS_STREAM = "events"


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
        views = []
        for limiter in (self.fetcher.events_limiter, self.fetcher.feed_limiter):
            views.append(
                BucketView(
                    name=limiter.name,
                    limit=limiter.limit,
                    window=limiter.window,
                    remaining=limiter.remaining,
                    next_slot_in=limiter.seconds_to_next_slot(),
                    throttled=limiter.throttled,
                    in_flight=limiter.in_flight,
                    concurrency=None,
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
    async with (
        connect_database(settings.database_url, settings.db_reconnect_timeout) as db,
        db.run_lock(),  # one run per database: a second one gets AlreadyRunning (exit 2)
        http_client(settings, transport) as http,
    ):
        api = Api(http, settings.api_key)
        backoff = Backoff(settings.backoff_base, settings.backoff_cap, settings.max_retries)
        run.api_total = await api_total(api)
        run.initial_total = await db.count_events()
        checkpoints = await db.load_checkpoints()
        tokens = await _feed_tokens(settings, api, backoff, checkpoints)
        streams = plan_streams(checkpoints, feed=tokens is not None)
        run.checkpoints = {cp.stream: cp for cp in streams}
        run.fetcher = Fetcher(
            api=api,
            events_limiter=RateLimiter("events"),
            feed_limiter=RateLimiter("feed"),
            feed_slots=trio.CapacityLimiter(settings.feed_concurrency),
            tokens=tokens,
            backoff=backoff,
            stats=run.stats,
            page_size=settings.page_size,
            damaged_page_retries=settings.damaged_page_retries,
        )
        if on_start is not None:
            on_start(run)
        run_id = await db.record_run_start()
        todo = [cp for cp in streams if not cp.done]
        # Save the plan first, so that a crash before the first page still resumes it.
        await db.commit(Batch([], [], todo))
        await _run_stages(settings, db, run, todo)
        if tokens is not None:
            run.stats.tokens = tokens.issued
        summary = await _summarize(db, run)
        await db.record_run_end(run_id, summary.to_dict())
        return summary


async def _run_stages(
    settings: Settings, db: Database, run: Run, streams: list[Checkpoint]
) -> None:
    assert run.fetcher is not None
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
        async with send_pages:
            for cp in streams:
                nursery.start_soon(_paginate_stream, cp, run.fetcher, send_pages.clone(), settings)
        nursery.start_soon(normalize_pages, receive_pages, send_batches, run.stats)
        nursery.start_soon(write_batches, db, receive_batches, on_commit)


async def _paginate_stream(
    cp: Checkpoint, fetcher: Fetcher, send: trio.MemorySendChannel[Page], settings: Settings
) -> None:
    await paginate(
        cp,
        fetcher,
        send,
        max_resumes_without_progress=settings.max_resumes_without_progress,
        cursor_margin=settings.cursor_margin,
    )


async def normalize_pages(
    receive: trio.MemoryReceiveChannel[Page],
    send: trio.MemorySendChannel[Batch],
    stats: RunStats,
) -> None:
    """The Normalizer stage: pages in, batches out (the work itself is pure and synchronous)."""
    async with receive, send:
        async for page in receive:
            events, rejected = normalize(page.raw_events)
            stats.pages += 1
            stats.fetched += len(page.raw_events)
            await send.send(Batch(events, rejected, [page.checkpoint]))


def plan_streams(checkpoints: list[Checkpoint], *, feed: bool) -> list[Checkpoint]:
    """The streams of this run: the saved ones, or a fresh walk of the whole data."""
    if checkpoints:
        return checkpoints
    if feed:
        return [Checkpoint(stream=FEED_STREAM, source="feed")]
    return [Checkpoint(stream=EVENTS_STREAM, source="events")]


async def _feed_tokens(
    settings: Settings, api: Api, backoff: Backoff, checkpoints: list[Checkpoint]
) -> TokenKeeper | None:
    """A TokenKeeper when this run may use the feed and a token can be had."""
    if settings.source == "events":
        return None
    keeper = TokenKeeper(api, backoff)
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


async def api_total(api: Api, attempts: int = 3) -> int | None:
    """The API's own count of events (from /internal/stats), or None if it will not say.

    Also the first word with the API: a refused key or an unreachable URL is a wrong setting.
    """
    for attempt in range(1, attempts + 1):
        try:
            answer = await api.get(STATS_PATH)
        except ApiError as exc:
            if exc.status == 401:
                raise ConfigError("FLOWTEL_API_KEY was refused by the API (401)") from None
            log.info("could not read the API's totals: %s", exc)
            return None
        except TransientError as exc:
            if attempt == attempts:
                raise ConfigError(f"cannot reach FLOWTEL_API_URL {api.base_url}: {exc}") from None
            await trio.sleep(attempt)
        else:
            return _find_total(answer.body)
    return None


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
    )


@asynccontextmanager
async def connect_database(dsn: str, reconnect_timeout: float = 60.0) -> AsyncIterator[Database]:
    """`open_database`, where a database that cannot be reached at the start is a wrong
    setting (exit 2 at the CLI); once open, losing it is a `WriteError` as usual."""
    opened = False
    try:
        async with open_database(dsn, reconnect_timeout=reconnect_timeout) as db:
            opened = True
            yield db
    except WriteError as exc:
        if opened:
            raise
        raise ConfigError(f"DATABASE_URL: {exc}") from None


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
