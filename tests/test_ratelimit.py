"""The RateLimiter paces before sending, from the headers, in virtual time."""

from __future__ import annotations

import math

import pytest
import trio

from flowtel._ratelimit import RateLimiter, parse_retry_after


class FixedWindow:
    """The server's side of a fixed window anchored at its first request (contract §1)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.start: float | None = None
        self.used = 0
        self.refused = 0

    def hit(self) -> tuple[int, dict[str, str]]:
        now = trio.current_time()
        if self.start is None or now >= self.start + self.window:
            self.start, self.used = now, 0
        left = math.ceil(self.start + self.window - now)
        if self.used >= self.limit:
            self.refused += 1
            return 429, {"retry-after": str(left)}
        self.used += 1
        return 200, {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.limit - self.used),
            "x-ratelimit-reset": str(left),
        }


async def send(
    limiter: RateLimiter, server: FixedWindow, log: list[float], latency: float = 0.0
) -> None:
    ticket = await limiter.acquire()
    log.append(trio.current_time())
    await trio.sleep(latency)
    status, headers = server.hit()
    if status == 429:
        limiter.throttled_by_server(ticket, float(headers["retry-after"]))
    else:
        limiter.answered(ticket, headers)


async def test_eleventh_request_waits_for_the_window(autojump_clock: trio.abc.Clock) -> None:
    limiter, server, log = RateLimiter("events"), FixedWindow(10, 60), []
    for _ in range(25):
        await send(limiter, server, log)
    assert log == [0.0] * 10 + [60.0] * 10 + [120.0] * 5
    assert server.refused == 0
    assert limiter.limit == 10 and limiter.window == 60


async def test_a_request_counts_as_held_back_from_when_it_starts_to_wait(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A split decided while the listing waits for its next window needs to know the budget
    # holds it back then, not only once the wait is over.
    limiter, server, log = RateLimiter("events"), FixedWindow(10, 60), []
    for _ in range(10):
        await send(limiter, server, log)
    assert limiter.held_back == 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, limiter, server, log)
        await trio.sleep(30)
        assert limiter.held_back == 1 and len(log) == 10  # waiting, half a window to go
    assert log[-1] == 60.0 and limiter.held_back == 1  # counted once


async def test_learns_another_window_from_headers(autojump_clock: trio.abc.Clock) -> None:
    limiter, server, log = RateLimiter("events"), FixedWindow(7, 13), []
    for _ in range(15):
        await send(limiter, server, log)
    assert log == [0.0] * 7 + [13.0] * 7 + [26.0]
    assert server.refused == 0


async def test_concurrent_tasks_share_the_budget(autojump_clock: trio.abc.Clock) -> None:
    limiter, server, log = RateLimiter("events"), FixedWindow(10, 60), []

    async def worker() -> None:
        for _ in range(10):
            await send(limiter, server, log, latency=0.5)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(worker)
    assert server.refused == 0
    assert len(log) == 40
    # Four windows of ten. The server anchors each window when the first request *arrives*,
    # 0.5 s after it left, so each window opens 0.5 s later than the one before would suggest.
    starts = sorted(set(log))
    assert [t for t in starts if t in (0.0, 60.5, 121.0, 181.5)] == [0.0, 60.5, 121.0, 181.5]
    assert sum(1 for t in log if t < 60.5) == 10


async def test_uses_99_percent_of_the_budget_with_latency(autojump_clock: trio.abc.Clock) -> None:
    limiter, server, log = RateLimiter("events"), FixedWindow(10, 60), []
    for _ in range(1000):
        await send(limiter, server, log, latency=0.3)
    elapsed = log[-1] - log[0]
    windows_used = elapsed / 60
    assert server.refused == 0
    # 1000 requests need 99 full windows after the first; allow 1% slack.
    assert windows_used <= 99 * 1.01


async def test_429_blocks_every_task_for_retry_after(autojump_clock: trio.abc.Clock) -> None:
    limiter = RateLimiter("feed")  # no headers on this bucket
    first = await limiter.acquire()
    limiter.throttled_by_server(first, 30.0)
    await limiter.acquire()
    assert trio.current_time() == 30.0
    assert limiter.throttled == 1


async def test_no_headers_means_no_pacing(autojump_clock: trio.abc.Clock) -> None:
    limiter = RateLimiter("feed")
    tickets = [await limiter.acquire() for _ in range(50)]
    assert trio.current_time() == 0.0 and len(tickets) == 50


def test_parse_retry_after() -> None:
    assert parse_retry_after("28") == 28.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) == 1.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", default=5.0) == 5.0
    assert parse_retry_after("-3", default=2.0) == 2.0


async def test_seconds_for_counts_the_windows_ahead(autojump_clock: trio.abc.Clock) -> None:
    limiter = RateLimiter("events")
    assert limiter.seconds_for(3) is None  # nothing known of the bucket yet
    ticket = await limiter.acquire()
    await trio.sleep(0.5)
    headers = {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "9", "x-ratelimit-reset": "60"}
    limiter.answered(ticket, headers)  # the window ends at 60.5; an answer takes 0.5 s
    await trio.sleep(9.5)
    assert limiter.seconds_for(9) == pytest.approx(9 * 0.5)  # what this window has left
    assert limiter.seconds_for(10) == pytest.approx(50.5 + 0.5)  # one waits for the next
    assert limiter.seconds_for(29) == pytest.approx(50.5 + 60 + 10 * 0.5)
    await trio.sleep(60)  # that window is over: the next request opens a new one
    assert limiter.seconds_for(10) == pytest.approx(10 * 0.5)
    assert limiter.seconds_for(11) == pytest.approx(60 + 0.5)
    limiter.throttled_by_server(await limiter.acquire(), 30.0)
    assert limiter.seconds_for(1) == pytest.approx(30 + 0.5)
    assert limiter.held_back == 0
    limiter.failed(await limiter.acquire())  # waits for the Retry-After
    assert limiter.held_back == 1
