"""End to end: `flowtel-cli run` against `flowtel-cli simulate` over real sockets, checked
against the simulator's own dataset: every id once, every instant right to the millisecond."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

try:
    from tests.e2e import CLI, cli_env, run_cli, simulator_process
    from tests.helpers import expected_rows, stored_rows
except ImportError:
    from e2e import CLI, cli_env, run_cli, simulator_process  # type: ignore[no-redef]
    from helpers import expected_rows, stored_rows  # type: ignore[no-redef]

pytestmark = pytest.mark.e2e


def test_chaos_profile_end_to_end(database_url: str, pg_admin: object, tmp_path: Path) -> None:
    with simulator_process("chaos", events=6_000) as server:
        env = cli_env(server, database_url, FLOWTEL_PAGE_SIZE="1000")
        result = run_cli(["run"], env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        rows, count = stored_rows(pg_admin)
        assert rows == expected_rows(server.simulator())
        assert count == 6_000
        assert result.stdout.startswith("complete: 6,000 new events")
        assert server.key not in result.stdout + result.stderr


UNSEEN = """
profile = "live"
seed = 99
whole_second_share = 0.6
tie_share = 0.3
cursor_lifetime_s = [9, 11]
token_lifetime_s = 12

[listing]
window = { limit = 4, window_s = 7.0 }
latency = { base_s = [0.0, 0.05] }

[listing.formats]
ms = 1.0
iso_z = 1.0
seconds = 1.0
space = 1.0
offset = 1.0
stray = 1.0
no_zone = 1.0
ms_string = 1.0
seconds_string = 1.0

[listing.faults]
status_503 = 0.05
truncated = 0.05
dropped = 0.05
repeated = 0.1

[feed]
window = { limit = 9, window_s = 5.0 }
latency = { base_s = [0.0, 0.1], capacity = 2 }
formats = { ms = 1.0, seconds = 1.0, offset = 1.0 }

[feed.faults]
status_502 = 0.05
empty = 0.05
non_object = 0.05
missing_fields = 0.3
slow = 0.02
slow_s = [0.5, 1.0]
"""


@pytest.mark.parametrize("source", ["events", "auto"])
def test_a_simulator_configured_in_ways_no_other_test_used(
    database_url: str, pg_admin: object, tmp_path: Path, source: str
) -> None:
    config = tmp_path / "unseen.toml"
    config.write_text(UNSEEN)
    with simulator_process(events=4_000, config_file=config) as server:
        env = cli_env(server, database_url, FLOWTEL_PAGE_SIZE="400")
        result = run_cli(["run", f"--source={source}"], env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        rows, count = stored_rows(pg_admin)
        assert rows == expected_rows(server.simulator()) and count == 4_000


def test_sigkill_at_random_moments_then_exact(
    database_url: str, pg_admin: object, tmp_path: Path
) -> None:
    rng = random.Random(7)
    kills = 0
    with simulator_process("chaos", events=8_000, seed=5) as server:
        env = cli_env(server, database_url, FLOWTEL_PAGE_SIZE="500")
        for _ in range(5):
            process = subprocess.Popen(
                [*CLI, "run"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            time.sleep(rng.uniform(1.0, 3.0))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.communicate(timeout=30)
        result = run_cli(["run"], env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        rows, count = stored_rows(pg_admin)
        assert rows == expected_rows(server.simulator()) and count == 8_000
    assert kills >= 3, "the runs finished before they could be killed: make the data larger"


def test_submit_refuses_until_complete_then_reports_nothing_missing(
    database_url: str, pg_admin: object, tmp_path: Path
) -> None:
    with simulator_process("fast", events=3_000) as server:
        env = cli_env(server, database_url, FLOWTEL_PAGE_SIZE="1000")
        early = run_cli(["submit", "--repo=https://example.com/r"], env, tmp_path)
        assert early.returncode == 1 and "refusing to submit: 0 distinct ids" in early.stderr
        assert run_cli(["run"], env, tmp_path).returncode == 0
        done = run_cli(["submit", "--repo=https://example.com/r"], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "missing=0" in done.stdout and "eventCount=3000" in done.stdout
        again = run_cli(["submit", "--repo=https://example.com/r"], env, tmp_path)
        assert again.returncode == 1 and "already accepted" in again.stderr
        attempts = pg_admin.fetch("SELECT accepted, id_count FROM submissions")  # type: ignore[attr-defined]
        assert attempts == [{"accepted": True, "id_count": 3000}]


def test_status_after_a_run(database_url: str, tmp_path: Path) -> None:
    with simulator_process("fast", events=1_000) as server:
        env = cli_env(server, database_url)
        assert run_cli(["run"], env, tmp_path).returncode == 0
        status = run_cli(["status"], cli_env(None, database_url), tmp_path)
        assert status.returncode == 0, status.stderr
        assert "events stored: 1,000" in status.stdout
        assert "done" in status.stdout
