"""flowtel.testing: a faithful, fast simulator of the Flowtel events API.

sim = Simulator(profile("chaos"))
async with httpx.AsyncClient(transport=SimulatorTransport(sim), base_url=BASE_URL) as c:
    ...
"""

from flowtel.testing._app import Simulator, SimulatorStats
from flowtel.testing._config import (
    FORMATS,
    Endpoint,
    Faults,
    Latency,
    SimulatorConfig,
    Window,
    config_from_mapping,
    load_config,
    profile,
)
from flowtel.testing._dataset import Dataset
from flowtel.testing._server import serve
from flowtel.testing._transport import BASE_URL, SimulatorTransport

__all__ = [
    "BASE_URL",
    "FORMATS",
    "Dataset",
    "Endpoint",
    "Faults",
    "Latency",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "SimulatorTransport",
    "Window",
    "config_from_mapping",
    "load_config",
    "profile",
    "serve",
]
