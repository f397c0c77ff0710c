"""flowtel: pull every event of a rate-limited, cursor-paginated API into PostgreSQL."""

from flowtel._database import AlreadyRunning
from flowtel._errors import (
    ApiError,
    ConfigError,
    CursorExpired,
    FlowtelError,
    NoProgress,
    RateLimited,
    StreamTokenExpired,
    WriteError,
)
from flowtel._ingest import BucketView, Run, ingest, ingest_sync
from flowtel._model import Checkpoint, Event, Rejected
from flowtel._settings import Settings
from flowtel._stats import Summary

__version__ = "0.1.0"

__all__ = [
    "AlreadyRunning",
    "ApiError",
    "BucketView",
    "Checkpoint",
    "ConfigError",
    "CursorExpired",
    "Event",
    "FlowtelError",
    "NoProgress",
    "RateLimited",
    "Rejected",
    "Run",
    "Settings",
    "StreamTokenExpired",
    "Summary",
    "WriteError",
    "__version__",
    "ingest",
    "ingest_sync",
]
