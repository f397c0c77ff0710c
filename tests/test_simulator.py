"""The simulator, one contract rule per test, in virtual time where time matters."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio

from flowtel.testing import (
    BASE_URL,
    FORMATS,
    Endpoint,
    Faults,
    Simulator,
    SimulatorConfig,
    SimulatorTransport,
    Window,
    config_from_mapping,
    load_config,
    profile,
)

SMALL = attrs.evolve(profile("fast"), events=3000, seed=5)


def client(sim: Simulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=SimulatorTransport(sim),
        base_url=BASE_URL,
        headers={"X-API-Key": sim.api_key},
    )


def normalize(value: Any) -> int:
    """A tiny reference parser of every §4 timestamp form, to epoch ms."""
    if isinstance(value, str):
        value = value.strip().strip("\u200b\ufeff").strip()
        if value.isdigit():
            value = int(value)
        else:
            parsed = dt.datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            return round(parsed.timestamp() * 1000)
    assert isinstance(value, int)
    return value if value > 100_000_000_000 else value * 1000


async def token_for(c: httpx.AsyncClient, sim: Simulator) -> str:
    r = await c.post(
        "/internal/dashboard/stream-access",
        headers={"Cookie": f"dashboard_api_key={sim.api_key}", "Origin": BASE_URL},
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["streamAccess"]["token"]
    return token


# -- the dataset -----------------------------------------------------------------------------


def test_dataset_shape_and_ids() -> None:
    sim = Simulator(profile("fast"))
    ds = sim.dataset
    assert len(ds) == 3_000_000
    oldest, newest = ds.time_range_ms()
    span_days = (newest - oldest) / 86_400_000
    assert 29 < span_days < 31
    assert dt.datetime.fromtimestamp(oldest / 1000, dt.UTC).month == 12
    times = [ds.instant_ms(i) for i in range(20_000)]
    assert all(a >= b for a, b in itertools.pairwise(times))
    assert any(a == b for a, b in itertools.pairwise(times))  # ties exist
    whole = sum(t % 1000 == 0 for t in times) / len(times)
    assert 0.2 < whole < 0.45
    event = ds.event(123)
    assert set(event) == {
        "id", "sessionId", "userId", "type", "name", "properties", "timestamp", "session",
    }  # fmt: skip
    assert event["id"][14] == "4" and event["id"][19] in "89ab"
    for i in (0, 1, 2_999_999, 1_234_567):
        assert ds.index_of(ds.id(i)) == i
    assert ds.index_of("00000000-0000-4000-8000-000000000000") is None
    assert sim.api_key.startswith("ds_") and len(sim.api_key) == 35


async def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    async def page(seed: int) -> bytes:
        sim = Simulator(attrs.evolve(profile("chaos"), seed=seed, listing=Endpoint(
            formats=dict.fromkeys(FORMATS, 1.0))))  # fmt: skip
        async with client(sim) as c:
            r = await c.get("/api/v1/events", params={"limit": 2000})
        return r.content[: r.content.index(b'"pagination"')]

    assert await page(7) == await page(7)
    assert await page(7) != await page(8)


async def test_full_walk_every_event_once_in_order_and_exact_instants() -> None:
    cfg = attrs.evolve(SMALL, listing=Endpoint(formats=dict.fromkeys(FORMATS, 1.0)))
    sim = Simulator(cfg)
    ids: list[str] = []
    async with client(sim) as c:
        params: dict[str, Any] = {"limit": 700}
        while True:
            body = (await c.get("/api/v1/events", params=params)).json()
            for event in body["data"]:
                i = len(ids)
                assert normalize(event["timestamp"]) == sim.dataset.instant_ms(i), event
                ids.append(event["id"])
            assert body["meta"]["total"] == 3000
            assert body["meta"]["returned"] == len(body["data"])
            if not body["pagination"]["hasMore"]:
                assert body["pagination"]["nextCursor"] is None
                break
            params = {"limit": 700, "cursor": body["pagination"]["nextCursor"]}
    assert ids == list(sim.dataset.ids())


async def test_limit_capped_and_default() -> None:
    sim = Simulator(SMALL)
    async with client(sim) as c:
        big = (await c.get("/api/v1/events", params={"limit": 99999})).json()
        default = (await c.get("/api/v1/events")).json()
    assert big["pagination"]["limit"] == 5000 and len(big["data"]) == 3000
    assert default["pagination"]["limit"] == 100 and len(default["data"]) == 100


# -- the listing's rules ---------------------------------------------------------------------


async def test_rate_window_11th_refused_reopens_at_60(autojump_clock: trio.abc.Clock) -> None:
    cfg = attrs.evolve(SMALL, listing=Endpoint(window=Window(10, 60.0)))
    sim = Simulator(cfg)
    async with client(sim) as c:
        t0 = trio.current_time()
        for n in range(10):
            path = "/api/v1/events/nope" if n == 9 else "/api/v1/events"
            r = await c.get(path)
            assert r.status_code == (404 if n == 9 else 200)
            assert r.headers["X-RateLimit-Limit"] == "10"
            assert r.headers["X-RateLimit-Remaining"] == str(9 - n)
            assert r.headers["X-RateLimit-Reset"] == "60"
            assert r.headers["X-Request-ID"]
        assert r.json()["code"] == "EVENT_NOT_FOUND"
        await trio.sleep_until(t0 + 20.5)
        r = await c.get("/api/v1/events")
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "40"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        assert r.json() == {
            "error": "Too Many Requests",
            "code": "RATE_LIMIT_EXCEEDED",
            "rateLimit": {"limit": 10, "remaining": 0, "reset": 40},
        }
        await trio.sleep_until(t0 + 59.999)
        assert (await c.get("/api/v1/events")).status_code == 429
        await trio.sleep_until(t0 + 60)
        r = await c.get("/api/v1/events")
        assert r.status_code == 200
        assert r.headers["X-RateLimit-Remaining"] == "9"
    assert sim.stats.rate_limited["listing"] == 2


async def test_cursor_lifetime(autojump_clock: trio.abc.Clock) -> None:
    sim = Simulator(attrs.evolve(SMALL, cursor_lifetime_s=(116, 116)))
    async with client(sim) as c:
        first = (await c.get("/api/v1/events", params={"limit": 10})).json()
        assert first["pagination"]["cursorExpiresIn"] == 116
        cursor = first["pagination"]["nextCursor"]
        await trio.sleep(115)
        ok = await c.get("/api/v1/events", params={"limit": 10, "cursor": cursor})
        assert ok.status_code == 200
        assert ok.json()["data"][0]["id"] == sim.dataset.id(10)
        await trio.sleep(2)  # 117 s: lifetime + 1
        r = await c.get("/api/v1/events", params={"limit": 10, "cursor": cursor})
        assert r.status_code == 400
        assert r.json() == {
            "error": "Bad Request",
            "code": "CURSOR_EXPIRED",
            "message": "Cursor expired 2 minute(s) ago",
        }


async def test_cursor_invalid_tampered_or_foreign() -> None:
    sim = Simulator(SMALL)
    async with client(sim) as c:
        cursor = (await c.get("/api/v1/events", params={"limit": 10})).json()["pagination"][
            "nextCursor"
        ]
        flipped = cursor[:5] + ("A" if cursor[5] != "A" else "B") + cursor[6:]
        for bad in ("garbage!!", "", flipped):
            if not bad:
                continue
            r = await c.get("/api/v1/events", params={"cursor": bad})
            assert r.status_code == 400 and r.json()["code"] == "CURSOR_INVALID"
        token = await token_for(c, sim)
        r = await c.get(
            sim.config.feed_path, params={"cursor": cursor}, headers={"X-Stream-Token": token}
        )
        assert r.status_code == 400 and r.json()["code"] == "CURSOR_INVALID"


async def test_cursor_chain_exact_across_ties() -> None:
    sim = Simulator(attrs.evolve(SMALL, tie_share=0.5))
    ids: list[str] = []
    async with client(sim) as c:
        params: dict[str, Any] = {"limit": 1}
        for _ in range(200):
            body = (await c.get("/api/v1/events", params=params)).json()
            ids += [e["id"] for e in body["data"]]
            params = {"limit": 1, "cursor": body["pagination"]["nextCursor"]}
    assert ids == [sim.dataset.id(i) for i in range(200)]


# -- the token and the feed ------------------------------------------------------------------


async def test_token_needs_cookie_and_origin() -> None:
    sim = Simulator(SMALL)
    cookie = f"dashboard_api_key={sim.api_key}"
    async with client(sim) as c:
        path = "/internal/dashboard/stream-access"
        for headers in ({}, {"Cookie": cookie}, {"Origin": BASE_URL},
                        {"Cookie": cookie, "Origin": "http://evil.test"},
                        {"Cookie": "dashboard_api_key=ds_wrong", "Origin": BASE_URL}):  # fmt: skip
            r = await c.post(path, headers=headers)
            assert r.status_code == 403 and r.json()["code"] == "DASHBOARD_REQUIRED"
        r = await c.post(path, headers={"Cookie": cookie, "Origin": BASE_URL})
        access = r.json()["streamAccess"]
        assert access["endpoint"] == "/api/v1/events/d4ta/x7k9/feed"
        assert access["tokenHeader"] == "X-Stream-Token" and access["expiresIn"] == 300
        assert len(access["token"]) == 64 and int(access["token"], 16) >= 0


async def test_token_expires_old_ones_stay_valid(autojump_clock: trio.abc.Clock) -> None:
    sim = Simulator(SMALL)
    async with client(sim) as c:
        old = await token_for(c, sim)
        await trio.sleep(100)
        new = await token_for(c, sim)
        assert new != old

        async def feed(token: str) -> httpx.Response:
            return await c.get(
                sim.config.feed_path, params={"limit": 5}, headers={"X-Stream-Token": token}
            )

        await trio.sleep(199)  # old token: 299 s
        assert (await feed(old)).status_code == 200
        await trio.sleep(2)  # old: 301 s, new: 201 s
        r = await feed(old)
        assert r.status_code == 403 and r.json()["code"] == "INVALID_STREAM_TOKEN"
        assert (await feed(new)).status_code == 200
        r = await feed("f" * 64)
        assert r.status_code == 403 and r.json()["code"] == "INVALID_STREAM_TOKEN"


async def test_feed_since_until_inclusive_with_ties() -> None:
    sim = Simulator(attrs.evolve(SMALL, tie_share=0.3))
    ds = sim.dataset
    tie = next(i for i in range(100, 3000) if ds.instant_ms(i) == ds.instant_ms(i + 1))
    until = ds.instant_ms(tie)  # a tie on the upper bound
    since = ds.instant_ms(tie + 40)
    expected = [ds.id(i) for i in range(len(ds)) if since <= ds.instant_ms(i) <= until]
    assert ds.id(tie) in expected and ds.id(tie + 1) in expected and ds.id(tie + 40) in expected
    async with client(sim) as c:
        token = await token_for(c, sim)
        got: list[str] = []
        params: dict[str, Any] = {"limit": 7, "since": since, "until": until}
        while True:
            r = await c.get(sim.config.feed_path, params=params, headers={"X-Stream-Token": token})
            assert "X-RateLimit-Limit" not in r.headers
            body = r.json()
            got += [e["id"] for e in body["data"]]
            assert all(isinstance(e["timestamp"], int) for e in body["data"])
            if not body["pagination"]["hasMore"]:
                break
            params = {**params, "cursor": body["pagination"]["nextCursor"]}
        assert got == expected
        oldest, newest = ds.time_range_ms()
        for bounds in ({"since": newest + 1}, {"until": oldest - 1}):
            r = await c.get(sim.config.feed_path, params=bounds, headers={"X-Stream-Token": token})
            assert r.status_code == 418


async def test_a_page_rendered_ahead_is_kept_for_each_of_many_streams() -> None:
    # The real server renders each stream's next page between requests (`idle_work`). With ten
    # streams walked in turn, each page must still be rendered once, and be the right page.
    sim = Simulator(SMALL)
    ds = sim.dataset
    renders = 0
    render = ds.render

    def counting_render(*args: Any) -> list[str]:
        nonlocal renders
        renders += 1
        return render(*args)

    ds.render = counting_render  # type: ignore[method-assign]
    edges = [ds.instant_ms(i) for i in range(0, len(ds), 300)] + [ds.instant_ms(len(ds) - 1)]
    shards = [(edges[k + 1], edges[k]) for k in range(10)]  # (since, until), newest first
    async with client(sim) as c:
        token = await token_for(c, sim)
        params: list[dict[str, Any] | None] = [
            {"limit": 50, "since": since, "until": until} for since, until in shards
        ]
        got: list[list[str]] = [[] for _ in shards]
        pages = 0
        while any(params):
            for k, p in enumerate(params):
                if p is None:
                    continue
                r = await c.get(sim.config.feed_path, params=p, headers={"X-Stream-Token": token})
                sim.idle_work()
                pages += 1
                body = r.json()
                got[k] += [e["id"] for e in body["data"]]
                more = body["pagination"]["hasMore"]
                params[k] = {**p, "cursor": body["pagination"]["nextCursor"]} if more else None
    for (since, until), ids in zip(shards, got, strict=True):
        assert ids == [ds.id(i) for i in range(len(ds)) if since <= ds.instant_ms(i) <= until]
    assert pages > 60
    assert renders == pages


async def test_feed_throttle_and_latency(autojump_clock: trio.abc.Clock) -> None:
    sim = Simulator(attrs.evolve(profile("live"), events=20_000, feed=attrs.evolve(
        profile("live").feed, faults=Faults())))  # fmt: skip
    async with client(sim) as c:
        token = await token_for_retrying(c, sim)
        t0 = trio.current_time()
        r = await c.get(
            sim.config.feed_path, params={"limit": 5000}, headers={"X-Stream-Token": token}
        )
        took = trio.current_time() - t0
        assert r.status_code == 200 and 3.5 <= took <= 6.0
        statuses = []
        for _ in range(45):
            r = await c.get(
                sim.config.feed_path, params={"limit": 1}, headers={"X-Stream-Token": token}
            )
            statuses.append(r.status_code)
        assert statuses.count(200) == 39 and statuses[-1] == 429
        assert "Retry-After" in r.headers and "X-RateLimit-Remaining" not in r.headers


async def token_for_retrying(c: httpx.AsyncClient, sim: Simulator) -> str:
    for _ in range(50):
        r = await c.post(
            "/internal/dashboard/stream-access",
            headers={"Cookie": f"dashboard_api_key={sim.api_key}", "Origin": BASE_URL},
        )
        if r.status_code == 200:
            token: str = r.json()["streamAccess"]["token"]
            return token
    raise AssertionError("no token")


async def test_feed_capacity_queues_requests(autojump_clock: trio.abc.Clock) -> None:
    live = profile("live")
    feed = attrs.evolve(live.feed, faults=Faults(), window=Window())
    sim = Simulator(attrs.evolve(live, events=20_000, feed=feed))
    finished: list[float] = []
    async with client(sim) as c:
        token = await token_for_retrying(c, sim)
        t0 = trio.current_time()

        async def one() -> None:
            r = await c.get(
                sim.config.feed_path, params={"limit": 5000}, headers={"X-Stream-Token": token}
            )
            assert r.status_code == 200
            finished.append(trio.current_time() - t0)

        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(one)
    assert max(finished) >= 7.0  # 12 requests, 6 at a time, >= 3.5 s each
    assert sum(f <= 6.0 for f in finished) == 6


# -- faults ----------------------------------------------------------------------------------


def _within(count: int, n: int, rate: float) -> bool:
    return abs(count - n * rate) <= 4 * math.sqrt(n * rate * (1 - rate)) + 1


async def test_fault_kinds_near_their_rates(autojump_clock: trio.abc.Clock) -> None:
    rates = {
        "status_502": 0.05, "status_503": 0.04, "status_504": 0.03, "truncated": 0.05,
        "empty": 0.03, "non_object": 0.03, "dropped": 0.04, "slow": 0.05,
    }  # fmt: skip
    faults = Faults(**rates, missing_fields=0.1, repeated=0.08)  # type: ignore[arg-type]
    cfg = attrs.evolve(SMALL, listing=Endpoint(faults=faults))
    sim = Simulator(cfg)
    seen: dict[str, int] = dict.fromkeys([*rates, "missing_fields", "repeated"], 0)
    n = 1500
    async with client(sim) as c:
        for _ in range(n):
            t0 = trio.current_time()
            try:
                r = await c.get("/api/v1/events", params={"limit": 3})
            except httpx.RemoteProtocolError:
                seen["dropped"] += 1
                continue
            if trio.current_time() - t0 >= 2.0:
                seen["slow"] += 1
            if r.status_code in (502, 503, 504):
                seen[f"status_{r.status_code}"] += 1
                continue
            assert r.status_code == 200
            if not r.content:
                seen["empty"] += 1
                continue
            try:
                body = orjson.loads(r.content)
            except orjson.JSONDecodeError:
                seen["truncated"] += 1
                continue
            if not isinstance(body, dict):
                seen["non_object"] += 1
                continue
            if r.headers.get("X-Chaos-Applied") == "missingFields":
                seen["missing_fields"] += 1
            if len(body["data"]) > 3:
                seen["repeated"] += 1
    page_share = 1 - sum(rates.values()) + rates["slow"]  # pages actually rendered
    for kind, rate in rates.items():
        assert _within(seen[kind], n, rate), (kind, seen[kind], n * rate)
        assert sim.stats.faults[f"listing:{kind}"] == seen[kind]
    assert _within(seen["missing_fields"], round(n * page_share), 0.1), seen
    # the first page never repeats (nothing earlier to repeat): only a few come from page 0
    assert _within(seen["repeated"], round(n * page_share), 0.08) or seen["repeated"] == 0


async def test_chaos_walk_with_retries_covers_everything(autojump_clock: trio.abc.Clock) -> None:
    sim = Simulator(attrs.evolve(profile("chaos"), events=6000))
    order: list[str] = []
    seen: set[str] = set()
    faults = 0
    async with client(sim) as c:
        params: dict[str, Any] = {"limit": 500}
        while True:
            try:
                r = await c.get("/api/v1/events", params=params)
            except httpx.RemoteProtocolError:
                faults += 1
                continue
            if r.status_code == 429:
                await trio.sleep(int(r.headers["Retry-After"]))
                continue
            try:
                body = r.json() if r.status_code == 200 else None
            except ValueError:
                body = None
            if not isinstance(body, dict):
                faults += 1
                continue
            for event in body["data"]:
                if isinstance(event.get("id"), str) and event["id"] not in seen:
                    seen.add(event["id"])
                    order.append(event["id"])
            if not body["pagination"]["hasMore"]:
                break
            params = {"limit": 500, "cursor": body["pagination"]["nextCursor"]}
    expected = list(sim.dataset.ids())
    # events whose id was dropped by missingFields may be missing; everything else, in order
    assert set(order) <= set(expected)
    assert order == [i for i in expected if i in seen]
    assert len(order) >= len(expected) - 20
    assert faults > 0 and sim.stats.rate_limited["listing"] > 0


# -- other endpoints ---------------------------------------------------------------------------


async def test_stats_say_the_time_range_only_when_configured() -> None:
    sim = Simulator(attrs.evolve(SMALL, stats_time_range=True))
    async with client(sim) as c:
        stats = (await c.get("/internal/stats")).json()
    oldest, newest = sim.dataset.time_range_ms()
    assert stats["timeRange"] == {"oldest": oldest, "newest": newest}


async def test_auth_health_stats_root_404() -> None:
    sim = Simulator(SMALL)
    async with httpx.AsyncClient(transport=SimulatorTransport(sim), base_url=BASE_URL) as c:
        assert (await c.get("/internal/health")).status_code == 200
        r = await c.get("/api/v1/events")
        assert r.status_code == 401
        r = await c.get("/api/v1/events", headers={"X-API-Key": "ds_" + "0" * 32})
        assert r.status_code == 401
        r = await c.get("/api/v2/whatever", headers={"X-API-Key": sim.api_key})
        assert r.status_code == 404 and r.json()["code"] == "ENDPOINT_NOT_FOUND"
        assert not any(h.lower().startswith("x-ratelimit") for h in r.headers)
    async with client(sim) as c:
        stats = (await c.get("/internal/stats")).json()
        assert stats["totals"]["events"] == 3000
        assert sum(stats["byType"].values()) == 3000
        assert "timeRange" not in stats  # the contract promises totals only
        assert (await c.get("/api/v1")).status_code == 200
        assert (await c.get("/api/v1/metrics")).json()["data"] == []
        sessions = (await c.get("/api/v1/sessions")).json()
        assert sessions["meta"]["total"] == len(sim.dataset.sessions)
        bulk = await c.post("/api/v1/events/bulk", json={"ids": [sim.dataset.id(3)]})
        assert bulk.json()["data"] == [sim.dataset.event(3)]
        too_many = await c.post("/api/v1/events/bulk", json={"ids": ["x"] * 101})
        assert too_many.status_code == 400


async def test_bulk_is_unreliable_and_may_spend_the_listings_budget(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The contract calls it unreliable: ids left out, fields dropped, the feed's transport faults.
    faults = Faults(omitted=0.3, missing_fields=1.0, missing_fields_share=0.5, status_502=0.2)
    sim = Simulator(attrs.evolve(SMALL, bulk=Endpoint(faults=faults)))
    ids = {"ids": [sim.dataset.id(i) for i in range(100)]}
    answers = []
    async with client(sim) as c:
        for _ in range(40):
            answers.append(await c.post("/api/v1/events/bulk", json=ids))
    ok = [a.json() for a in answers if a.status_code == 200]
    assert 0 < len(ok) < 40 and all(a.status_code in (200, 502) for a in answers)
    assert all(25 <= len(a["data"]) <= 90 and a["meta"]["found"] == len(a["data"]) for a in ok)
    assert all(any(len(e) < 8 or None in e.values() for e in a["data"]) for a in ok)
    assert not any("x-ratelimit-limit" in a.headers for a in answers)

    # Whether it spends the listing's budget the contract does not say; this simulator can.
    shared = attrs.evolve(
        SMALL, listing=Endpoint(window=Window(3, 60.0)), bulk_in_listing_budget=True
    )
    sim = Simulator(shared)
    async with client(sim) as c:
        statuses = []
        for _ in range(2):
            statuses.append((await c.post("/api/v1/events/bulk", json=ids)).status_code)
        statuses.append((await c.get("/api/v1/events", params={"limit": 10})).status_code)
        refused = await c.post("/api/v1/events/bulk", json=ids)
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429 and refused.headers["x-ratelimit-remaining"] == "0"


async def test_submissions_count_missing_extra_repeated_and_limit() -> None:
    sim = Simulator(SMALL)
    ids = list(sim.dataset.ids())

    async def chunked(lines: list[str]) -> AsyncIterator[bytes]:
        text = "\n".join(lines).encode()
        for o in range(0, len(text), 1000):
            yield text[o : o + 1000]

    async with client(sim) as c:
        url = "/api/v1/submissions?github_repo=https://github.com/x/y"
        text = {"Content-Type": "text/plain"}
        checks = []
        for lines in (ids, ids[10:], [*ids, ids[5], "0" * 8 + ids[0][8:]]):
            r = await c.post(url, content=chunked(lines), headers=text)
            assert r.status_code == 200, r.text
            checks.append(r.json()["data"]["check"])
        assert checks[0] == {"distinct": 3000, "missing": 0, "extra": 0, "repeated": 0}
        assert checks[1]["missing"] == 10
        assert checks[2]["repeated"] == 1 and checks[2]["extra"] == 1
        r = await c.post(
            "/api/v1/submissions",
            json={"ids": "\n".join(ids[:-1]), "githubRepoUrl": "https://github.com/x/y"},
        )
        assert r.json()["data"]["check"]["missing"] == 1
        assert r.json()["data"]["remainingSubmissions"] == 1
        r = await c.post("/api/v1/submissions", content=b"nope", headers=text)  # no repo: fails
        assert r.status_code == 400
        r = await c.post(url, content=b"\n".join(i.encode() for i in ids), headers=text)
        assert r.status_code == 429 and r.json()["code"] == "SUBMISSION_LIMIT_REACHED"
        listed = (await c.get("/api/v1/submissions")).json()
        assert listed["meta"]["total"] == 5


# -- configuration ----------------------------------------------------------------------------


def test_profiles_and_config_files(tmp_path: Any) -> None:
    live, fast, chaos = profile("live"), profile("fast"), profile("chaos")
    assert live.listing.window == Window(10, 60.0) and live.cursor_lifetime_s == (116, 119)
    assert fast.listing.window.limit == 0 and fast.feed.faults == Faults()
    assert chaos.events < 100_000 and chaos.token_lifetime_s < 60
    toml = tmp_path / "sim.toml"
    toml.write_text('profile = "chaos"\nevents = 500\n[listing.window]\nlimit = 3\n')
    cfg = load_config(toml)
    assert cfg.events == 500 and cfg.listing.window == Window(3, 13.0)
    assert cfg.feed == chaos.feed
    js = tmp_path / "sim.json"
    js.write_text('{"events": 42, "feed": {"formats": {"iso_z": 1}}}')
    cfg = load_config(js)
    assert cfg.profile == "live" and cfg.events == 42 and cfg.feed.formats == {"iso_z": 1}
    from flowtel._errors import ConfigError

    with pytest.raises(ConfigError):
        config_from_mapping({"bogus": 1})
    with pytest.raises(ConfigError):
        profile("nope")
    assert isinstance(cfg, SimulatorConfig)
