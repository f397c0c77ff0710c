"""flowtel._database against a real PostgreSQL (see conftest.py): no mocks."""

from __future__ import annotations

import datetime as dt
import gc
import socket
import uuid
from typing import Any

import asyncpg
import attrs
import pytest
import trio
import trio_asyncio

from flowtel._database import (
    CommitResult,
    Database,
    _timestamptz_decode,
    _timestamptz_encode,
    open_database,
)
from flowtel._errors import ConfigError, WriteError
from flowtel._model import Batch, Checkpoint, Event, Rejected

try:
    from tests.pg import with_database
except ImportError:
    from pg import with_database  # type: ignore[no-redef]

T0 = dt.datetime(2026, 1, 27, 19, 19, 13, 629000, tzinfo=dt.UTC)


def make_events(n: int, *, start: int = 0) -> list[Event]:
    return [
        Event(
            id=uuid.UUID(int=start + i + 1),
            occurred_at=T0 - dt.timedelta(milliseconds=start + i),
            session_id=uuid.UUID(int=10**6 + i % 7),
            user_id=None,
            type="click",
            name=f"event_{i}",
            properties={"page": f"/p/{i}", "n": i} if i % 3 else None,
            device_type="mobile",
            browser="Firefox",
        )
        for i in range(n)
    ]


def checkpoint(stream: str = "feed-0", **kw: Any) -> Checkpoint:
    return Checkpoint(stream=stream, source="feed", **kw)


def batch(events: list[Event], *cps: Checkpoint, rejected: list[Rejected] | None = None) -> Batch:
    return Batch(events=events, rejected=rejected or [], checkpoints=list(cps))


async def test_commit_inserts_and_counts_duplicates(database_url: str, pg_admin: Any) -> None:
    async with open_database(database_url) as db:
        events = make_events(100)
        first = await db.commit(batch(events + events[:5], checkpoint(events=105, pages=1)))
        assert first == CommitResult(inserted=100, duplicates=5, rejected=0)
        again = await db.commit(batch(events[50:] + make_events(10, start=100)))
        assert again == CommitResult(inserted=10, duplicates=50, rejected=0)
        assert await db.count_events() == 110
        assert await db.count_distinct_ids() == 110
    row = pg_admin.fetch("SELECT * FROM events WHERE id = $1", events[1].id)[0]
    assert row["occurred_at"] == events[1].occurred_at
    assert row["properties"] == '{"page": "/p/1", "n": 1}' or row["properties"].startswith("{")
    assert pg_admin.fetchval("SELECT properties FROM events WHERE id = $1", events[0].id) is None
    assert (
        pg_admin.fetchval("SELECT properties->>'page' FROM events WHERE id=$1", events[2].id)
        == "/p/2"
    )


async def test_new_ids_copy_straight_into_events_and_conflicts_go_through_staging(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="flowtel.database")
    events = make_events(30)
    async with open_database(database_url) as db:
        assert await db.commit(batch(events[:20])) == CommitResult(20, 0, 0)
        copies = [r.getMessage() for r in caplog.records if "COPY" in r.getMessage()]
        assert copies == ["commit: COPY 20 events (direct)"]
        caplog.clear()
        # Ids 11..20 are stored already: the direct COPY fails whole, staging dedupes.
        assert await db.commit(batch(events[10:])) == CommitResult(10, 10, 0)
        copies = [r.getMessage() for r in caplog.records if "COPY" in r.getMessage()]
        assert copies == ["commit: COPY 20 events (direct)", "commit: COPY 20 events (staged)"]
        assert await db.count_events() == await db.count_distinct_ids() == 30


async def test_an_id_twice_in_one_batch_stores_its_first_occurrence(
    database_url: str, pg_admin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="flowtel.database")
    events = make_events(4)
    again = attrs.evolve(events[1], name="the second occurrence")
    async with open_database(database_url) as db:
        result = await db.commit(batch([*events[:2], again, *events[2:], again]))
    assert result == CommitResult(inserted=4, duplicates=2, rejected=0)
    copies = [r.getMessage() for r in caplog.records if "COPY" in r.getMessage()]
    assert copies == ["commit: COPY 6 events (direct)", "commit: COPY 4 events (staged)"]
    stored = pg_admin.fetchval("SELECT name FROM events WHERE id = $1", events[1].id)
    assert stored == events[1].name


async def test_rejects_keep_raw_text_and_stream(database_url: str, pg_admin: Any) -> None:
    raw_bad = '{"id": null, "timestamp": "x\\u0000", "broken": '
    rejected = [Rejected(raw=raw_bad, reason="no id"), Rejected(raw="not json\x00", reason="nul")]
    async with open_database(database_url) as db:
        result = await db.commit(batch([], checkpoint("shard-3"), rejected=rejected))
        assert result == CommitResult(inserted=0, duplicates=0, rejected=2)
        assert await db.count_rejected() == 2
    rows = pg_admin.fetch("SELECT raw, reason, stream FROM rejected_events ORDER BY id")
    assert rows[0] == {"raw": raw_bad, "reason": "no id", "stream": "shard-3"}
    assert rows[1]["raw"] == "not json\\u0000"


async def test_unstorable_values_become_rejects(database_url: str) -> None:
    good = make_events(3)
    nul_text = attrs.evolve(make_events(1, start=50)[0], name="a\x00b")
    nul_json = attrs.evolve(make_events(1, start=60)[0], properties={"k": "\x00"})
    surrogate = attrs.evolve(make_events(1, start=70)[0], browser="\udcff")
    not_json = attrs.evolve(make_events(1, start=80)[0], properties={"k": {1, 2}})  # a set
    # The text `\u0000` (a backslash, then u0000) is no NUL: it is stored.
    nul_lookalike = attrs.evolve(make_events(1, start=90)[0], properties={"k": "\\u0000"})
    async with open_database(database_url) as db:
        result = await db.commit(
            batch([*good, nul_text, nul_json, surrogate, not_json, nul_lookalike], checkpoint())
        )
        assert result == CommitResult(inserted=4, duplicates=0, rejected=4)
        assert await db.count_rejected() == 4


async def test_checkpoints_round_trip_and_upsert(database_url: str) -> None:
    cp = checkpoint(
        since_ms=1, until_ms=2, cursor="c1", watermark=T0, cursor_expires_at=T0, events=5, pages=1
    )
    later = attrs.evolve(cp, cursor=None, done=True, events=9, pages=2)
    async with open_database(database_url) as db:
        await db.commit(batch(make_events(5), cp, checkpoint("other")))
        await db.commit(batch([], cp, later))  # the last of a stream wins
        assert await db.load_checkpoints() == [later, checkpoint("other")]


# Instants around the edges of timestamptz's wire form (microseconds since 2000-01-01 UTC).
EDGE_INSTANTS = [
    dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),  # negative on the wire
    dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
    T0,
    dt.datetime(2099, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 29, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),  # an offset
]


async def test_instants_round_trip_exactly_through_the_timestamptz_codec(
    database_url: str, pg_admin: Any
) -> None:
    events = [
        attrs.evolve(event, occurred_at=instant)
        for event, instant in zip(make_events(len(EDGE_INSTANTS)), EDGE_INSTANTS, strict=True)
    ]
    cps = [
        checkpoint(f"s{i}", watermark=instant, cursor_expires_at=instant)
        for i, instant in enumerate(EDGE_INSTANTS)
    ]
    async with open_database(database_url) as db:
        await db.commit(batch(events, *cps))
        loaded = await db.load_checkpoints()
    # Read back through asyncpg's own codec, and as the server's text.
    stored = pg_admin.fetch("SELECT id, occurred_at, occurred_at::text AS text FROM events")
    assert {row["id"]: row["occurred_at"] for row in stored} == {
        e.id: e.occurred_at for e in events
    }
    assert "1999-12-31 23:59:59.999999+00" in {row["text"] for row in stored}
    assert [(cp.watermark, cp.cursor_expires_at) for cp in loaded] == [
        (instant, instant) for instant in EDGE_INSTANTS
    ]
    assert {cp.watermark.tzinfo for cp in loaded if cp.watermark} == {dt.UTC}


def test_timestamptz_infinities_decode_as_asyncpg_does(pg_admin: Any) -> None:
    infinity = pg_admin.fetchval("SELECT 'infinity'::timestamptz")
    minus_infinity = pg_admin.fetchval("SELECT '-infinity'::timestamptz")
    assert _timestamptz_decode((2**63 - 1,)) == infinity == dt.datetime.max
    assert _timestamptz_decode((-(2**63),)) == minus_infinity == dt.datetime.min
    with pytest.raises(TypeError):
        _timestamptz_encode(dt.datetime(2026, 1, 1))  # naive: which zone is unknown


async def test_schema_is_idempotent_and_covers_the_model(database_url: str, pg_admin: Any) -> None:
    async with open_database(database_url), open_database(database_url):
        pass
    async with trio.open_nursery() as nursery:  # concurrent appliers: the advisory lock
        for _ in range(3):
            nursery.start_soon(_open_close, database_url)
    columns = {
        (r["table_name"], r["column_name"])
        for r in pg_admin.fetch("SELECT table_name, column_name FROM information_schema.columns")
    }
    for field in attrs.fields(Checkpoint):
        assert ("checkpoints", field.name) in columns
    for field in attrs.fields(Rejected):
        assert ("rejected_events", field.name) in columns
    for field in attrs.fields(Event):
        name = "occurred_at" if field.name == "occurred_at" else field.name
        assert ("events", name) in columns


async def _open_close(dsn: str) -> None:
    async with open_database(dsn):
        pass


async def test_a_failing_statement_rolls_back_events_and_checkpoint(
    database_url: str, pg_admin: Any
) -> None:
    async with open_database(database_url) as db:
        await db.commit(batch(make_events(10), checkpoint(events=10)))
        # A trigger makes the checkpoint upsert (after the COPY and INSERT) fail.
        pg_admin.execute(
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN RAISE EXCEPTION 'boom'; END$$;"
            " CREATE TRIGGER boom BEFORE UPDATE ON checkpoints FOR EACH ROW EXECUTE FUNCTION boom()"
        )
        with pytest.raises(WriteError, match="boom"):
            await db.commit(batch(make_events(10, start=10), checkpoint(events=20)))
        assert await db.count_events() == 10
        assert (await db.load_checkpoints())[0].events == 10
        pg_admin.execute("DROP TRIGGER boom ON checkpoints")
        assert (
            await db.commit(batch(make_events(10, start=10), checkpoint(events=20)))
        ).inserted == 10


@pytest.mark.parametrize("deadline", [0.0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.2])
async def test_cancelled_commit_is_all_or_nothing(database_url: str, deadline: float) -> None:
    big = make_events(30_000)
    async with open_database(database_url) as db:
        await db.commit(batch([], checkpoint(events=0)))
        with trio.move_on_after(deadline):
            await db.commit(batch(big, checkpoint(events=30_000)))
        count = await db.count_events()
        (cp,) = await db.load_checkpoints()
        assert (count, cp.events) in {(0, 0), (30_000, 30_000)}
        # Still usable, and exact.
        result = await db.commit(batch(make_events(10, start=30_000), checkpoint(events=30_010)))
        assert result.inserted == 10
        assert await db.count_events() == count + 10


async def test_cancel_from_another_task_while_copying(database_url: str) -> None:
    async with open_database(database_url) as db:
        for delay in (0.01, 0.03, 0.06):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(db.commit, batch(make_events(40_000), checkpoint(events=1)))
                await trio.sleep(delay)
                nursery.cancel_scope.cancel()
            count = await db.count_events()
            cps = await db.load_checkpoints()
            assert (count, [c.events for c in cps]) in ([0, []], [40_000, [1]]) or (
                count,
                [c.events for c in cps],
            ) in ((0, []), (40_000, [1]))
        await db.commit(batch(make_events(40_000), checkpoint(events=1)))
        assert await db.count_events() == 40_000


async def test_reconnects_after_pg_terminate_backend(database_url: str, pg_admin: Any) -> None:
    async with open_database(database_url) as db:
        await db.commit(batch(make_events(100), checkpoint(events=100)))
        assert pg_admin.terminate_backends(application_name="flowtel") >= 1
        result = await db.commit(batch(make_events(100, start=50), checkpoint(events=200)))
        assert result == CommitResult(inserted=50, duplicates=50, rejected=0)
        assert await db.count_events() == 150


async def test_reconnects_when_terminated_mid_commit(database_url: str, pg_admin: Any) -> None:
    # command_timeout: asyncpg can miss a connection dropped mid-COPY over a unix socket;
    # the watchdog then retries it (this is what the embedded server exercises). 5 s, not 1:
    # on a loaded machine the 40,000-event COPY itself took longer than 1 s, every retry timed
    # out too, and the test failed when the reconnect deadline ran out.
    async with open_database(database_url, command_timeout=5.0) as db:
        for delay in (0.005, 0.02, 0.05):
            async with trio.open_nursery() as nursery:

                async def kill(delay: float = delay) -> None:
                    await trio.sleep(delay)
                    await trio.to_thread.run_sync(
                        lambda: pg_admin.terminate_backends(application_name="flowtel")
                    )

                nursery.start_soon(kill)
                await db.commit(batch(make_events(40_000), checkpoint(events=40_000)))
            assert await db.count_events() == 40_000
            assert [c.events for c in await db.load_checkpoints()] == [40_000]


async def test_a_connection_garbled_while_it_is_set_up_is_replaced(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backend terminated while the pool sets up its new connection can leave asyncpg's
    # state garbled: the set-up's next statement raises InternalClientError (seen once in
    # test_faults.py::test_connections_killed_mid_run_then_exact). Injected here, once.
    set_up = Database._init_connection
    calls = 0

    async def garbled_once(conn: Any) -> None:
        nonlocal calls
        calls += 1
        await set_up(conn)
        if calls == 1:
            raise asyncpg.exceptions._base.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            )

    monkeypatch.setattr(Database, "_init_connection", staticmethod(garbled_once))
    async with open_database(database_url) as db:
        result = await db.commit(batch(make_events(100), checkpoint(events=100)))
        assert result == CommitResult(inserted=100, duplicates=0, rejected=0)
        assert await db.count_events() == 100
    assert calls >= 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unread_error_of_a_lost_connection_does_not_stop_the_run(
    database_url: str,
) -> None:
    """A connection terminated mid-operation can leave an asyncio future failed with
    "connection was closed" that nobody awaits any more: the commit already gave up on that
    connection and retries on a new one. trio-asyncio's default handler raises such an
    error into the loop, which ended a run that had recovered (seen once, under load)."""
    async with open_database(database_url) as db:
        loop = trio_asyncio.current_loop.get()
        future = loop.create_future()
        future.set_exception(
            asyncpg.exceptions.ConnectionDoesNotExistError(
                "connection was closed in the middle of operation"
            )
        )
        del future
        gc.collect()  # the future's __del__ hands the error to the loop's exception handler
        await trio.sleep(0.1)
        assert await db.count_events() == 0


async def test_unreachable_database_raises_write_error_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = f"postgresql://flowtel:s3cretpw@127.0.0.1:{_closed_port()}/x"
    async with open_database(dsn, schema=False, reconnect_timeout=0.3) as db:
        start = trio.current_time()
        with pytest.raises(WriteError) as info:
            await db.commit(batch(make_events(1)))
        assert trio.current_time() - start >= 0.3
    # Never reached, so never "lost": the retries say what they wait for.
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retries and all("cannot reach the database" in m for m in retries), retries
    message = str(info.value)
    assert message.startswith("database unreachable for 0.3 s")
    assert "s3cretpw" not in message and "\n" not in message
    with pytest.raises(WriteError, match="unreachable"):
        async with open_database(dsn, reconnect_timeout=0.2):
            pass


async def test_another_applications_tables_are_not_taken_for_flowtels(
    database_url: str, pg_admin: Any
) -> None:
    pg_admin.execute("CREATE TABLE events (id int, payload text); CREATE TABLE runs (n int)")
    with pytest.raises(ConfigError, match=r"has tables that are not flowtel's \(events, runs\)"):
        async with open_database(database_url, reconnect_timeout=1):
            pass
    assert pg_admin.fetchval("SELECT to_regclass('schema_meta')") is None  # nothing created


async def test_config_errors_are_one_line_without_password(database_url: str) -> None:
    cases = [
        with_database(database_url, "flowtel_no_such_db"),
        "postgresql://u:s3cretpw@127.0.0.1:notaport/x",
        "mysql://u:s3cretpw@127.0.0.1/x",
        "postgresql://u:s3cretpw@x@127.0.0.1/x",  # an '@' left unencoded in the password
    ]
    messages = []
    for dsn in cases:
        with pytest.raises(ConfigError) as info:
            async with open_database(dsn, reconnect_timeout=1):
                pass
        message = str(info.value)
        messages.append(message)
        assert "s3cretpw" not in message and "\n" not in message, message
    assert "write an '@' in the user name or password as %40" in messages[-1]


async def test_iter_ids_streams_every_id_once(database_url: str) -> None:
    async with open_database(database_url) as db:
        events = make_events(2_345)
        await db.commit(batch(events))
        ids = [i async for i in db.iter_ids(chunk=500)]
        assert len(ids) == 2_345 == len(set(ids))
        assert set(ids) == {str(e.id) for e in events}
        assert [i async for i in db.iter_ids(chunk=2_345)] == ids


async def test_runs_and_submissions(database_url: str) -> None:
    async with open_database(database_url) as db:
        assert await db.last_run() is None
        run = await db.record_run_start()
        await db.record_run_end(run, {"events_written": 5, "outcome": "ok"})
        last = await db.last_run()
        assert last is not None and last["summary"] == {"events_written": 5, "outcome": "ok"}
        sub = await db.record_submission("https://github.com/a/b", 3)
        await db.finish_submission(sub, accepted=True, http_status=200, response_body="{}")
        (row,) = await db.submissions()
        assert row["accepted"] and row["id_count"] == 3 and row["http_status"] == 200
        status = await db.status()
        assert status["events"] == 0 and status["last_run"]["id"] == run


async def test_works_inside_an_existing_trio_asyncio_loop(database_url: str) -> None:
    import trio_asyncio

    async with trio_asyncio.open_loop(), open_database(database_url) as db:
        assert isinstance(db, Database)
        assert await db.count_events() == 0
