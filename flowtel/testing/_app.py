"""The simulated API: one `Simulator` answers `Request`s, whatever face carries them."""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import random
from collections.abc import Callable
from typing import Any

import attrs
import orjson
import trio

from flowtel.testing._config import Endpoint, SimulatorConfig
from flowtel.testing._cursors import Cursor, CursorCodec, CursorError
from flowtel.testing._dataset import Dataset, derive, uuid4_from
from flowtel.testing._faults import FaultDice
from flowtel.testing._formats import FormatMix
from flowtel.testing._http import Request, Response, json_response
from flowtel.testing._limits import Windows
from flowtel.testing._submissions import IdCheck

LISTING, FEED = 0, 1
_UNLIMITED = 1_000_000
# Pages rendered ahead and not yet asked for: one per stream a client walks at once (a full run
# walks the listing and 8 to 10 feed shards), so none is thrown away before it is asked for.
_PAGE_CACHE = 16
_DROPPABLE = ("id", "timestamp", "type", "name", "sessionId", "userId", "properties", "session")


@attrs.define
class SimulatorStats:
    """Counters of what the simulator did (read them in tests)."""

    requests: collections.Counter[tuple[str, int]] = attrs.field(factory=collections.Counter)
    rate_limited: collections.Counter[str] = attrs.field(factory=collections.Counter)
    faults: collections.Counter[str] = attrs.field(factory=collections.Counter)
    pages: int = 0
    events_served: int = 0
    tokens_issued: int = 0
    submissions: int = 0

    def by_endpoint(self, endpoint: str) -> dict[int, int]:
        return {s: n for (e, s), n in self.requests.items() if e == endpoint}

    def summary(self) -> dict[str, Any]:
        """What was served, as JSON: requests by endpoint and status, faults by kind."""
        requests: dict[str, dict[str, int]] = {}
        for (endpoint, status), n in sorted(self.requests.items()):
            requests.setdefault(endpoint, {})[str(status)] = n
        return {
            "requests": requests,
            "faults": dict(sorted(self.faults.items())),
            "pages": self.pages,
            "events": self.events_served,
        }


def _error(status: int, error: str, code: str, message: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "code": code}
    if message is not None:
        body["message"] = message
    return body


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Simulator:
    """The whole contract, in memory. `clock` returns seconds (default `trio.current_time`)."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] | None = None) -> None:
        cfg = config
        self.config = cfg
        self._clock = clock or trio.current_time
        self.dataset = Dataset(cfg)
        self.api_key = cfg.api_key or (
            f"ds_{derive(cfg.seed, 'api-key-1'):016x}{derive(cfg.seed, 'api-key-2'):016x}"
        )
        self.stats = SimulatorStats()
        secret = hashlib.sha256(f"{cfg.seed}:{self.api_key}:cursor".encode()).digest()
        self._cursors = CursorCodec(secret)
        self._rng = random.Random(derive(cfg.seed, "requests"))
        self._listing_windows = Windows(cfg.listing.window.limit, cfg.listing.window.window_s)
        self._feed_windows = Windows(cfg.feed.window.limit, cfg.feed.window.window_s)
        self._sessions_windows = Windows(cfg.sessions_window.limit, cfg.sessions_window.window_s)
        self._dice = {
            "listing": FaultDice(cfg.listing.faults, derive(cfg.seed, "faults-listing")),
            "feed": FaultDice(cfg.feed.faults, derive(cfg.seed, "faults-feed")),
            "token": FaultDice(cfg.token.faults, derive(cfg.seed, "faults-token")),
            "bulk": FaultDice(cfg.bulk.faults, derive(cfg.seed, "faults-bulk")),
        }
        self._mix = {"listing": FormatMix(cfg.listing.formats), "feed": FormatMix(cfg.feed.formats)}
        self._tokens: dict[str, float] = {}
        self._submissions: dict[str, list[dict[str, Any]]] = {}
        self._first_seen: dict[str, float] = {}
        self._capacity: dict[str, trio.Semaphore] = {}
        self._stats_body: bytes | None = None
        self._pages: collections.OrderedDict[tuple[str, int, int], list[str]] = (
            collections.OrderedDict()
        )
        # The next page of each stream just served, oldest first, for `idle_work` (bounded: the
        # in-process transport never calls it).
        self._prefetch: collections.deque[tuple[str, int, int]] = collections.deque(
            maxlen=_PAGE_CACHE
        )

    # -- plumbing --------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock()

    def _request_id(self) -> str:
        return uuid4_from(self._rng)

    def _count(self, endpoint: str, response: Response) -> Response:
        self.stats.requests[(endpoint, response.status)] += 1
        return response

    def _authorised(self, req: Request) -> bool:
        ok = req.headers.get("x-api-key") == self.api_key
        if ok:
            self._first_seen.setdefault(self.api_key, self.now())
        return ok

    @staticmethod
    def _unauthorised() -> Response:
        return json_response(
            401, _error(401, "Unauthorized", "UNAUTHORIZED", "Missing or invalid API key")
        )

    def _events_page(self, endpoint: str, lo: int, hi: int) -> list[str]:
        # A page is served once (a retry renders it again), so a rendered-ahead one leaves the
        # cache as it is served: the cache holds only pages still to be asked for.
        page = self._pages.pop((endpoint, lo, hi), None)
        return self.dataset.render(lo, hi, self._mix[endpoint]) if page is None else page

    def idle_work(self) -> None:
        """Render the next page of each stream just served (real server, between requests)."""
        while self._prefetch:
            key = self._prefetch.popleft()
            if key not in self._pages:
                endpoint, lo, hi = key
                self._pages[key] = self.dataset.render(lo, hi, self._mix[endpoint])
                while len(self._pages) > _PAGE_CACHE:
                    self._pages.popitem(last=False)

    # -- routing -----------------------------------------------------------------------------
    async def handle(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        cfg = self.config
        method = req.method.upper()
        if path == "/internal/health" and method == "GET":
            return self._count("health", json_response(200, {"status": "ok", "time": _iso_now()}))
        route: tuple[str, Callable[[Request], Any]] | None = None
        if method == "GET":
            if path == "/api/v1/events":
                route = ("listing", self._listing)
            elif path == cfg.feed_path.rstrip("/"):
                route = ("feed", self._feed)
            elif path.startswith("/api/v1/events/"):
                route = ("event", self._one_event)
            elif path == "/api/v1":
                route = ("root", self._root)
            elif path == "/internal/stats":
                route = ("stats", self._stats)
            elif path == "/api/v1/sessions":
                route = ("sessions", self._sessions)
            elif path == "/api/v1/metrics":
                route = ("metrics", self._metrics)
            elif path == "/api/v1/submissions":
                route = ("submissions", self._list_submissions)
        elif method == "POST":
            if path == "/internal/dashboard/stream-access":
                route = ("token", self._token)
            elif path == "/api/v1/events/bulk":
                route = ("bulk", self._bulk)
            elif path == "/api/v1/submissions":
                route = ("submissions", self._submit)
        if route is None:
            body = _error(404, "Not Found", "ENDPOINT_NOT_FOUND", f"No route for {method} {path}")
            return self._count("not_found", json_response(404, body))
        name, handler = route
        if not self._authorised(req):
            return self._count(name, self._unauthorised())
        response: Response = await handler(req)
        return self._count(name, response)

    # -- the listing and the feed --------------------------------------------------------------
    def _rate_headers(
        self, verdict_limit: int, remaining: int, reset: int
    ) -> list[tuple[str, str]]:
        return [
            ("X-RateLimit-Limit", str(verdict_limit)),
            ("X-RateLimit-Remaining", str(remaining)),
            ("X-RateLimit-Reset", str(reset)),
        ]

    async def _listing(self, req: Request) -> Response:
        request_id = self._request_id()
        limit_cfg = self.config.listing.window
        verdict = self._listing_windows.hit(self.api_key, self.now())
        if limit_cfg.limit > 0:
            headers = self._rate_headers(verdict.limit, verdict.remaining, verdict.reset_s)
        else:
            headers = self._rate_headers(_UNLIMITED, _UNLIMITED, verdict.reset_s)
        headers.append(("X-Request-ID", request_id))
        if not verdict.allowed:
            self.stats.rate_limited["listing"] += 1
            body = _error(429, "Too Many Requests", "RATE_LIMIT_EXCEEDED")
            body["rateLimit"] = {"limit": verdict.limit, "remaining": 0, "reset": verdict.reset_s}
            headers.append(("Retry-After", str(verdict.reset_s)))
            return json_response(429, body, headers)
        return await self._serve_page(req, "listing", LISTING, request_id, headers, None, None)

    def _token_valid(self, token: str | None) -> bool:
        if token is None:
            return False
        expires = self._tokens.get(token)
        return expires is not None and self.now() < expires

    async def _feed(self, req: Request) -> Response:
        request_id = self._request_id()
        cfg = self.config
        headers = [("X-Request-ID", request_id)]
        if not self._token_valid(req.headers.get(cfg.token_header.lower())):
            body = _error(403, "Forbidden", "INVALID_STREAM_TOKEN", "Invalid or expired token")
            return json_response(403, body, headers)
        verdict = self._feed_windows.hit(self.api_key, self.now())
        if not verdict.allowed:
            self.stats.rate_limited["feed"] += 1
            headers.append(("Retry-After", str(verdict.reset_s)))
            return json_response(429, _error(429, "Too Many Requests", "RATE_LIMITED"), headers)
        bounds: list[int | None] = []
        for name in ("since", "until"):
            raw = req.query.get(name)
            try:
                bounds.append(None if raw in (None, "") else int(str(raw)))
            except ValueError:
                msg = f"{name} must be epoch milliseconds"
                return json_response(
                    400, _error(400, "Bad Request", "INVALID_PARAMETER", msg), headers
                )
        since, until = bounds
        oldest, newest = self.dataset.time_range_ms()
        if (
            (since is not None and since > newest)
            or (until is not None and until < oldest)
            or (since is not None and until is not None and since > until)
        ):
            body = _error(418, "I'm a teapot", "OUT_OF_RANGE", "No data in the requested range")
            return json_response(418, body, headers)
        return await self._serve_page(req, "feed", FEED, request_id, headers, since, until)

    async def _serve_page(
        self,
        req: Request,
        endpoint: str,
        tag: int,
        request_id: str,
        headers: list[tuple[str, str]],
        since: int | None,
        until: int | None,
    ) -> Response:
        cfg = self.config
        ep: Endpoint = cfg.listing if tag == LISTING else cfg.feed
        dice = self._dice[endpoint]
        # Parameters.
        raw_limit = req.query.get("limit")
        try:
            limit = cfg.default_limit if raw_limit in (None, "") else int(str(raw_limit))
        except ValueError:
            body = _error(400, "Bad Request", "INVALID_PARAMETER", "limit must be an integer")
            return json_response(400, body, headers)
        limit = max(1, min(limit, cfg.max_limit))
        lo, end = self.dataset.index_range(since, until)
        raw_cursor = req.query.get("cursor")
        if raw_cursor:
            try:
                cursor = self._cursors.decode(raw_cursor, self.now())
            except CursorError as exc:
                body = _error(400, "Bad Request", exc.code, exc.message)
                return json_response(400, body, headers)
            explicit = (since is not None and since != cursor.since) or (
                until is not None and until != cursor.until
            )
            if cursor.endpoint != tag or explicit:
                body = _error(400, "Bad Request", "CURSOR_INVALID", "Cursor does not match query")
                return json_response(400, body, headers)
            since, until = cursor.since, cursor.until
            lo, end = self.dataset.index_range(since, until)
            lo = cursor.position
        hi = min(end, lo + limit)
        # Latency, bounded concurrency, transport faults.
        fault = dice.transport()
        delay = dice.uniform(ep.latency.base_s) + (hi - lo) * dice.uniform(ep.latency.per_event_s)
        if fault == "slow":
            self.stats.faults[f"{endpoint}:slow"] += 1
            delay += dice.uniform(ep.faults.slow_s)
        if ep.latency.capacity > 0:
            capacity = self._capacity.get(endpoint)
            if capacity is None:
                capacity = self._capacity[endpoint] = trio.Semaphore(ep.latency.capacity)
            async with capacity:
                await trio.sleep(delay)
        elif delay > 0:
            await trio.sleep(delay)
        if fault is not None and fault != "slow" and fault != "truncated":
            self.stats.faults[f"{endpoint}:{fault}"] += 1
            return self._transport_fault(fault, dice, headers)
        # The page.
        events = self._events_page(endpoint, lo, hi)
        chaos = False
        if dice.chance(ep.faults.missing_fields) and events:
            events = self._drop_fields(events, dice, ep)
            chaos = True
            self.stats.faults[f"{endpoint}:missing_fields"] += 1
        if dice.chance(ep.faults.repeated) and lo > 0:
            events = self._repeat(events, lo, limit, dice, ep)
            self.stats.faults[f"{endpoint}:repeated"] += 1
        has_more = hi < end
        next_cursor = None
        if has_more:
            lo_s, hi_s = cfg.cursor_lifetime_s
            lifetime = lo_s if hi_s <= lo_s else self._rng.randint(lo_s, hi_s)
            issued = int(self.now() * 1000)
            next_cursor = self._cursors.encode(Cursor(tag, hi, since, until, issued, lifetime))
            self._prefetch.append((endpoint, hi, min(end, hi + limit)))
        pagination: dict[str, Any] = {
            "limit": limit,
            "hasMore": has_more,
            "nextCursor": next_cursor,
        }
        if next_cursor is not None:
            pagination["cursorExpiresIn"] = lifetime
        meta = {"total": len(self.dataset), "returned": len(events), "requestId": request_id}
        page = b"".join(
            (
                b'{"data":[',
                ",".join(events).encode(),
                b'],"pagination":',
                orjson.dumps(pagination),
                b',"meta":',
                orjson.dumps(meta),
                b"}",
            )
        )
        self.stats.pages += 1
        self.stats.events_served += len(events)
        headers = [*headers, ("Content-Type", "application/json; charset=utf-8")]
        if chaos:
            headers.append(("X-Chaos-Applied", "missingFields"))
        if fault == "truncated":
            return self._cut_off(endpoint, headers, page)
        return Response(200, headers, page)

    def _cut_off(self, endpoint: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        """A 200 whose JSON body is cut off part-way (valid HTTP, bad JSON)."""
        self.stats.faults[f"{endpoint}:truncated"] += 1
        cut = self._rng.randrange(1, max(2, len(body) - 1))
        return Response(200, headers, body[:cut])

    def _transport_fault(
        self, fault: str, dice: FaultDice, headers: list[tuple[str, str]]
    ) -> Response:
        if fault.startswith("status_"):
            status = int(fault.removeprefix("status_"))
            if dice.rng.random() < 0.5:
                html = [*headers, ("Content-Type", "text/html")]
                return Response(status, html, dice.html_5xx(status))
            code = {502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT"}[status]
            error = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
            return json_response(status, _error(status, error[status], code), headers)
        if fault == "empty":
            return Response(200, [*headers, ("Content-Type", "application/json")], b"")
        if fault == "non_object":
            body = b"[]" if dice.rng.random() < 0.5 else b'"ok"'
            return Response(200, [*headers, ("Content-Type", "application/json")], body)
        if fault == "rate_limited":
            retry = max(1, int(dice.uniform((1.0, 10.0))))
            body_429 = _error(429, "Too Many Requests", "RATE_LIMITED")
            return json_response(429, body_429, [*headers, ("Retry-After", str(retry))])
        # dropped: headers announce the whole body, the connection dies part-way.
        filler = b'{"data":[' + b" " * 4096
        return Response(200, [*headers, ("Content-Type", "application/json")], filler, 100)

    def _drop_fields(self, events: list[str], dice: FaultDice, ep: Endpoint) -> list[str]:
        events = list(events)
        hits = max(1, round(len(events) * ep.faults.missing_fields_share))
        for k in dice.rng.sample(range(len(events)), min(hits, len(events))):
            event = orjson.loads(events[k])
            field = dice.rng.choice(_DROPPABLE)
            if dice.rng.random() < 0.5:
                event.pop(field, None)
            else:
                event[field] = None
            events[k] = orjson.dumps(event).decode()
        return events

    def _repeat(
        self, events: list[str], lo: int, limit: int, dice: FaultDice, ep: Endpoint
    ) -> list[str]:
        events = list(events)
        lo_c, hi_c = ep.faults.repeated_count
        count = dice.rng.randint(lo_c, max(lo_c, hi_c))
        start = max(0, lo - limit)
        for _ in range(count):
            i = dice.rng.randrange(start, lo)
            earlier = self.dataset.render(
                i, i + 1, self._mix["listing" if ep is self.config.listing else "feed"]
            )
            events.insert(dice.rng.randrange(0, len(events) + 1), earlier[0])
        return events

    async def _one_event(self, req: Request) -> Response:
        request_id = self._request_id()
        verdict = self._listing_windows.hit(self.api_key, self.now())
        limit = verdict.limit if self.config.listing.window.limit > 0 else _UNLIMITED
        remaining = verdict.remaining if self.config.listing.window.limit > 0 else _UNLIMITED
        headers = self._rate_headers(limit, remaining, verdict.reset_s)
        headers.append(("X-Request-ID", request_id))
        if not verdict.allowed:
            self.stats.rate_limited["listing"] += 1
            body = _error(429, "Too Many Requests", "RATE_LIMIT_EXCEEDED")
            body["rateLimit"] = {"limit": verdict.limit, "remaining": 0, "reset": verdict.reset_s}
            headers.append(("Retry-After", str(verdict.reset_s)))
            return json_response(429, body, headers)
        body = _error(404, "Not Found", "EVENT_NOT_FOUND", "Event not found")
        return json_response(404, body, headers)

    # -- the token ------------------------------------------------------------------------------
    async def _token(self, req: Request) -> Response:
        cfg = self.config
        cookies = {}
        for part in req.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            cookies[name] = value
        origin = req.headers.get("origin", "").rstrip("/")
        allowed = {f"http://{req.host}", cfg.base_url.rstrip("/")}
        if cookies.get("dashboard_api_key") != self.api_key or origin not in allowed:
            body = _error(403, "Forbidden", "DASHBOARD_REQUIRED", "Dashboard access only")
            return json_response(403, body)
        dice = self._dice["token"]
        fault = dice.transport()
        if fault == "slow":
            self.stats.faults["token:slow"] += 1
            await trio.sleep(dice.uniform(cfg.token.faults.slow_s))
        elif fault is not None and fault != "truncated":
            self.stats.faults[f"token:{fault}"] += 1
            return self._transport_fault(fault, dice, [])
        now = self.now()
        for stale in [t for t, exp in self._tokens.items() if exp <= now]:
            del self._tokens[stale]
        token = f"{self._rng.getrandbits(256):064x}"
        self._tokens[token] = now + cfg.token_lifetime_s
        self.stats.tokens_issued += 1
        payload = {
            "streamAccess": {
                "endpoint": cfg.feed_path,
                "token": token,
                "expiresIn": cfg.token_lifetime_s,
                "tokenHeader": cfg.token_header,
            },
            "meta": {"generatedAt": _iso_now()},
        }
        return json_response(200, payload)

    # -- small endpoints ------------------------------------------------------------------------
    async def _root(self, req: Request) -> Response:
        cfg = self.config
        payload = {
            "name": "Flowtel events API (simulator)",
            "version": "v1",
            "profile": cfg.profile,
            "endpoints": {
                "events": "GET /api/v1/events?limit=&cursor=",
                "sessions": "GET /api/v1/sessions",
                "metrics": "GET /api/v1/metrics",
                "bulk": "POST /api/v1/events/bulk",
                "submissions": "POST /api/v1/submissions?github_repo=",
                "streamAccess": "POST /internal/dashboard/stream-access",
                "stats": "GET /internal/stats",
                "health": "GET /internal/health",
            },
            "limits": {"maxLimit": cfg.max_limit, "defaultLimit": cfg.default_limit},
        }
        return json_response(200, payload)

    def warm_up(self) -> None:
        """Compute what the live service keeps ready: its totals by type. Counting them walks
        every event (half a second at 3M), which the first /internal/stats, a run's first
        request, would otherwise wait for. The real server calls this before it listens."""
        if self._stats_body is None:
            payload = {
                "totals": {
                    "events": len(self.dataset),
                    "users": self.dataset.users,
                    "sessions": len(self.dataset.sessions),
                },
                "byType": self.dataset.type_counts(),
            }
            if self.config.stats_time_range:
                oldest, newest = self.dataset.time_range_ms()
                payload["timeRange"] = {"oldest": oldest, "newest": newest}
            self._stats_body = orjson.dumps(payload)

    async def _stats(self, req: Request) -> Response:
        self.warm_up()
        assert self._stats_body is not None
        return Response(200, [("Content-Type", "application/json")], self._stats_body)

    async def _sessions(self, req: Request) -> Response:
        window = self.config.sessions_window
        verdict = self._sessions_windows.hit(self.api_key, self.now())
        limit_h = verdict.limit if window.limit > 0 else _UNLIMITED
        remaining = verdict.remaining if window.limit > 0 else _UNLIMITED
        headers = self._rate_headers(limit_h, remaining, verdict.reset_s)
        headers.append(("X-Request-ID", self._request_id()))
        if not verdict.allowed:
            headers.append(("Retry-After", str(verdict.reset_s)))
            body = _error(429, "Too Many Requests", "RATE_LIMIT_EXCEEDED")
            return json_response(429, body, headers)
        try:
            limit = max(1, min(1000, int(req.query.get("limit") or 100)))
            page = max(1, int(req.query.get("page") or 1))
        except ValueError:
            body = _error(400, "Bad Request", "INVALID_PARAMETER", "limit/page must be integers")
            return json_response(400, body, headers)
        sessions = self.dataset.sessions
        chunk = sessions[(page - 1) * limit : page * limit]
        payload = {
            "data": chunk,
            "pagination": {"limit": limit, "page": page, "hasMore": page * limit < len(sessions)},
            "meta": {"total": len(sessions), "returned": len(chunk)},
        }
        return json_response(200, payload, headers)

    async def _metrics(self, req: Request) -> Response:
        return json_response(200, {"data": [], "meta": {"total": 0}})

    async def _bulk(self, req: Request) -> Response:
        cfg = self.config
        headers: list[tuple[str, str]] = [("X-Request-ID", self._request_id())]
        if cfg.bulk_in_listing_budget:
            verdict = self._listing_windows.hit(self.api_key, self.now())
            headers += self._rate_headers(verdict.limit, verdict.remaining, verdict.reset_s)
            if not verdict.allowed and cfg.listing.window.limit > 0:
                self.stats.rate_limited["listing"] += 1
                headers.append(("Retry-After", str(verdict.reset_s)))
                body = _error(429, "Too Many Requests", "RATE_LIMIT_EXCEEDED")
                return json_response(429, body, headers)
        try:
            payload = orjson.loads(await req.read(1024 * 1024))
            ids = payload["ids"]
            if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            body = _error(400, "Bad Request", "INVALID_BODY", 'Expected {"ids": [...]}')
            return json_response(400, body, headers)
        if len(ids) > cfg.max_bulk_ids:
            msg = f"At most {cfg.max_bulk_ids} ids"
            return json_response(400, _error(400, "Bad Request", "TOO_MANY_IDS", msg), headers)
        # Unreliable: the faults of the feed, and ids left out of the answer.
        dice = self._dice["bulk"]
        faults = cfg.bulk.faults
        fault = dice.transport()
        delay = dice.uniform(cfg.bulk.latency.base_s)
        if fault == "slow":
            self.stats.faults["bulk:slow"] += 1
            delay += dice.uniform(faults.slow_s)
        if delay > 0:
            await trio.sleep(delay)
        if fault is not None and fault not in ("slow", "truncated"):
            self.stats.faults[f"bulk:{fault}"] += 1
            return self._transport_fault(fault, dice, headers)
        found = []
        for event_id in ids:
            i = self.dataset.index_of(event_id)
            if i is not None and not dice.chance(faults.omitted):
                found.append(orjson.dumps(self.dataset.event(i)).decode())
        if dice.chance(faults.missing_fields) and found:
            found = self._drop_fields(found, dice, cfg.bulk)
            self.stats.faults["bulk:missing_fields"] += 1
        meta = orjson.dumps({"requested": len(ids), "found": len(found)})
        content = b'{"data":[' + ",".join(found).encode() + b'],"meta":' + meta + b"}"
        headers.append(("Content-Type", "application/json; charset=utf-8"))
        if fault == "truncated":
            return self._cut_off("bulk", headers, content)
        return Response(200, headers, content)

    # -- submissions ----------------------------------------------------------------------------
    async def _list_submissions(self, req: Request) -> Response:
        mine = self._submissions.get(self.api_key, [])
        return json_response(200, {"data": mine, "meta": {"total": len(mine)}})

    async def _submit(self, req: Request) -> Response:
        cfg = self.config
        mine = self._submissions.setdefault(self.api_key, [])
        if len(mine) >= cfg.max_submissions:
            body = _error(429, "Too Many Requests", "SUBMISSION_LIMIT_REACHED")
            body["message"] = f"At most {cfg.max_submissions} submissions per key"
            body["remainingSubmissions"] = 0
            return json_response(429, body)
        number = len(mine) + 1
        record: dict[str, Any] = {"submissionNumber": number, "success": False}
        mine.append(record)  # failed ones count too
        self.stats.submissions += 1
        check = IdCheck(self.dataset)
        content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
        repo = req.query.get("github_repo")
        try:
            if content_type == "application/json":
                payload = orjson.loads(await req.read(512 * 1024 * 1024))
                if not isinstance(payload, dict):
                    raise ValueError("body must be an object")
                ids = payload.get("ids", "")
                repo = repo or payload.get("githubRepoUrl")
                for event_id in ids.split("\n") if isinstance(ids, str) else list(ids):
                    check.add(str(event_id))
            else:
                async for chunk in req.body:
                    check.feed(chunk)
                check.close()
        except (ValueError, TypeError, AttributeError) as exc:
            record["error"] = "INVALID_BODY"
            body = _error(400, "Bad Request", "INVALID_BODY", str(exc))
            return json_response(400, body)
        if not repo:
            record["error"] = "MISSING_REPO"
            msg = "github_repo is required"
            return json_response(400, _error(400, "Bad Request", "MISSING_REPO", msg))
        elapsed_ms = int((self.now() - self._first_seen.get(self.api_key, self.now())) * 1000)
        minutes, seconds = divmod(elapsed_ms // 1000, 60)
        data = {
            "submissionId": uuid4_from(self._rng),
            "eventCount": check.lines,
            "githubRepoUrl": repo,
            "submittedAt": _iso_now(),
            "timeToSubmit": {
                "ms": elapsed_ms,
                "seconds": round(elapsed_ms / 1000, 3),
                "minutes": round(elapsed_ms / 60000, 3),
                "formatted": f"{minutes}m {seconds}s",
            },
            "submissionNumber": number,
            "remainingSubmissions": cfg.max_submissions - number,
            "check": {
                "distinct": check.distinct,
                "missing": check.missing,
                "extra": check.extra,
                "repeated": check.repeated,
            },
        }
        record.update(data, success=True)
        message = f"Submission received: {check.distinct} distinct ids of {len(self.dataset)}"
        return json_response(200, {"success": True, "data": data, "message": message})
