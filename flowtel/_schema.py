"""The schema: `schema.sql` is its single source; this module finds and reads it."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

# Serializes concurrent appliers (two runs starting at once): CREATE TABLE IF NOT EXISTS alone
# races on the catalog. An arbitrary constant, "flowtel" in ASCII.
SCHEMA_LOCK_KEY = 0x666C6F7774656C


def schema_sql() -> str:
    """The text of `schema.sql`.

    A wheel carries it inside the package (pyproject force-includes it as `flowtel/schema.sql`);
    an editable install reads it from the repository's top folder.
    """
    packaged = importlib.resources.files("flowtel") / "schema.sql"
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parent.parent / "schema.sql").read_text(encoding="utf-8")
