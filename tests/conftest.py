"""A real PostgreSQL for the tests: FLOWTEL_TEST_DSN if set, else an embedded server.

- `pg_server` (session): the server; `pg_server.admin_dsn` is a superuser DSN.
- `database_url` (function): a fresh, empty database of its own (`CREATE DATABASE
  flowtel_t_<hex>`, dropped after the test), as a plain DSN that a subprocess can use as
  DATABASE_URL. The schema is not applied: `open_database` does that.
- `pg_admin` (function): superuser helpers bound to that database (`execute`, `fetch`,
  `fetchval`, `terminate_backends`), synchronous, usable from trio tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

try:  # tests/ as a package, or tests/ itself on sys.path (pytest's rootdir-less mode)
    from tests import pg
except ImportError:
    import pg  # type: ignore[no-redef]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.Server]:
    server = pg.start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(pg_server: pg.Server) -> Iterator[str]:
    dsn = pg_server.create_database()
    try:
        yield dsn
    finally:
        pg_server.drop_database(dsn)


class PgAdmin:
    """Superuser access to one test database."""

    def __init__(self, server: pg.Server, dsn: str) -> None:
        self.server = server
        self.dsn = dsn

    def execute(self, sql: str, *args: Any) -> str:
        return pg.execute(self.dsn, sql, *args)

    def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return pg.fetch(self.dsn, sql, *args)

    def fetchval(self, sql: str, *args: Any) -> Any:
        return pg.fetchval(self.dsn, sql, *args)

    def terminate_backends(self, *, application_name: str | None = None) -> int:
        return self.server.terminate_backends(self.dsn, application_name=application_name)


@pytest.fixture
def pg_admin(pg_server: pg.Server, database_url: str) -> PgAdmin:
    return PgAdmin(pg_server, database_url)
