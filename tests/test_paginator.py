"""The Paginator against the in-process simulator, in virtual time, without a database."""

from __future__ import annotations

import logging

import attrs
import httpx
import pytest
import trio

from flowtel._model import Checkpoint, Page
from flowtel._paginator import paginate
from flowtel.testing import Simulator, profile
from flowtel.testing._config import Endpoint, Faults, Latency, Window

try:
    from tests.helpers import Recorder, fetcher_for
except ImportError:
    from helpers import Recorder, fetcher_for  # type: ignore[no-redef]

QUIET = Endpoint(formats={"ms": 1.0, "iso_z": 2.0})


def quiet_sim(events: int, **changes: object) -> Simulator:
    """No faults, no latency: each rule is switched on by the test that needs it."""
    config = attrs.evolve(
        profile("fast"), events=events, seed=5, listing=QUIET, feed=QUIET, token=Endpoint()
    )
    return Simulator(attrs.evolve(config, **changes))


async def walk(
    sim: Simulator,
    checkpoint: Checkpoint,
    *,
    feed: bool = False,
    page_size: int = 100,
    consume_delay: float = 0.0,
    recorder: Recorder | None = None,
    mend: bool = False,
    **paginate_kwargs: object,
) -> tuple[list[Page], object]:
    pages: list[Page] = []
    async with fetcher_for(sim, recorder, feed=feed, page_size=page_size, mend=mend) as fetcher:
        send, receive = trio.open_memory_channel[Page](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: paginate(checkpoint, fetcher, send, **paginate_kwargs))
            async with receive:
                async for page in receive:
                    pages.append(page)
                    await trio.sleep(consume_delay)
        return pages, fetcher.stats


def ids_of(pages: list[Page]) -> list[str]:
    return [e["id"] for page in pages for e in page.raw_events if isinstance(e, dict) and "id" in e]


async def test_listing_is_walked_whole_and_paced_by_its_headers(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = quiet_sim(3_500, listing=attrs.evolve(QUIET, window=Window(10, 60.0)))
    recorder = Recorder(sim)
    pages, _ = await walk(sim, Checkpoint("events", "events"), recorder=recorder)
    assert ids_of(pages) == list(sim.dataset.ids())
    assert recorder.times("/api/v1/events") == [0.0] * 10 + [60.0] * 10 + [120.0] * 10 + [180.0] * 5
    assert [s for _, _, s, _ in recorder.log].count(429) == 0
    assert pages[-1].checkpoint.done and pages[-1].checkpoint.cursor is None
    assert pages[-1].checkpoint.events == 3_500


async def test_another_window_is_learned_not_assumed(autojump_clock: trio.abc.Clock) -> None:
    sim = quiet_sim(1_500, listing=attrs.evolve(QUIET, window=Window(7, 13.0)))
    recorder = Recorder(sim)
    pages, _ = await walk(sim, Checkpoint("events", "events"), recorder=recorder)
    assert len(ids_of(pages)) == 1_500
    assert recorder.times("/api/v1/events") == [0.0] * 7 + [13.0] * 7 + [26.0]


async def test_feed_range_is_inclusive_and_walked_whole(autojump_clock: trio.abc.Clock) -> None:
    """The feed sends both bounds; a shard keeps (since, until]: `since` is the edge it shares
    with the shard below, which keeps the events there."""
    sim = quiet_sim(2_000, tie_share=0.5)
    data = sim.dataset
    since, until = data.instant_ms(1_500), data.instant_ms(400)
    at_since = [i for i in range(len(data)) if data.instant_ms(i) == since]
    assert len(at_since) >= 2  # ties at the edge
    cp = Checkpoint("shard", "feed", since_ms=since, until_ms=until)
    pages, _ = await walk(sim, cp, feed=True)
    expected = [data.id(i) for i in range(len(data)) if since < data.instant_ms(i) <= until]
    assert ids_of(pages) == expected
    sent = [i for i in range(len(data)) if since <= data.instant_ms(i) <= until]
    assert pages[-1].checkpoint.events == len(sent) == len(expected) + len(at_since)


async def test_expired_cursor_resumes_from_the_watermark_through_the_feed(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    sim = quiet_sim(3_000, cursor_lifetime_s=(116, 116))
    caplog.set_level(logging.INFO, "flowtel")
    # A consumer slower than the cursor's lifetime on every 10th page.
    pages: list[Page] = []
    async with fetcher_for(sim, feed=True, page_size=100) as fetcher:
        send, receive = trio.open_memory_channel[Page](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: paginate(Checkpoint("feed", "feed"), fetcher, send))
            async with receive:
                async for page in receive:
                    pages.append(page)
                    if len(pages) % 10 == 0:
                        await trio.sleep(117)
        stats = fetcher.stats
    ids = ids_of(pages)
    assert set(ids) == set(sim.dataset.ids())
    assert stats.resumes >= 2 and stats.rescans == 0
    assert "resuming from watermark" in caplog.text
    # Overlap is only the tie at each watermark, never a re-scan from the top.
    assert len(ids) - len(set(ids)) <= 5 * stats.resumes


async def test_listing_without_feed_rescans_from_the_top_and_says_so(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    sim = quiet_sim(1_000, cursor_lifetime_s=(116, 116))
    watermark_page: list[Page] = []
    pages, _ = await walk(sim, Checkpoint("events", "events"), page_size=100)
    watermark_page.append(pages[4])
    # Resume from the checkpoint of page 5, whose cursor has long expired.
    resumed = attrs.evolve(pages[4].checkpoint, cursor_expires_at=None)
    caplog.set_level(logging.WARNING, "flowtel")
    again, stats = await walk(sim, resumed, page_size=100)
    assert stats.rescans == 1
    assert "walking the listing again from the top" in caplog.text
    assert set(ids_of(again)) == set(sim.dataset.ids())


async def test_progress_guard_stops_a_stream_that_cannot_advance(
    autojump_clock: trio.abc.Clock,
) -> None:
    from flowtel._errors import NoProgress

    sim = quiet_sim(1_000, cursor_lifetime_s=(5, 5))
    guard = pytest.RaisesExc(NoProgress, match="resumed 3 times .* without getting further")
    with pytest.RaisesGroup(guard, flatten_subgroups=True):
        # Every page waits 10 s in the channel: each cursor is dead when it is used.
        async with fetcher_for(sim, feed=False, page_size=100) as fetcher:
            send, receive = trio.open_memory_channel[Page](0)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: paginate(
                        Checkpoint("events", "events"),
                        fetcher,
                        send,
                        max_resumes_without_progress=3,
                    )
                )
                async with receive:
                    async for _page in receive:
                        await trio.sleep(10)


async def test_faults_are_retried_and_the_chain_stays_exact(autojump_clock: trio.abc.Clock) -> None:
    sim = Simulator(attrs.evolve(profile("chaos"), events=3_000))
    pages, stats = await walk(sim, Checkpoint("feed", "feed"), feed=True, page_size=200)
    assert set(ids_of(pages)) == set(sim.dataset.ids())
    assert stats.retries > 0


async def test_damaged_pages_are_fetched_again(autojump_clock: trio.abc.Clock) -> None:
    faults = Faults(missing_fields=0.5, missing_fields_share=0.05)
    sim = quiet_sim(2_000, feed=attrs.evolve(QUIET, faults=faults))
    pages, stats = await walk(sim, Checkpoint("feed", "feed"), feed=True, page_size=100)
    assert stats.damaged_pages > 0
    whole = sum(
        1
        for page in pages
        for e in page.raw_events
        if isinstance(e, dict) and e.get("id") and e.get("timestamp") is not None
    )
    # With 3 refetches at 50% damage, nearly every page ends whole.
    assert len(set(ids_of(pages))) >= 1_990 and whole >= 1_990


async def test_token_is_renewed_before_it_expires(autojump_clock: trio.abc.Clock) -> None:
    sim = quiet_sim(
        2_000,
        token_lifetime_s=30,
        feed=attrs.evolve(QUIET, latency=Latency(base_s=(2.0, 2.0))),
    )
    recorder = Recorder(sim)
    pages, _ = await walk(sim, Checkpoint("feed", "feed"), feed=True, recorder=recorder)
    assert len(set(ids_of(pages))) == 2_000
    tokens = recorder.times("/internal/dashboard/stream-access")
    assert len(tokens) >= 2  # 20 pages x 2 s = 40 s > one 30 s token
    assert [s for _, _, s, _ in recorder.log].count(403) == 0


class RefusedRenewal(Recorder):
    """The simulator, but the second token request gets a 429 with Retry-After: 10."""

    tokens = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream-access"):
            self.tokens += 1
            if self.tokens == 2:
                self.log.append((trio.current_time(), request.url.path, 429, {}))
                return httpx.Response(429, headers={"Retry-After": "10"}, json={"code": "X"})
        return await super().handle_async_request(request)


async def test_other_streams_go_on_while_one_renews_the_token(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Tokens live 60 s: renewed from 48 s, sent until 57 s. The renewal waits 10 s for a
    # 429: the other stream goes on with the old token meanwhile instead of waiting too.
    sim = quiet_sim(
        8_000, token_lifetime_s=60, feed=attrs.evolve(QUIET, latency=Latency((2.0, 2.0)))
    )
    recorder = RefusedRenewal(sim)
    middle = sim.dataset.instant_ms(4_000)
    halves = [
        Checkpoint("feed-001", "feed", until_ms=middle),
        Checkpoint("feed-002", "feed", since_ms=middle + 1),
    ]
    pages: list[Page] = []
    async with fetcher_for(sim, recorder, feed=True, page_size=100) as fetcher:
        send, receive = trio.open_memory_channel[Page](0)
        async with trio.open_nursery() as nursery:
            for cp in halves:
                nursery.start_soon(paginate, cp, fetcher, send.clone())
            send.close()
            async with receive:
                async for page in receive:
                    pages.append(page)
    assert len(set(ids_of(pages))) == 8_000
    refused = recorder.times("/internal/dashboard/stream-access", 429)
    assert len(refused) == 1 and 48 <= refused[0] < 57
    feed = [t for t, path, status, _ in recorder.log if path.endswith("/feed") and status == 200]
    during = [t for t in feed if refused[0] < t < refused[0] + 10]
    assert len(during) >= 2  # the other stream, a page every 2 s until the old token's end
    assert all(t < 57 for t in during)
    assert [s for _, _, s, _ in recorder.log].count(403) == 0


async def test_the_token_is_renewed_when_due_even_while_no_request_asks(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A feed that has spent its window asks for no token until the next window opens: the
    # token is renewed when due all the same (every 48 s of a 60 s life), so the next window
    # does not open on an expired one, and its renewal's faults.
    sim = quiet_sim(1_000, token_lifetime_s=60)
    recorder = Recorder(sim)
    async with fetcher_for(sim, recorder, feed=True) as fetcher:
        assert fetcher.tokens is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetcher.tokens.keep_fresh)
            await trio.sleep(100)
            fresh = await fetcher.tokens.get()
            nursery.cancel_scope.cancel()
    issued = recorder.times("/internal/dashboard/stream-access")
    assert issued == [0.0, 48.0, 96.0]
    assert fresh.renew_at == 96.0 + 48.0


async def test_token_faults_are_counted_as_retries_and_429s(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A run's retries and damaged pages add up to the faults that cost it a request, the token
    # endpoint's included (they went uncounted, so a run seemed to meet one fault fewer than
    # the simulator served); a token's spurious 429 is a 429.
    sim = quiet_sim(
        2_000,
        token_lifetime_s=30,
        token=Endpoint(faults=Faults(status_502=0.3, rate_limited=0.3)),
        feed=attrs.evolve(QUIET, latency=Latency(base_s=(2.0, 2.0))),
    )
    pages, stats = await walk(sim, Checkpoint("feed", "feed"), feed=True)
    assert len(set(ids_of(pages))) == 2_000
    faults = sim.stats.faults
    assert faults["token:status_502"] > 0 and faults["token:rate_limited"] > 0
    assert stats.retries == faults["token:status_502"]  # type: ignore[attr-defined]
    assert stats.throttled == faults["token:rate_limited"]  # type: ignore[attr-defined]
    assert stats.tokens == sim.stats.tokens_issued >= 2  # type: ignore[attr-defined]


async def test_a_token_is_taken_after_the_wait_for_the_feeds_window(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Each request waits up to a minute for the feed's window, longer than a 40 s token lives:
    # a token taken before that wait would reach the server expired (403, a request lost).
    sim = quiet_sim(1_000, token_lifetime_s=40, feed=attrs.evolve(QUIET, window=Window(2, 60.0)))
    recorder = Recorder(sim)
    pages, stats = await walk(sim, Checkpoint("feed", "feed"), feed=True, recorder=recorder)
    assert len(set(ids_of(pages))) == 1_000
    assert trio.current_time() >= 4 * 60  # 10 pages, 2 a window: the waits did happen
    assert len(recorder.times("/internal/dashboard/stream-access")) >= 5
    assert [s for _, _, s, _ in recorder.log].count(403) == 0
    assert stats.retries == 0


async def test_page_bodies_are_not_left_in_garbage_cycles() -> None:
    # httpx keeps each Response in a reference cycle; a body read with `aread()` would live
    # on it until the cyclic collector runs, which a run does rarely (few_gc_passes).
    import gc

    import httpx

    from flowtel.testing import SimulatorTransport

    sim = quiet_sim(3000)

    class Streamed(httpx.AsyncBaseTransport):
        """Bodies arrive as a stream, as from the network (not preloaded on the Response)."""

        inner = SimulatorTransport(sim)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            answer = await self.inner.handle_async_request(request)
            stream = httpx.ByteStream(await answer.aread())
            return httpx.Response(answer.status_code, headers=answer.headers, stream=stream)

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        async with fetcher_for(sim, Streamed()) as fetcher:
            for _ in range(3):
                answer = await fetcher.api.get("/api/v1/events", {"limit": 1000})
                assert len(answer.body["data"]) == 1000
        gc.collect()
        responses = [o for o in gc.garbage if isinstance(o, httpx.Response)]
        assert responses, "httpx no longer makes Response cycles: this test checks nothing"
        assert not [r for r in responses if "_content" in vars(r)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
