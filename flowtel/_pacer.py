"""Pacing the stream feed, which announces no limits: its budget is learned as flowtel runs.

Two controls, both adaptive:
- **Budget.** Until the first 429 nothing is known and requests go as fast as concurrency
  allows. A 429 at `t` with `Retry-After: R` says the server's window ends at `t + R`; the
  requests that got through since the window began are its limit `L`, and `t + R` minus that
  beginning is its length `W`. From then on each window (anchored, like the server's, at its
  first request) gets `L` requests, sent as soon as they are wanted; after a few clean windows
  one more is tried, so a raised limit is found. A 429 although the window's budget was kept
  lowers the limit; a second within a few windows means the server is not counting in fixed
  windows: the pacer switches to spacing requests evenly, `W / L` apart, which stays inside
  sliding windows and token buckets too.
- **The window's length, closely.** Retry-After comes in whole seconds, rounded up, so one
  429 tells `W` only to within a second, and every window opened that much late puts the
  run's end back by as much. So the request beyond the limit is sent at a chosen instant.
  The first such probe goes a whole number of seconds after its window's first request: a
  window of whole seconds, as windows usually are, then ends where its Retry-After says, to
  within `second_margin`. Later ones ask whether the window ends a `phase_precision` step
  earlier than the latest it can, until that is known. While the run's 429s stay within
  `refusal_share` of the requests it expects, such a probe goes in every window until `W` is
  known; after that each probe goes where its refusal holds the next window back least.
- **Concurrency.** How many requests may be in flight grows by one per round trip while it
  is what holds requests back (additive increase) and shrinks when full pages come back much
  slower than when calm, which is the server's capacity queueing them (multiplicative
  decrease).
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable
from typing import Literal

import attrs
import trio

from flowtel._ratelimit import Changes, Ticket, window_seconds

Clock = Callable[[], float]
Mode = Literal["learning", "window", "even"]


@attrs.define
class FeedPacer:
    name: str = "feed"
    clock: Clock = trio.current_time
    # Concurrency (AIMD on latency).
    concurrency: float = 4.0
    min_concurrency: float = 1.0
    max_concurrency: float = 32.0
    slow_factor: float = 2.0  # full pages this much slower than when calm are queueing
    full_page: float = 0.9  # a page at least this share of the largest is a full one
    backoff_factor: float = 0.75
    # Budget, learned from 429s.
    mode: Mode = "learning"
    limit: int | None = None  # requests per window
    window: float | None = None  # seconds
    probe_every: int = 5  # clean, fully used windows before one more request is tried
    mismatch_memory: int = 5  # windows within which two refusals inside the budget mean
    # the server is not counting in fixed windows (further apart: a limit that fell twice)
    guard: float = 0.05  # seconds added to a learned window
    phase_precision: float = 0.3  # seconds: how closely probes pin the window's length down
    second_margin: float = 0.05  # seconds past a whole second that the first such probe goes
    refusal_share: float = 0.02  # probes for the length only while 429s stay below this share
    expected_requests: int = 0  # what the run expects to send here (0: not known)
    # Even spacing (servers that do not count in fixed windows).
    interval: float = 0.0
    probe_step: float = 0.02  # faster by this much after a clean window
    decrease_factor: float = 1.25  # slower by this much after a 429
    # Counters.
    requests: int = 0
    throttled: int = 0
    waited: float = 0.0
    peak_in_flight: int = 0
    _in_flight: int = 0
    _blocked_until: float = -math.inf
    _window_start: float | None = None  # send time of the current window's first request
    _window_sent: int = 0
    _window_budget: int = 0
    _window_floor: float = 0.0  # the window is longer than this, as far as 429s tell
    _probe_at: float | None = None  # when this window's probe goes, once chosen
    _aligned: bool = False  # a probe on a whole second of its window has been chosen
    _clean_windows: int = 0
    _last_mismatch: float = -math.inf  # when a request inside the budget was last refused
    _clean_since: float = 0.0
    _accepted: tuple[float, int] | None = None  # (window start, limit before) of the last
    _next_send: float = -math.inf  # even mode
    _sent: deque[float] = attrs.field(factory=deque)  # send times of requests not refused
    _largest: int = 0  # the largest page seen: the full page size
    _smooth: float | None = None  # moving average of full pages' latency
    _calm: float = math.inf  # the lowest that average has been: latency without queueing
    _next_decrease: float = -math.inf
    _slot_waiters: int = 0
    _order: trio.Lock = attrs.field(factory=trio.Lock)  # FIFO: no stream starves
    _changed: Changes = attrs.field(factory=lambda: Changes())

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def page_latency(self) -> float | None:
        """Seconds a full page takes to come back, lately (None: none has yet)."""
        return self._smooth

    @property
    def remaining(self) -> int | None:
        if self.mode != "window" or self._window_start is None:
            return None
        return max(self._window_budget - self._window_sent, 0)

    async def acquire(self) -> Ticket:
        started = self.clock()
        async with self._order:
            while True:
                now = self.clock()
                wait_until = max(self._blocked_until, self._budget_wait(now))
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
            self._spend(now)
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            self.requests += 1
            self._sent.append(now)
        self.waited += now - started
        # The ticket carries its place in the window: a refusal within the budget tells.
        return Ticket(sent_at=now, place=self._window_sent if self.mode == "window" else 0)

    def answered(self, ticket: Ticket, headers: object = None, events: int = 0) -> None:
        """A successful answer; `events` is the page's size (latency grows with it)."""
        self._in_flight -= 1
        now = self.clock()
        if events * self.full_page > self._largest:
            # A larger page size than any before (the range probes ask for one event): the
            # latencies seen so far are not of full pages, and must not be the calm ones.
            self._smooth, self._calm = None, math.inf
        self._largest = max(self._largest, events)
        if events and events >= self.full_page * self._largest:  # full pages: comparable
            latency = now - ticket.sent_at
            smooth = latency if self._smooth is None else 0.8 * self._smooth + 0.2 * latency
            self._smooth = smooth
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
        self._forget_old(now)
        self._wake()

    def throttled_by_server(self, ticket: Ticket, retry_after: float) -> None:
        """A 429: learn the budget from it, and hold every request until the window reopens."""
        self._in_flight -= 1
        self.throttled += 1
        now = self.clock()
        with_ticket = ticket.sent_at
        with contextlib.suppress(ValueError):
            self._sent.remove(with_ticket)
        window_end = now + retry_after
        if (
            self._accepted is not None
            and self._accepted[0] <= with_ticket
            and (self._window_start is None or with_ticket < self._window_start)
        ):
            # The window we took as clean was not: its refusal arrived late.
            self.limit = self._accepted[1]
        self._accepted = None
        if self._blocked_until <= with_ticket:  # the first 429 of this window teaches
            self._learn(with_ticket, window_end, place=ticket.place)
            start = self._window_start
            if self.mode == "window" and start is not None and with_ticket >= start:
                # Retry-After was rounded up at most a second, and the window began no
                # earlier than our first request of it (a close estimate, not a bound).
                floor = with_ticket + retry_after - 1 - start
                self._window_floor = max(self._window_floor, floor)
        self._blocked_until = max(self._blocked_until, window_end)
        self._window_start = None
        self._wake()

    def failed(self, ticket: Ticket) -> None:
        self._in_flight -= 1
        self._wake()

    def departed(self, ticket: Ticket) -> Ticket:
        """The request leaves only now: it waited after its ticket (for a stream token being
        renewed). The server counts it from now, so a window it opened opens now too, or
        the next would open that much early, into 429s at its first requests."""
        now = self.clock()
        if now <= ticket.sent_at:
            return ticket
        if self._window_start == ticket.sent_at:
            self._window_start = now
        with contextlib.suppress(ValueError):
            self._sent.remove(ticket.sent_at)
            self._sent.append(now)
        return attrs.evolve(ticket, sent_at=now)

    def seconds_for(self, requests: int) -> float | None:
        """How long until `requests` more full pages are answered in the budget learned so
        far: a window's requests go at once, as many at a time as concurrency allows (None
        until a 429 has taught the budget and a full page its latency)."""
        latency = self._smooth
        if latency is None or self.limit is None or self.window is None or self.mode == "learning":
            return None
        if requests <= 0:
            return 0.0
        now = self.clock()
        at_once = max(1, math.floor(self.concurrency))

        def answered(n: int) -> float:
            return math.ceil(n / at_once) * latency

        if self.mode == "even":
            return max(self._next_send - now, 0.0) + (requests - 1) * self.interval + latency
        left, wait = self._window_left(now)
        return window_seconds(requests, left, wait, self.limit, self.window, answered)

    def left_in_window(self) -> int | None:
        """Requests the budget lets go before the next window (None: no windows learned)."""
        if self.mode != "window":
            return None
        return self._window_left(self.clock())[0]

    def _window_left(self, now: float) -> tuple[int, float]:
        """What the current window still allows, and the seconds until the next one opens."""
        assert self.limit is not None and self.window is not None
        if now < self._blocked_until:
            return 0, self._blocked_until - now
        if self._window_start is not None and now < self._window_start + self.window:
            left = max(min(self._window_budget, self.limit) - self._window_sent, 0)
            return left, self._window_start + self.window - now
        return self.limit, self.window  # the first request opens a new window

    def seconds_to_next_slot(self) -> float:
        now = self.clock()
        return max(self._blocked_until - now, self._budget_wait(now) - now, 0.0)

    # -- the budget -----------------------------------------------------------------------

    def _budget_wait(self, now: float) -> float:
        """When the budget lets the next request go (`now` or earlier: at once)."""
        if self.mode == "even":
            return self._next_send
        if self.mode == "window" and self._window_start is not None:
            assert self.window is not None and self.limit is not None
            end = self._window_start + self.window
            if now < end and self._window_sent >= self._window_budget:
                return end
            if now < end and self._window_sent == self.limit < self._window_budget:
                if self._probe_at is None:
                    self._probe_at = self._probe_time(now, end)
                return self._probe_at
        return now

    def _probe_time(self, now: float, end: float) -> float:
        """When a window's probe goes.

        While the window's length is uncertain, the first probe goes on a whole second
        after the window's first request (and `second_margin`): refused, its whole-second
        Retry-After then says where the end is to within that margin if the window is a
        whole number of seconds long, as windows most often are, and to the next whole
        second if not. The first 429 of a run, sent whenever the limit ran out, can only say
        it to within a second. Later probes go a whole number of seconds before `target`, so
        that refused, their Retry-After says whether the window ends by `target`: the latest
        the end can be, less `phase_precision`. For a window of whole seconds the answer is
        no, after one probe that holds its window back by less than a second; a shorter
        window is closed in on from above, a probe a step. Once the length is known, the
        target is the end itself, and the refusal holds the next window back hardly later
        than the budget would have. Less than a second before the target, a probe could only
        land past the server's end and pass for a raised limit: it waits for the next window
        instead."""
        assert self._window_start is not None
        target = end
        if self._length_unknown():
            if not self._aligned:
                first = self._window_start + self.second_margin
                aligned = first + max(0, math.ceil(now - first - 1e-9))
                if aligned > end - 1:
                    return end
                # Chosen while a request waits for it, so it goes (a clock's wake-up is
                # never exactly on time: its send time cannot tell it apart later).
                self._aligned = True
                return aligned
            target = end - self.guard - self.phase_precision
        return target - math.floor(target - now) if target - now >= 1 else end

    def _length_unknown(self) -> bool:
        assert self.window is not None
        # (A tolerance: a probe that lands on the precision's edge has settled it.)
        return self.window - self.guard - self._window_floor > self.phase_precision + 1e-6

    def _refusal_allowed(self) -> bool:
        # Of the run's requests: with the run's size known, the probes need not wait for the
        # first windows' requests to pay for them, and the windows they settle come sooner.
        requests = max(self.requests + 1, self.expected_requests)
        return self.throttled + 1 <= self.refusal_share * requests

    def _spend(self, now: float) -> None:
        if self.mode == "even":
            self._next_send = now + self.interval
            if now - self._clean_since >= (self.window or 60.0):
                self.interval /= 1 + self.probe_step  # a clean window: a little faster
                self._clean_since = now
            return
        if self.mode == "window":
            assert self.window is not None and self.limit is not None
            if self._window_start is not None and now < self._window_start + self.window:
                self._window_sent += 1
                return
            if self._window_start is not None and self._window_sent >= self._window_budget:
                # The last window was used whole without a 429, probe included: keep it
                # (unless a refusal of that window is still on its way: see below).
                self._accepted = (self._window_start, self.limit)
                self.limit = max(self.limit, self._window_budget)
                self._clean_windows += 1
            probe = self.probe_every > 0 and self._clean_windows >= self.probe_every
            if probe:
                self._clean_windows = 0
            elif self._length_unknown() and self._refusal_allowed():
                probe = True  # for the window's length; a raised limit would show too
            self._window_budget = self.limit + (1 if probe else 0)
            self._probe_at = None
        elif self._window_start is not None:
            self._window_sent += 1
            return
        self._window_start, self._window_sent = now, 1

    def _learn(self, refused_at: float, window_end: float, place: int) -> None:
        if self.mode == "even":
            # Still refused while evenly spaced: slower (multiplicative decrease).
            self.interval *= self.decrease_factor
            self._clean_since = window_end
            return
        start = self._window_start
        if self.mode == "window" and 0 < place <= self._window_budget - (
            self._window_budget > (self.limit or 0)
        ):
            # Refused inside the budget: the limit fell, or the server does not count in
            # fixed windows. Once may be the former; twice in a few windows, space requests
            # evenly instead. Further apart, it is a limit that fell twice: a long run must
            # not give its windows up for good.
            assert self.window is not None and self.limit is not None
            again = refused_at - self._last_mismatch <= self.mismatch_memory * self.window
            self._last_mismatch = refused_at
            got_through = self._got_through(start, refused_at) if start is not None else 0
            if not again:
                # A lower limit, if some got through; refused at the very opening of our
                # window, the server's window had not reopened: keep the limit, note it.
                self.limit = got_through or self.limit
            else:
                self.mode = "even"
                self.interval = self.window / self.limit * self.decrease_factor
                self._next_send = window_end
                self._clean_since = window_end
            return
        if start is None:
            return
        got_through = self._got_through(start, refused_at)
        if got_through == 0:
            return
        # A fixed window behaved as one (first sight, or a probe refused): its length is at
        # least `window_end - start`, Retry-After being rounded up and our window starting
        # before the server's; the smallest such estimate is the best.
        self._clean_windows = 0
        window = window_end - start + self.guard
        self.window = window if self.window is None else min(self.window, window)
        if self.mode == "learning":
            self.limit, self.mode = got_through, "window"

    def _got_through(self, start: float, refused_at: float) -> int:
        """Requests of the window that began at `start`, sent before the refused one, and
        not refused themselves (as far as we know yet)."""
        return sum(1 for t in self._sent if start <= t < refused_at)

    def _forget_old(self, now: float) -> None:
        horizon = 3 * (self.window or 60.0)
        while self._sent and self._sent[0] < now - horizon:
            self._sent.popleft()

    async def _wait(self, deadline: float) -> None:
        await self._changed.wait(deadline)

    def _wake(self) -> None:
        self._changed.notify()
