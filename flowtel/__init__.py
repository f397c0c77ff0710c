"""flowtel: pull every event of a rate-limited, cursor-paginated API into PostgreSQL."""

from flowtel._errors import (
    ApiError,
    ConfigError,
    CursorExpired,
    FlowtelError,
    RateLimited,
    StreamTokenExpired,
    WriteError,
)
from flowtel._model import Checkpoint, Event, Rejected

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "Checkpoint",
    "ConfigError",
    "CursorExpired",
    "Event",
    "FlowtelError",
    "RateLimited",
    "Rejected",
    "StreamTokenExpired",
    "WriteError",
    "__version__",
]
