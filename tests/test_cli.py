"""The CLI's contract with a person: wrong settings in one line with exit 2, secrets never shown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from flowtel._schema import schema_sql

try:
    from tests.e2e import CLI, cli_env, run_cli, simulator_process
    from tests.helpers import expected_rows, stored_rows
except ImportError:
    from e2e import CLI, cli_env, run_cli, simulator_process  # type: ignore[no-redef]
    from helpers import expected_rows, stored_rows  # type: ignore[no-redef]

pytestmark = pytest.mark.e2e

KEY = "ds_5ec7e75ec7e75ec7e75ec7e75ec7e75e"


def one_line_error(result: object, expected: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.startswith("flowtel:")]  # type: ignore[attr-defined]
    assert result.returncode == 2, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.stderr  # type: ignore[attr-defined]
    assert len(lines) == 1 and expected in lines[0], result.stderr  # type: ignore[attr-defined]


def test_missing_key(tmp_path: Path, database_url: str) -> None:
    env = cli_env(None, database_url, FLOWTEL_API_URL="http://127.0.0.1:9")
    one_line_error(run_cli(["run"], env, tmp_path), "FLOWTEL_API_KEY is not set")


def test_bad_url(tmp_path: Path, database_url: str) -> None:
    env = cli_env(None, database_url, FLOWTEL_API_URL="not a url", FLOWTEL_API_KEY=KEY)
    one_line_error(run_cli(["run"], env, tmp_path), "FLOWTEL_API_URL must be an http(s) URL")


def test_unreachable_api(tmp_path: Path, database_url: str) -> None:
    env = cli_env(None, database_url, FLOWTEL_API_URL="http://127.0.0.1:9", FLOWTEL_API_KEY=KEY)
    one_line_error(run_cli(["run"], env, tmp_path), "cannot reach FLOWTEL_API_URL")


def test_wrong_key(tmp_path: Path, database_url: str) -> None:
    with simulator_process("fast", events=100) as server:
        env = cli_env(server, database_url, FLOWTEL_API_KEY=KEY)
        result = run_cli(["run"], env, tmp_path)
    one_line_error(result, "FLOWTEL_API_KEY was refused by the API (401)")
    assert KEY not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("mysql://u:secretpw@h/db", "DATABASE_URL must be a postgresql:// URL"),
        ("postgresql://u:secretpw@127.0.0.1:9/db", "secretpw"),
    ],
)
def test_bad_database(tmp_path: Path, dsn: str, expected: str) -> None:
    with simulator_process("fast", events=100) as server:
        env = cli_env(server, dsn, FLOWTEL_DB_RECONNECT_TIMEOUT="1")
        result = run_cli(["run"], env, tmp_path)
    assert "secretpw" not in result.stderr + result.stdout
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    if expected != "secretpw":
        assert expected in result.stderr


@pytest.mark.parametrize(
    ("args", "extra", "expected"),
    [
        (["check", "--env-file=missing.env"], {}, "--env-file missing.env: no such file"),
        (["check"], {"FLOWTEL_PROGRESS_EVERY": "nan"}, "FLOWTEL_PROGRESS_EVERY must be"),
        (["check", "--metrics-port=abc"], {}, "FLOWTEL_METRICS_PORT must be a port number"),
        (["submit", "--repo="], {}, "--repo must be an http(s) URL, not ''"),
        (["status"], {"DATABASE_URL": "", "FLOWTEL_DATA_DIR": "a-file/x"}, "FLOWTEL_DATA_DIR"),
        (  # never reached, even with the schema left alone: a wrong setting
            ["status"],
            {"DATABASE_URL": "postgresql://u@127.0.0.1:9/x"},
            "DATABASE_URL: database unreachable for 5 s",
        ),
    ],
)
def test_more_wrong_settings_in_one_line(
    tmp_path: Path, database_url: str, args: list[str], extra: dict[str, str], expected: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    env = cli_env(None, database_url, FLOWTEL_API_URL="http://127.0.0.1:9", FLOWTEL_API_KEY=KEY)
    one_line_error(run_cli(args, {**env, **extra}, tmp_path), expected)


def test_a_simulator_that_cannot_listen_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            ["simulate", f"--port={port}", "--events=100"], cli_env(None, None), tmp_path
        )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("flowtel-cli simulate: cannot listen:"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--bogus"], "flowtel-cli run: unknown option --bogus; usage: flowtel-cli run "),
        (["submit"], "flowtel-cli submit: wrong or missing arguments; usage: flowtel-cli submit "),
        (["check", "--source=events"], "flowtel-cli check: --source is not an option of check;"),
        (["bogus"], "flowtel-cli: unknown command 'bogus'"),
        (["simulate", "--port"], "flowtel-cli: --port requires argument"),
    ],
)
def test_bad_usage_in_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run_cli(args, cli_env(None, None), tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(expected), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize("unbuffered", ["", "1"])  # stdout's buffer flushed at exit, or not
@pytest.mark.parametrize("args", [["--help"], ["status"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(
    tmp_path: Path, database_url: str, pg_admin: Any, args: list[str], unbuffered: str
) -> None:
    """`flowtel-cli status | head -1`: stdout is a pipe nobody reads any more."""
    pg_admin.execute(schema_sql())  # as after a run: status has something to print
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails, whenever it comes
    try:
        result = subprocess.run(
            [*CLI, *args],
            env={**cli_env(None, database_url), "PYTHONUNBUFFERED": unbuffered},
            cwd=tmp_path,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141


def test_check_accepts_a_key_only_where_the_api_answers(tmp_path: Path, database_url: str) -> None:
    with simulator_process("fast", events=100) as server:
        good = run_cli(["check"], cli_env(server, database_url), tmp_path)
        as_json = run_cli(["check", "--log-format=json"], cli_env(server, database_url), tmp_path)
        wrong = run_cli(
            ["check"], cli_env(server, database_url, FLOWTEL_API_URL=server.url + "/v2"), tmp_path
        )
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"ok   API key accepted by {server.url}; the API counts 100 events" in good.stdout
    assert "accepted" not in wrong.stdout, wrong.stdout
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["check"], r["status"]) for r in records] == [
        ("api", "ok"),
        ("listing", "ok"),
        ("feed", "ok"),
        ("database", "ok"),
    ], as_json.stdout
    assert records[0]["message"].startswith("ok   API key accepted by")
    one_line_error(wrong, f"FLOWTEL_API_URL {server.url}/v2 has no events listing under it")


def test_status_and_check_leave_a_database_without_flowtel_tables_alone(
    tmp_path: Path, database_url: str, pg_admin: Any
) -> None:
    """A look at a database, perhaps the wrong one, creates nothing in it."""
    pg_admin.execute("CREATE TABLE customers (id int)")
    with simulator_process("fast", events=100) as server:
        env = cli_env(server, database_url)
        check = run_cli(["check"], env, tmp_path)
    status = run_cli(["status"], env, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "database reachable; no flowtel tables yet" in check.stdout
    one_line_error(status, "no flowtel tables in the database")
    tables = pg_admin.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    assert [row["table_name"] for row in tables] == ["customers"]


def test_the_key_and_tokens_never_show(tmp_path: Path, database_url: str, pg_admin: object) -> None:
    """Every command, failing ones included, with a recognisable key: grep all output and tables."""
    with simulator_process("chaos", events=2_000) as server:
        key = server.key
        env = cli_env(server, database_url, FLOWTEL_PAGE_SIZE="500", FLOWTEL_LOG_LEVEL="debug")
        outputs = [
            run_cli(["check"], env, tmp_path),
            run_cli(["submit", "--repo=https://example.com/r"], env, tmp_path),  # refused: empty
            run_cli(["run"], env, tmp_path),
            run_cli(["status"], env, tmp_path),
            run_cli(["submit", "--repo=https://example.com/r"], env, tmp_path),
            run_cli(
                ["run"],
                cli_env(server, "postgresql://x:y@127.0.0.1:9/z", FLOWTEL_DB_RECONNECT_TIMEOUT="1"),
                tmp_path,
            ),
        ]
    text = "".join(r.stdout + r.stderr for r in outputs)
    assert outputs[2].returncode == 0, outputs[2].stderr[-2000:]
    assert key not in text
    assert key[3:] not in text
    # A stream token is 64 hex characters; none may appear anywhere.
    import re

    assert not re.search(r"[0-9a-f]{64}", text)
    tables = pg_admin.fetch(  # type: ignore[attr-defined]
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    for row in tables:
        dump = pg_admin.fetchval(  # type: ignore[attr-defined]
            f"SELECT coalesce(string_agg(t::text, '\\n'), '') FROM \"{row['table_name']}\" t"
        )
        assert key[3:] not in dump, row["table_name"]
        assert not re.search(r"[0-9a-f]{64}", dump), row["table_name"]


# ---- signals: SIGTERM as Ctrl-C, a clean stop, then an exact resume -----------------------

SLOW = """
profile = "fast"
[listing]
window = { limit = 3, window_s = 1.0 }
"""


@pytest.mark.parametrize(("signum", "code", "name"), [(15, 143, "SIGTERM"), (2, 130, "SIGINT")])
def test_a_signal_stops_the_run_cleanly_and_the_next_run_is_exact(
    database_url: str, pg_admin: object, tmp_path: Path, signum: int, code: int, name: str
) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(SLOW)
    with simulator_process(events=4_500, config_file=config) as server:
        env = cli_env(
            server,
            database_url,
            FLOWTEL_SOURCE="events",
            FLOWTEL_PAGE_SIZE="500",
            FLOWTEL_PROGRESS_EVERY="0.5",
        )
        process = subprocess.Popen(
            [*CLI, "run"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        # Part-way: some pages committed, more to come (9 pages at 3 a second).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _stored(pg_admin) < 1_000:
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be stopped"
        process.send_signal(signum)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=10)
        took = time.monotonic() - sent
        assert process.returncode == code, stderr.decode()[-3000:]
        assert took < 5, f"took {took:.1f} s to stop"
        said = [line for line in stderr.decode().splitlines() if line.startswith("flowtel:")]
        assert said == [
            f"flowtel: stopped by {name}; the last batch was committed or rolled back whole"
        ]
        part = pg_admin.fetchval("SELECT count(*) FROM events")  # type: ignore[attr-defined]
        assert 0 < part < 4_500 and part % 500 == 0, part  # whole pages only
        again = run_cli(["run"], env, tmp_path, timeout=60)
        assert again.returncode == 0, again.stderr[-3000:]
        rows, count = stored_rows(pg_admin)
        assert rows == expected_rows(server.simulator()) and count == 4_500


def _stored(pg_admin: Any) -> int:
    if not pg_admin.fetchval("SELECT to_regclass('events') IS NOT NULL"):
        return 0
    return int(pg_admin.fetchval("SELECT count(*) FROM events"))
