"""The simulated dataset: N events from a seed, random access, memory O(1) in N.

Events come in blocks of 64 consecutive indices. A block's randomness comes from one
`random.Random` seeded with (seed, block), so event i depends on (seed, i) only. Block b holds
instants in (start_b - span, start_b], start_b = newest - b * span with span a whole number of
seconds, so instants are non-increasing across blocks; inside a block they are sorted offsets,
with ties (an event reusing the previous instant) and whole seconds (an instant floored to its
second) at configured shares. Ids are a keyed bijection of the index, so an id decodes back to
its index.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
from collections.abc import Iterator
from typing import Any

import orjson

from flowtel.testing._config import SimulatorConfig
from flowtel.testing._formats import FormatMix

BLOCK = 64
_M60 = (1 << 60) - 1
_M62 = (1 << 62) - 1
_VARIANT = 1 << 63
_UNPACK = struct.Struct(f"<{2 * BLOCK}Q").unpack

TYPES = (
    "page_view",
    "click",
    "api_call",
    "form_submit",
    "scroll",
    "purchase",
    "error",
    "video_play",
)
DEVICES = ("mobile", "tablet", "desktop")
BROWSERS = ("Chrome", "Safari", "Firefox", "Edge")
_PAGES = ("/home", "/pricing", "/docs", "/blog", "/signup", "/checkout", "/account", "/search")
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyz"
DETAILS = 4096
# `{"id":"<uuid>",` records, filled digit by digit: (offset in record, p or q, hex digit).
_ID_TEMPLATE = b'{"id":"00000000-0000-4000-8000-000000000000",'
_ID_RECORD = len(_ID_TEMPLATE)
_ID_LAYOUT = (
    [(7 + d, 0, 1 + d) for d in range(8)]
    + [(16 + d, 0, 9 + d) for d in range(4)]
    + [(22 + d, 0, 13 + d) for d in range(3)]
    + [(26 + d, 1, d) for d in range(4)]
    + [(31 + d, 1, 4 + d) for d in range(12)]
)  # distinct (type, name, properties) combinations


def derive(seed: int, label: str) -> int:
    """A 64-bit key from the seed, one per purpose."""
    digest = hashlib.blake2b(f"{seed}:{label}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def uuid4_from(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128) & ~(0xF << 76) & ~(0x3 << 62) | (4 << 76) | (2 << 62):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _properties(kind: str, rng: random.Random) -> dict[str, Any]:
    page = rng.choice(_PAGES)
    if kind == "page_view":
        return {"page": page}
    if kind == "click":
        return {"page": page, "element": rng.choice(("button#signup", "a.nav", "div.card"))}
    if kind == "api_call":
        return {
            "endpoint": f"/api/v1/{rng.choice(('items', 'orders', 'me'))}",
            "status": rng.choice((200, 200, 201, 404, 500)),
            "durationMs": rng.randrange(5, 2000),
        }
    if kind == "form_submit":
        return {"page": page, "form": rng.choice(("signup", "login", "contact"))}
    if kind == "scroll":
        return {"page": page, "depth": rng.randrange(0, 101)}
    if kind == "purchase":
        return {"amount": rng.randrange(100, 50000) / 100, "currency": "USD"}
    if kind == "error":
        return {
            "message": rng.choice(("timeout", "not found", "internal")),
            "code": rng.choice((400, 404, 500)),
        }
    return {"videoId": f"vid_{rng.randrange(1000)}", "position": rng.randrange(0, 600)}


class Dataset:
    """Random access to the N simulated events (index 0 is the newest)."""

    def __init__(self, cfg: SimulatorConfig) -> None:
        n = cfg.events
        self._n = n
        self._seed = cfg.seed
        self._block_key = derive(cfg.seed, "blocks") << 40
        span = round(BLOCK * cfg.mean_gap_ms / 1000) * 1000
        self._span = max(1000, span)
        self._start = cfg.newest_ms - cfg.newest_ms % 1000
        self._tie = int(cfg.tie_share * 256)
        self._whole = int(cfg.whole_second_share * 256)
        # Id: p = xorshift(odd multiplier * (i ^ k0)) is a bijection on 60 bits (the shift is
        # at least half the width, so the xorshift is its own inverse); q = c * p + k1 fills the
        # other 62 bits and lets a foreign id be told apart.
        self._k0 = derive(cfg.seed, "id-xor") & _M60
        self._a = derive(cfg.seed, "id-a") & _M60 | 1
        self._a_inv = pow(self._a, -1, 1 << 60)
        self._k1 = derive(cfg.seed, "id-q") & _M62
        self._c = derive(cfg.seed, "id-c") & _M62 | 1
        # Users and sessions: a small table sized from N.
        scale = n / 3_000_000
        n_users = cfg.users or max(1, min(n, round(3000 * scale)))
        n_sessions = cfg.sessions or max(1, min(n, round(60_000 * scale)))
        rng = random.Random(derive(cfg.seed, "sessions"))
        users = [uuid4_from(rng) for _ in range(n_users)]
        self._sessions: list[dict[str, Any]] = []
        self._head: list[str] = []  # '"sessionId":"..","userId":"..",'
        self._tail: list[str] = []  # ',"session":{...}}'
        for _ in range(n_sessions):
            s = {
                "id": uuid4_from(rng),
                "userId": rng.choice(users),
                "deviceType": rng.choice(DEVICES),
                "browser": rng.choice(BROWSERS),
            }
            self._sessions.append(s)
            self._head.append(f'"sessionId":"{s["id"]}","userId":"{s["userId"]}",')
            session = orjson.dumps(
                {"id": s["id"], "deviceType": s["deviceType"], "browser": s["browser"]}
            ).decode()
            self._tail.append(f',"session":{session}}}')
        self.users = n_users
        rng = random.Random(derive(cfg.seed, "details"))
        self._details: list[tuple[str, str, dict[str, Any]]] = []
        self._detail_json: list[str] = []
        for _ in range(DETAILS):
            kind = rng.choice(TYPES)
            name = "event_" + "".join(rng.choice(_ALNUM) for _ in range(6))
            props = _properties(kind, rng)
            self._details.append((kind, name, props))
            self._detail_json.append(
                f'"type":"{kind}","name":"{name}","properties":{orjson.dumps(props).decode()},'
                '"timestamp":'
            )
        self._block = functools.lru_cache(maxsize=512)(self._compute_block)
        self._ids_cache = functools.lru_cache(maxsize=512)(self._compute_ids)

    # -- sizes ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return self._sessions

    # -- blocks --------------------------------------------------------------------------
    def _compute_block(self, b: int) -> tuple[list[int], tuple[int, ...]]:
        """(instants, random words) of block b, from (seed, b) only.

        Offsets from the block's start are drawn, some rounded up to a whole second (the
        start is a whole second, so the instant is one too), some copied from a neighbour
        (a tie); sorted, they give non-increasing instants without any carried state.
        """
        words = _UNPACK(random.Random(self._block_key | b).randbytes(16 * BLOCK))
        span = self._span
        start = self._start - b * span
        tie, whole = self._tie, self._whole
        head = words[:BLOCK]
        offsets = [
            -(-(w % span) // 1000) * 1000 if (w >> 48) & 0xFF < whole else w % span for w in head
        ]
        offsets = [offsets[j - 1] if (head[j] >> 56) < tie else offsets[j] for j in range(BLOCK)]
        offsets.sort()
        return [start - o for o in offsets], words[BLOCK:]

    def _compute_ids(self, b: int) -> list[str]:
        """`{"id":"<id>",` of each event of block b (same ids as `id`, hex of a whole block)."""
        k0, a, k1, c = self._k0, self._a, self._k1, self._c
        ps = [
            (x := ((i ^ k0) * a) & _M60) ^ (x >> 30)
            for i in range(b * BLOCK, min(self._n, (b + 1) * BLOCK))
        ]
        qs = [(p * c + k1) & _M62 | _VARIANT for p in ps]
        n = len(ps)
        fmt = f">{n}Q"
        hexes = (struct.pack(fmt, *ps).hex().encode(), struct.pack(fmt, *qs).hex().encode())
        buf = bytearray(_ID_TEMPLATE * n)
        for dst, src, k in _ID_LAYOUT:  # one strided copy per hex digit, for the whole block
            buf[dst::_ID_RECORD] = hexes[src][k::16]
        text = buf.decode()
        return [text[o : o + _ID_RECORD] for o in range(0, n * _ID_RECORD, _ID_RECORD)]

    def instant_ms(self, i: int) -> int:
        """The canonical instant of event `i` in epoch milliseconds."""
        self._check(i)
        return self._block(i // BLOCK)[0][i % BLOCK]

    def time_range_ms(self) -> tuple[int, int]:
        """(oldest, newest) instants in epoch milliseconds."""
        return self.instant_ms(self._n - 1), self.instant_ms(0)

    def _check(self, i: int) -> None:
        if not 0 <= i < self._n:
            raise IndexError(i)

    # -- ids -----------------------------------------------------------------------------
    def _p(self, i: int) -> int:
        x = ((i ^ self._k0) * self._a) & _M60
        return x ^ (x >> 30)

    def _q(self, p: int) -> int:
        return (p * self._c + self._k1) & _M62

    def id(self, i: int) -> str:
        """The canonical id (uuid v4) of event `i`."""
        p = self._p(i)
        h1 = f"{p:015x}"
        h2 = f"{self._q(p) | _VARIANT:016x}"
        return f"{h1[:8]}-{h1[8:12]}-4{h1[12:]}-{h2[:4]}-{h2[4:]}"

    def index_of(self, event_id: str) -> int | None:
        """The index whose id is `event_id`, or None if it is not one of the dataset's."""
        s = event_id.strip().lower()
        if len(s) != 36 or s[8] != "-" or s[13] != "-" or s[14] != "4" or s[18] != "-":
            return None
        if s[23] != "-":
            return None
        try:
            p = int(s[0:8] + s[9:13] + s[15:18], 16)
            q = int(s[19:23] + s[24:36], 16)
        except ValueError:
            return None
        if q >> 62 != 2 or self._q(p) != q & _M62:
            return None
        i = (((p ^ (p >> 30)) * self._a_inv) & _M60) ^ self._k0
        return i if i < self._n else None

    def ids(self) -> Iterator[str]:
        """Every canonical id, newest first."""
        for i in range(self._n):
            yield self.id(i)

    # -- events --------------------------------------------------------------------------
    def _parts(self, i: int) -> tuple[int, int, int]:
        """(instant, session index, detail index, format bits) of event i."""
        times, words = self._block(i // BLOCK)
        w = words[i % BLOCK]
        return times[i % BLOCK], w % len(self._head), (w >> 24) % DETAILS

    def event(self, i: int) -> dict[str, Any]:
        """The canonical event `i` (timestamp as int epoch ms)."""
        self._check(i)
        t, s, d = self._parts(i)
        kind, name, props = self._details[d]
        session = self._sessions[s]
        return {
            "id": self.id(i),
            "sessionId": session["id"],
            "userId": session["userId"],
            "type": kind,
            "name": name,
            "properties": dict(props),
            "timestamp": t,
            "session": {
                "id": session["id"],
                "deviceType": session["deviceType"],
                "browser": session["browser"],
            },
        }

    def format_bits(self, i: int) -> int:
        return self._block(i // BLOCK)[1][i % BLOCK] >> 36

    def type_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(TYPES, 0)
        for b in range((self._n + BLOCK - 1) // BLOCK):
            words = _UNPACK(random.Random(self._block_key | b).randbytes(16 * BLOCK))[BLOCK:]
            for w in words[: min(BLOCK, self._n - b * BLOCK)]:
                counts[self._details[(w >> 24) % DETAILS][0]] += 1
        return counts

    def render(self, lo: int, hi: int, mix: FormatMix) -> list[str]:
        """JSON texts of events lo..hi-1 (the hot path: precomputed fragments only)."""
        out: list[str] = []
        head, tail, det = self._head, self._tail, self._detail_json
        n_s = len(head)
        with_ms, whole = mix.with_ms, mix.whole_second
        for b in range(lo // BLOCK, (hi - 1) // BLOCK + 1):
            times, words = self._block(b)
            ids = self._ids_cache(b)
            first = max(lo - b * BLOCK, 0)
            last = min(hi - b * BLOCK, len(ids))
            if first or last < BLOCK:
                times, words, ids = times[first:last], words[first:last], ids[first:last]
            sess = [w % n_s for w in words]
            out += [
                f"{i}{head[s]}{det[(w >> 24) % DETAILS]}"
                f"{(with_ms if t % 1000 else whole)[(w >> 36) & 0xFF](t, w >> 44)}{tail[s]}"
                for i, s, w, t in zip(ids, sess, words, times, strict=True)
            ]
        return out

    # -- search --------------------------------------------------------------------------
    def first_at_or_before(self, t: int) -> int:
        """The smallest index whose instant is <= t (len if none)."""
        lo, hi = 0, self._n
        while lo < hi:
            mid = (lo + hi) // 2
            if self.instant_ms(mid) <= t:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def index_range(self, since: int | None, until: int | None) -> tuple[int, int]:
        """Indices [lo, hi) of the events with since <= instant <= until (bounds inclusive)."""
        lo = 0 if until is None else self.first_at_or_before(until)
        hi = self._n if since is None else self.first_at_or_before(since - 1)
        return lo, max(lo, hi)
