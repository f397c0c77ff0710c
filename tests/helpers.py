"""Shared test helpers: an in-process API client on the simulator, and table checks."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from flowtel._api import Api
from flowtel._mend import Mender
from flowtel._pacer import FeedPacer
from flowtel._paginator import Fetcher
from flowtel._ratelimit import RateLimiter
from flowtel._retry import Backoff
from flowtel._stats import RunStats
from flowtel._tokens import TokenKeeper
from flowtel.testing import Simulator, SimulatorTransport


class Recorder(httpx.AsyncBaseTransport):
    """The simulator's transport, noting (virtual time, path, status, query) of every request."""

    def __init__(self, sim: Simulator) -> None:
        self.inner = SimulatorTransport(sim)
        self.log: list[tuple[float, str, int, dict[str, str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = trio.current_time()
        response = await self.inner.handle_async_request(request)
        self.log.append((sent, request.url.path, response.status_code, dict(request.url.params)))
        return response

    def times(self, path: str, status: int = 200) -> list[float]:
        return [t for t, p, s, _ in self.log if p == path and s == status]


@asynccontextmanager
async def fetcher_for(
    sim: Simulator,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    feed: bool = False,
    page_size: int = 5000,
    mend: bool = False,
) -> AsyncIterator[Fetcher]:
    async with httpx.AsyncClient(
        base_url=sim.config.base_url, transport=transport or SimulatorTransport(sim)
    ) as http:
        from flowtel._secret import Secret

        api = Api(http, Secret(sim.api_key))
        backoff = Backoff(base=0.1, cap=2.0, max_retries=20)
        stats = RunStats()  # shared, as in a run
        yield Fetcher(
            api=api,
            events_limiter=RateLimiter("events"),
            feed_limiter=FeedPacer(),
            tokens=TokenKeeper(api, backoff, stats=stats) if feed else None,
            backoff=backoff,
            stats=stats,
            page_size=page_size,
            mender=Mender(api, stats) if mend else None,
        )


def expected_rows(sim: Simulator) -> dict[str, int]:
    """id -> instant in epoch ms, for every event of the simulator's dataset."""
    data = sim.dataset
    return {data.id(i): data.instant_ms(i) for i in range(len(data))}


def stored_rows(pg_admin: Any) -> tuple[dict[str, int], int]:
    """id -> instant in epoch ms of the `events` table, and the number of rows."""
    rows = pg_admin.fetch("SELECT id::text AS id, occurred_at FROM events")
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    ms = dt.timedelta(milliseconds=1)
    return {r["id"]: (r["occurred_at"] - epoch) // ms for r in rows}, len(rows)
