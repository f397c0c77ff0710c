"""The run lock, in-process on a real PostgreSQL: one flowtel run per database, and what
happens when the lock's connection drops (taken again, or lost to another run)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio

import flowtel
from flowtel._database import AlreadyRunning, Database, open_database
from flowtel._errors import ConfigError
from flowtel.testing import Simulator, SimulatorTransport, profile

try:
    from tests.helpers import expected_rows, stored_rows
    from tests.test_database import batch, checkpoint, make_events
    from tests.test_ingest import settings_for
except ImportError:
    from helpers import expected_rows, stored_rows  # type: ignore[no-redef]
    from test_database import batch, checkpoint, make_events  # type: ignore[no-redef]
    from test_ingest import settings_for  # type: ignore[no-redef]


def lock_holders(pg_admin: Any) -> list[int]:
    rows = pg_admin.fetch(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return [r["pid"] for r in rows]


async def until(predicate: Any, seconds: float = 10.0) -> None:
    """Poll a (blocking) predicate: the database's state is only seen by asking it."""
    with trio.fail_after(seconds):
        while not await trio.to_thread.run_sync(predicate):  # noqa: ASYNC110
            await trio.sleep(0.05)


async def test_a_second_holder_is_refused_in_one_line(database_url: str, pg_admin: Any) -> None:
    async with open_database(database_url) as first, open_database(database_url) as second:
        async with first.run_lock():
            assert len(lock_holders(pg_admin)) == 1
            with pytest.raises(AlreadyRunning) as refused:
                async with second.run_lock():
                    pytest.fail("two holders of one run lock")
            message = str(refused.value)
            assert "another flowtel run is already writing to database" in message
            assert "\n" not in message
            assert isinstance(refused.value, ConfigError)  # exit code 2 at the CLI
        assert lock_holders(pg_admin) == []  # released at the end of the block
        async with second.run_lock():  # free again
            assert len(lock_holders(pg_admin)) == 1


async def test_lock_is_per_database(database_url: str, pg_server: Any) -> None:
    other = pg_server.create_database()
    try:
        async with (
            open_database(database_url) as a,
            open_database(other) as b,
            a.run_lock(),
            b.run_lock(),
        ):
            pass
    finally:
        pg_server.drop_database(other)


async def test_taken_again_after_its_connection_is_killed(database_url: str, pg_admin: Any) -> None:
    async with open_database(database_url) as db, db.run_lock(check_interval=0.1):
        before = lock_holders(pg_admin)
        for _ in range(3):
            assert pg_admin.terminate_backends(application_name="flowtel") >= 1
            await until(lambda old=before: lock_holders(pg_admin) not in ([], old))
            before = lock_holders(pg_admin)
        # Commits go on under the new holder (the fence sees the lock held by this run).
        await db.commit(batch(make_events(10), checkpoint(events=10)))
        assert await db.count_events() == 10
    assert lock_holders(pg_admin) == []


async def test_lost_to_another_run_stops_the_block_and_fences_commits(
    database_url: str, pg_admin: Any
) -> None:
    reached_end = False
    async with open_database(database_url) as mine, open_database(database_url) as theirs:
        with pytest.raises(AlreadyRunning, match=r"took the run lock .* stopping this run"):
            async with mine.run_lock(check_interval=0.5):
                lock_pid = lock_holders(pg_admin)[0]
                pg_admin.execute("SELECT pg_terminate_backend($1)", lock_pid)
                async with theirs.run_lock():
                    # Before `mine` notices, its commits must not land: the fence holds them
                    # back until the holder gives up and cancels this block.
                    await mine.commit(batch(make_events(5), checkpoint(events=5)))
                    reached_end = True
        assert not reached_end
        assert await theirs.count_events() == 0


async def test_ingest_refuses_while_another_run_holds_the_lock(database_url: str) -> None:
    sim = Simulator(attrs.evolve(profile("fast"), events=500))
    settings = settings_for(sim, database_url)
    async with open_database(database_url) as db, db.run_lock():
        with pytest.raises(AlreadyRunning):
            await flowtel.ingest(settings, transport=SimulatorTransport(sim))


async def test_two_ingests_at_once_one_completes_exactly(database_url: str, pg_admin: Any) -> None:
    sim = Simulator(attrs.evolve(profile("fast"), events=3_000, seed=4))
    settings = settings_for(sim, database_url)
    outcomes: list[Any] = []

    async def one() -> None:
        try:
            outcomes.append(await flowtel.ingest(settings, transport=SimulatorTransport(sim)))
        except AlreadyRunning as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    refused = [o for o in outcomes if isinstance(o, AlreadyRunning)]
    done = [o for o in outcomes if not isinstance(o, AlreadyRunning)]
    assert len(refused) == 1 and len(done) == 1, outcomes
    assert done[0].outcome == "complete"
    rows, count = stored_rows(pg_admin)
    assert rows == expected_rows(sim) and count == 3_000


def test_database_run_lock_is_the_public_shape() -> None:
    assert callable(Database.run_lock)


# ---- every SQL statement parameterised ---------------------------------------------------------

SQL_WORDS = ("SELECT ", "INSERT ", "UPDATE ", "DELETE ", "CREATE ", " FROM ", " SET ")
# What SQL text may be built from: names fixed in the module (table and column names of the
# schema, none of them from input), never a value.
SQL_CONSTANTS = {"_STAGING", "_EVENT_COLUMNS", "_CHECKPOINT_COLUMNS", "c", "i"}


def test_every_sql_statement_is_parameterised() -> None:
    """Values reach PostgreSQL as $n parameters: SQL text only ever interpolates the module's
    own constant identifiers (checked on the source, so a new statement is checked too)."""
    import ast
    import inspect

    from flowtel import _database

    tree = ast.parse(inspect.getsource(_database))
    built = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value
                for v in node.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
            if not any(word in text.upper() for word in SQL_WORDS):
                continue
            built += 1
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    names = {n.id for n in ast.walk(value.value) if isinstance(n, ast.Name)}
                    assert names <= SQL_CONSTANTS | {"range", "len", "f"}, ast.unparse(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            left = node.left
            if isinstance(left, ast.Constant) and isinstance(left.value, str):
                assert not any(w in left.value.upper() for w in SQL_WORDS), ast.unparse(node)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant)
        ):
            assert not any(w in str(node.func.value.value).upper() for w in SQL_WORDS)
    assert built >= 3  # the staging table, the staged insert, the checkpoint upsert
