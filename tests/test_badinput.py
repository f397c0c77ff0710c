"""Bad input through the whole pipeline into PostgreSQL: every event lands in `events` or in
`rejected_events` (with its reason and raw form), never a traceback, never a silent drop.
Plus wrong settings (a database user without rights) and the submit guard."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

import flowtel
from flowtel import Settings
from flowtel._submit import SubmitRefused, submit
from flowtel.testing import Simulator, SimulatorTransport, profile

try:
    from tests import pg
    from tests.e2e import cli_env, run_cli, simulator_process
except ImportError:
    import pg  # type: ignore[no-redef]
    from e2e import cli_env, run_cli, simulator_process  # type: ignore[no-redef]

BASE = "http://bad.test"
KEY = "ds_0123456789abcdef0123456789abcdef"
T = 1_769_541_612_369  # a good instant, epoch ms


def good(n: int, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": str(uuid.UUID(int=n + 1)),
        "sessionId": str(uuid.UUID(int=10**9 + n)),
        "userId": str(uuid.UUID(int=2 * 10**9 + n)),
        "type": "click",
        "name": f"event_{n}",
        "properties": {"page": "/home"},
        "timestamp": T - n,
        "session": {"id": str(uuid.UUID(int=10**9 + n)), "deviceType": "mobile", "browser": "Edge"},
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not _ABSENT}


_ABSENT = object()

# (event, where it must land: "stored", "stored+note" (stored, repairs noted) or "rejected",
#  a word the reason must contain)
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no id", good(1, id=_ABSENT), "rejected", "id"),
    ("null id", good(2, id=None), "rejected", "id"),
    ("non-uuid id", good(3, id="not-a-uuid"), "rejected", "id"),
    ("numeric id", good(4, id=12345), "rejected", "id"),
    ("no timestamp", good(5, timestamp=_ABSENT), "rejected", "timestamp"),
    ("unparseable timestamp", good(6, timestamp="yesterday at noon"), "rejected", "timestamp"),
    ("far-future timestamp", good(7, timestamp="9999-12-31T23:59:59Z"), "rejected", "timestamp"),
    ("pre-1970 timestamp", good(8, timestamp="1969-07-20T20:17:00Z"), "rejected", "timestamp"),
    ("boolean timestamp", good(9, timestamp=True), "rejected", "timestamp"),
    ("wrong-type type", good(10, type=["click"]), "stored+note", "type"),
    ("wrong-type session", good(11, session="mobile"), "stored+note", "session"),
    ("wrong-type userId", good(12, userId=42), "stored+note", "user"),
    ("huge properties", good(13, properties={"blob": "x" * 3_000_000}), "stored+note", "propert"),
    ("NUL in name", good(14, name="a\x00b"), "stored+note", "NUL"),
    ("NUL in properties", good(15, properties={"k\x00": "v\x00"}), "stored+note", "NUL"),
    ("not an object", ["a", "list"], "rejected", "object"),  # type: ignore[list-item]
    ("clean", good(16), "stored", ""),
]
# Raw bytes spliced into the JSON text of page 2: invalid UTF-8 and a lone surrogate.
RAW_CASES = [
    ("invalid UTF-8 in name", 17, b'"name": "caf\xe9 \xff"'),
    ("lone surrogate in type", 18, b'"type": "\\ud800click"'),
]


def _page(events: list[Any], cursor: str | None) -> dict[str, Any]:
    return {
        "data": events,
        "pagination": {
            "limit": 100,
            "hasMore": cursor is not None,
            "nextCursor": cursor,
            "cursorExpiresIn": 116,
        },
        "meta": {"total": TOTAL, "returned": len(events), "requestId": str(uuid.uuid4())},
    }


def _raw_page() -> bytes:
    parts = []
    for _, n, fragment in RAW_CASES:
        event = good(n)
        key = fragment.split(b'"')[1].decode()
        del event[key]
        text = json.dumps(event)[:-1].encode() + b", " + fragment + b"}"
        parts.append(text)
    body = json.dumps(_page([], None)).encode()
    return body.replace(b'"data": []', b'"data": [' + b", ".join(parts) + b"]")


TOTAL = len(CASES) + len(RAW_CASES)


def handler(request: httpx.Request) -> httpx.Response:
    headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99", "X-RateLimit-Reset": "60"}
    path = request.url.path
    if path == "/internal/stats":
        return httpx.Response(200, json={"totalEvents": TOTAL})
    if path == "/internal/dashboard/stream-access":
        return httpx.Response(403, json={"error": "Forbidden", "code": "DASHBOARD_REQUIRED"})
    if path == "/api/v1/events":
        if request.url.params.get("cursor") == "page2":
            return httpx.Response(200, content=_raw_page(), headers=headers)
        return httpx.Response(200, json=_page([c[1] for c in CASES], "page2"), headers=headers)
    return httpx.Response(404, json={"code": "ENDPOINT_NOT_FOUND"})


async def test_every_bad_event_is_stored_or_rejected_with_its_reason(
    database_url: str, pg_admin: Any
) -> None:
    settings = Settings(
        api_url=BASE,
        api_key=KEY,
        database_url=database_url,
        source="auto",
        backoff_base=0.01,
        backoff_cap=0.05,
    )
    summary = await flowtel.ingest(settings, transport=httpx.MockTransport(handler))
    assert summary.outcome == "complete"
    stored = {r["id"]: r for r in pg_admin.fetch("SELECT *, id::text AS id FROM events")}
    rejects = pg_admin.fetch("SELECT raw, reason, stored FROM rejected_events ORDER BY id")
    outcome: dict[str, list[str]] = {}
    for name, event, expected, word in CASES:
        event_id = event.get("id") if isinstance(event, dict) else None
        if isinstance(event, dict):
            tag = event["sessionId"]  # every case keeps its own, unharmed
            mine = [r for r in rejects if tag in r["raw"]]
        else:
            mine = [r for r in rejects if r["raw"].startswith("[")]
        is_stored = isinstance(event_id, str) and event_id in stored
        if expected == "rejected":
            assert not is_stored, name
            assert len(mine) == 1 and not mine[0]["stored"], (name, mine)
            assert word.lower() in mine[0]["reason"].lower(), (name, mine[0]["reason"])
        elif expected == "stored+note":
            assert is_stored, name
            assert len(mine) == 1 and mine[0]["stored"], (name, mine)
            assert word.lower() in mine[0]["reason"].lower(), (name, mine[0]["reason"])
        else:
            assert is_stored and not mine, name
        outcome[name] = [expected, mine[0]["reason"] if mine else ""]
    for name, n, _ in RAW_CASES:
        event_id = str(uuid.UUID(int=n + 1))
        assert event_id in stored, name  # repaired at the edge (U+FFFD), never dropped
    row = stored[str(uuid.UUID(int=17 + 1))]
    assert "\ufffd" in row["name"]
    # Nothing silently dropped: every event is in one table or the other.
    accounted = len(stored) + sum(1 for r in rejects if not r["stored"])
    assert accounted == TOTAL, (len(stored), rejects)
    assert summary.rejected >= sum(1 for c in CASES if c[2] != "stored")
    for name, (where, reason) in outcome.items():
        print(f"[badinput] {name}: {where}: {reason}")


def test_bad_cases_are_distinct() -> None:
    sessions = [c[1]["sessionId"] for c in CASES if isinstance(c[1], dict)]
    assert len(set(sessions)) == len(sessions)


# ---- wrong settings: a database user without rights ------------------------------------------


@pytest.fixture
def no_rights_dsn(pg_server: Any, database_url: str) -> Iterator[str]:
    """A login role that may connect to the database but create nothing in it."""
    role = "flowtel_nr_" + pg.database_of(database_url)[len("flowtel_t_") :]
    db = pg.database_of(database_url)
    pg.execute(pg_server.admin_dsn, f'CREATE ROLE "{role}" LOGIN')
    pg.execute(database_url, f'REVOKE CREATE ON SCHEMA public FROM PUBLIC, "{role}"')
    try:
        yield pg.with_user(database_url, role)
    finally:
        pg_server.drop_database(database_url)
        pg.execute(pg_server.admin_dsn, f'DROP ROLE IF EXISTS "{role}"')
        assert db


@pytest.mark.e2e
def test_a_database_user_without_rights_is_one_line_exit_2(
    no_rights_dsn: str, tmp_path: Path
) -> None:
    with simulator_process("fast", events=100) as server:
        env = cli_env(server, no_rights_dsn, FLOWTEL_DB_RECONNECT_TIMEOUT="2")
        result = run_cli(["run"], env, tmp_path, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.startswith("flowtel:")]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and "not enough rights" in lines[0], result.stderr


# ---- submit: an interrupted attempt blocks the next one until --force --------------------------


async def test_an_interrupted_submission_blocks_the_next_without_force(
    database_url: str, pg_admin: Any
) -> None:
    sim = Simulator(attrs.evolve(profile("fast"), events=500))
    settings = Settings(api_url=sim.config.base_url, api_key=sim.api_key, database_url=database_url)
    await flowtel.ingest(settings, transport=SimulatorTransport(sim))
    # An attempt that was recorded, then the process died before an answer came back.
    pg_admin.execute(
        "INSERT INTO submissions (repo_url, id_count, started_at) VALUES ($1, 500, $2)",
        "https://example.com/r",
        dt.datetime.now(dt.UTC),
    )
    with pytest.raises(SubmitRefused, match="outcome of attempt 1 is unknown"):
        await submit(settings, "https://example.com/r", transport=SimulatorTransport(sim))
    assert sim.stats.submissions == 0  # nothing was sent
    assert pg_admin.fetchval("SELECT count(*) FROM submissions") == 1  # no attempt recorded
    answer = await submit(
        settings, "https://example.com/r", force=True, transport=SimulatorTransport(sim)
    )
    assert "missing=0" in answer
    assert sim.stats.submissions == 1
    attempts = pg_admin.fetch("SELECT accepted, http_status FROM submissions ORDER BY id")
    assert attempts == [
        {"accepted": False, "http_status": None},
        {"accepted": True, "http_status": 200},
    ]
