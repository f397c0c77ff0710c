"""PostgreSQL for flowtel: asyncpg, bridged into Trio by trio-asyncio.

Everything here is called from Trio. `open_database` opens a trio-asyncio loop itself when the
calling task has none (`trio_asyncio.current_loop.get() is None`), so callers need not care;
when one is running it is reused. The loop is remembered by the `Database`, so tasks started
from a nursery opened *before* `open_database` can use it too.

The cancellation hazards of asyncpg under trio-asyncio (../shared/stack-notes.md) are handled
here and nowhere else: a transaction ends (COMMIT or ROLLBACK) in a shielded, time-capped scope;
a connection goes back to the pool in a shielded scope; the pool closes in a shielded, capped
scope that falls back to `terminate()`. No `executemany` of many rows: bulk data goes by COPY.

asyncpg and OSError failures become flowtel errors at this boundary: settings the user must fix
raise `ConfigError` (one line, never the password), everything else `WriteError`. A dropped
connection or a server away for a restart is retried, whole batch, for `reconnect_timeout`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import operator
import random
import re
import socket
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import chain
from typing import Any, TypeVar

import asyncpg
import attrs
import orjson
import trio
import trio_asyncio

from flowtel._convert import jsonb_text
from flowtel._errors import ConfigError, WriteError
from flowtel._model import Batch, Checkpoint, Event, Rejected
from flowtel._schema import SCHEMA_LOCK_KEY, schema_sql

T = TypeVar("T")

log = logging.getLogger("flowtel.database")

# Caps on work that runs shielded from cancellation: long enough for a healthy server, short
# enough that Ctrl-C still ends the process in seconds when the server is gone.
TXN_END_TIMEOUT = 10.0
RELEASE_TIMEOUT = 5.0
CLOSE_TIMEOUT = 5.0
# Default cap on one operation (a whole commit): past it the connection is terminated and the
# work retried, so a stalled server becomes a retryable error, not a hang.
COMMAND_TIMEOUT = 60.0

# One flowtel run per database: a session-level advisory lock, held on a connection of its own
# for the whole run. PostgreSQL drops it with the session, so a killed run never leaves it held.
# Advisory keys are per database: runs against other databases never meet. "flowtel!" in ASCII.
RUN_LOCK_KEY = 0x666C6F7774656C21
# How often the holder checks that its lock connection is alive and still holds the lock.
RUN_LOCK_CHECK_INTERVAL = 1.0

_STAGING = "flowtel_staging"
_EVENT_COLUMNS = (
    "id",
    "occurred_at",
    "session_id",
    "user_id",
    "type",
    "name",
    "properties",
    "device_type",
    "browser",
)
_TEXT_FIELDS = ("type", "name", "device_type", "browser")
_CHECKPOINT_COLUMNS = tuple(f.name for f in attrs.fields(Checkpoint))
_REJECT_FIELDS = tuple(f.name for f in attrs.fields(Rejected))

_CREATE_STAGING = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (
    id uuid NOT NULL, occurred_at timestamptz NOT NULL, session_id uuid, user_id uuid,
    type text, name text, properties jsonb, device_type text, browser text
) ON COMMIT DELETE ROWS
"""
_INSERT_STAGED = (
    f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)})"
    f" SELECT {', '.join(_EVENT_COLUMNS)} FROM {_STAGING}"
    " ON CONFLICT (id) DO NOTHING"
)
# The checkpoint carries absolute values (not increments), so writing it twice is harmless:
# retrying a whole batch after a reconnect is idempotent.
_UPSERT_CHECKPOINT = (
    f"INSERT INTO checkpoints ({', '.join(_CHECKPOINT_COLUMNS)}, updated_at)"
    f" VALUES ({', '.join(f'${i}' for i in range(1, len(_CHECKPOINT_COLUMNS) + 1))}, now())"
    " ON CONFLICT (stream) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _CHECKPOINT_COLUMNS[1:])
    + ", updated_at = now()"
)

# Errors a new connection may cure: the server restarted, our backend was terminated, the
# network blipped, a statement timed out on a stalled server.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)
# Commits the server undid to break a deadlock (two Writer lanes inserting the same ids in
# another order), tried again before the run stops.
MAX_ROLLBACK_RETRIES = 10
# Values the server or the driver cannot store (NUL in text, lone surrogates, \u0000 in jsonb).
_BAD_DATA: tuple[type[BaseException], ...] = (
    asyncpg.DataError,  # server side: SQLSTATE class 22
    asyncpg.exceptions._base.DataError,  # client side: a value its codec cannot encode
    UnicodeError,
    orjson.JSONEncodeError,  # properties the jsonb codec cannot serialize
)


@attrs.frozen
class CommitResult:
    """What one `Database.commit` did."""

    inserted: int  # new rows in `events`
    duplicates: int  # events of the batch already stored, or repeated within it
    rejected: int  # rows added to `rejected_events` (the batch's own and any the writer refused)
    seconds: float = attrs.field(default=0.0, eq=False)  # how long it took (set by the Writer)


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, fit for messages: `postgresql://user@host:port/db`."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:
        return "<unparseable DSN>"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    host = urllib.parse.parse_qs(parts.query).get("host")
    where = f"?host={host[0]}" if host else ""
    return f"{parts.scheme}://{netloc}{parts.path}{where}"


def _password_of(dsn: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(dsn)
        from_query = urllib.parse.parse_qs(parts.query).get("password")
        return parts.password or (from_query[0] if from_query else None)
    except ValueError:
        return None


# An event's COPY record, its fields in column order, in one C call. `properties` goes as
# the value itself: the jsonb codec serializes it while COPY encodes, so no serialized copy
# lives on (orjson's output holds a 4 KiB buffer each: 80 MB for a 20,000-row commit).
_event_row: Callable[[Event], tuple[Any, ...]] = operator.attrgetter(*_EVENT_COLUMNS)
_id_of: Callable[[Event], Any] = operator.attrgetter("id")


def _unstorable(event: Event) -> str | None:
    """Why PostgreSQL would refuse this event, or None. Only run after a COPY failed."""
    for name in _TEXT_FIELDS:
        value = getattr(event, name)
        if value is None:
            continue
        if "\x00" in value:
            return f"{name} contains a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} is not valid UTF-8"
    if event.properties is not None:
        try:
            jsonb_text(event.properties)
        except TypeError as exc:  # orjson.JSONEncodeError included
            return f"properties cannot be stored as JSON: {exc}"
        except ValueError:
            return "properties contain a NUL character (jsonb refuses \\u0000)"
    return None


def _event_as_raw(event: Event) -> str:
    """An ASCII JSON form of an event the database refused (escapes NULs and surrogates)."""
    fields = attrs.asdict(event)
    return json.dumps(fields, default=str, ensure_ascii=True)


def _writer_reject(event: Event, reason: str, stream: str | None) -> tuple[Any, ...]:
    return _reject_row(Rejected(raw=_event_as_raw(event), reason=reason), stream)


def _screen(
    events: Iterable[tuple[Event, str | None]],
) -> tuple[list[Event], list[tuple[Any, ...]]]:
    """Split events into those PostgreSQL will take and reject rows for those it will not."""
    storable: list[Event] = []
    bad: list[tuple[Any, ...]] = []
    for event, stream in events:
        reason = _unstorable(event)
        if reason is None:
            storable.append(event)
        else:
            bad.append(_writer_reject(event, f"not storable: {reason}", stream))
    return storable, bad


def _first_of_each_id(events: list[Event]) -> list[Event]:
    """The first occurrence of each id (ON CONFLICT cannot resolve one id twice in an INSERT).

    Built in C: walking the events backwards, earlier ones overwrite later ones."""
    return list(dict(zip(map(_id_of, reversed(events)), reversed(events), strict=True)).values())


def _storable_text(text: str) -> str:
    # `raw` is kept as text: NUL and lone surrogates are the only things text cannot hold.
    text = text.replace("\x00", "\\u0000")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
    return text


def _reject_row(rejected: Rejected, stream: str | None) -> tuple[Any, ...]:
    values = [getattr(rejected, name) for name in _REJECT_FIELDS]
    return (
        *(_storable_text(v) if isinstance(v, str) else v for v in values),
        stream,
    )


def _last_checkpoints(checkpoints: Iterable[Checkpoint]) -> list[Checkpoint]:
    """The last checkpoint of each stream: a merged batch may carry several of one stream."""
    last: dict[str, Checkpoint] = {}
    for cp in checkpoints:
        last[cp.stream] = cp
    return list(last.values())


def _jsonb_encode(value: Any) -> bytes:
    # jsonb's binary format is a version byte and the JSON text.
    return b"\x01" + orjson.dumps(value)


def _jsonb_decode(data: bytes) -> Any:
    return orjson.loads(data[1:])


# timestamptz in asyncpg's "tuple" form, microseconds since 2000-01-01 UTC. COPY encodes one
# per event: asyncpg's own encoder (two comparisons with infinity, `astimezone`, a timedelta
# and its three fields, read from C) took 7 % of a fast run's CPU; this one about half that.
# Naive datetimes raise TypeError (flowtel's are always aware).
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_PG_INFINITY = 2**63 - 1  # 'infinity'; '-infinity' is its negation minus one


def _timestamptz_encode(value: dt.datetime) -> tuple[int]:
    return ((value - _PG_EPOCH) // _MICROSECOND,)


def _timestamptz_decode(value: tuple[int]) -> dt.datetime:
    (microseconds,) = value
    if microseconds >= _PG_INFINITY or microseconds < -_PG_INFINITY:
        # What asyncpg's own decoder gives for the infinities.
        return dt.datetime.max if microseconds > 0 else dt.datetime.min
    return _PG_EPOCH + dt.timedelta(microseconds=microseconds)


def _is_closed(conn: Any) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.exceptions.InterfaceError:  # detached from its proxy: it died
        return True


def _terminate(conn: Any) -> None:
    # A pooled connection that died is already detached from its proxy: nothing to do then.
    with contextlib.suppress(asyncpg.exceptions.InterfaceError):
        conn.terminate()


class _ConnectionLost(Exception):
    """asyncpg said "connection is closed": retry on a new one."""


class _RunLockNotHeld(Exception):
    """A commit found the run lock not held by this run (its connection is reconnecting):
    wait and retry; the lock holder either gets it back or stops the run."""


_RETRYABLE: tuple[type[BaseException], ...] = (*_TRANSIENT, _ConnectionLost, _RunLockNotHeld)


# A fresh connection that dies under its first query (terminated again, or asyncpg's state
# garbled by the server's "terminating connection" notice): connect again.
_LOCK_CONN_LOST: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions._base.InternalClientError,
)


class AlreadyRunning(ConfigError):
    """Another flowtel run holds this database's run lock (exit code 2 at the CLI, like any
    setting the user must fix: point the second run at another database, or wait)."""


# The run lock as pg_locks shows it: a bigint key is split into classid (high 32 bits) and
# objid (low 32 bits), with objsubid 1.
_LOCK_HELD_BY = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid = $1 AND objid = $2 AND objsubid = 1 AND granted AND pid = $3)"
)
_LOCK_CLASSID = (RUN_LOCK_KEY >> 32) & 0xFFFFFFFF
_LOCK_OBJID = RUN_LOCK_KEY & 0xFFFFFFFF
_LOCK_HOLDER = (
    "SELECT pid, application_name, backend_start FROM pg_stat_activity WHERE pid = ("
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2"
    " AND objsubid = 1 AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1)"
)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Database:
    """flowtel's tables. Get one from `open_database`; every method is async under Trio."""

    def __init__(
        self, dsn: str, loop: Any, *, reconnect_timeout: float, command_timeout: float
    ) -> None:
        self.dsn_display = redact_dsn(dsn)
        self.reconnect_timeout = reconnect_timeout
        self.command_timeout = command_timeout
        self._password = _password_of(dsn)
        self._loop = loop
        self._pool: Any = None
        self._dsn = dsn
        # While a run lock is taken: the server pid of the connection that holds it, or None
        # while that connection is being replaced (commits wait). Unset: no fence.
        self._run_lock_pid: int | None = None
        self._reached = False  # once the server answered, a failure is a connection lost
        self._run_lock_taken = False

    # ---- the bridge --------------------------------------------------------------------

    async def _aio(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        result: T = await trio_asyncio.aio_as_trio(fn, loop=self._loop)(*args, **kwargs)
        return result

    def _redact(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    @staticmethod
    async def _init_connection(conn: Any) -> None:
        await conn.set_type_codec(
            "jsonb",
            schema="pg_catalog",
            encoder=_jsonb_encode,
            decoder=_jsonb_decode,
            format="binary",
        )
        await conn.set_type_codec(
            "timestamptz",
            schema="pg_catalog",
            encoder=_timestamptz_encode,
            decoder=_timestamptz_decode,
            format="tuple",
        )
        await conn.execute(_CREATE_STAGING)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        try:
            conn = await self._aio(self._pool.acquire)
        except asyncpg.exceptions._base.InternalClientError as exc:
            # A new connection whose backend was terminated while the pool set it up: the
            # server's "terminating connection" notice garbled asyncpg's state between two of
            # `_init_connection`'s statements (seen once, in a run whose backends were killed
            # every 0.6 s). The pool has dropped it; connect again.
            raise _ConnectionLost(_describe(exc)) from exc
        try:
            yield conn
        finally:
            # Hazard 2: an unshielded release is cancelled, the connection leaks and the pool's
            # close later blocks forever. asyncpg terminates a connection it cannot reset.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + RELEASE_TIMEOUT + 1
                try:
                    await self._aio(self._pool.release, conn, timeout=RELEASE_TIMEOUT)
                except Exception as exc:
                    log.debug("release failed, terminating the connection: %s", _describe(exc))
                    _terminate(conn)
            if scope.cancelled_caught:
                _terminate(conn)

    async def _end_transaction(self, conn: Any, end: Callable[[], Awaitable[None]]) -> None:
        """COMMIT or ROLLBACK, shielded and capped (hazard 1). On failure the connection is
        terminated, so the pool never hands out one stuck in an aborted transaction."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + TXN_END_TIMEOUT
            try:
                await self._aio(end)
            except BaseException:
                _terminate(conn)
                raise
        if scope.cancelled_caught:
            _terminate(conn)
            raise TimeoutError(f"COMMIT/ROLLBACK took longer than {TXN_END_TIMEOUT:g} s")

    async def _in_transaction(self, conn: Any, body: Callable[[], Awaitable[T]]) -> T:
        tx = conn.transaction()
        # BEGIN is shielded too: cancelled half-way, it leaves the connection in a transaction
        # that nobody rolls back, and the pool's reset then fails on the asyncio side.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + TXN_END_TIMEOUT
            await self._aio(tx.start)
        if scope.cancelled_caught:
            _terminate(conn)
            raise TimeoutError(f"BEGIN took longer than {TXN_END_TIMEOUT:g} s")
        try:
            result = await body()
        except BaseException:
            # A cancelled batch is rolled back whole, then the cancellation goes on.
            with contextlib.suppress(Exception):
                await self._end_transaction(conn, tx.rollback)
            raise
        await self._end_transaction(conn, tx.commit)
        return result

    async def _retrying(
        self,
        what: str,
        op: Callable[[Any], Awaitable[T]],
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> T:
        """Run `op` on a pooled connection; on a transient failure, again on a new one, with
        backoff, for up to `reconnect_timeout` seconds. Errors in `passthrough` that are not
        transient propagate as they are; other database errors are translated."""
        first_failure: float | None = None
        delay = 0.05
        while True:
            try:
                async with self._connection() as conn:
                    self._reached = True
                    # Watchdog: a connection dropped mid-COPY can leave asyncpg waiting
                    # forever (seen over unix sockets). Cancelling it frees it.
                    try:
                        with trio.move_on_after(self.command_timeout):
                            return await op(conn)
                    except asyncpg.exceptions.InterfaceError as exc:
                        if _is_closed(conn):  # "connection is closed": dropped under us
                            raise _ConnectionLost(_describe(exc)) from exc
                        raise
                    except asyncpg.exceptions._base.InternalClientError as exc:
                        # Seen when the server's "terminating connection" notice arrives while
                        # the connection is idle in the pool: its state is garbage, drop it.
                        _terminate(conn)
                        raise _ConnectionLost(_describe(exc)) from exc
                    _terminate(conn)
                    raise TimeoutError(f"no answer for {self.command_timeout:g} s")
            except _RETRYABLE as exc:
                now = trio.current_time()
                if first_failure is None:
                    first_failure = now
                waited = now - first_failure
                reason = self._redact(_describe(exc))
                if isinstance(exc, socket.gaierror):
                    raise ConfigError(
                        f"database {self.dsn_display}: cannot resolve the host ({reason})"
                    ) from None
                if waited >= self.reconnect_timeout:
                    raise WriteError(
                        f"database unreachable for {self.reconnect_timeout:g} s"
                        f" ({self.dsn_display}): {reason}"
                    ) from None
                problem = (
                    "database connection lost" if self._reached else "cannot reach the database"
                )
                log.warning("%s: %s (%s); retrying", what, problem, reason)
                await trio.sleep(min(delay * random.uniform(0.5, 1.0), self.reconnect_timeout))
                delay = min(delay * 2, 2.0)
            except passthrough:
                raise
            except (asyncpg.PostgresError, asyncpg.exceptions.InterfaceError) as exc:
                raise self._translate(exc, what) from None

    def _translate(self, exc: BaseException, what: str) -> Exception:
        reason = self._redact(_describe(exc))
        where = f"database {self.dsn_display}"
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
            return ConfigError(f"{where}: login refused: {reason}")
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return ConfigError(f"{where}: {reason}")
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return ConfigError(f"{where}: not enough rights ({what}): {reason}")
        if isinstance(exc, asyncpg.exceptions.ClientConfigurationError):
            return ConfigError(f"{where}: {reason}")
        return WriteError(f"{what} failed on {where}: {reason}")

    # ---- writing -----------------------------------------------------------------------

    async def commit(self, batch: Batch, *, stream_of_rejects: str | None = None) -> CommitResult:
        """Store a batch in one transaction: its events (new ids only), its rejects, and the
        checkpoints it advances. Either all of it is committed or none of it; if cancelled,
        it is rolled back (or, if COMMIT had already been sent, committed) and the
        cancellation propagates. Retried whole after a dropped connection: the result
        counts what this call inserted, so a retry never double-counts.

        Rejects are stored with `stream_of_rejects`, by default the stream of the batch's
        checkpoints when they all name one."""
        return await self.commit_many([(batch, stream_of_rejects)])

    async def commit_many(self, parts: Sequence[tuple[Batch, str | None]]) -> CommitResult:
        """`commit` for several batches in one transaction, each with its rejects' stream."""
        given_rejects: list[tuple[Any, ...]] = []
        checkpoints_in_order: list[Checkpoint] = []
        stream_of_part: list[str | None] = []
        for part, stream in parts:
            if stream is None:
                streams = {cp.stream for cp in part.checkpoints}
                stream = streams.pop() if len(streams) == 1 else None
            stream_of_part.append(stream)
            given_rejects.extend(_reject_row(r, stream) for r in part.rejected)
            checkpoints_in_order.extend(part.checkpoints)
        events = list(chain.from_iterable(part.events for part, _ in parts))
        total_events = len(events)
        rejects = list(given_rejects)
        checkpoints = [
            attrs.astuple(cp, recurse=False) for cp in _last_checkpoints(checkpoints_in_order)
        ]
        screened = False
        # New ids go by COPY straight into `events`, as they came: half the server's work of
        # COPY into staging + INSERT ... ON CONFLICT, and no deduplication in Python. A batch
        # holding an id already stored (shard edges, repeated pages, a resume) or one id twice
        # fails that COPY whole and goes again through staging, deduplicated.
        direct = True

        async def body(conn: Any) -> int:
            await self._fence(conn)
            if events:
                log.debug(
                    "commit: COPY %d events (%s)", len(events), "direct" if direct else "staged"
                )
                status = await self._aio(
                    conn.copy_records_to_table,
                    "events" if direct else _STAGING,
                    # Each row built as COPY takes it and freed after: never a list of them.
                    records=map(_event_row, events),
                    columns=_EVENT_COLUMNS,
                    timeout=self.command_timeout,
                )
                if not direct:
                    status = await self._aio(
                        conn.execute, _INSERT_STAGED, timeout=self.command_timeout
                    )
                inserted = int(status.rsplit(" ", 1)[1])
            else:
                inserted = 0
            if rejects:
                await self._aio(
                    conn.copy_records_to_table,
                    "rejected_events",
                    records=rejects,
                    columns=(*_REJECT_FIELDS, "stream"),
                    timeout=self.command_timeout,
                )
            if checkpoints:  # one per stream, a handful: pipelined in one round trip
                await self._aio(
                    conn.executemany, _UPSERT_CHECKPOINT, checkpoints, timeout=self.command_timeout
                )
            log.debug("commit: COMMIT (%d new events, %d checkpoints)", inserted, len(checkpoints))
            return inserted

        rolled_back = 0
        while True:
            try:
                inserted = await self._retrying(
                    "commit",
                    lambda conn: self._in_transaction(conn, lambda: body(conn)),
                    passthrough=(
                        *_BAD_DATA,
                        asyncpg.UniqueViolationError,
                        asyncpg.TransactionRollbackError,
                    ),
                )
            except asyncpg.TransactionRollbackError as exc:
                # A deadlock with another Writer lane inserting some of the same ids in
                # another order (shard edges): the server chose this transaction to undo.
                # The other one goes on, so the next try finds its ids (or committed ones).
                rolled_back += 1
                if rolled_back > MAX_ROLLBACK_RETRIES:
                    raise self._translate(exc, "commit") from None
                log.info("commit: %s; trying again", self._redact(_describe(exc)))
                continue
            except asyncpg.UniqueViolationError as exc:
                if not direct:
                    raise self._translate(exc, "commit") from None
                direct = False
                events = _first_of_each_id(events)
                continue
            except _BAD_DATA as exc:
                # A value PostgreSQL cannot hold (NUL, bad UTF-8) fails the whole COPY. Only
                # then look at each event, move the unstorable ones to rejected_events, retry.
                bad: list[tuple[Any, ...]] = []
                if not screened:
                    screened = True
                    stream_of = {
                        id(event): stream
                        for (part, _), stream in zip(parts, stream_of_part, strict=True)
                        for event in part.events
                    }
                    events, bad = _screen((e, stream_of[id(e)]) for e in events)
                if not bad:
                    raise self._translate(exc, "commit") from None
                rejects.extend(bad)
                continue
            log.debug("commit: committed")
            return CommitResult(
                inserted=inserted,
                duplicates=total_events - inserted - (len(rejects) - len(given_rejects)),
                rejected=len(rejects),
            )

    # ---- reading -----------------------------------------------------------------------

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[Any]:
        async def op(conn: Any) -> list[Any]:
            rows: list[Any] = await self._aio(conn.fetch, sql, *args, timeout=self.command_timeout)
            return rows

        return await self._retrying(what, op)

    async def _fetchval(self, what: str, sql: str, *args: Any) -> Any:
        rows = await self._fetch(what, sql, *args)
        return rows[0][0] if rows else None

    async def load_checkpoints(self) -> list[Checkpoint]:
        """Every stream's checkpoint, ordered by stream name."""
        rows = await self._fetch(
            "load checkpoints",
            f"SELECT {', '.join(_CHECKPOINT_COLUMNS)} FROM checkpoints ORDER BY stream",
        )
        return [Checkpoint(**dict(row)) for row in rows]

    async def count_events(self) -> int:
        return int(await self._fetchval("count events", "SELECT count(*) FROM events"))

    async def count_distinct_ids(self) -> int:
        # id is the primary key, so every row is a distinct id (a test holds this).
        return await self.count_events()

    async def count_rejected(self) -> int:
        return int(await self._fetchval("count rejected", "SELECT count(*) FROM rejected_events"))

    async def iter_ids(self, chunk: int = 50_000) -> AsyncIterator[str]:
        """Every event id once, as text, in id order. Keyset pagination: at most `chunk` ids
        in memory, and no connection held between chunks (abandoning the iterator is safe)."""
        after: str | None = None
        while True:
            rows = await self._fetch(
                "read ids",
                "SELECT id::text FROM events WHERE $1::uuid IS NULL OR id > $1::uuid"
                " ORDER BY id LIMIT $2",
                after,
                chunk,
            )
            for row in rows:
                yield row[0]
            if len(rows) < chunk:
                return
            after = rows[-1][0]

    # ---- runs and submissions --------------------------------------------------------------

    async def record_run_start(self) -> int:
        """A new row in `runs`; returns its id for `record_run_end`."""
        return int(
            await self._fetchval("record run", "INSERT INTO runs DEFAULT VALUES RETURNING id")
        )

    async def record_run_end(self, run_id: int, summary: Mapping[str, Any]) -> None:
        await self._fetch(
            "record run",
            "UPDATE runs SET finished_at = now(), summary = $2 WHERE id = $1",
            run_id,
            dict(summary),
        )

    async def last_run(self) -> dict[str, Any] | None:
        """The latest run: id, started_at, finished_at (None while running), summary."""
        rows = await self._fetch(
            "read runs",
            "SELECT id, started_at, finished_at, summary FROM runs ORDER BY id DESC LIMIT 1",
        )
        return dict(rows[0]) if rows else None

    async def record_submission(self, repo_url: str, id_count: int) -> int:
        """Record an attempt *before* sending it (a crash mid-send still counts as one);
        returns its id for `finish_submission`."""
        return int(
            await self._fetchval(
                "record submission",
                "INSERT INTO submissions (repo_url, id_count) VALUES ($1, $2) RETURNING id",
                repo_url,
                id_count,
            )
        )

    async def finish_submission(
        self,
        submission_id: int,
        *,
        accepted: bool,
        http_status: int | None = None,
        response_body: str | None = None,
        error: str | None = None,
    ) -> None:
        await self._fetch(
            "record submission",
            "UPDATE submissions SET finished_at = now(), accepted = $2, http_status = $3,"
            " response_body = $4, error = $5 WHERE id = $1",
            submission_id,
            accepted,
            http_status,
            response_body,
            error,
        )

    async def submissions(self) -> list[dict[str, Any]]:
        """Every attempt, oldest first."""
        rows = await self._fetch("read submissions", "SELECT * FROM submissions ORDER BY id")
        return [dict(row) for row in rows]

    @property
    def reached(self) -> bool:
        """Whether the server has answered once: a failure after that is a connection lost."""
        return self._reached

    async def has_schema(self) -> bool:
        """Whether flowtel's tables are here (schema_meta is flowtel's own; `events` may not be)."""
        found = await self._fetchval("look for the schema", "SELECT to_regclass('schema_meta')")
        return found is not None

    async def status(self) -> dict[str, Any]:
        """What `flowtel-cli status` shows: counts, checkpoints, the last run, submissions."""
        return {
            "events": await self.count_events(),
            "rejected": await self.count_rejected(),
            "checkpoints": await self.load_checkpoints(),
            "last_run": await self.last_run(),
            "submissions": await self.submissions(),
        }

    # ---- the run lock ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def run_lock(
        self, *, check_interval: float = RUN_LOCK_CHECK_INTERVAL
    ) -> AsyncIterator[None]:
        """Hold this database's run lock for the block: one flowtel run per database.

        - Raises `AlreadyRunning` at once if another run holds it.
        - The lock is a session-level `pg_try_advisory_lock` on a connection of its own:
          PostgreSQL releases it when the block ends or when the process dies.
        - That connection is checked every `check_interval` seconds. If it dropped (server
          restarted, backend terminated), the lock is taken again on a new one; if another
          run took it meanwhile, the block is cancelled and `AlreadyRunning` raised. If the
          server stays away `reconnect_timeout` seconds, `WriteError`.
        - While the lock is being taken again, commits wait (a fence in each transaction
          checks that the lock is held by this run), so two runs never write at once.
        """
        if self._run_lock_taken:
            raise RuntimeError("run_lock() is not reentrant")
        conn = await self._take_run_lock(again=False)
        lost: list[BaseException] = []
        box = [conn]
        self._run_lock_taken = True
        self._run_lock_pid = conn.get_server_pid()
        log.debug("run lock taken (server pid %d)", self._run_lock_pid)
        try:
            async with trio.open_nursery() as nursery:

                async def keep() -> None:
                    try:
                        await self._keep_run_lock(box, check_interval)
                    except (AlreadyRunning, WriteError) as exc:
                        lost.append(exc)
                        nursery.cancel_scope.cancel()

                nursery.start_soon(keep)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The nursery wraps what the block raised: hand it on as it was raised.
            if len(group.exceptions) == 1:
                inner = group.exceptions[0]
                raise inner from inner.__cause__
            raise
        finally:
            self._run_lock_taken = False
            self._run_lock_pid = None
            await self._lock_close(box[0])
        if lost:
            raise lost[0]

    async def _lock_connect(self) -> Any:
        try:
            return await self._aio(
                asyncpg.connect,
                self._dsn,
                timeout=min(10.0, max(self.reconnect_timeout, 1.0)),
                command_timeout=self.command_timeout,
                server_settings={"application_name": "flowtel"},
            )
        except _TRANSIENT:
            raise
        except (asyncpg.PostgresError, asyncpg.exceptions.InterfaceError, ValueError) as exc:
            raise self._translate(exc, "take the run lock") from None

    async def _lock_holder(self, conn: Any) -> str:
        try:
            row = await self._aio(conn.fetchrow, _LOCK_HOLDER, _LOCK_CLASSID, _LOCK_OBJID)
        except Exception:
            return ""
        if row is None:
            return ""
        return f" (server pid {row['pid']}, connected since {row['backend_start']:%H:%M:%S})"

    async def _lock_close(self, conn: Any) -> None:
        # Closing the session releases the lock; shielded and capped like every ending.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLOSE_TIMEOUT
            try:
                await self._aio(conn.close, timeout=CLOSE_TIMEOUT)
                return
            except Exception as exc:
                log.debug("closing the run lock connection failed: %s", _describe(exc))
        _terminate(conn)

    async def _lock_still_held(self, conn: Any) -> bool:
        try:
            held = await self._aio(
                conn.fetchval,
                _LOCK_HELD_BY,
                _LOCK_CLASSID,
                _LOCK_OBJID,
                conn.get_server_pid(),
                timeout=self.command_timeout,
            )
        except Exception as exc:  # whatever it is, this connection is done for: replace it
            log.debug("run lock connection check failed: %s", _describe(exc))
            return False
        return bool(held)

    async def _keep_run_lock(self, box: list[Any], check_interval: float) -> None:
        while True:
            await trio.sleep(check_interval)
            if not _is_closed(box[0]) and await self._lock_still_held(box[0]):
                continue
            self._run_lock_pid = None  # commits wait from now on
            _terminate(box[0])
            log.warning("the run lock's database connection was lost; taking the lock again")
            box[0] = await self._take_run_lock(again=True)
            self._run_lock_pid = box[0].get_server_pid()
            log.info("run lock taken again (server pid %d)", self._run_lock_pid)

    async def _take_run_lock(self, *, again: bool) -> Any:
        """A new connection holding the lock; connecting is retried for `reconnect_timeout`
        seconds. `again`: the lock was ours before its connection dropped."""
        started = trio.current_time()
        delay = 0.05
        while True:
            conn = None
            try:
                conn = await self._lock_connect()
                taken = await self._aio(
                    conn.fetchval, "SELECT pg_try_advisory_lock($1)", RUN_LOCK_KEY
                )
                holder = "" if taken else await self._lock_holder(conn)
            except (*_TRANSIENT, *_LOCK_CONN_LOST) as exc:
                if conn is not None:
                    _terminate(conn)
                reason = self._redact(_describe(exc))
                if trio.current_time() - started >= self.reconnect_timeout:
                    raise WriteError(
                        f"database unreachable for {self.reconnect_timeout:g} s"
                        f" ({self.dsn_display}): {reason}"
                    ) from None
                log.debug("run lock: reconnecting (%s)", reason)
                await trio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
                continue
            except BaseException:
                if conn is not None:
                    await self._lock_close(conn)
                raise
            if taken:
                return conn
            await self._lock_close(conn)
            if again:
                raise AlreadyRunning(
                    f"another flowtel run took the run lock of database {self.dsn_display}"
                    f"{holder} while this run's connection was down; stopping this run"
                    " (the other one goes on)"
                )
            raise AlreadyRunning(
                f"another flowtel run is already writing to database {self.dsn_display}"
                f"{holder}; only one run per database at a time"
            )

    async def _fence(self, conn: Any) -> None:
        """Inside a commit's transaction: refuse to write unless this run holds the lock."""
        if not self._run_lock_taken:
            return
        pid = self._run_lock_pid
        if pid is None:
            raise _RunLockNotHeld("the run lock is being taken again")
        held = await self._aio(
            conn.fetchval,
            _LOCK_HELD_BY,
            _LOCK_CLASSID,
            _LOCK_OBJID,
            pid,
            timeout=self.command_timeout,
        )
        if not held:
            raise _RunLockNotHeld("the run lock is not held by this run")

    # ---- opening and closing -----------------------------------------------------------

    async def _apply_schema(self) -> None:
        sql = schema_sql()
        tables = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", sql)

        async def body(conn: Any) -> None:
            # Serializes concurrent appliers; released at COMMIT.
            await self._aio(conn.execute, "SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
            # IF NOT EXISTS would pass over another application's `events` or `runs`, and the
            # run would then write into it. schema_meta, created first, marks flowtel's own.
            foreign = await self._aio(
                conn.fetchval,
                "SELECT array_agg(name ORDER BY name) FROM unnest($1::text[]) AS name"
                " WHERE to_regclass('schema_meta') IS NULL AND to_regclass(name) IS NOT NULL",
                tables,
            )
            if foreign:
                raise ConfigError(
                    f"the database {self.dsn_display} has tables that are not flowtel's"
                    f" ({', '.join(foreign)}): give flowtel a database of its own"
                )
            await self._aio(conn.execute, sql)

        await self._retrying(
            "apply the schema", lambda conn: self._in_transaction(conn, lambda: body(conn))
        )

    async def _close(self) -> None:
        # Hazard 5: shielded and capped, falling back to terminate().
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLOSE_TIMEOUT
            try:
                await self._aio(self._pool.close)
                return
            except Exception as exc:
                log.debug("pool close failed: %s", _describe(exc))
        self._pool.terminate()


@contextlib.asynccontextmanager
async def open_database(
    dsn: str,
    *,
    schema: bool = True,
    reconnect_timeout: float = 60.0,
    command_timeout: float = COMMAND_TIMEOUT,
    max_connections: int = 3,
) -> AsyncIterator[Database]:
    """Open flowtel's database at `dsn` (a `postgresql://` URL) for the duration of the block.

    - Opens a trio-asyncio loop if the calling task runs without one.
    - With `schema=True`, applies `schema.sql` (idempotent, under an advisory lock); an
      unreachable server is waited for up to `reconnect_timeout` seconds, like a dropped one.
      With `schema=False` nothing connects until the first call.
    - Raises `ConfigError` for what the user must fix (bad DSN, login, missing database, no
      rights) and `WriteError` once the server stayed away `reconnect_timeout` seconds.
    - `command_timeout`: a statement (a whole commit's work) that gets no answer for this long
      has its connection terminated and is retried like a dropped one.
    """
    display = redact_dsn(dsn)
    try:
        parts = urllib.parse.urlsplit(dsn)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"database URL is not valid: {display}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"database URL must start with postgresql://, got {display}")
    if parts.netloc.count("@") > 1:  # the server's address would be read from the password
        raise ConfigError(
            f"database URL {display}: write an '@' in the user name or password as %40"
        )
    loop = trio_asyncio.current_loop.get()
    if loop is not None:
        async with _open(
            dsn, display, loop, schema, reconnect_timeout, command_timeout, max_connections
        ) as db:
            yield db
        return
    try:
        async with trio_asyncio.open_loop() as loop:
            loop.set_exception_handler(_lost_connections_are_handled)
            async with _open(
                dsn, display, loop, schema, reconnect_timeout, command_timeout, max_connections
            ) as db:
                yield db
    except BaseExceptionGroup as group:
        # open_loop's nurseries wrap whatever crosses them; a caller of open_database should
        # see the WriteError / ConfigError / Cancelled itself, as with a loop of its own.
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _lost_connections_are_handled(loop: Any, context: dict[str, Any]) -> None:
    """asyncio's handler of errors nobody awaited, for the loop open_database opens.

    A connection terminated mid-operation can leave a future failed with "connection was
    closed" after its operation gave up on that connection (and retried on a new one).
    trio-asyncio's default handler raises such errors into the loop, ending a run that had
    recovered; they are logged here instead. Any other error goes to the default handler."""
    exc = context.get("exception")
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError | ConnectionError):
        log.debug("a lost connection's unread error: %s", _describe(exc))
        return
    loop.default_exception_handler(context)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@contextlib.asynccontextmanager
async def _open(
    dsn: str,
    display: str,
    loop: Any,
    schema: bool,
    reconnect_timeout: float,
    command_timeout: float,
    max_connections: int,
) -> AsyncIterator[Database]:
    db = Database(dsn, loop, reconnect_timeout=reconnect_timeout, command_timeout=command_timeout)
    try:
        db._pool = await db._aio(
            asyncpg.create_pool,
            dsn,
            min_size=0,
            max_size=max_connections,
            init=Database._init_connection,
            command_timeout=command_timeout,
            server_settings={"application_name": "flowtel"},
        )
    except (ValueError, asyncpg.exceptions.InterfaceError) as exc:
        raise ConfigError(
            f"database URL is not valid: {display}: {db._redact(_describe(exc))}"
        ) from None
    try:
        if schema:
            await db._apply_schema()
        yield db
    finally:
        await db._close()
