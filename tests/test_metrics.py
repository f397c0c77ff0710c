"""Prometheus metrics: the collector's exposition of a snapshot, a snapshot of a real run, and
`flowtel-cli run --metrics-port` scraped over HTTP while it runs."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import attrs
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import flowtel
from flowtel import Settings
from flowtel._metrics import registry_for
from flowtel._progress import BucketSnapshot, Snapshot, Watch
from flowtel.testing import Simulator, SimulatorTransport, profile

try:
    from tests.e2e import CLI, cli_env, simulator_process
except ImportError:
    from e2e import CLI, cli_env, simulator_process  # type: ignore[no-redef]

SNAP = Snapshot(
    elapsed=42.0,
    committed=10_500,
    api_total=30_000,
    inserted=10_000,
    duplicates=12,
    rejected=3,
    requests=25,
    throttled=2,
    retries=4,
    rate=250.0,
    buckets=(
        BucketSnapshot("events", 10, 60.0, 7, 0.0, throttled=1, in_flight=1, waited=12.5),
        BucketSnapshot("feed", None, None, None, 2.5, throttled=1, in_flight=3, concurrency=4.5),
    ),
    cursor_life_left=88.0,
    channels=(("batches", 2), ("pages", 5)),
    responses=(("events", 200, 20), ("events", 429, 2), ("feed", 0, 1), ("feed", 502, 2)),
    commits=8,
    commit_seconds=1.6,
    last_commit_seconds=0.25,
    streams=3,
    streams_done=1,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def exposition(snap: Snapshot | None) -> str:
    return generate_latest(registry_for(lambda: snap)).decode()


def test_every_number_of_a_snapshot_is_exposed() -> None:
    got = samples(exposition(SNAP))
    expected = {
        ("flowtel_run_active", ()): 1,
        ("flowtel_events_committed", ()): 10_500,
        ("flowtel_api_events", ()): 30_000,
        ("flowtel_events_inserted_total", ()): 10_000,
        ("flowtel_events_duplicates_total", ()): 12,
        ("flowtel_events_rejected_total", ()): 3,
        ("flowtel_events_per_second", ()): 250,
        ("flowtel_eta_seconds", ()): 78,
        ("flowtel_requests_total", ()): 25,
        ("flowtel_throttled_total", ()): 2,
        ("flowtel_retries_total", ()): 4,
        ("flowtel_responses_total", (("endpoint", "events"), ("status", "200"))): 20,
        ("flowtel_responses_total", (("endpoint", "events"), ("status", "429"))): 2,
        ("flowtel_responses_total", (("endpoint", "feed"), ("status", "0"))): 1,
        ("flowtel_responses_total", (("endpoint", "feed"), ("status", "502"))): 2,
        ("flowtel_rate_limit_wait_seconds_total", (("bucket", "events"),)): 12.5,
        ("flowtel_rate_limit_wait_seconds_total", (("bucket", "feed"),)): 0,
        ("flowtel_bucket_throttled_total", (("bucket", "events"),)): 1,
        ("flowtel_bucket_remaining", (("bucket", "events"),)): 7,
        ("flowtel_bucket_limit", (("bucket", "events"),)): 10,
        ("flowtel_bucket_window_seconds", (("bucket", "events"),)): 60,
        ("flowtel_bucket_next_slot_seconds", (("bucket", "feed"),)): 2.5,
        ("flowtel_bucket_in_flight", (("bucket", "feed"),)): 3,
        ("flowtel_bucket_concurrency", (("bucket", "feed"),)): 4.5,
        ("flowtel_cursor_life_left_seconds", ()): 88,
        ("flowtel_channel_depth", (("channel", "pages"),)): 5,
        ("flowtel_channel_depth", (("channel", "batches"),)): 2,
        ("flowtel_commit_seconds_count", ()): 8,
        ("flowtel_commit_seconds_sum", ()): 1.6,
        ("flowtel_last_commit_seconds", ()): 0.25,
        ("flowtel_streams", ()): 3,
        ("flowtel_streams_done", ()): 1,
    }
    for key, value in expected.items():
        assert got.get(key) == pytest.approx(value), key
    # What is not known is left out rather than shown as a made-up number.
    assert ("flowtel_bucket_limit", (("bucket", "feed"),)) not in got
    assert ("flowtel_bucket_remaining", (("bucket", "feed"),)) not in got


def test_before_a_run_only_says_it_is_not_running() -> None:
    assert samples(exposition(None)) == {("flowtel_run_active", ()): 0}


def test_a_finished_run_is_not_active_and_unknowns_are_absent() -> None:
    snap = attrs.evolve(SNAP, finished=True, cursor_life_left=None, api_total=None)
    got = samples(exposition(snap))
    assert got[("flowtel_run_active", ())] == 0
    assert ("flowtel_cursor_life_left_seconds", ()) not in got
    assert ("flowtel_api_events", ()) not in got and ("flowtel_eta_seconds", ()) not in got


async def test_a_snapshot_of_a_real_run_matches_its_summary(database_url: str) -> None:
    sim = Simulator(attrs.evolve(profile("fast"), events=3_000))
    settings = Settings(
        api_url=sim.config.base_url, api_key=sim.api_key, database_url=database_url, page_size=500
    )
    state = Watch()
    summary = await flowtel.ingest(
        settings, transport=SimulatorTransport(sim), on_start=state.started
    )
    snap = state.sample(finished=True)
    assert snap is not None
    assert snap.committed == summary.total_in_database == 3_000 == snap.api_total
    assert (snap.inserted, snap.duplicates, snap.requests) == (
        summary.inserted,
        summary.duplicates,
        summary.requests,
    )
    assert sum(n for _, _, n in snap.responses) == snap.requests
    assert snap.commits > 0 and snap.streams == snap.streams_done > 0
    assert {b.name for b in snap.buckets} >= {"events"}
    assert snap.rate > 0  # 3,000 events in well under a minute
    text = exposition(snap)
    assert sim.api_key not in text
    assert samples(text)[("flowtel_events_committed", ())] == 3_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return str(answer.read().decode())
    except OSError:
        return None


SLOW = """
profile = "fast"
[listing]
window = { limit = 2, window_s = 1.0 }
"""


@pytest.mark.e2e
def test_metrics_port_serves_the_running_ingestion(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(SLOW)
    port = free_port()
    with simulator_process(events=4_000, config_file=config) as server:
        env = cli_env(server, database_url, FLOWTEL_SOURCE="events", FLOWTEL_PAGE_SIZE="500")
        process = subprocess.Popen(
            [*CLI, "run", f"--metrics-port={port}"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            mid_run = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and process.poll() is None:
                text = scrape(port)
                got = samples(text) if text else {}
                if 0 < got.get(("flowtel_events_committed", ()), 0) < 4_000:
                    mid_run = text
                    break
                time.sleep(0.1)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    assert mid_run is not None, "no scrape caught the run part-way"
    assert server.key not in mid_run
    got = samples(mid_run)
    assert got[("flowtel_run_active", ())] == 1
    assert got[("flowtel_api_events", ())] == 4_000
    assert got[("flowtel_responses_total", (("endpoint", "events"), ("status", "200")))] >= 1
    assert got[("flowtel_bucket_limit", (("bucket", "events"),))] == 2
    assert got[("flowtel_commit_seconds_count", ())] >= 1
    assert ("flowtel_channel_depth", (("channel", "pages"),)) in got
    assert ("flowtel_cursor_life_left_seconds", ()) in got
    assert f":{port}/metrics" in stderr  # it says where
    assert stdout.startswith("complete: 4,000 new events")
    assert scrape(port) is None  # and it is gone with the run


@pytest.mark.e2e
def test_a_busy_metrics_port_is_a_setting_error(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with simulator_process("fast", events=100) as server:
            env = cli_env(server, database_url, FLOWTEL_METRICS_PORT=str(port))
            result = subprocess.run(
                [*CLI, "run"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
            )
    assert result.returncode == 2, result.stderr
    assert f"FLOWTEL_METRICS_PORT {port}: cannot listen" in result.stderr
