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


class TokenKeeper:
    """Hands out a token with life left in it; one renewal at a time for all shards.

    A new token does not revoke the old one, so tasks holding the old one finish with it.
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
        async with self._lock:
            current = self._current
            # Renew when less than renew_before (or a fifth of the lifetime) is left.
            if current is None or trio.current_time() >= current.expires_at:
                self._current = current = await self._issue()
            return current

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
    return StreamAccess(
        endpoint=endpoint,
        header=header,
        token=Secret(token),
        expires_at=trio.current_time() + expires_in - margin,
    )
