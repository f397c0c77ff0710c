"""Running flowtel-cli as real processes: the simulator server and the ingestion."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

from flowtel.testing import Simulator, SimulatorConfig, load_config, profile

CLI = [sys.executable, "-m", "flowtel_cli"]
LINE = re.compile(r"listening on (?P<url>http://\S+) api_key=(?P<key>ds_[0-9a-f]+)")


@attrs.frozen
class Server:
    url: str
    key: str
    config: SimulatorConfig
    process: subprocess.Popen[str]

    def simulator(self) -> Simulator:
        """The same dataset, in-process: what the database must hold at the end."""
        return Simulator(self.config)


@contextmanager
def simulator_process(
    profile_name: str = "chaos",
    *,
    events: int,
    seed: int | None = None,
    config_file: Path | None = None,
) -> Iterator[Server]:
    args = [*CLI, "simulate", "--port", "0", "--events", str(events)]
    config = load_config(config_file) if config_file else profile(profile_name)
    if config_file:
        args += ["--config", str(config_file)]
    else:
        args += ["--profile", profile_name]
    if seed is not None:
        args += ["--seed", str(seed)]
        config = attrs.evolve(config, seed=seed)
    config = attrs.evolve(config, events=events)
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = LINE.search(line)
        assert match, (
            f"simulator said {line!r}; stderr: {process.stderr.read() if process.stderr else ''}"
        )
        yield Server(match["url"], match["key"], config, process)
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def cli_env(server: Server | None, database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWTEL_", "DATABASE_URL"))}
    if server is not None:
        env["FLOWTEL_API_URL"] = server.url
        env["FLOWTEL_API_KEY"] = server.key
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update({"FLOWTEL_BACKOFF_BASE": "0.05", "FLOWTEL_BACKOFF_CAP": "1.0"})
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
