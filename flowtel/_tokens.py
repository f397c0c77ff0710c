"""Stream-feed tokens: obtained, shared by every shard, renewed before they expire."""

from __future__ import annotations

import logging

import trio

from flowtel._api import Api, StreamAccess
from flowtel._errors import ApiError, FeedUnavailable, RateLimited, TransientError
from flowtel._retry import Backoff
from flowtel._secret import Secret
from flowtel._stats import RunStats

log = logging.getLogger("flowtel.feed")

TOKEN_PATH = "/internal/dashboard/stream-access"
USE_MARGIN = 5.0  # seconds before a token's end after which it is no longer sent


class TokenKeeper:
    """Hands out a token with life left in it; one renewal at a time for all shards.

    A new token does not revoke the old one, so tasks holding the old one finish with it, and
    while one task renews it, the others go on with it until it expires: the token endpoint
    answers 429 with a Retry-After of up to 10 s now and then, and a renewal that held every
    feed request back that long opened the feed's next window as much later (and every
    window after it), 8 to 9 s at the end of one live 3M run in seven.
    """

    def __init__(
        self,
        api: Api,
        backoff: Backoff,
        *,
        renew_before: float = 30.0,
        stats: RunStats | None = None,
    ) -> None:
        self.api = api
        self.backoff = backoff
        self.renew_before = renew_before
        # The run's counters: tokens issued, a token request sent again after a fault (a
        # retry), a token's 429 (a 429).
        self.stats = stats if stats is not None else RunStats()
        self._current: StreamAccess | None = None
        self._lock = trio.Lock()

    async def get(self) -> StreamAccess:
        current = self._current
        now = trio.current_time()
        if current is not None and (
            now < current.renew_at or (self._lock.locked() and now < current.expires_at)
        ):
            return current  # fresh, or being renewed by another task and still alive
        async with self._lock:
            current = self._current
            # Renew when less than renew_before (or a fifth of the lifetime) is left.
            if current is None or trio.current_time() >= current.renew_at:
                self._current = current = await self._issue()
            return current

    async def keep_fresh(self) -> None:
        """Renew the token as it falls due, whether or not a request asks for one then. A
        feed that has spent its window asks for none until the next one opens, and found the
        token expired right then: in a virtual live 3M run, a renewal that met a 429 there
        opened that window, and every one after it, 8 s late. Gives up (the requests' own
        `get` then says why) if a token cannot be had."""
        try:
            while True:
                access = await self.get()
                await trio.sleep_until(access.renew_at)
        except (FeedUnavailable, TransientError) as exc:
            log.info("stream token: not renewed ahead of time (%s)", exc)

    def refused(self, access: StreamAccess) -> None:
        """The feed refused this token (403): forget it, unless a newer one replaced it."""
        if self._current is access:
            self._current = None

    async def _issue(self) -> StreamAccess:
        attempt = 0
        while True:
            try:
                answer = await self.api.request(
                    "POST",
                    TOKEN_PATH,
                    headers={
                        "Cookie": f"dashboard_api_key={self.api.key.reveal()}",
                        "Origin": self.api.base_url,
                    },
                )
                break
            except RateLimited as exc:
                self.stats.throttled += 1
                await trio.sleep(exc.retry_after)
            except TransientError as exc:
                attempt += 1
                if attempt > self.backoff.max_retries:
                    raise
                self.stats.retries += 1
                log.info("stream token: %s; retrying", exc)
                await trio.sleep(self.backoff.delay(attempt))
            except ApiError as exc:
                raise FeedUnavailable(f"no stream token: {exc}") from None
        self.stats.tokens += 1
        return _parse_access(answer.body, self.renew_before)


def _parse_access(body: dict[str, object], renew_before: float) -> StreamAccess:
    access = body.get("streamAccess")
    if not isinstance(access, dict):
        raise FeedUnavailable("the token answer has no streamAccess object")
    endpoint, token = access.get("endpoint"), access.get("token")
    header = access.get("tokenHeader") or "X-Stream-Token"
    expires_in = access.get("expiresIn")
    if not (isinstance(endpoint, str) and endpoint.startswith("/") and isinstance(token, str)):
        raise FeedUnavailable("the token answer lacks an endpoint path or a token")
    if not isinstance(header, str) or not isinstance(expires_in, int | float) or expires_in <= 0:
        raise FeedUnavailable("the token answer has a bad tokenHeader or expiresIn")
    margin = min(renew_before, expires_in / 5)
    now = trio.current_time()
    return StreamAccess(
        endpoint=endpoint,
        header=header,
        token=Secret(token),
        renew_at=now + expires_in - margin,
        # Its lifetime counts from the server's clock, a moment before the answer came.
        expires_at=now + expires_in - min(USE_MARGIN, margin / 2),
    )
