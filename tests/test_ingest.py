"""ingest(): the whole pipeline in-process, on the simulator and a real PostgreSQL."""

from __future__ import annotations

import attrs
import pytest
import trio

import flowtel
from flowtel import Settings
from flowtel.testing import Endpoint, Latency, Simulator, SimulatorTransport, Window, profile

try:
    from tests.helpers import expected_rows, stored_rows
except ImportError:
    from helpers import expected_rows, stored_rows  # type: ignore[no-redef]


def quick_chaos(events: int, seed: int) -> Simulator:
    """The chaos profile's faults without its waits: these tests run in real time (the
    Writer's database I/O cannot run under a virtual clock), so limits and latency stay off;
    tests in virtual time and the end-to-end tests cover those."""
    chaos = profile("chaos")
    faults = attrs.evolve(chaos.listing.faults, slow_s=(0.01, 0.05))

    def calm(endpoint: Endpoint) -> Endpoint:
        return attrs.evolve(endpoint, window=Window(), latency=Latency(), faults=faults)

    return Simulator(
        attrs.evolve(
            chaos, events=events, seed=seed, listing=calm(chaos.listing), feed=calm(chaos.feed)
        )
    )


def settings_for(sim: Simulator, database_url: str, **changes: object) -> Settings:
    base = Settings(
        api_url=sim.config.base_url,
        api_key=sim.api_key,
        database_url=database_url,
        page_size=500,
        backoff_base=0.05,
        backoff_cap=1.0,
    )
    return attrs.evolve(base, **changes)


async def test_chaos_run_stores_exactly_the_dataset(database_url: str, pg_admin: object) -> None:
    sim = quick_chaos(4_000, seed=13)
    summary = await flowtel.ingest(
        settings_for(sim, database_url), transport=SimulatorTransport(sim)
    )
    rows, count = stored_rows(pg_admin)
    assert rows == expected_rows(sim)
    assert count == len(sim.dataset)
    assert summary.outcome == "complete"
    assert summary.total_in_database == len(sim.dataset) == summary.api_total
    assert summary.inserted == len(sim.dataset)
    assert summary.retries > 0


@pytest.mark.parametrize("source", ["events", "feed"])
async def test_each_source_alone(database_url: str, pg_admin: object, source: str) -> None:
    sim = Simulator(attrs.evolve(profile("fast"), events=3_000, seed=3))
    settings = settings_for(sim, database_url, source=source)
    summary = await flowtel.ingest(settings, transport=SimulatorTransport(sim))
    rows, _ = stored_rows(pg_admin)
    assert rows == expected_rows(sim)
    # No faults in this profile: no page twice, and no request for the time range: the newest
    # shard's first page (its density and the API's total put the oldest) is kept.
    assert summary.requests == summary.pages
    if source == "events":
        assert summary.pages == 3_000 // 500
    else:  # eight time shards, each a page or two
        assert 8 <= summary.pages <= 16


async def test_a_clean_run_stores_no_event_twice(
    database_url: str, pg_admin: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Shards share their edge instants and splits cut streams mid-walk, so the server sends
    some events to two streams: those at an edge, and the listing's (it has no lower bound)
    past its bound. Each stream leaves what is at or below its bound to the shard below: a
    run without faults hands the Writer no event twice."""
    caplog.set_level("INFO", "flowtel.shards")
    fast = profile("fast")
    slow_listing = attrs.evolve(fast.listing, latency=Latency(base_s=(0.1, 0.1)))
    config = attrs.evolve(fast, events=20_000, seed=4, tie_share=0.3, listing=slow_listing)
    sim = Simulator(config)  # the listing is split as the feed's shards finish before it
    summary = await flowtel.ingest(
        settings_for(sim, database_url), transport=SimulatorTransport(sim)
    )
    rows, _ = stored_rows(pg_admin)
    assert rows == expected_rows(sim)
    assert "split events:" in caplog.text
    assert summary.inserted == len(sim.dataset) and summary.duplicates == 0


async def test_cancelled_run_resumes_exactly(database_url: str, pg_admin: object) -> None:
    sim = quick_chaos(5_000, seed=21)
    settings = settings_for(sim, database_url, page_size=250)
    # Wherever these land (fetching, splitting, committing), the end state must be exact.
    for stop_after in (0.15, 0.3, 0.45, 0.6, 0.8, 1.0):
        with trio.move_on_after(stop_after):
            await flowtel.ingest(settings, transport=SimulatorTransport(sim))
    summary = await flowtel.ingest(settings, transport=SimulatorTransport(sim))
    rows, count = stored_rows(pg_admin)
    assert rows == expected_rows(sim) and count == len(sim.dataset)
    assert summary.outcome == "complete"
    checkpoints = pg_admin.fetch("SELECT done FROM checkpoints")  # type: ignore[attr-defined]
    assert checkpoints and all(row["done"] for row in checkpoints)


async def test_a_finished_run_has_nothing_left(database_url: str, pg_admin: object) -> None:
    sim = Simulator(attrs.evolve(profile("fast"), events=1_000))
    settings = settings_for(sim, database_url)
    await flowtel.ingest(settings, transport=SimulatorTransport(sim))
    again = await flowtel.ingest(settings, transport=SimulatorTransport(sim))
    assert again.outcome == "complete" and again.inserted == 0 and again.pages == 0


async def test_normalizer_lets_other_tasks_run_within_a_page() -> None:
    # The Writer's answers from PostgreSQL are handled between slices of a page, not after it.
    from flowtel._ingest import NORMALIZE_SLICE, normalize_pages
    from flowtel._model import Batch, Checkpoint, Page
    from flowtel._stats import RunStats

    raw = [
        {"id": f"00000000-0000-4000-8000-{i:012d}", "timestamp": 1769541612369 + i}
        for i in range(3000)
    ]
    assert NORMALIZE_SLICE <= 1000  # a few ms of work between two checkpoints
    send_pages, receive_pages = trio.open_memory_channel[Page](1)
    send_batches, receive_batches = trio.open_memory_channel[Batch](1)
    ticks = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(normalize_pages, receive_pages, send_batches, RunStats())
        await send_pages.send(Page("feed-001", raw, Checkpoint("feed-001", "feed")))
        await send_pages.aclose()
        with trio.move_on_after(5):
            while True:
                try:
                    batch = receive_batches.receive_nowait()
                    break
                except trio.WouldBlock:
                    ticks += 1
                    await trio.lowlevel.checkpoint()
    assert [str(e.id) for e in batch.events] == [r["id"] for r in raw]
    assert ticks >= 3000 // NORMALIZE_SLICE  # one a slice at least (a whole page at once: 1-2)


async def test_a_batch_holds_the_raw_page_it_was_normalized_from() -> None:
    # Freed before the events that share its texts and properties, a page leaves the heap full
    # of holes that slow every page after it; so the page lives exactly as long as its batch.
    from flowtel._ingest import normalize_pages
    from flowtel._model import Batch, Checkpoint, Page
    from flowtel._stats import RunStats

    raw = [{"id": f"00000000-0000-4000-8000-{i:012d}", "timestamp": 1769541612369} for i in (1, 2)]
    raw.append({"id": "not a uuid", "timestamp": 1769541612369})
    send_pages, receive_pages = trio.open_memory_channel[Page](1)
    send_batches, receive_batches = trio.open_memory_channel[Batch](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(normalize_pages, receive_pages, send_batches, RunStats())
        async with send_pages:
            await send_pages.send(Page("feed-001", raw, Checkpoint("feed-001", "feed")))
        batch = await receive_batches.receive()
    assert len(batch.events) == 2 and len(batch.rejected) == 1
    assert batch.raw_events is raw


@pytest.mark.parametrize("source", ["events", "auto"])
async def test_no_page_is_held_while_every_stream_waits_for_its_answer(
    database_url: str, source: str
) -> None:
    # A stream spends most of a live run waiting for its next answer. Every stage once kept
    # its last page (or batch) through that wait, and the plan's first page lived all run:
    # about eleven decoded pages (6.7 MB each) were always alive, and the heap grew around them.
    import gc

    slow = Latency(base_s=(0.2, 0.3))
    fast = profile("fast")
    sim = Simulator(
        attrs.evolve(
            fast,
            events=6_000,
            seed=8,
            listing=attrs.evolve(fast.listing, latency=slow),
            feed=attrs.evolve(fast.feed, latency=slow),
        )
    )

    def event_lists() -> set[int]:
        return {
            id(o)
            for o in gc.get_objects()
            if type(o) is list and len(o) >= 20 and type(o[0]) is dict and "id" in o[0]
        }

    not_pages = event_lists()  # lists the simulator holds (its dataset), there before the run
    run: list[flowtel.Run] = []
    samples: list[int] = []  # decoded pages alive, sampled while the run commits

    async def sample_while_committing() -> None:
        while not run or run[0].stats.inserted < len(sim.dataset):
            if run and run[0].stats.inserted > 0:
                samples.append(len(event_lists() - not_pages))
            await trio.sleep(0.01)

    settings = settings_for(sim, database_url, source=source)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_while_committing)
        summary = await flowtel.ingest(
            settings, transport=SimulatorTransport(sim), on_start=run.append
        )
    assert summary.total_in_database == len(sim.dataset)
    assert len(samples) >= 20 and max(samples) >= 1  # the count does see a page in hand
    # At some moment while committing, every stream was waiting and no page was alive.
    assert min(samples) == 0, sorted(samples)
