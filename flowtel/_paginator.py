"""The Paginator: walks one stream (a listing, or a since/until shard of the feed) page by page.

It sends each page into a bounded channel with the checkpoint the stream will have once the
page is committed. It never edits a cursor; when one expires it resumes from the stream's
watermark with the feed's `until` (the bound is inclusive, so ties at the edge come again and
deduplicate on id), and walks the listing again from the top only when there is no feed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from itertools import repeat
from typing import Any

import attrs
import trio

from flowtel._api import Answer, Api
from flowtel._errors import (
    ApiError,
    CursorExpired,
    CursorInvalid,
    FeedUnavailable,
    NoProgress,
    RateLimited,
    StreamTokenExpired,
    TransientError,
)
from flowtel._mend import Mender
from flowtel._model import Checkpoint, Page
from flowtel._pacer import FeedPacer
from flowtel._ratelimit import RateLimiter
from flowtel._retry import Backoff
from flowtel._secret import Secret
from flowtel._shards import Shards
from flowtel._stats import RunStats
from flowtel._timestamps import event_instant, to_ms
from flowtel._tokens import TokenKeeper

log = logging.getLogger("flowtel.paginator")

EVENTS_PATH = "/api/v1/events"


@attrs.define
class Fetcher:
    """What every Paginator shares: the API, the buckets, the feed's tokens, the counters."""

    api: Api
    events_limiter: RateLimiter
    feed_limiter: FeedPacer
    tokens: TokenKeeper | None
    backoff: Backoff
    stats: RunStats
    page_size: int = 5000
    damaged_page_retries: int = 8
    wall_clock: Callable[[], float] = time.time
    mender: Mender | None = None  # damaged feed pages mended, not fetched again

    async def fetch(self, source: str, params: dict[str, Any], cursor_deadline: float) -> Answer:
        """One page, retried through faults while its cursor lives. Raises CursorExpired."""
        faults = 0
        damaged = 0
        while True:
            if trio.current_time() >= cursor_deadline:
                raise CursorExpired(400, "CURSOR_EXPIRED", "the cursor's lifetime ran out here")
            try:
                answer = await self._send(source, params)
            except RateLimited:
                # The bucket now holds every task back until Retry-After has passed.
                continue
            except TransientError as exc:
                faults += 1
                if faults > self.backoff.max_retries:
                    raise
                self.stats.retries += 1
                log.info("%s; retry %d", exc, faults)
                await trio.sleep(self.backoff.delay(faults))
                continue
            if _looks_damaged(answer) and damaged < self.damaged_page_retries:
                mended = await self._mend(source, answer)
                if mended is not None:
                    return mended
                # Faults are per answer: the same cursor may well come back whole.
                damaged += 1
                self.stats.damaged_pages += 1
                del answer  # not held while the page is fetched again
                continue
            return answer

    async def _mend(self, source: str, answer: Answer) -> Answer | None:
        """A damaged feed page, mended as far as it can be (None: not at all). Only the feed
        can go on from where a page ends early: its ranges start at any instant."""
        data = answer.body.get("data")
        if source != "feed" or self.mender is None or not self.mender.enabled:
            return None
        if not isinstance(data, list):
            return None
        kept = await self.mender.mend(data)
        if not kept:
            return None
        self.stats.mended_pages += 1
        body = {**answer.body, "data": kept}
        return attrs.evolve(answer, body=body, cut=len(kept) < len(data))

    async def _send(self, source: str, params: dict[str, Any]) -> Answer:
        if source == "events":
            return await self._send_on(self.events_limiter, params, None)
        if self.tokens is None:
            raise FeedUnavailable("the feed is not in use in this run")
        return await self._send_on(self.feed_limiter, params, self.tokens)

    async def _send_on(
        self, limiter: RateLimiter | FeedPacer, params: dict[str, Any], tokens: TokenKeeper | None
    ) -> Answer:
        ticket = await limiter.acquire()
        path, headers, access = EVENTS_PATH, {}, None
        secrets: tuple[Secret, ...] = ()
        if tokens is not None:
            # The token once the ticket is held: waiting for a window can outlast its margin.
            try:
                access = await tokens.get()
            except BaseException:
                limiter.failed(ticket)
                raise
            path, headers = access.endpoint, {access.header: access.token.reveal()}
            secrets = (access.token,)
            if isinstance(limiter, FeedPacer):
                ticket = limiter.departed(ticket)
        self.stats.requests += 1
        endpoint = limiter.name
        try:
            answer = await self.api.request(
                "GET", path, params=params, headers=headers, secrets=secrets
            )
        except RateLimited as exc:
            self.stats.throttled += 1
            self.stats.answered(endpoint, 429)
            limiter.throttled_by_server(ticket, exc.retry_after)
            raise
        except ApiError as exc:
            self.stats.answered(endpoint, exc.status)
            limiter.answered(ticket, {})
            if isinstance(exc, StreamTokenExpired) and tokens is not None and access is not None:
                tokens.refused(access)
                raise TransientError("the stream token was refused; getting a new one") from None
            raise exc from None
        except TransientError as exc:
            self.stats.answered(endpoint, exc.status)
            limiter.failed(ticket)
            raise
        except BaseException:  # cancelled (a split emptied the stream, the run stops): no answer
            limiter.failed(ticket)
            raise
        self.stats.answered(endpoint, 200)
        data = answer.body.get("data")
        limiter.answered(ticket, answer.headers, len(data) if isinstance(data, list) else 0)
        return answer


async def paginate(
    checkpoint: Checkpoint,
    fetcher: Fetcher,
    send_pages: trio.MemorySendChannel[Page],
    *,
    shards: Shards | None = None,
    max_resumes_without_progress: int = 3,
    cursor_margin: float = 10.0,
) -> None:
    """Walk one stream to its end, sending every page with its checkpoint into `send_pages`.

    With `shards`, the stream's lower bound is live: a split can raise it, and the stream is
    done once its watermark is below it (everything at or above the bound has come).
    """
    async with send_pages:
        cp = checkpoint
        now_wall = fetcher.wall_clock()
        deadline = trio.current_time() + _seconds_left(cp.cursor_expires_at, now_wall)
        if cp.cursor is not None and deadline - trio.current_time() < cursor_margin:
            log.info("%s: the saved cursor has expired; resuming from the watermark", cp.stream)
            cp = attrs.evolve(cp, cursor=None, cursor_expires_at=None)
        chain: dict[str, Any] | None = None  # the range the current cursor chain began with
        sent_at_watermark: set[str] = set()  # after a page that ended early: ids at its edge
        stuck_at: dt.datetime | None = None
        stuck = 0
        while not cp.done:
            if shards is not None and shards.emptied(cp.stream):
                cp = attrs.evolve(cp, cursor=None, cursor_expires_at=None, done=True)
                await send_pages.send(Page(cp.stream, [], cp))
                return
            params = request_params(cp, fetcher.page_size, chain)
            if cp.cursor is None:
                chain = {k: v for k, v in params.items() if k in ("since", "until")}
            if cp.cursor is None and cp.source == "events" and cp.watermark is not None:
                fetcher.stats.rescans += 1
                log.warning(
                    "%s: no cursor and no feed to resume from; walking the listing again from "
                    "the top (events already stored are skipped on id)",
                    cp.stream,
                )
            try:
                with shards.fetching(cp.stream) if shards else trio.CancelScope() as fetching:
                    answer = await fetcher.fetch(
                        cp.source, params, deadline if cp.cursor else float("inf")
                    )
                if fetching.cancelled_caught:
                    continue  # emptied by a split meanwhile
            except (CursorExpired, CursorInvalid) as exc:
                fetcher.stats.resumes += 1
                if stuck and cp.watermark == stuck_at:
                    stuck += 1
                    if stuck > max_resumes_without_progress:
                        raise NoProgress(
                            f"{cp.stream}: resumed {stuck - 1} times from the same watermark "
                            f"({cp.watermark}) without getting further; stopping"
                        ) from None
                else:
                    stuck_at, stuck = cp.watermark, 1
                where = f"watermark {cp.watermark.isoformat()}" if cp.watermark else "its start"
                log.warning("%s: cursor refused (%s); resuming from %s", cp.stream, exc.code, where)
                cp = attrs.evolve(cp, cursor=None, cursor_expires_at=None)
                if cp.source == "events" and fetcher.tokens is not None and cp.watermark:
                    # The feed can take up where the listing's cursor left off.
                    cp = attrs.evolve(cp, source="feed")
                continue
            except ApiError as exc:
                if exc.status == 418 and cp.source == "feed":
                    # The feed answers 418 for a range outside the data: nothing to fetch here.
                    log.info("%s: the feed has no data in this range (418)", cp.stream)
                    cp = attrs.evolve(cp, cursor=None, cursor_expires_at=None, done=True)
                    if shards is not None:
                        # At once, not when the run hears it has finished: until then, a
                        # split could still carve a new shard off this empty range.
                        shards.finished(cp.stream)
                    await send_pages.send(Page(cp.stream, [], cp))
                    return
                raise
            page, deadline = _page_from(answer, cp, fetcher.wall_clock())
            ended_early = answer.cut
            del answer
            if sent_at_watermark:
                # The range from the watermark brings the ties at it again; those already sent
                # would only fail the Writer's direct COPY of their batch.
                page = _without_ids(page, sent_at_watermark)
                sent_at_watermark = set()
            if ended_early:
                sent_at_watermark = _ids_at_watermark(page)
            page = within_bound(page, shards.lower_bound(cp.stream) if shards else None)
            if shards is not None:
                brought = page.checkpoint.events - cp.events
                share = min(brought / fetcher.page_size, 1.0) if ended_early else 1.0
                shards.progressed(page.checkpoint, share)
            cp = page.checkpoint
            await send_pages.send(page)
            # A stream spends most of its time waiting for its next answer; a page (MBs of
            # objects) held through that wait by every stream was most of a live run's heap.
            del page


async def fetch_first_page(checkpoint: Checkpoint, fetcher: Fetcher) -> Page:
    """A fresh stream's first page, fetched before its Paginator starts (the run's plan needs
    what it holds); `paginate` goes on from the page's checkpoint."""
    params = request_params(checkpoint, fetcher.page_size)
    answer = await fetcher.fetch(checkpoint.source, params, float("inf"))
    page, _ = _page_from(answer, checkpoint, fetcher.wall_clock())
    return page


def _ids_at_watermark(page: Page) -> set[str]:
    """The ids of the page's events at its watermark instant (its last ones: newest first)."""
    watermark = page.checkpoint.watermark
    ids: set[str] = set()
    for raw in reversed(page.raw_events):
        instant = event_instant(raw)
        if instant is not None and instant != watermark:
            break
        if instant is not None and isinstance(raw.get("id"), str):
            ids.add(raw["id"])
    return ids


def _without_ids(page: Page, ids: set[str]) -> Page:
    kept = [raw for raw in page.raw_events if not (isinstance(raw, dict) and raw.get("id") in ids)]
    return attrs.evolve(page, raw_events=kept)


def within_bound(page: Page, lower: int | None) -> Page:
    """The page within the stream's live lower bound, and its checkpoint; done once there.

    Events at or below the bound are left out: the shard below fetches every one of them (its
    range ends at the bound, inclusive), so here they would only be duplicates. Each would
    fail the Writer's direct COPY of its whole batch and send the batch again through staging.
    """
    cp = page.checkpoint
    bound = cp.since_ms if lower is None else max(lower, cp.since_ms or lower)
    if bound is None:
        return page
    raw_events = page.raw_events
    reached = cp.watermark is not None and to_ms(cp.watermark) <= bound
    if reached:  # only the page that reaches the bound has instants to compare (newest first)
        raw_events = [
            raw
            for raw in raw_events
            if (instant := event_instant(raw)) is None or to_ms(instant) > bound
        ]
    if not cp.done:
        cp = attrs.evolve(cp, since_ms=bound)
        if reached:
            # Everything above the bound has come: the rest is another's.
            cp = attrs.evolve(cp, cursor=None, cursor_expires_at=None, done=True)
    return attrs.evolve(page, raw_events=raw_events, checkpoint=cp)


def request_params(
    cp: Checkpoint, page_size: int, chain: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The query for the stream's next page.

    With a cursor: the cursor, and the range its chain began with (`chain`, if this process
    knows it): a split may have raised the stream's bound since, but a cursor's query is never
    edited. Without one: a range ending at the watermark (inclusive: ties come again).
    """
    params: dict[str, Any] = {"limit": page_size}
    if cp.cursor is not None:
        return {**params, **(chain or {}), "cursor": cp.cursor}
    if cp.source == "feed":
        until = cp.until_ms
        if cp.watermark is not None:
            watermark_ms = to_ms(cp.watermark)
            until = watermark_ms if until is None else min(until, watermark_ms)
        if cp.since_ms is not None:
            params["since"] = cp.since_ms
        if until is not None:
            params["until"] = until
    return params


def _page_from(answer: Answer, cp: Checkpoint, now_wall: float) -> tuple[Page, float]:
    data = answer.body.get("data")
    pagination = answer.body.get("pagination")
    if not isinstance(data, list) or not isinstance(pagination, dict):
        raise TransientError("a 200 without data and pagination")
    cursor = pagination.get("nextCursor")
    has_more = bool(pagination.get("hasMore")) and isinstance(cursor, str) and bool(cursor)
    if answer.cut:  # the rest comes by a range from the watermark
        cursor, has_more = None, True
    lifetime = pagination.get("cursorExpiresIn")
    lifetime = float(lifetime) if isinstance(lifetime, int | float) else 60.0
    # The cursor was issued after the request left: counting from then is never late.
    deadline = trio.current_time() - answer.elapsed + lifetime
    expires_at = dt.datetime.fromtimestamp(now_wall - answer.elapsed + lifetime, dt.UTC)
    oldest = oldest_instant(data)
    watermark = cp.watermark if oldest is None else min(oldest, cp.watermark or oldest)
    next_cp = attrs.evolve(
        cp,
        cursor=cursor if has_more else None,
        cursor_expires_at=expires_at if has_more and cursor else None,
        watermark=watermark,
        done=not has_more,
        events=cp.events + len(data),
        pages=cp.pages + 1,
    )
    page = Page(cp.stream, data, next_cp)
    return page, deadline


def oldest_instant(raw_events: list[Any]) -> dt.datetime | None:
    """The instant of the last event that has a usable one.

    Listings are newest first, so that is the page's oldest, or (if a repeated or damaged event
    sits at the end) a newer one: resuming from a newer instant only fetches more overlap.
    """
    instants = (event_instant(raw) for raw in reversed(raw_events))
    return next((instant for instant in instants if instant is not None), None)


def _looks_damaged(answer: Answer) -> bool:
    if answer.headers.get("x-chaos-applied"):
        return True
    data = answer.body.get("data")
    if not isinstance(data, list):
        return False
    try:  # in C: dict.get refuses an element that is not an object
        return None in map(dict.get, data, repeat("id")) or None in map(
            dict.get, data, repeat("timestamp")
        )
    except TypeError:
        return True


def _seconds_left(expires_at: dt.datetime | None, now_wall: float) -> float:
    return -1.0 if expires_at is None else expires_at.timestamp() - now_wall
