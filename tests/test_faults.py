"""Faults over real sockets: `flowtel-cli run` as a process against the simulator's HTTP server,
each test ending in an exact check of the table against the simulator's dataset.

The simulator's server runs in a thread of this process (`served`), so that the tests can read
its counters (`sim.stats`: requests, faults injected, 429s) and see which requests are in flight
when they kill the run. Each test prints what it injected; docs/reliability.md quotes them.
"""

from __future__ import annotations

import collections
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from flowtel._schema import schema_sql
from flowtel.testing import Simulator, SimulatorConfig, config_from_mapping, serve

try:
    from tests import pg
    from tests.e2e import CLI, cli_env, run_cli
    from tests.helpers import expected_rows, stored_rows
except ImportError:
    import pg  # type: ignore[no-redef]
    from e2e import CLI, cli_env, run_cli  # type: ignore[no-redef]
    from helpers import expected_rows, stored_rows  # type: ignore[no-redef]

pytestmark = pytest.mark.e2e


# ---- the simulator's HTTP server in a thread ---------------------------------------------


@attrs.define
class Served:
    url: str
    key: str
    sim: Simulator
    in_flight: int = 0  # requests being answered right now

    @property
    def stats(self) -> Any:
        return self.sim.stats

    def requests(self) -> int:
        return sum(self.sim.stats.requests.values())


@contextmanager
def served(config: SimulatorConfig) -> Iterator[Served]:
    """The simulator over real sockets (h11 on trio, in a thread of its own)."""
    sim = Simulator(config)
    box = Served("", sim.api_key, sim)
    handle = sim.handle

    async def counting(request: Any) -> Any:
        box.in_flight += 1
        try:
            return await handle(request)
        finally:
            box.in_flight -= 1

    sim.handle = counting  # type: ignore[method-assign]
    ready = threading.Event()
    control: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            control["token"] = trio.lowlevel.current_trio_token()
            control["scope"] = nursery.cancel_scope
            host, port = await nursery.start(serve, sim, "127.0.0.1", 0)
            box.url = f"http://{host}:{port}"
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), name="simulator", daemon=True)
    thread.start()
    assert ready.wait(30), "the simulator did not start"
    try:
        yield box
    finally:
        trio.from_thread.run_sync(control["scope"].cancel, trio_token=control["token"])
        thread.join(10)


def config(**knobs: Any) -> SimulatorConfig:
    return config_from_mapping(knobs, default_profile="fast")


# ---- a run as a process, its log read as it comes ------------------------------------------


class Child:
    """`flowtel-cli run` with debug logs; optionally killed the moment a log line appears."""

    def __init__(
        self, env: dict[str, str], cwd: Path, kill_on: str | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.lines: list[str] = []
        self.kill_on = kill_on
        self.killed = False
        self.proc = subprocess.Popen(
            [*CLI, "run", *args],
            env={**env, "FLOWTEL_LOG_LEVEL": "debug"},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if self.kill_on and self.kill_on in line and not self.killed:
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.killed = True

    def wait(self, timeout: float = 120) -> int:
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()
        code = self.proc.wait(timeout)
        self.reader.join(10)
        self.proc.stdout.close()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


def phase_of(lines: list[str], in_flight: int) -> str:
    """Where a killed run was, from its last database log line and the requests in flight."""
    phase = "startup"
    for line in lines:
        if "commit: COPY" in line:
            phase = "COPY"
        elif "commit: COMMIT" in line:
            phase = "commit"
        elif "commit: committed" in line or "run lock taken" in line:
            phase = "between"
    if phase in ("COPY", "commit"):
        return phase
    if phase == "startup" and not any("run lock taken" in line for line in lines):
        return "startup"
    return "fetch" if in_flight else "rate-limit wait"


def assert_exact(pg_admin: Any, sim: Simulator) -> int:
    rows, count = stored_rows(pg_admin)
    expected = expected_rows(sim)
    missing = expected.keys() - rows.keys()
    extra = rows.keys() - expected.keys()
    assert not missing and not extra, f"{len(missing)} lost, {len(extra)} unknown"
    assert count == len(expected), "duplicated rows"
    assert rows == expected, "an instant is wrong"
    return count


def report(test: str, **counts: Any) -> None:
    print(f"\n[reliability] {test}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


# ---- SIGKILL at 20 moments -------------------------------------------------------------------

KILLS = 20
# Tight windows on both buckets, so that much of a run is spent waiting for a slot, a few slow
# answers and repeats, and small pages so that each life of the run commits a few of them.
KILL_CONFIG = {
    "profile": "fast",
    "cursor_lifetime_s": [20, 25],
    "listing": {"window": {"limit": 6, "window_s": 2.0}, "latency": {"base_s": [0.02, 0.15]}},
    "feed": {
        "window": {"limit": 6, "window_s": 2.0},
        "latency": {"base_s": [0.05, 0.3]},
        "faults": {"repeated": 0.1, "slow": 0.05, "slow_s": [0.3, 0.8]},
    },
}


def test_sigkill_20_times_then_exact(database_url: str, pg_admin: Any, tmp_path: Path) -> None:
    rng = random.Random(20)
    phases: collections.Counter[str] = collections.Counter()
    modes = ["delay", "COPY", "COMMIT", "delay"]
    kills = runs = 0
    cfg = attrs.evolve(config(**KILL_CONFIG), events=16_000, seed=31)
    started = time.monotonic()
    with served(cfg) as server:
        env = cli_env(None, database_url, FLOWTEL_PAGE_SIZE="200")
        env |= {"FLOWTEL_API_URL": server.url, "FLOWTEL_API_KEY": server.key}
        while kills < KILLS:
            assert time.monotonic() - started < 150, f"only {kills} kills: {dict(phases)}"
            mode = modes[kills % len(modes)]
            trigger = {"COPY": "commit: COPY", "COMMIT": "commit: COMMIT"}.get(mode)
            child = Child(env, tmp_path, kill_on=trigger)
            runs += 1
            if mode == "delay":
                time.sleep(rng.uniform(0.6, 2.5))
                in_flight = server.in_flight
                child.kill()
            else:
                in_flight = 0
            # A triggered kill that never fired (the run finished first) is not a kill.
            deadline = time.monotonic() + 15
            while mode != "delay" and not child.killed and child.proc.poll() is None:
                if time.monotonic() > deadline:
                    child.kill()
                    break
                time.sleep(0.01)
            code = child.wait()
            if child.killed:
                assert code == -signal.SIGKILL
                kills += 1
                phases[phase_of(child.lines, in_flight)] += 1
            else:
                assert code == 0, child.stderr[-3000:]
                pytest.fail(f"the run completed after {kills} kills: give it more to do")
        final = run_cli(["run"], env, tmp_path)
        assert final.returncode == 0, final.stderr[-3000:]
        count = assert_exact(pg_admin, server.sim)
        throttled = dict(server.stats.rate_limited)
    report(
        "sigkill",
        kills=kills,
        runs=runs + 1,
        events=count,
        phases=dict(phases),
        server_429s=throttled,
        seconds=round(time.monotonic() - started, 1),
    )
    # The kills must have hit the moments this test is about, not only start-ups.
    assert phases["COPY"] + phases["commit"] >= 5, phases
    assert phases["fetch"] + phases["rate-limit wait"] >= 3, phases


# ---- the database's connections killed, and the database away -----------------------------

MOVING = {
    "profile": "fast",
    "listing": {"window": {"limit": 10, "window_s": 1.0}, "latency": {"base_s": [0.05, 0.1]}},
    "feed": {"window": {"limit": 10, "window_s": 1.0}, "latency": {"base_s": [0.05, 0.1]}},
}


def test_connections_killed_mid_run_then_exact(
    database_url: str, pg_admin: Any, tmp_path: Path
) -> None:
    cfg = attrs.evolve(config(**MOVING), events=10_000, seed=8)
    terminated = rounds = 0
    with served(cfg) as server:
        env = cli_env(
            None, database_url, FLOWTEL_PAGE_SIZE="200", FLOWTEL_DB_RECONNECT_TIMEOUT="30"
        )
        env |= {"FLOWTEL_API_URL": server.url, "FLOWTEL_API_KEY": server.key}
        child = Child(env, tmp_path)
        while child.proc.poll() is None and rounds < 8:
            time.sleep(0.6)
            if any("commit: committed" in line for line in child.lines):
                n = pg_admin.terminate_backends(application_name="flowtel")
                terminated += n
                rounds += 1 if n else 0
        code = child.wait()
        assert code == 0, child.stderr[-3000:]
        count = assert_exact(pg_admin, server.sim)
    assert rounds >= 5, f"the run ended after {rounds} rounds of kills: give it more to do"
    assert "database connection lost" in child.stderr or "taking the lock again" in child.stderr
    assert "run lock taken again" in child.stderr
    report("pg_terminate_backend", rounds=rounds, backends_terminated=terminated, events=count)


@pytest.fixture
def owner_dsn(pg_server: Any, database_url: str) -> Iterator[str]:
    """`database_url` as an ordinary role that owns the database (superusers ignore
    CONNECTION LIMIT, and so cannot be kept out of it)."""
    role = "flowtel_r_" + pg.database_of(database_url)[len("flowtel_t_") :]
    pg.execute(pg_server.admin_dsn, f'CREATE ROLE "{role}" LOGIN')
    pg.execute(
        pg_server.admin_dsn, f'ALTER DATABASE "{pg.database_of(database_url)}" OWNER TO "{role}"'
    )
    try:
        yield pg.with_user(database_url, role)
    finally:
        pg.execute(
            pg_server.admin_dsn,
            f'ALTER DATABASE "{pg.database_of(database_url)}" OWNER TO postgres',
        )
        pg_server.drop_database(database_url)  # its objects belong to the role: drop them first
        pg.execute(pg_server.admin_dsn, f'DROP ROLE IF EXISTS "{role}"')


def test_database_away_past_the_timeout_stops_then_resumes(
    owner_dsn: str, database_url: str, pg_admin: Any, pg_server: Any, tmp_path: Path
) -> None:
    name = pg.database_of(database_url)
    cfg = attrs.evolve(config(**MOVING), events=6_000, seed=9)
    with served(cfg) as server:
        env = cli_env(None, owner_dsn, FLOWTEL_PAGE_SIZE="200", FLOWTEL_DB_RECONNECT_TIMEOUT="2")
        env |= {"FLOWTEL_API_URL": server.url, "FLOWTEL_API_KEY": server.key}
        child = Child(env, tmp_path)
        _wait_for(lambda: _events_stored(pg_admin) > 0, child)
        # The server now refuses the role (53300 "too many connections"), for good.
        pg.execute(pg_server.admin_dsn, f'ALTER DATABASE "{name}" CONNECTION LIMIT 0')
        away = time.monotonic()
        pg_admin.terminate_backends(application_name="flowtel")
        code = child.wait(60)
        stopped_after = time.monotonic() - away
        pg.execute(pg_server.admin_dsn, f'ALTER DATABASE "{name}" CONNECTION LIMIT -1')
        assert code == 1, child.stderr[-3000:]
        assert "Traceback" not in child.stderr
        last = [line for line in child.lines if line.startswith("flowtel: ")]
        assert last and all("database unreachable for 2 s" in line for line in last), last
        assert stopped_after < 20
        partial = pg_admin.fetchval("SELECT count(*) FROM events")
        assert 0 < partial < 6_000
        again = run_cli(["run"], env, tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        count = assert_exact(pg_admin, server.sim)
    report("database away", stopped_after_s=round(stopped_after, 1), events=count)


# ---- every transport and data fault at high rates ------------------------------------------

HARSH_FAULTS = {
    "status_502": 0.06,
    "status_503": 0.06,
    "status_504": 0.06,
    "truncated": 0.06,
    "empty": 0.05,
    "non_object": 0.05,
    "dropped": 0.06,
    "slow": 0.05,
    "slow_s": [0.2, 0.6],
    "missing_fields": 0.3,
    "missing_fields_share": 0.05,
    "repeated": 0.3,
}
HARSH = {
    "profile": "chaos",
    "cursor_lifetime_s": [3, 4],
    "token_lifetime_s": 3,
    "listing": {
        "window": {"limit": 20, "window_s": 1.0},
        "latency": {"base_s": [0.0, 0.1]},
        "faults": HARSH_FAULTS,
    },
    "feed": {
        "window": {"limit": 20, "window_s": 1.0},
        "latency": {"base_s": [0.0, 0.1], "per_event_s": [0.0, 0.0001]},
        "faults": HARSH_FAULTS,
    },
    "token": {"faults": {"status_502": 0.25, "rate_limited": 0.25}},
}


@pytest.mark.parametrize("source", ["events", "feed"])
def test_every_fault_at_high_rates_then_exact(
    database_url: str, pg_admin: Any, tmp_path: Path, source: str
) -> None:
    cfg = attrs.evolve(config(**HARSH), events=5_000, seed=17)
    with served(cfg) as server:
        # Small pages: enough requests (over 100) that each fault kind at 6% shows up (a
        # kind missing from 45 requests happened 1 run in 6); at these rates a request may
        # fail many times in a row, so it may also be retried more often than by default.
        env = cli_env(None, database_url, FLOWTEL_PAGE_SIZE="100", FLOWTEL_MAX_RETRIES="40")
        env |= {"FLOWTEL_API_URL": server.url, "FLOWTEL_API_KEY": server.key}
        result = run_cli(["run", f"--source={source}"], env, tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        count = assert_exact(pg_admin, server.sim)
        faults = dict(server.stats.faults)
        requests = server.requests()
        tokens = server.stats.tokens_issued
    endpoint = "listing" if source == "events" else "feed"
    injected = {k.split(":", 1)[1]: v for k, v in faults.items() if k.startswith(endpoint + ":")}
    for kind in ("truncated", "dropped", "repeated"):
        assert injected.get(kind, 0) > 0, (kind, faults)
    if source == "feed":
        assert tokens >= 2, "no token was renewed"
        assert injected.get("missing_fields", 0) > 0, faults
    report(
        f"faults ({source})",
        requests=requests,
        faults_injected=sum(injected.values()),
        by_kind=injected,
        token_faults={k: v for k, v in faults.items() if k.startswith("token:")},
        tokens_issued=tokens,
        events=count,
    )


def test_418_outside_the_data_range(database_url: str, pg_admin: Any, tmp_path: Path) -> None:
    """A feed shard whose range holds no data gets 418: it is done, not an error."""
    cfg = attrs.evolve(config(profile="fast"), events=2_000, seed=4)
    with served(cfg) as server:
        env = cli_env(None, database_url, FLOWTEL_PAGE_SIZE="500")
        env |= {"FLOWTEL_API_URL": server.url, "FLOWTEL_API_KEY": server.key}
        pg_admin.execute(schema_sql())
        pg_admin.execute(
            "INSERT INTO checkpoints (stream, source) VALUES ('feed', 'feed');"
            " INSERT INTO checkpoints (stream, source, since_ms, until_ms)"
            " VALUES ('feed-1970', 'feed', 0, 1000), ('feed-2100', 'feed', 4102444800000, NULL)"
        )
        result = run_cli(["run"], env, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        count = assert_exact(pg_admin, server.sim)
        teapots = server.stats.requests.get(("feed", 418), 0)
    assert teapots == 2, dict(server.stats.requests)
    assert pg_admin.fetchval("SELECT bool_and(done) FROM checkpoints") is True
    report("418", answers_418=teapots, events=count)


# ---- a cursor that expires while flowtel waits ----------------------------------------------


# One feed stream: these tests are about one cursor outliving its wait (settings unknown to a
# version of flowtel are ignored).
ONE_STREAM = {"FLOWTEL_FEED_SHARDS": "1"}


def _watermark_resumes(stderr: str) -> int:
    return len(re.findall(r"resuming from watermark", stderr))


def test_cursor_expires_during_a_long_429(database_url: str, pg_admin: Any, tmp_path: Path) -> None:
    # The feed allows 2 requests per 4 s and sends no rate headers: flowtel learns the window
    # from 429s and waits Retry-After, longer than a cursor lives (1-2 s).
    cfg = attrs.evolve(
        config(
            profile="fast",
            cursor_lifetime_s=[1, 2],
            feed={"window": {"limit": 2, "window_s": 4.0}},
        ),
        events=1_200,
        seed=12,
    )
    with served(cfg) as server:
        env = cli_env(
            None, database_url, FLOWTEL_PAGE_SIZE="300", FLOWTEL_CURSOR_MARGIN="0.5", **ONE_STREAM
        )
        env |= {"FLOWTEL_API_URL": server.url, "FLOWTEL_API_KEY": server.key}
        child = Child(env, tmp_path, args=("--source=feed",))
        assert child.wait(120) == 0, child.stderr[-3000:]
        count = assert_exact(pg_admin, server.sim)
        served_events = server.stats.events_served
        throttled = server.stats.rate_limited["feed"]
    resumes = _watermark_resumes(child.stderr)
    assert resumes >= 1, child.stderr[-3000:]
    assert "from the top" not in child.stderr
    # No re-scan: each resume re-reads at most one page of overlap.
    assert served_events <= 1_200 + resumes * 300 + 300, served_events
    report("cursor expired in a 429 wait", resumes=resumes, server_429s=throttled, events=count)


def test_cursor_expires_while_the_database_is_stalled(
    database_url: str, pg_admin: Any, tmp_path: Path
) -> None:
    cfg = attrs.evolve(config(profile="fast", cursor_lifetime_s=[2, 3]), events=6_000, seed=14)
    holder: dict[str, Any] = {}
    with served(cfg) as server:
        env = cli_env(
            None, database_url, FLOWTEL_PAGE_SIZE="200", FLOWTEL_CURSOR_MARGIN="0.5", **ONE_STREAM
        )
        env |= {"FLOWTEL_API_URL": server.url, "FLOWTEL_API_KEY": server.key}
        child = Child(env, tmp_path, args=("--source=feed",))
        _wait_for(lambda: _events_stored(pg_admin) > 0, child)
        # Stall every commit (its checkpoint upsert) for longer than a cursor lives.
        stall = threading.Thread(
            target=lambda: holder.update(
                result=pg.hold(database_url, "LOCK TABLE checkpoints IN ACCESS EXCLUSIVE MODE", 6)
            )
        )
        stall.start()
        code = child.wait(120)
        stall.join()
        assert code == 0, child.stderr[-3000:]
        count = assert_exact(pg_admin, server.sim)
        served_events = server.stats.events_served
    resumes = _watermark_resumes(child.stderr)
    assert resumes >= 1, child.stderr[-3000:]
    assert "from the top" not in child.stderr
    assert served_events <= 6_000 + (resumes + 9) * 200, served_events
    report("cursor expired while the database stalled", resumes=resumes, events=count)


# ---- two runs against one database -----------------------------------------------------------


def test_two_runs_on_one_database(database_url: str, pg_admin: Any, tmp_path: Path) -> None:
    cfg = attrs.evolve(config(**MOVING), events=4_000, seed=2)
    with served(cfg) as server:
        env = cli_env(None, database_url, FLOWTEL_PAGE_SIZE="200")
        env |= {"FLOWTEL_API_URL": server.url, "FLOWTEL_API_KEY": server.key}
        first = Child(env, tmp_path)
        _wait_for(lambda: any("run lock taken" in line for line in first.lines), first)
        second = run_cli(["run"], env, tmp_path, timeout=60)
        assert first.proc.poll() is None, "the first run ended before the second started"
        assert first.wait() == 0, first.stderr[-3000:]
        count = assert_exact(pg_admin, server.sim)
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr
    lines = [line for line in second.stderr.splitlines() if line.startswith("flowtel: ")]
    assert len(lines) == 1, second.stderr
    assert "another flowtel run is already writing to database" in lines[0]
    assert "only one run per database at a time" in lines[0]
    report("two runs", refused=1, events=count)


def _wait_for(predicate: Callable[[], bool], child: Child, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert child.proc.poll() is None and time.monotonic() < deadline, child.stderr[-3000:]
        time.sleep(0.02)


def _events_stored(pg_admin: Any) -> int:
    try:
        return int(pg_admin.fetchval("SELECT count(*) FROM events"))
    except Exception:  # the run has not applied the schema yet
        return 0
