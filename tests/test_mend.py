"""Damaged feed pages mended by the bulk endpoint, against the in-process simulator."""

from __future__ import annotations

import logging

import attrs
import pytest
import trio

from flowtel._mend import EVENT_FIELDS, whole
from flowtel._model import Checkpoint
from flowtel._timestamps import to_ms
from flowtel.testing._config import Endpoint, Faults, Window

try:
    from tests.helpers import Recorder
    from tests.test_paginator import QUIET, ids_of, quiet_sim, walk
except ImportError:
    from helpers import Recorder  # type: ignore[no-redef]
    from test_paginator import QUIET, ids_of, quiet_sim, walk  # type: ignore[no-redef]

FEED = Checkpoint("feed-001", "feed")


def damaged_sim(events: int, damage: float, **changes: object) -> object:
    faults = Faults(missing_fields=damage, missing_fields_share=0.02)
    return quiet_sim(events, feed=attrs.evolve(QUIET, faults=faults), **changes)


def feed_requests(sim: object) -> int:
    return sum(n for (name, _), n in sim.stats.requests.items() if name == "feed")  # type: ignore[attr-defined]


async def test_damaged_pages_are_mended_at_fewer_requests(autojump_clock: trio.abc.Clock) -> None:
    mended = damaged_sim(5_000, 0.4)
    pages, stats = await walk(mended, FEED, feed=True, page_size=500, mend=True)
    ids = ids_of(pages)
    # Every event once, and whole: the tie at each early end is not sent again.
    assert len(ids) == len(set(ids)) == 5_000
    assert all(whole(e) for page in pages for e in page.raw_events)
    assert stats.mended_pages > 0 and stats.mended_events > 0  # type: ignore[attr-defined]
    assert stats.damaged_pages == 0  # type: ignore[attr-defined]

    refetched = damaged_sim(5_000, 0.4)
    pages, stats = await walk(refetched, FEED, feed=True, page_size=500)
    assert len(set(ids_of(pages))) == 5_000 and stats.damaged_pages > 0  # type: ignore[attr-defined]
    assert feed_requests(mended) < feed_requests(refetched)


async def test_a_page_ends_before_its_first_event_without_an_id(
    autojump_clock: trio.abc.Clock,
) -> None:
    sim = damaged_sim(2_000, 1.0)
    recorder = Recorder(sim)
    pages, _ = await walk(sim, FEED, feed=True, page_size=500, mend=True, recorder=recorder)
    assert len(set(ids_of(pages))) == 2_000
    # Every answer was damaged. A page with an event without an id ended before it, and the
    # stream went on by a range from the page's oldest instant, not by the cursor.
    queries = [q for _, path, status, q in recorder.log if path.endswith("/feed") and status == 200]
    early = [page for page in pages if page.checkpoint.cursor is None and not page.checkpoint.done]
    assert len(early) >= len(pages) // 2
    untils = {int(q["until"]) for q in queries if "cursor" not in q and "until" in q}
    assert {to_ms(page.checkpoint.watermark) for page in early} <= untils


async def test_what_the_bulk_endpoint_does_not_give_whole_is_not_kept(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The bulk endpoint leaves out half the ids and damages what it sends: a page ends before
    # the first event it did not mend, and nothing is lost or stored damaged.
    bulk = Endpoint(faults=Faults(omitted=0.5, missing_fields=0.5, missing_fields_share=0.3))
    sim = damaged_sim(3_000, 0.5, bulk=bulk)
    pages, stats = await walk(sim, FEED, feed=True, page_size=500, mend=True)
    ids = ids_of(pages)
    assert len(ids) == len(set(ids)) == 3_000
    assert all(whole(e) for page in pages for e in page.raw_events)
    assert stats.mended_pages > 0  # type: ignore[attr-defined]
    assert sim.stats.faults["bulk:missing_fields"] > 0


async def test_a_failing_bulk_endpoint_costs_no_event(autojump_clock: trio.abc.Clock) -> None:
    sim = damaged_sim(2_000, 0.5, bulk=Endpoint(faults=Faults(status_502=1.0)))
    pages, stats = await walk(sim, FEED, feed=True, page_size=500, mend=True)
    assert len(set(ids_of(pages))) == 2_000
    assert all(whole(e) for page in pages for e in page.raw_events)
    assert stats.bulk_requests == sim.stats.requests[("bulk", 502)] > 0  # type: ignore[attr-defined]


async def test_a_slow_bulk_endpoint_is_not_waited_for(autojump_clock: trio.abc.Clock) -> None:
    # Its stream waits for it: an answer not back in 3 s is given up, and the page ends before
    # its first damaged event instead.
    slow = Endpoint(faults=Faults(slow=1.0, slow_s=(30.0, 30.0)))
    sim = damaged_sim(2_000, 0.5, bulk=slow)
    started = trio.current_time()
    pages, stats = await walk(sim, FEED, feed=True, page_size=500, mend=True)
    assert len(set(ids_of(pages))) == 2_000
    assert all(whole(e) for page in pages for e in page.raw_events)
    assert stats.mended_events == 0 and stats.bulk_requests > 0  # type: ignore[attr-defined]
    assert trio.current_time() - started <= stats.bulk_requests * 3.0 + 1  # type: ignore[attr-defined]


async def test_a_bulk_endpoint_with_a_budget_is_left_alone(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # If the bulk endpoint spends the listing's budget, mending would cost the listing a
    # request for each page it saves the feed: flowtel stops at its first answer.
    sim = damaged_sim(
        2_000, 0.5, bulk_in_listing_budget=True, listing=attrs.evolve(QUIET, window=Window(10, 60))
    )
    with caplog.at_level(logging.WARNING, logger="flowtel.mend"):
        pages, stats = await walk(sim, FEED, feed=True, page_size=500, mend=True)
    assert len(set(ids_of(pages))) == 2_000
    assert stats.bulk_requests == 1  # type: ignore[attr-defined]
    assert stats.damaged_pages > 0  # type: ignore[attr-defined]
    assert "spends a rate-limit budget" in caplog.text


def test_whole_means_every_field_of_the_contract() -> None:
    event = {field: "x" for field in EVENT_FIELDS}
    assert whole(event)
    assert not whole({**event, "type": None})
    assert not whole({k: v for k, v in event.items() if k != "session"})
    assert not whole("not an event")
