"""flowtel's own errors. Foreign ones (httpx, asyncpg, JSON) are translated where they arise."""

from __future__ import annotations


class FlowtelError(Exception):
    """Base of every error flowtel raises on purpose."""


class ConfigError(FlowtelError):
    """A setting is missing or wrong. The message names it in one line."""


class ApiError(FlowtelError):
    """The API answered with an error that retrying will not fix."""

    def __init__(self, status: int, code: str | None, message: str, request_id: str | None = None):
        self.status = status
        self.code = code
        self.request_id = request_id
        super().__init__(f"HTTP {status} {code or ''}: {message}".replace("  ", " "))


class TransientError(FlowtelError):
    """A fault of the transport or the server that a retry may fix (5xx, cut body, drop)."""

    def __init__(self, message: str, status: int = 0) -> None:
        self.status = status  # the HTTP status, 200 for a damaged body, 0 for no answer
        super().__init__(message)


class RateLimited(TransientError):
    def __init__(self, retry_after: float, message: str = "rate limited"):
        self.retry_after = retry_after
        super().__init__(f"{message} (retry after {retry_after:g} s)", status=429)


class CursorExpired(ApiError):
    """The cursor outlived its lifetime: resume from the watermark instead."""


class CursorInvalid(ApiError):
    """The server did not recognise a cursor."""


class StreamTokenExpired(ApiError):
    """The stream token was refused (403 INVALID_STREAM_TOKEN): get a new one."""


class FeedUnavailable(FlowtelError):
    """No stream token can be had (403 DASHBOARD_REQUIRED or similar)."""


class WriteError(FlowtelError):
    """The database refused a write, or stayed away longer than allowed."""


class NoProgress(FlowtelError):
    """A stream went round without committing anything new: stopped by the progress guard."""
