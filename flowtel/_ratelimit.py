"""Pacing requests before they are sent, from what the server says about its budget.

One `RateLimiter` per rate bucket, shared by every task that spends the bucket. It learns the
bucket from `X-RateLimit-Limit/Remaining/Reset` (Reset is seconds left in a fixed window, not an
epoch) and from `Retry-After` on 429, instead of assuming 10 requests a minute.

A bucket that sends no headers (the stream feed) is only held back by its 429s; how many
requests run at once there is the concern of the feed's concurrency control.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import attrs
import trio

Clock = Callable[[], float]


class Changes:
    """Wakes every task waiting for a bucket's state to change (or for a deadline)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    async def wait(self, deadline: float) -> None:
        event = self._event
        with trio.move_on_at(deadline):
            await event.wait()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()


def window_seconds(
    requests: int,
    left: int,
    wait: float,
    limit: int,
    window: float,
    answered: Callable[[int], float],
) -> float:
    """Seconds until `requests` more requests are answered in fixed windows: `left` may go in
    the current window, which ends in `wait` seconds, and `limit` in each window after it;
    `answered(n)` is how long the n requests of the last window take once they may go."""
    if requests <= left:
        return answered(requests)
    more = requests - left
    windows = math.ceil(more / limit)
    return wait + (windows - 1) * window + answered((more - 1) % limit + 1)


@attrs.frozen
class Ticket:
    """Permission to send one request; hand it back with the answer's headers."""

    sent_at: float
    epoch: int = 0  # the RateLimiter's window count when the ticket was issued
    place: int = 0  # the FeedPacer's: which request of its window this was (0: no window)


@attrs.define
class RateLimiter:
    name: str
    clock: Clock = trio.current_time
    # What the headers taught us. None until the first answer with headers.
    limit: int | None = None
    window: float | None = None  # the longest Reset seen: the window's length, learned
    remaining: int | None = None
    # Upper estimate of the instant the current window reopens (None: not known yet).
    window_end: float | None = None
    blocked_until: float = -math.inf  # from Retry-After
    requests: int = 0
    throttled: int = 0  # 429s received on this bucket
    waited: float = 0.0  # seconds tasks spent waiting for a slot, summed
    latency: float | None = None  # moving average of an answer's round trip, in seconds
    held_back: int = 0  # requests that had to wait for the budget (a spent window, a 429)
    _in_flight: int = 0
    _epoch: int = 0
    _changed: Changes = attrs.field(factory=lambda: Changes())

    async def acquire(self) -> Ticket:
        """Wait until the bucket has room for one more request, and take it."""
        started = self.clock()
        held = False
        while True:
            now = self.clock()
            if now < self.blocked_until:
                held = self._hold(held)
                await self._wait(self.blocked_until)
                continue
            if self.window_end is not None and now >= self.window_end:
                self._next_window()
            if self.remaining is None:
                # Nothing known of this window: send one request at a time until its answer
                # tells us the budget. A bucket without headers stays here, unpaced.
                if self._in_flight == 0 or self.limit is None:
                    break
                await self._wait(math.inf)
            elif self.remaining > 0:
                self.remaining -= 1
                break
            else:
                held = self._hold(held)
                await self._wait(self.window_end if self.window_end is not None else math.inf)
        self._in_flight += 1
        self.requests += 1
        self.waited += self.clock() - started
        return Ticket(sent_at=self.clock(), epoch=self._epoch)

    def _hold(self, held: bool) -> bool:
        """Count a request as held back once, as soon as it starts to wait: a split decided
        while the listing waits for its next window must know that its budget holds it."""
        if not held:
            self.held_back += 1
        return True

    def answered(self, ticket: Ticket, headers: Mapping[str, str], events: int = 0) -> None:
        """Learn from an answer (any status) to a request sent with `ticket`."""
        self._in_flight -= 1
        took = self.clock() - ticket.sent_at
        self.latency = took if self.latency is None else 0.8 * self.latency + 0.2 * took
        budget = _read_budget(headers)
        if budget is not None and ticket.epoch == self._epoch:
            limit, remaining, reset = budget
            now = self.clock()
            self.limit = limit
            self.window = max(self.window or 0.0, reset)
            # Requests still in flight are not counted in this answer yet.
            remaining = max(remaining - self._in_flight, 0)
            # Reset is rounded up to whole seconds, so `now + reset` is never early; the
            # smallest such bound seen in a window is the tightest.
            end = now + reset
            if self.window_end is not None and end > self.window_end + 1.0:
                # The server opened a new window before our estimate said (another client
                # of the key started it): follow the server.
                self._epoch += 1
                self.remaining = None
                self.window_end = None
            self.remaining = remaining if self.remaining is None else min(self.remaining, remaining)
            self.window_end = end if self.window_end is None else min(self.window_end, end)
        self._wake()

    def throttled_by_server(self, ticket: Ticket, retry_after: float) -> None:
        """A 429: nobody sends on this bucket for `retry_after` seconds."""
        self.throttled += 1
        now = self.clock()
        self.blocked_until = max(self.blocked_until, now + retry_after)
        if self.limit is not None:
            self.remaining = 0
            self.window_end = max(self.window_end or now, self.blocked_until)
        self._wake()

    def failed(self, ticket: Ticket) -> None:
        """The request got no answer (a transport fault): its slot may or may not be spent."""
        self._in_flight -= 1
        self._wake()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def seconds_for(self, requests: int) -> float | None:
        """How long `requests` more requests, one after the other, would take in this
        bucket's windows (None until its budget is known).

        What the current window has left goes at once; the rest waits for the windows ahead.
        """
        if self.limit is None or self.window is None or self.latency is None:
            return None
        if requests <= 0:
            return 0.0
        now = self.clock()
        if now < self.blocked_until:
            left, wait = 0, max(self.window_end or now, self.blocked_until) - now
        elif self.window_end is not None and now < self.window_end:
            left, wait = self.remaining or 0, self.window_end - now
        else:
            left, wait = self.limit, self.window  # the first request opens a new window
        latency = self.latency
        return window_seconds(requests, left, wait, self.limit, self.window, lambda n: n * latency)

    def holds_in_next_window(self, requests: int) -> bool:
        """Whether `requests` more go before the window after the next one (False until the
        budget is known)."""
        if self.limit is None:
            return False
        now = self.clock()
        live = self.window_end is not None and self.blocked_until <= now < self.window_end
        return requests <= ((self.remaining or 0) if live else 0) + self.limit

    def seconds_to_next_slot(self) -> float:
        """For progress displays: 0 when a request could go now."""
        now = self.clock()
        wait = max(self.blocked_until - now, 0.0)
        if self.remaining == 0 and self.window_end is not None:
            wait = max(wait, self.window_end - now)
        return wait

    def _next_window(self) -> None:
        self._epoch += 1
        self.remaining = self.limit
        self.window_end = None

    async def _wait(self, deadline: float) -> None:
        await self._changed.wait(deadline)

    def _wake(self) -> None:
        self._changed.notify()


def _read_budget(headers: Mapping[str, str]) -> tuple[int, int, float] | None:
    try:
        limit = int(headers["x-ratelimit-limit"])
        remaining = int(headers["x-ratelimit-remaining"])
        reset = float(headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None
    if limit <= 0 or remaining < 0 or reset < 0:
        return None
    return limit, remaining, reset


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """Seconds from a Retry-After header (seconds form; HTTP dates fall back to `default`)."""
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds >= 0 else default
