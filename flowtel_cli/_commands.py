"""The commands behind flowtel-cli: each builds Settings, calls the library, renders the result."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import httpx
import trio

import flowtel
from flowtel._embedded import embedded_database_url
from flowtel._errors import ConfigError, FlowtelError
from flowtel._model import Checkpoint
from flowtel._progress import Watch, json_line, sparkline, watch
from flowtel._secret import redact
from flowtel._settings import Settings, merged_environment
from flowtel_cli._output import Output, choose_mode

log = logging.getLogger("flowtel.cli")

# docopt option -> setting name (as in the environment)
FLAG_SETTINGS = {
    "--api-url": "FLOWTEL_API_URL",
    "--database-url": "DATABASE_URL",
    "--source": "FLOWTEL_SOURCE",
    "--log-level": "FLOWTEL_LOG_LEVEL",
    "--log-format": "FLOWTEL_LOG_FORMAT",
    "--metrics-port": "FLOWTEL_METRICS_PORT",
    "--progress-every": "FLOWTEL_PROGRESS_EVERY",
}
SIGNAL_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def dispatch(args: dict[str, Any]) -> int:
    """Run one command; exit 2 for a wrong setting, 1 for a failed run, 130 for Ctrl-C and
    143 for SIGTERM."""
    output = Output()
    code = 0
    try:
        environment = merged_environment(*_sources(args))
        output = make_output(environment)
        if args["status"]:
            output.setup_logging(environment.get("FLOWTEL_LOG_LEVEL") or "warning")
            return trio.run(_status, _database_url(environment), output)
        if args["demo"]:
            from flowtel_cli._demo import demo

            output.setup_logging(environment.get("FLOWTEL_LOG_LEVEL") or "info")
            return demo(args, environment, output)
        settings = load_settings(args)
        output.key = settings.api_key
        output.setup_logging(environment.get("FLOWTEL_LOG_LEVEL") or "info")
        if settings.database_url is None and not args["check"]:
            settings = attrs.evolve(settings, database_url=embedded_database_url())
        code = trio.run(_command(args, environment, output), settings)
    except* ConfigError as group:
        code = _fail(group, output, code=2)
    except* FlowtelError as group:
        code = _fail(group, output, code=1)
    except* KeyboardInterrupt:
        code = stopped(signal.SIGINT, output)
    return code


def stopped(signum: int, output: Output) -> int:
    """Say why the run stopped; the exit code of a process killed by that signal."""
    name = signal.Signals(signum).name
    _say(output, f"stopped by {name}; the last batch was committed or rolled back whole")
    return SIGNAL_CODES.get(signal.Signals(signum), 128 + signum)


def _say(output: Output, message: str) -> None:
    """One line for the person on stderr: `flowtel: ...`, or a JSON record."""
    message = redact(message, output.key)
    if output.mode == "json":
        print(json_line({"event": "error", "message": message}), file=sys.stderr, flush=True)
    else:
        print(f"flowtel: {message}", file=sys.stderr, flush=True)


def make_output(environment: dict[str, str]) -> Output:
    log_format = (environment.get("FLOWTEL_LOG_FORMAT") or "text").lower()
    every = _number(environment, "FLOWTEL_PROGRESS_EVERY", 10.0)
    if not 0 < every < math.inf:  # nan too
        raise ConfigError(f"FLOWTEL_PROGRESS_EVERY must be a positive number, not {every:g}")
    return Output(mode=choose_mode(log_format, sys.stderr), every=every)


def _number(environment: dict[str, str], name: str, default: float) -> float:
    raw = environment.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


def metrics_port(environment: dict[str, str]) -> int | None:
    raw = environment.get("FLOWTEL_METRICS_PORT")
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"FLOWTEL_METRICS_PORT must be a port number, not {raw!r}")
    return port


def _command(
    args: dict[str, Any], environment: dict[str, str], output: Output
) -> Callable[[Settings], Awaitable[int]]:
    if args["run"]:
        port = metrics_port(environment)
        return lambda settings: _run(settings, output, port)
    if args["check"]:
        metrics_port(environment)  # what `run` would refuse, `check` names too
        return lambda settings: _check(settings, output)
    repo, force = args["--repo"], bool(args["--force"])
    return lambda settings: _submit(settings, repo, force, output)


def _sources(args: dict[str, Any]) -> tuple[dict[str, Any], None, str]:
    flags = {name: args.get(flag) for flag, name in FLAG_SETTINGS.items()}
    source = args.get("--source")
    flags["FLOWTEL_SOURCE"] = source if source != "auto" else None
    env_file = args.get("--env-file")
    if env_file is None:
        return flags, None, ".env"  # read if there is one
    if not os.path.isfile(env_file):  # named, so meant: not to be passed over in silence
        raise ConfigError(f"--env-file {env_file}: no such file")
    return flags, None, env_file


def load_settings(args: dict[str, Any]) -> Settings:
    return Settings.from_env(*_sources(args))


def _database_url(environment: dict[str, str]) -> str:
    dsn = environment.get("DATABASE_URL")
    return dsn if dsn else embedded_database_url()


def _fail(group: BaseExceptionGroup[Any], output: Output, *, code: int) -> int:
    for exc in _leaves(group):
        _say(output, str(exc))
    return code


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in _leaves(exc)]
    return [group]


@attrs.define
class Outcome:
    """How an ingestion with progress ended: its summary, or the signal that stopped it."""

    summary: flowtel.Summary | None = None
    signal: int | None = None


async def ingest_with_progress(
    settings: Settings,
    output: Output,
    *,
    port: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Outcome:
    """`flowtel.ingest` with a progress renderer beside it, metrics if asked, and SIGINT /
    SIGTERM turned into a clean cancellation (the Writer commits or rolls back whole)."""
    state = Watch()
    outcome = Outcome()
    server = None
    if port is not None:
        from flowtel._metrics import serve_metrics

        try:
            server, _ = serve_metrics(port, lambda: state.latest)
        except OSError as exc:
            raise ConfigError(f"FLOWTEL_METRICS_PORT {port}: cannot listen: {exc}") from None
    try:
        with (
            trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
            output.progress() as render,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(watch, state, render, every=output.render_every)
                )
                with trio.CancelScope() as ingest_scope:
                    nursery.start_soon(_stop_on_signal, signals, ingest_scope, outcome)
                    outcome.summary = await flowtel.ingest(
                        settings, transport=transport, on_start=state.started
                    )
                nursery.cancel_scope.cancel()
            final = state.sample(finished=True)
            if final is not None:
                render(final)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return outcome


async def _stop_on_signal(
    signals: AsyncIterator[int], scope: trio.CancelScope, outcome: Outcome
) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if outcome.signal is None:
            outcome.signal = signum
            log.info("%s received: stopping (again to stop at once)", name)
            scope.cancel()
        else:
            # The stop is bounded by shielded timeouts, but a person may not want to wait:
            # PostgreSQL rolls back whatever transaction the exit leaves open.
            print(f"flowtel: {name} again: exiting now", file=sys.stderr, flush=True)
            os._exit(SIGNAL_CODES.get(signal.Signals(signum), 128 + signum))


async def _run(settings: Settings, output: Output, port: int | None) -> int:
    outcome = await ingest_with_progress(settings, output, port=port)
    if outcome.signal is not None:
        return stopped(outcome.signal, output)
    summary = outcome.summary
    assert summary is not None
    output.result(summary.line(), summary=summary.to_dict())
    return 0 if summary.outcome == "complete" else 1


async def _status(database_url: str, output: Output) -> int:
    from flowtel._ingest import connect_database

    async with connect_database(database_url, reconnect_timeout=5.0, look=True) as db:
        if not await db.has_schema():
            raise ConfigError(
                f"no flowtel tables in the database {db.dsn_display}: nothing has run there"
            )
        status = await db.status()
    if output.mode == "json":
        output.result("status", status=status_record(status))
    elif _is_terminal(sys.stdout):
        from rich.console import Console

        Console(file=sys.stdout).print(rich_status(status))
    else:
        print(render_status(status))
    return 0


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _state(cp: Checkpoint) -> str:
    return "done" if cp.done else ("has a cursor" if cp.cursor else "resumes from watermark")


def _bound(ms: int | None) -> str:
    if ms is None:
        return "open"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _shard(cp: Checkpoint) -> str:
    if cp.since_ms is None and cp.until_ms is None:
        return "everything"
    return f"{_bound(cp.since_ms)} .. {_bound(cp.until_ms)}"


def _last_run_line(last: dict[str, Any]) -> str:
    started = f"last run: #{last['id']} started {last['started_at']:%Y-%m-%d %H:%M:%S}"
    summary = last.get("summary")
    if not summary:  # its counts died with it: say so rather than print zeros
        return f"{started}, still running or stopped before its summary was written"
    return (
        f"{started}, {summary.get('outcome', '?')}, "
        f"{summary.get('inserted', 0):,} new events in {summary.get('elapsed', 0):.1f} s"
    )


def throughput_chart(per_minute: list[int]) -> list[str]:
    """The last run's events per minute as one row of blocks, with its scale."""
    if not per_minute:
        return []
    shown = per_minute[-60:]
    skipped = len(per_minute) - len(shown)
    first = f"minute {skipped + 1}" if skipped else "start"
    return [
        f"events per minute (peak {max(shown):,}, {len(per_minute)} minute(s)):",
        f"  {first} |{sparkline(shown)}| minute {len(per_minute)}",
    ]


def render_status(status: dict[str, Any]) -> str:
    """The status as plain text (not a terminal)."""
    lines = [f"events stored: {status['events']:,}", f"rejected events: {status['rejected']:,}"]
    checkpoints: list[Checkpoint] = status["checkpoints"]
    if checkpoints:
        lines.append("streams:")
    for cp in checkpoints:
        watermark = cp.watermark.isoformat() if cp.watermark else "-"
        lines.append(
            f"  {cp.stream:<12} {cp.source:<6} {_state(cp):<22} {cp.events:>12,} fetched  "
            f"{cp.pages:>7,} pages  shard {_shard(cp)}  watermark {watermark}"
        )
    last = status.get("last_run")
    if last:
        lines.append(_last_run_line(last))
        lines += throughput_chart(list((last.get("summary") or {}).get("per_minute") or []))
    for attempt in status.get("submissions", []):
        verdict = "accepted" if attempt["accepted"] else (attempt["error"] or "not accepted")
        lines.append(f"submission #{attempt['id']}: {attempt['id_count']:,} ids, {verdict}")
    return "\n".join(lines)


def rich_status(status: dict[str, Any]) -> Any:
    """The status as rich renderables (a terminal): counts, a table of streams, the chart."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [
        Text(f"events stored: {status['events']:,}   rejected events: {status['rejected']:,}")
    ]
    checkpoints: list[Checkpoint] = status["checkpoints"]
    if checkpoints:
        table = Table(title="streams and checkpoints", title_justify="left")
        for column in ("stream", "source", "shard", "state", "fetched", "pages", "watermark"):
            table.add_column(column, justify="right" if column in ("fetched", "pages") else "left")
        for cp in checkpoints:
            table.add_row(
                cp.stream,
                cp.source,
                _shard(cp),
                Text(_state(cp), style="green" if cp.done else "yellow"),
                f"{cp.events:,}",
                f"{cp.pages:,}",
                f"{cp.watermark:%Y-%m-%d %H:%M:%S}" if cp.watermark else "-",
            )
        parts.append(table)
    last = status.get("last_run")
    if last:
        parts.append(Text(_last_run_line(last)))
        chart = throughput_chart(list((last.get("summary") or {}).get("per_minute") or []))
        parts += [Text(line, style="cyan" if i else "") for i, line in enumerate(chart)]
    for attempt in status.get("submissions", []):
        verdict = "accepted" if attempt["accepted"] else (attempt["error"] or "not accepted")
        parts.append(Text(f"submission #{attempt['id']}: {attempt['id_count']:,} ids, {verdict}"))
    return Group(*parts)


def status_record(status: dict[str, Any]) -> dict[str, Any]:
    """The status as JSON-able values."""
    last = status.get("last_run")
    return {
        "events": status["events"],
        "rejected": status["rejected"],
        "checkpoints": [
            {
                k: (v.isoformat() if isinstance(v, dt.datetime) else v)
                for k, v in attrs.asdict(cp).items()
                if k != "cursor"  # opaque and short-lived: of no use to a reader
            }
            for cp in status["checkpoints"]
        ],
        "last_run": None
        if not last
        else {
            "id": last["id"],
            "started_at": last["started_at"].isoformat(),
            "summary": last.get("summary"),
        },
        "submissions": [
            {"id": a["id"], "id_count": a["id_count"], "accepted": a["accepted"]}
            for a in status.get("submissions", [])
        ],
    }


async def _check(settings: Settings, output: Output) -> int:
    """Is the key accepted, the database reachable, what the headers announce, is the feed there."""
    from flowtel._api import Api
    from flowtel._errors import ApiError
    from flowtel._ingest import api_total, connect_database, http_client
    from flowtel._retry import Backoff
    from flowtel._settings import without_password
    from flowtel._tokens import TokenKeeper

    def report(mark: str, check: str, text: str) -> None:
        """`ok   ...`, `--   ...` or `FAIL ...`; with --log-format json, one record each."""
        status = {"ok": "ok", "--": "note", "FAIL": "fail"}[mark]
        output.result(f"{mark:<4} {text}", check=check, status=status)

    problems = 0
    shown = without_password(settings.api_url)
    async with http_client(settings, None) as http:
        api = Api(http, settings.api_key)
        total = await api_total(api)  # a refused key or no answer at all: a wrong setting
        if total is not None:
            report("ok", "api", f"API key accepted by {shown}; the API counts {total:,} events")
        else:  # no total is not a refusal: the listing's answer below says if the key is good
            report(
                "--",
                "api",
                f"{shown}: no total from /internal/stats (the contract does not promise it)",
            )
        try:
            answer = await api.get("/api/v1/events", {"limit": 1})
            h = answer.headers
            report(
                "ok",
                "listing",
                f"events listing: {h.get('x-ratelimit-limit', '?')} requests per window, "
                f"{h.get('x-ratelimit-remaining', '?')} left, window resets in "
                f"{h.get('x-ratelimit-reset', '?')} s (this check used one)",
            )
        except FlowtelError as exc:
            problems += 1
            report("FAIL", "listing", f"events listing: {exc}")
            if isinstance(exc, ApiError) and exc.status == 404:  # the API is not at this URL
                raise ConfigError(
                    f"FLOWTEL_API_URL {shown} has no events listing under it"
                ) from None
        try:
            access = await TokenKeeper(api, Backoff(max_retries=2)).get()
            report(
                "ok",
                "feed",
                f"stream feed available at {access.endpoint} (token header {access.header})",
            )
        except FlowtelError as exc:
            report(
                "--", "feed", f"stream feed not available ({exc}); runs will use the events listing"
            )
    if settings.database_url is None:
        report("--", "database", "DATABASE_URL not set: `run` will start an embedded PostgreSQL")
    else:
        async with connect_database(settings.database_url, reconnect_timeout=5.0, look=True) as db:
            stored = await db.count_events() if await db.has_schema() else None
        if stored is None:
            report(
                "ok", "database", "database reachable; no flowtel tables yet (`run` creates them)"
            )
        else:
            report("ok", "database", f"database reachable; {stored:,} events stored")
    return 1 if problems else 0


async def _submit(settings: Settings, repo: str, force: bool, output: Output) -> int:
    from flowtel._submit import submit

    output.result(await submit(settings, repo, force=force))
    return 0
