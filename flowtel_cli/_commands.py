"""The commands behind flowtel-cli: each builds Settings, calls the library, renders the result."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import flowtel
from flowtel._errors import ConfigError, FlowtelError
from flowtel._secret import Secret, redact
from flowtel._settings import Settings

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
    settings: Settings | None = None
    code = 0
    try:
        settings = load_settings(args)
        setup_logging(args.get("--log-level") or "info", settings.api_key)
        code = trio.run(_command(args), settings)
    except* ConfigError as group:
        code = _fail(group, settings, code=2)
    except* FlowtelError as group:
        code = _fail(group, settings, code=1)
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
    if args["status"]:
        return _status
    if args["check"]:
        return _check
    repo, force = args["--repo"], bool(args["--force"])
    return lambda settings: _submit(settings, repo, force)


def load_settings(args: dict[str, Any]) -> Settings:
    flags = {name: args.get(flag) for flag, name in FLAG_SETTINGS.items()}
    source = args.get("--source")
    flags["FLOWTEL_SOURCE"] = source if source != "auto" else None
    env_file = args.get("--env-file") or ".env"
    return Settings.from_env(flags, env_file=env_file)


def setup_logging(level: str, key: Secret) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redactor(key))
    root = logging.getLogger("flowtel")
    root.handlers[:] = [handler]
    root.propagate = False
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


def _fail(group: BaseExceptionGroup[Any], settings: Settings | None, *, code: int) -> int:
    key = settings.api_key if settings is not None else None
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


async def _status(settings: Settings) -> int:
    from flowtel._database import open_database

    assert settings.database_url is not None
    async with open_database(settings.database_url) as db:
        status = await db.status()
    print(render_status(status))
    return 0


def render_status(status: dict[str, Any]) -> str:
    lines = [
        f"events stored: {status.get('events', 0):,}",
        f"rejected: {status.get('rejected', 0):,}",
    ]
    for cp in status.get("checkpoints", []):
        state = "done" if cp.get("done") else ("cursor" if cp.get("cursor") else "resumable")
        lines.append(
            f"  {cp.get('stream')}: {cp.get('source')}, {state}, {cp.get('events', 0):,} fetched, "
            f"watermark {cp.get('watermark')}"
        )
    last = status.get("last_run")
    if last:
        lines.append(f"last run: {last}")
    return "\n".join(lines)


async def _check(settings: Settings) -> int:
    """Is the key accepted, the database reachable, what the headers announce, is the feed there."""
    from flowtel._api import Api
    from flowtel._database import open_database
    from flowtel._ingest import api_total, http_client
    from flowtel._retry import Backoff
    from flowtel._tokens import TokenKeeper

    problems = 0
    async with http_client(settings, None) as http:
        api = Api(http, settings.api_key)
        total = await api_total(api)
        print(
            f"ok   API key accepted by {api.base_url}; the API counts {total or 'an unknown number of'} events"
        )
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
        async with open_database(settings.database_url, reconnect_timeout=5.0) as db:
            stored = await db.count_events()
        print(f"ok   database reachable; {stored:,} events stored")
    return 1 if problems else 0


async def _submit(settings: Settings, repo: str, force: bool) -> int:
    from flowtel._submit import submit

    result = await submit(settings, repo, force=force)
    print(result)
    return 0
