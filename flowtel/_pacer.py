"""Pacing the stream feed, which announces no limits: its budget is learned as flowtel runs.

Two controls, both adaptive:
- **Rate.** Requests leave evenly spaced, one every `interval` seconds. Even spacing stays
  inside a fixed window, a sliding window and a token bucket alike. The rate starts unknown
  (unpaced); the first 429 teaches it: a 429 at `t` with `Retry-After: R` says the server's
  window ends at `t + R`, and the requests that got through since the window began are its
  limit. After clean windows the rate creeps up by `probe_step`, so a raised limit is found;
  a 429 brings it back to what was learned (multiplicative decrease).
- **Concurrency.** How many requests may be in flight grows by one per round trip while
  answers stay fast (additive increase) and shrinks when they slow down, which is the
  server's capacity queueing them (multiplicative decrease) — but it only grows while it is
  what holds requests back.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable

import attrs
import trio

from flowtel._ratelimit import Ticket

Clock = Callable[[], float]


@attrs.define
class FeedPacer:
    name: str = "feed"
    clock: Clock = trio.current_time
    # Concurrency (AIMD).
    concurrency: float = 4.0
    min_concurrency: float = 1.0
    max_concurrency: float = 32.0
    slow_factor: float = 2.0  # answers this much slower than when calm are queueing
    backoff_factor: float = 0.75
    # Rate.
    interval: float = 0.0  # seconds between requests; 0 = unpaced (nothing learned yet)
    probe_step: float = 0.01  # rate increase after each clean window
    limit: int | None = None  # requests per window, learned from 429s
    window: float | None = None  # the window's length, learned from 429s
    # Counters.
    requests: int = 0
    throttled: int = 0
    waited: float = 0.0
    _in_flight: int = 0
    _next_send: float = -math.inf
    _blocked_until: float = -math.inf
    _window_start: float | None = None  # our first send after the last block ended
    _sent: deque[float] = attrs.field(factory=deque)  # send times of requests not refused
    _clean_since: float = 0.0
    _largest: int = 0  # the largest page seen: the full page size
    _smooth: float | None = None  # moving average of full pages' latency
    _calm: float = math.inf  # the lowest that average has been: latency without queueing
    _next_decrease: float = -math.inf
    _slot_waiters: int = 0
    _order: trio.Lock = attrs.field(factory=trio.Lock)  # FIFO: no stream starves
    _changed: trio.Event = attrs.field(factory=trio.Event)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def remaining(self) -> int | None:
        return None

    async def acquire(self) -> Ticket:
        started = self.clock()
        async with self._order:
            while True:
                now = self.clock()
                wait_until = max(self._blocked_until, self._next_send)
                if now < wait_until:
                    await self._wait(wait_until)
                    continue
                if self._in_flight >= math.floor(self.concurrency):
                    self._slot_waiters += 1
                    try:
                        await self._wait(math.inf)
                    finally:
                        self._slot_waiters -= 1
                    continue
                break
            now = self.clock()
            if self._window_start is None:
                self._window_start = now
            self._next_send = now + self.interval
            self._in_flight += 1
            self.requests += 1
            self._sent.append(now)
        self.waited += now - started
        return Ticket(sent_at=now, epoch=0)

    def answered(self, ticket: Ticket, headers: object = None, events: int = 0) -> None:
        """A successful answer; `events` is the page's size (latency grows with it)."""
        self._in_flight -= 1
        now = self.clock()
        self._largest = max(self._largest, events)
        if events and events >= 0.9 * self._largest:  # full pages only: comparable latencies
            latency = now - ticket.sent_at
            smooth = self._smooth = (
                latency if self._smooth is None else 0.8 * self._smooth + 0.2 * latency
            )
            self._calm = min(self._calm, smooth)
            if smooth > self.slow_factor * self._calm and now >= self._next_decrease:
                # Answers queue behind the server's capacity: fewer at once, once per round trip.
                self.concurrency = max(self.min_concurrency, self.concurrency * self.backoff_factor)
                self._next_decrease = now + smooth
            elif self._slot_waiters and self._in_flight + 1 >= math.floor(self.concurrency):
                # Concurrency is what holds requests back, and answers are quick: one more.
                self.concurrency = min(
                    self.max_concurrency, self.concurrency + 1 / self.concurrency
                )
        self._probe(now)
        self._wake()

    def throttled_by_server(self, ticket: Ticket, retry_after: float) -> None:
        """A 429: learn the window, slow down to it, and hold everyone until it reopens."""
        self._in_flight -= 1
        self.throttled += 1
        now = self.clock()
        with_ticket = ticket.sent_at
        self._forget(with_ticket)
        window_end = now + retry_after
        start = self._window_start if self._window_start is not None else with_ticket
        if start < window_end and self._blocked_until <= with_ticket:
            # Requests that got through in this window (sent before the refused one).
            got_through = sum(1 for t in self._sent if start <= t < with_ticket)
            if got_through > 0:
                window = window_end - start
                self.window = window if self.window is None else min(self.window, window)
                self.limit = got_through
                self.interval = max(self.interval, self.window / self.limit)
        self._blocked_until = max(self._blocked_until, window_end)
        self._window_start = None
        self._clean_since = window_end
        self._wake()

    def failed(self, ticket: Ticket) -> None:
        self._in_flight -= 1
        self._wake()

    def seconds_to_next_slot(self) -> float:
        return max(self._blocked_until - self.clock(), self._next_send - self.clock(), 0.0)

    def _probe(self, now: float) -> None:
        # Forget sends older than two windows; after a clean window, try a little faster.
        horizon = 2 * (self.window or 60.0)
        while self._sent and self._sent[0] < now - horizon:
            self._sent.popleft()
        if self.window is not None and self.interval > 0 and now - self._clean_since > self.window:
            self.interval /= 1 + self.probe_step
            self._clean_since = now

    def _forget(self, sent_at: float) -> None:
        with contextlib.suppress(ValueError):
            self._sent.remove(sent_at)

    async def _wait(self, deadline: float) -> None:
        changed = self._changed
        with trio.move_on_at(deadline):
            await changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
