"""The public surface: small, listed in __all__, and nothing else leaks in."""

from __future__ import annotations

import types

import flowtel
import flowtel.testing

PUBLIC = {
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
}


def test_all_is_the_public_surface() -> None:
    assert set(flowtel.__all__) == PUBLIC
    for name in flowtel.__all__:
        assert hasattr(flowtel, name), name


def test_no_other_public_names_leak() -> None:
    public = {
        name
        for name, value in vars(flowtel).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= PUBLIC, public - PUBLIC


def test_errors_share_one_root() -> None:
    for name in ("AlreadyRunning", "ApiError", "ConfigError", "CursorExpired", "NoProgress",
                 "RateLimited", "StreamTokenExpired", "WriteError"):  # fmt: skip
        assert issubclass(getattr(flowtel, name), flowtel.FlowtelError), name


def test_the_simulator_lists_what_it_exports() -> None:
    for name in flowtel.testing.__all__:
        assert hasattr(flowtel.testing, name), name
    assert {"Simulator", "SimulatorTransport", "serve", "profile", "load_config"} <= set(
        flowtel.testing.__all__
    )
