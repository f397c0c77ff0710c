"""The CLI's contract with a person: wrong settings in one line with exit 2, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    from tests.e2e import cli_env, run_cli, simulator_process
except ImportError:
    from e2e import cli_env, run_cli, simulator_process  # type: ignore[no-redef]

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


def test_bad_option(tmp_path: Path) -> None:
    result = run_cli(["run", "--bogus"], cli_env(None, None), tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr


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
