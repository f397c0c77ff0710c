"""Settings: one frozen object, read from flags, then the environment, then a `.env` file.

Every wrong value is reported as a `ConfigError` whose message names the setting in one line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from flowtel._errors import ConfigError
from flowtel._secret import Secret

Source = Literal["auto", "feed", "events"]
SOURCES: tuple[Source, ...] = ("auto", "feed", "events")
MAX_FEED_SHARDS = 64


def _as_secret(value: Secret | str) -> Secret:
    return value if isinstance(value, Secret) else Secret(value)


@attrs.frozen(kw_only=True)
class Settings:
    """Everything one ingestion needs. Build it with `Settings(...)` or `Settings.from_env(...)`."""

    api_url: str
    api_key: Secret = attrs.field(converter=_as_secret)
    database_url: str | None = None  # None: an embedded PostgreSQL (see the CLI)
    source: Source = "auto"
    page_size: int = 5000
    # Retries of one request before the run gives up on it (transport faults, 5xx, cut bodies).
    max_retries: int = 12
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # A page that comes back damaged (X-Chaos-Applied, events without id) is fetched again
    # this many times while its cursor is valid, hoping for a whole copy: damage is per
    # answer, and an event whose id or instant never comes whole cannot be stored (it is kept
    # in rejected_events). At 20% damaged answers, 8 retries leave 1 page in 2 million (0.2^9).
    damaged_page_retries: int = 8
    # A damaged feed page is mended instead where it can be: its damaged events fetched whole
    # by the bulk endpoint, the page ended before the first without an id (flowtel/_mend.py).
    mend_damaged_pages: bool = True
    request_timeout: float = 90.0
    verify_tls: bool = True
    # Feed requests in flight at the start; it adapts to the server as the run goes.
    feed_concurrency: int = 4
    # Time shards the feed is split into (each walked by its own Paginator).
    feed_shards: int = 8
    # Share of the time range, newest first, that the events listing walks beside the feed.
    # More than its share of the budget (about a fifth), so that it never runs out of work:
    # feed shards that finish take over the older part of what it has left.
    listing_share: float = 0.3
    # Pages buffered between stages. Bounded so that a slow Writer slows fetching down long
    # before a waiting cursor could expire.
    channel_pages: int = 2
    # Database connections committing at once. Two let PostgreSQL store one batch while the
    # client encodes the next; each stream's batches still commit in order, through one.
    writers: int = 2
    # Seconds a cursor must still have to be worth using on resume.
    cursor_margin: float = 10.0
    # Resumes of one stream from the same watermark before the progress guard stops the run.
    max_resumes_without_progress: int = 3
    # How long the Writer keeps trying to reach a database that went away.
    db_reconnect_timeout: float = 60.0

    def __attrs_post_init__(self) -> None:
        check_url("FLOWTEL_API_URL", self.api_url)
        if not self.api_key:
            raise ConfigError("FLOWTEL_API_KEY is not set")
        if self.source not in SOURCES:
            raise ConfigError(
                f"FLOWTEL_SOURCE must be one of {', '.join(SOURCES)}, not {self.source!r}"
            )
        if not 1 <= self.page_size <= 5000:
            raise ConfigError(f"FLOWTEL_PAGE_SIZE must be between 1 and 5000, not {self.page_size}")
        for name, value, low in (
            ("FLOWTEL_FEED_SHARDS", self.feed_shards, 1),
            ("FLOWTEL_FEED_CONCURRENCY", self.feed_concurrency, 1),
            ("FLOWTEL_CHANNEL_PAGES", self.channel_pages, 1),
            ("FLOWTEL_WRITERS", self.writers, 1),
            ("FLOWTEL_MAX_RETRIES", self.max_retries, 0),
            ("FLOWTEL_DAMAGED_PAGE_RETRIES", self.damaged_page_retries, 0),
            ("FLOWTEL_MAX_RESUMES_WITHOUT_PROGRESS", self.max_resumes_without_progress, 1),
        ):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, not {value}")
        # Each shard is a stream with its own task and checkpoint row; splits add more as
        # shards finish, so far more planned ones than the feed's concurrency only cost.
        if self.feed_shards > MAX_FEED_SHARDS:
            raise ConfigError(
                f"FLOWTEL_FEED_SHARDS must be at most {MAX_FEED_SHARDS}, not {self.feed_shards}"
            )
        for name, seconds, zero_allowed in (
            ("FLOWTEL_REQUEST_TIMEOUT", self.request_timeout, False),
            ("FLOWTEL_BACKOFF_BASE", self.backoff_base, True),
            ("FLOWTEL_BACKOFF_CAP", self.backoff_cap, False),
            ("FLOWTEL_CURSOR_MARGIN", self.cursor_margin, True),
            ("FLOWTEL_DB_RECONNECT_TIMEOUT", self.db_reconnect_timeout, False),
        ):
            if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_allowed):
                least = "0 or more" if zero_allowed else "more than 0"
                raise ConfigError(f"{name} must be {least} seconds, not {seconds:g}")
        if not 0 <= self.listing_share < 1:
            raise ConfigError(f"FLOWTEL_LISTING_SHARE must be in [0, 1), not {self.listing_share}")
        if self.database_url is not None:
            _check_dsn(self.database_url)

    @classmethod
    def from_env(
        cls,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        env_file: str | os.PathLike[str] | None = ".env",
    ) -> Settings:
        """Flags win over the environment, which wins over the env file.

        `flags` use the environment's names (`FLOWTEL_API_URL`, `DATABASE_URL`, ...); a value
        of None means "not given".
        """
        merged = merged_environment(flags, environ, env_file)

        def get(name: str) -> str | None:
            value = merged.get(name)
            return value if value not in (None, "") else None

        kwargs: dict[str, Any] = {
            "api_url": get("FLOWTEL_API_URL") or _missing("FLOWTEL_API_URL"),
            "api_key": get("FLOWTEL_API_KEY") or _missing("FLOWTEL_API_KEY"),
            "database_url": get("DATABASE_URL"),
        }
        for field in attrs.fields(cls):
            env_name = "FLOWTEL_" + field.name.upper()
            if field.name in kwargs or get(env_name) is None:
                continue
            kwargs[field.name] = _parse(env_name, get(env_name) or "", field.default)
        return cls(**kwargs)


def merged_environment(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = ".env",
) -> dict[str, str]:
    """Every setting by its environment name: flags over environment over the env file."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        merged.update(read_env_file(env_file))
    merged.update(os.environ if environ is None else environ)
    merged.update({k: str(v) for k, v in (flags or {}).items() if v is not None})
    return merged


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """`KEY=value` lines; `#` comments (after a value too), `export ` prefixes and surrounding
    quotes are allowed."""
    try:
        # utf-8-sig: a byte order mark, as some Windows editors write, is not part of a key.
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text (save it as UTF-8)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line)
        if match is None:
            raise ConfigError(f"{path}, line {number}: expected KEY=value")
        key, value = match.groups()
        quoted = re.fullmatch(r"""(['"])(.*)\1\s*(?:#.*)?""", value)
        # A comment after a value, as in most .env files: ` #` begins it, `#` alone does not.
        values[key] = quoted.group(2) if quoted else re.split(r"\s#", value, maxsplit=1)[0].rstrip()
    return values


def _missing(name: str) -> str:
    raise ConfigError(f"{name} is not set (flag, environment or .env file)")


def _parse(name: str, text: str, default: object) -> object:
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = (
            "true or false"
            if isinstance(default, bool)
            else "a whole number"
            if isinstance(default, int)
            else "a number"
        )
        raise ConfigError(f"{name} must be {kind}, not {text!r}") from None
    return text


def check_url(name: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number or out of range, a broken IPv6 address
        valid = False
    if not valid:
        raise ConfigError(f"{name} must be an http(s) URL, not {without_password(url)!r}")


def without_password(url: str) -> str:
    """`url` with any user and password before its host replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{path}"


def _check_dsn(dsn: str) -> None:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        shown = f"{parts.scheme}://..." if parts.scheme else "a value without a scheme"
        raise ConfigError(f"DATABASE_URL must be a postgresql:// URL, not {shown}")
