"""Progress: the pure formatting of snapshots, then `flowtel-cli run` as a person and a machine
see it: live in a pseudo-terminal, plain lines in a pipe, JSON lines with --log-format=json."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import select
import struct
import subprocess
import time
from pathlib import Path

import pytest
from rich.console import Console

from flowtel._model import Checkpoint
from flowtel._progress import (
    BucketSnapshot,
    RateMeter,
    Snapshot,
    bar,
    bucket_text,
    duration,
    progress_line,
    progress_record,
    rich_view,
    sparkline,
)
from flowtel_cli._commands import render_status, rich_status, throughput_chart

try:
    from tests.e2e import CLI, Server, cli_env, run_cli, simulator_process
except ImportError:
    from e2e import CLI, Server, cli_env, run_cli, simulator_process  # type: ignore[no-redef]

EVENTS_BUCKET = BucketSnapshot(
    name="events", limit=10, window=60.0, remaining=3, next_slot_in=12.4, throttled=2, in_flight=1
)
FEED_BUCKET = BucketSnapshot(
    name="feed",
    limit=None,
    window=None,
    remaining=None,
    next_slot_in=0.0,
    throttled=5,
    in_flight=3,
    concurrency=4.25,
    waited=75.0,
)
SNAP = Snapshot(
    elapsed=125.0,
    committed=1_234_567,
    api_total=3_000_000,
    inserted=1_200_000,
    duplicates=17,
    rejected=4,
    requests=321,
    throttled=7,
    retries=9,
    rate=2_500.0,
    buckets=(EVENTS_BUCKET, FEED_BUCKET),
    cursor_life_left=98.6,
    channels=(("batches", 1), ("pages", 6)),
)


# ---- pure ------------------------------------------------------------------------------


def test_duration() -> None:
    assert [duration(s) for s in (0, 0.4, 59.6, 60, 185, 3600, 3725, None)] == [
        "0s",
        "0s",
        "1m00s",
        "1m00s",
        "3m05s",
        "1h00m",
        "1h02m",
        "-",
    ]


def test_eta_from_the_rate_and_what_is_left() -> None:
    assert SNAP.eta == pytest.approx((3_000_000 - 1_234_567) / 2_500)
    assert Snapshot(elapsed=1, committed=5, api_total=None, rate=10).eta is None
    assert Snapshot(elapsed=1, committed=5, api_total=9, rate=0).eta is None
    assert Snapshot(elapsed=1, committed=9, api_total=9, rate=0).eta == 0.0


def test_rate_meter_looks_back_one_minute() -> None:
    meter = RateMeter(window=60)
    assert meter.add(0, 0) == 0.0
    assert meter.add(10, 1_000) == 100.0
    assert meter.add(60, 6_000) == 100.0
    # 120 s in: the samples at 0 and 10 s are out of the window; 60 s -> 120 s: 60,000 events.
    assert meter.add(120, 66_000) == pytest.approx(1_000.0)
    assert meter.add(190, 66_000) == pytest.approx(0.0)


def test_bucket_text_says_what_is_known() -> None:
    assert bucket_text(EVENTS_BUCKET) == "events 3/10 per 1m00s, next slot in 12s, 1 in flight"
    assert bucket_text(FEED_BUCKET) == "feed budget unknown, next slot now, 3/4.2 in flight"


def test_progress_line() -> None:
    assert progress_line(SNAP) == (
        "progress: 1,234,567/3,000,000 events committed (41.2%) | "
        "2,500 events/s over the last minute | ETA 11m46s | "
        "events 3/10 per 1m00s, next slot in 12s, 1 in flight | "
        "feed budget unknown, next slot now, 3/4.2 in flight | "
        "429s 7, retries 9, rejected 4 | oldest cursor 1m39s left"
    )


def test_progress_line_before_the_total_and_the_rate_are_known() -> None:
    snap = Snapshot(elapsed=0.5, committed=0, api_total=None)
    assert progress_line(snap) == (
        "progress: 0 events committed | 0 events/s over the last minute | ETA - | "
        "429s 0, retries 0, rejected 0"
    )


def test_progress_record_is_json_and_complete() -> None:
    record = json.loads(json.dumps(progress_record(SNAP)))
    assert record["committed"] == 1_234_567 and record["api_total"] == 3_000_000
    assert record["events_per_second"] == 2_500.0
    assert record["eta_seconds"] == pytest.approx(706.2, abs=0.1)
    assert record["buckets"][1]["concurrency"] == 4.25
    assert record["channels"] == {"batches": 1, "pages": 6}
    assert record["cursor_life_left"] == 98.6


def test_rich_view_shows_every_number() -> None:
    console = Console(width=120, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(rich_view(SNAP))
    console.file.close()
    text = console.export_text()
    for expected in (
        "1,234,567 / 3,000,000 events committed  41.2%",
        "2,500 events/s over the last minute",
        "ETA 11m46s",
        "429s 7",
        "retries 9",
        "rejected 4",
        "oldest cursor 1m39s left",
    ):
        assert expected in text, text
    events_row = next(line for line in text.splitlines() if line.startswith("events "))
    assert events_row.split() == ["events", "3/10", "per", "1m00s", "12s", "1", "2", "0s"]
    feed_row = next(line for line in text.splitlines() if line.startswith("feed "))
    assert feed_row.split() == ["feed", "learning", "now", "3/4.2", "5", "1m15s"]


def test_bar_and_sparkline() -> None:
    assert bar(0.5, width=10) == "[█████░░░░░]"
    assert bar(None, width=3) == "[???]"
    assert sparkline([0, 1, 4, 8]) == " ▁▄█"
    assert sparkline([]) == "" and sparkline([0, 0]) == "  "


# ---- the CLI ---------------------------------------------------------------------------

# About 3 s of real time: 8 pages of 500 from the listing at 2 a second.
SLOW = """
profile = "fast"
[listing]
window = { limit = 2, window_s = 1.0 }
"""
EVENTS = 4_000


def slow_env(server: Server, database_url: str, **extra: str) -> dict[str, str]:
    return cli_env(
        server,
        database_url,
        FLOWTEL_SOURCE="events",
        FLOWTEL_PAGE_SIZE="500",
        FLOWTEL_LOG_LEVEL="debug",
        **extra,
    )


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def run_in_pty(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal (120x40) as its stdin, stdout and stderr."""
    import fcntl
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [*CLI, *args], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every copy of the terminal's slave side is closed
                break
            if not data:
                break
            chunks.append(data)
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.e2e
def test_run_in_a_terminal_shows_live_progress(
    database_url: str, tmp_path: Path, pg_admin: object
) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(SLOW)
    with simulator_process(events=EVENTS, config_file=config) as server:
        env = slow_env(server, database_url, TERM="xterm-256color")
        code, output = run_in_pty(["run"], env, tmp_path, timeout=60)
    assert code == 0, output[-3000:]
    assert server.key not in output
    text = ANSI.sub("", output)
    counts = [
        int(n.replace(",", "")) for n in re.findall(r"([\d,]+) / 4,000 events committed", text)
    ]
    # Live: frames while the run went (some part-way), and the last one at the end.
    assert any(0 < n < EVENTS for n in counts), counts
    assert counts[-1] == EVENTS
    assert counts == sorted(counts)
    assert "events/s over the last minute" in text and "ETA" in text
    assert re.search(r"events\s+\d+/\d+ per 1s", text), text[-2000:]
    assert "complete: 4,000 new events" in text
    assert pg_admin.fetchval("SELECT count(*) FROM events") == EVENTS  # type: ignore[attr-defined]


@pytest.mark.e2e
def test_run_in_a_pipe_writes_periodic_progress_lines(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(SLOW)
    with simulator_process(events=EVENTS, config_file=config) as server:
        env = slow_env(server, database_url, FLOWTEL_PROGRESS_EVERY="1")
        result = run_cli(["run"], env, tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if " progress: " in line]
    assert len(lines) >= 2, result.stderr[-3000:]
    assert "\x1b[" not in result.stderr  # no terminal codes in a log
    assert lines[-1].endswith("429s 0, retries 0, rejected 0") or "429s" in lines[-1]
    assert "4,000/4,000 events committed (100.0%)" in lines[-1]
    assert result.stdout.startswith("complete: 4,000 new events")
    assert server.key not in result.stdout + result.stderr


@pytest.mark.e2e
def test_log_format_json_is_one_object_per_line(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(SLOW)
    with simulator_process(events=EVENTS, config_file=config) as server:
        env = slow_env(server, database_url, FLOWTEL_PROGRESS_EVERY="1")
        result = run_cli(["run", "--log-format=json"], env, tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stderr.splitlines()]
    kinds = {r["event"] for r in records}
    assert {"log", "progress"} <= kinds, kinds
    progress = [r for r in records if r["event"] == "progress"]
    assert progress[-1]["committed"] == EVENTS and progress[-1]["finished"] is True
    assert progress[-1]["api_total"] == EVENTS
    assert {b["name"] for b in progress[-1]["buckets"]} >= {"events"}
    (result_line,) = result.stdout.splitlines()
    outcome = json.loads(result_line)
    assert outcome["event"] == "result" and outcome["summary"]["inserted"] == EVENTS
    assert server.key not in result.stdout + result.stderr


def test_a_wrong_log_format_is_a_setting_error(tmp_path: Path) -> None:
    result = run_cli(["run", "--log-format=xml"], cli_env(None, None), tmp_path)
    assert result.returncode == 2
    assert "FLOWTEL_LOG_FORMAT must be text or json" in result.stderr


# ---- status ----------------------------------------------------------------------------

STATUS = {
    "events": 1_000,
    "rejected": 2,
    "checkpoints": [
        Checkpoint(stream="events", source="events", since_ms=1_769_000_000_000, done=True),
        Checkpoint(
            stream="feed-001",
            source="feed",
            until_ms=1_769_000_000_000,
            cursor="c",
            watermark=dt.datetime(2026, 1, 20, 12, 0, tzinfo=dt.UTC),
            events=640,
            pages=3,
        ),
    ],
    "last_run": {
        "id": 3,
        "started_at": dt.datetime(2026, 1, 28, 9, 30, tzinfo=dt.UTC),
        "summary": {
            "outcome": "complete",
            "inserted": 1_000,
            "elapsed": 125.0,
            "per_minute": [400, 0, 800, 100],
        },
    },
    "submissions": [],
}


def test_status_as_plain_text_with_a_throughput_chart() -> None:
    text = render_status(STATUS)
    lines = text.splitlines()
    assert lines[0] == "events stored: 1,000"
    assert any(line.split()[:3] == ["events", "events", "done"] for line in lines)
    feed = next(line for line in lines if "feed-001" in line)
    assert "has a cursor" in feed and "640 fetched" in feed and "shard open .. 2026-01-21" in feed
    assert "last run: #3 started 2026-01-28 09:30:00, complete, 1,000 new events" in text
    assert lines[-2:] == [
        "events per minute (peak 800, 4 minute(s)):",
        "  start |▄ █▁| minute 4",
    ]


def test_a_run_without_a_summary_is_not_shown_as_zero_events() -> None:
    last = {"id": 4, "started_at": dt.datetime(2026, 1, 29, 8, 0, tzinfo=dt.UTC), "summary": None}
    text = render_status({**STATUS, "last_run": last})
    line = next(line for line in text.splitlines() if line.startswith("last run:"))
    assert line == (
        "last run: #4 started 2026-01-29 08:00:00,"
        " still running or stopped before its summary was written"
    )


def test_a_long_run_charts_its_last_hour() -> None:
    chart = throughput_chart(list(range(1, 91)))
    assert chart[1].startswith("  minute 31 |") and chart[1].endswith("| minute 90")
    assert len(chart[1].split("|")[1]) == 60
    assert throughput_chart([]) == []


def test_status_on_a_terminal_is_a_table() -> None:
    console = Console(width=140, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(rich_status(STATUS))
    console.file.close()
    text = console.export_text()
    assert "streams and checkpoints" in text
    for header in ("stream", "source", "shard", "state", "fetched", "pages", "watermark"):
        assert header in text
    assert "2026-01-20 12:00:00" in text and "resumes" not in text
    assert "▄ █▁" in text


def test_errors_are_json_too_with_log_format_json(tmp_path: Path) -> None:
    env = cli_env(None, None, FLOWTEL_API_URL="http://127.0.0.1:9", FLOWTEL_LOG_FORMAT="json")
    result = run_cli(["run"], env, tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    record = json.loads(line)
    assert record["event"] == "error" and "FLOWTEL_API_KEY is not set" in record["message"]
