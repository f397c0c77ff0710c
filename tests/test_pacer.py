"""The FeedPacer learns a budget nobody announces, in virtual time."""

from __future__ import annotations

import itertools
import math
from collections import deque

import pytest
import trio

from flowtel._pacer import FeedPacer


class Throttle:
    """A server that answers 429 with Retry-After only (no budget headers), like the feed.

    `kind` "fixed": windows anchored at their first request; "sliding": at most `limit` in
    any `window` seconds. Requests take `latency` seconds when at most `capacity` run at
    once; beyond it they queue.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        kind: str = "fixed",
        latency: float = 4.0,
        capacity: int = 100,
    ) -> None:
        self.limit, self.window, self.kind = limit, window, kind
        self.latency = latency
        self.slots = trio.Semaphore(capacity)
        self.start: float | None = None
        self.used = 0
        self.recent: deque[float] = deque()
        self.ok = 0
        self.refused = 0
        self.sequence = 0
        self.starts: list[float] = []  # when each fixed window opened

    def admit(self) -> float | None:
        """None if admitted, else Retry-After."""
        now = trio.current_time()
        if self.kind == "fixed":
            if self.start is None or now >= self.start + self.window:
                self.start, self.used = now, 0
                self.starts.append(now)
            if self.used >= self.limit:
                return float(math.ceil(self.start + self.window - now))
            self.used += 1
            return None
        while self.recent and self.recent[0] <= now - self.window:
            self.recent.popleft()
        if len(self.recent) >= self.limit:
            return float(math.ceil(self.recent[0] + self.window - now))
        self.recent.append(now)
        return None

    async def request(self, pacer: FeedPacer, events: int = 5000) -> bool:
        ticket = await pacer.acquire()
        retry_after = self.admit()
        if retry_after is not None:
            self.refused += 1
            await trio.sleep(0.01)
            pacer.throttled_by_server(ticket, retry_after)
            return False
        async with self.slots:
            # Latencies vary (deterministically) by up to 20% either way, as pages do.
            self.sequence += 1
            jitter = 0.8 + 0.4 * (self.sequence * 0.618034 % 1.0)
            await trio.sleep(self.latency * jitter * events / 5000)
        self.ok += 1
        pacer.answered(ticket, {}, events=events)
        return True


async def drive(pacer: FeedPacer, server: Throttle, pages: int, workers: int = 8) -> float:
    """`workers` streams fetch until `pages` pages came back; returns when the last did."""
    done = 0
    finished = math.inf

    async def worker() -> None:
        nonlocal done, finished
        while done < pages:
            if await server.request(pacer):
                done += 1
                if done == pages:
                    finished = trio.current_time()
                    nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
    return finished


async def test_learns_a_fixed_window_from_one_429(autojump_clock: trio.abc.Clock) -> None:
    pacer, server = FeedPacer(), Throttle(40, 60.0)
    await drive(pacer, server, pages=400)
    assert pacer.mode == "window"
    assert pacer.limit is not None and 40 <= pacer.limit <= 41
    assert pacer.window is not None and 60.0 <= pacer.window <= 61.1
    # One 429 to learn, and about one per probe (every fifth window) after that.
    assert server.refused <= 1 + 10 // pacer.probe_every + 1
    assert server.refused / (server.ok + server.refused) <= 0.02


async def test_uses_the_whole_budget_of_each_window(autojump_clock: trio.abc.Clock) -> None:
    pacer, server = FeedPacer(), Throttle(40, 60.0)
    finished = await drive(pacer, server, pages=400)
    # 400 pages at 40 a window need 10 windows: the last opens at 9 x 60 s (plus the learned
    # window's rounding, 0.06 s a window) and its 40 requests take 5 rounds of about 4 s.
    assert finished <= 9 * 60.06 + 5 * 4.8


async def test_the_window_is_learned_closer_than_retry_afters_whole_seconds(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Retry-After is rounded up to whole seconds: the first 429 overstates these windows by
    # up to a second, and each of the 13 windows would open that much late.
    for length in (59.1, 59.5, 59.9, 60.3):
        pacer, server = FeedPacer(), Throttle(40, length)
        started = trio.current_time()
        took = await drive(pacer, server, pages=520) - started
        assert pacer.window is not None
        assert length < pacer.window <= length + pacer.phase_precision + pacer.guard
        # The 13th window opens at most the first Retry-After's rounding (1 s) and 12 times
        # the learned window's excess late; its 40 requests take 5 rounds of at most 4.8 s.
        excess = pacer.phase_precision + pacer.guard
        assert took <= 12 * (length + excess) + 1.0 + 5 * 4.8
        assert server.refused / (server.ok + server.refused) <= pacer.refusal_share


async def test_a_window_of_whole_seconds_opens_on_time(autojump_clock: trio.abc.Clock) -> None:
    """The first probe for the window's length goes on a whole second after its window's
    first request: refused, its whole-second Retry-After lands on the window's end (plus the
    pacer's margin and the 10 ms the 429 takes here), where the first 429 of the run, sent
    whenever the limit ran out, overstates it by up to a second. One more probe settles the
    length, and from then on every window opens within that margin and the guard of the
    last one's end (before: each window 0.16 s late here, 0.2 to 0.3 s in a live run)."""
    for length in (60.0, 30.0, 20.0):
        pacer, server = FeedPacer(), Throttle(40, length)
        await drive(pacer, server, pages=13 * 40)
        margin = pacer.second_margin + 0.01
        assert pacer.limit == 40
        assert pacer.window == pytest.approx(length + margin + pacer.guard)
        late = [b - a - length for a, b in itertools.pairwise(server.starts)]
        assert len(late) >= 12
        # (A probe for a raised limit may hold one back by the 10 ms its 429 takes, too.)
        assert all(x <= margin + pacer.guard + 0.01 + 1e-6 for x in late[-6:])
        assert server.refused / (server.ok + server.refused) <= pacer.refusal_share


async def test_with_the_runs_size_known_the_length_is_settled_in_the_second_window(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The 429s may be 2 % of what the run will send: a run that expects 520 requests may
    probe in its second window, where 2 % of the 81 requests sent so far would not allow a
    second 429 until the fourth. The third window then opens on time."""
    margin = FeedPacer().second_margin + 0.01  # the 429 takes 10 ms here
    for expected, third_on_time in ((520, True), (0, False)):
        pacer, server = FeedPacer(expected_requests=expected), Throttle(40, 60.0)
        await drive(pacer, server, pages=13 * 40)
        on_time = server.starts[2] - server.starts[1] == pytest.approx(60.0 + margin)
        assert on_time is third_on_time
        assert server.refused / (server.ok + server.refused) <= pacer.refusal_share


async def test_a_window_opens_when_its_first_request_leaves(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A request that waits after its ticket (for a stream token being renewed, 2 s here)
    reaches the server later, which starts its window then: the pacer's window starts then
    too, so the next one does not open 2 s early, into 429s at its first requests."""
    pacer = await _pacer_after(sent=0, latency=0.0)
    first = await pacer.acquire()  # opens a window at t = 0
    await trio.sleep(2.0)
    first = pacer.departed(first)
    assert first.sent_at == 2.0
    for _ in range(39):
        pacer.answered(await pacer.acquire(), {}, events=5000)
    pacer.answered(first, {}, events=5000)
    await pacer.acquire()  # the 41st waits for the next window: 60 s after the first left
    assert trio.current_time() == 62.0


async def test_a_raised_limit_is_found(autojump_clock: trio.abc.Clock) -> None:
    pacer, server = FeedPacer(), Throttle(40, 60.0)
    await drive(pacer, server, pages=120)
    server.limit = 50
    await drive(pacer, server, pages=1000)
    # One more is tried after every fifth clean window.
    assert pacer.limit is not None and pacer.limit >= 43


async def test_a_lowered_limit_is_followed(autojump_clock: trio.abc.Clock) -> None:
    # Without the probes for the window's length (tested on their own): the 429s counted
    # here are the ones the lowered limit costs.
    pacer, server = FeedPacer(refusal_share=0.0), Throttle(40, 60.0)
    await drive(pacer, server, pages=120)
    server.limit = 25
    refused_before = server.refused
    await drive(pacer, server, pages=250)
    assert pacer.limit is not None and pacer.limit <= 25
    assert server.refused - refused_before <= 3


async def test_a_limit_that_falls_twice_far_apart_keeps_its_windows(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Two refusals inside the budget, 10 windows apart, are two lowered limits, not a server
    # that does not count in fixed windows: each window stays used whole. (Counted over the
    # whole run, the second switched to even spacing for good: 500 pages in 1,360 s.)
    pacer, server = FeedPacer(refusal_share=0.0), Throttle(40, 60.0)
    await drive(pacer, server, pages=120)
    server.limit = 30
    await drive(pacer, server, pages=300)
    server.limit = 25
    start, refused_before = trio.current_time(), server.refused
    finished = await drive(pacer, server, pages=500)
    assert pacer.mode == "window" and pacer.limit == 25
    assert server.refused - refused_before <= 0.02 * 500  # no storm: the run's 2 %
    # 500 pages at 25 a window: 20 windows from the first, which was partly spent already.
    assert finished - start <= 20 * 60.1 + 4.8


async def test_a_sliding_window_gets_even_spacing(autojump_clock: trio.abc.Clock) -> None:
    pacer, server = FeedPacer(), Throttle(40, 60.0, kind="sliding")
    finished = await drive(pacer, server, pages=600)
    assert pacer.mode == "even"
    # 600 pages at 40 a minute take 15 minutes at best; evenly spaced, within 20% of it.
    assert finished <= 15 * 60 * 1.2
    assert server.refused / (server.ok + server.refused) <= 0.02


async def test_concurrency_backs_off_when_answers_queue(autojump_clock: trio.abc.Clock) -> None:
    # No throttle to speak of; the server generates 3 pages at a time, the rest wait.
    pacer = FeedPacer(concurrency=12.0)
    server = Throttle(10_000, 60.0, latency=2.0, capacity=3)
    await drive(pacer, server, pages=300, workers=16)
    assert pacer.concurrency < 8
    assert server.refused == 0


async def test_small_probes_first_do_not_make_full_pages_look_queued(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A run probes the feed's time range with one-event pages (answered almost at once) before
    # the shards fetch full ones: those are not the calm latency of a full page.
    pacer = FeedPacer(concurrency=4.0)
    server = Throttle(10_000, 60.0, latency=2.0, capacity=100)
    for _ in range(5):
        assert await server.request(pacer, events=1)
    await drive(pacer, server, pages=100, workers=8)
    assert pacer.concurrency >= 4.0


async def test_concurrency_grows_while_it_holds_requests_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    pacer = FeedPacer(concurrency=2.0)
    server = Throttle(10_000, 60.0, latency=2.0, capacity=100)
    await drive(pacer, server, pages=300, workers=16)
    assert pacer.concurrency >= 6


async def _pacer_after(sent: int, latency: float) -> FeedPacer:
    """A pacer that knows a window of 40 requests a minute (as a 429 teaches), opened at
    t = 0 by `sent` requests whose full pages took `latency` seconds; 4 at a time from now."""
    pacer = FeedPacer(concurrency=float(sent))
    pacer.mode, pacer.limit, pacer.window = "window", 40, 60.0
    tickets = [await pacer.acquire() for _ in range(sent)]
    await trio.sleep(latency)
    for ticket in tickets:
        pacer.answered(ticket, {}, events=5000)
    pacer.concurrency = 4.0
    return pacer


async def test_seconds_for_counts_the_windows_ahead(autojump_clock: trio.abc.Clock) -> None:
    assert FeedPacer().seconds_for(1) is None  # no budget learned yet
    pacer = await _pacer_after(sent=4, latency=5.0)  # t = 5: 36 left until t = 60
    assert pacer.seconds_for(0) == 0.0
    assert pacer.seconds_for(36) == 9 * 5.0  # at once, 4 at a time: 9 rounds of a page
    assert pacer.seconds_for(37) == 55.0 + 5.0  # one waits for the next window
    assert pacer.seconds_for(36 + 40 + 8) == 55.0 + 60.0 + 2 * 5.0
    await trio.sleep(60.0)  # that window is over: the next request opens a new one
    assert pacer.seconds_for(40) == 10 * 5.0
    assert pacer.seconds_for(41) == 60.0 + 5.0
    # Spaced evenly (a server that does not count in fixed windows): one every interval.
    pacer.mode, pacer.interval = "even", 1.5
    pacer.failed(await pacer.acquire())  # the next may go 1.5 s from now
    assert pacer.seconds_for(3) == 1.5 + 2 * pacer.interval + 5.0
