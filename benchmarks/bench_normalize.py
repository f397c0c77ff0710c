"""How fast the Normalizer is, per event, on a realistic 5,000-event page.

    /tmp/venv/bin/python benchmarks/bench_normalize.py

The page is what /api/v1/events sends: 1/3 integer-ms and 2/3 ISO-Z timestamps, uuid ids,
3,000 users and 60,000 sessions, small properties. Prints µs/event for:
- hand-written: parse each field and call Event(...) directly (no validation of the text
  fields or properties, so it does less than the real path);
- cattrs default: converter.structure of a pre-flattened dict with a converter that only has
  the uuid/datetime hooks (cattrs' own Optional and str handling);
- flowtel's converter: its Event hook, every field checked strictly (what normalize() runs
  for a clean event);
- normalize(): the final path, the whole page (loop, checks, list building).
Best of several rounds, since the machine is a noisy 2-core VM.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import cattrs

from flowtel._convert import _optional_user_uuid, _optional_uuid, converter, parse_uuid
from flowtel._model import Event
from flowtel._normalize import normalize
from flowtel._timestamps import format_instant, parse_instant

PAGE = 5_000
ROUNDS = 7
TYPES = ["page_view", "click", "api_call", "form_submit", "scroll", "purchase", "error"]
PAGES = ["/home", "/pricing", "/docs", "/cart", "/checkout"]


def make_page(seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    users = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(3_000)]
    sessions = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(60_000)]
    start = 1_769_541_612_369
    page = []
    for i in range(PAGE):
        ms = start - i * 800 - rng.randrange(800)
        instant = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        session = rng.choice(sessions)
        page.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "sessionId": session,
                "userId": rng.choice(users),
                "type": rng.choice(TYPES),
                "name": f"event_{rng.getrandbits(30):x}",
                "properties": {"page": rng.choice(PAGES)},
                "timestamp": ms if i % 3 == 0 else format_instant(instant),
                "session": {
                    "id": session,
                    "deviceType": rng.choice(["mobile", "tablet", "desktop"]),
                    "browser": rng.choice(["Chrome", "Safari", "Firefox", "Edge"]),
                },
            }
        )
    return page


def hand_written(raw: dict[str, Any]) -> Event:
    session = raw.get("session") or {}
    return Event(
        id=parse_uuid(raw["id"]),
        occurred_at=parse_instant(raw["timestamp"]),
        session_id=_optional_uuid(raw.get("sessionId")),  # parsed as the real path does
        user_id=_optional_user_uuid(raw.get("userId")),
        type=raw.get("type"),
        name=raw.get("name"),
        properties=raw.get("properties"),
        device_type=session.get("deviceType"),
        browser=session.get("browser"),
    )


def flatten(raw: dict[str, Any]) -> dict[str, Any]:
    session = raw.get("session") or {}
    return {
        "id": raw["id"],
        "occurred_at": raw["timestamp"],
        "session_id": raw.get("sessionId"),
        "user_id": raw.get("userId"),
        "type": raw.get("type"),
        "name": raw.get("name"),
        "properties": raw.get("properties"),
        "device_type": session.get("deviceType"),
        "browser": session.get("browser"),
    }


def best_us_per_event(run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return best / PAGE * 1e6


def main() -> None:
    page = make_page()
    plain = cattrs.Converter()
    plain.register_structure_hook(uuid.UUID, lambda value, _: parse_uuid(value))
    plain.register_structure_hook(dt.datetime, lambda value, _: parse_instant(value))
    flat = [flatten(raw) for raw in page]
    flowtel_hook = converter.get_structure_hook(Event)

    events, rejected = normalize(page)
    assert len(events) == PAGE and not rejected
    assert events == [hand_written(raw) for raw in page]
    assert events == [plain.structure(item, Event) for item in flat]

    results = {
        "hand-written Event(...)": best_us_per_event(lambda: [hand_written(r) for r in page]),
        "cattrs default, pre-flattened": best_us_per_event(
            lambda: [plain.structure(item, Event) for item in flat]
        ),
        "cattrs default, flatten + structure": best_us_per_event(
            lambda: [plain.structure(flatten(r), Event) for r in page]
        ),
        "flowtel converter, Event hook": best_us_per_event(
            lambda: [flowtel_hook(r, Event) for r in page]
        ),
        "normalize() (final path)": best_us_per_event(lambda: normalize(page)),
    }
    for label, us in results.items():
        print(f"{label:38s} {us:6.2f} µs/event  {us * PAGE / 1000:6.1f} ms/page")


if __name__ == "__main__":
    main()
