"""`flowtel-cli simulate`: serve the API simulator over HTTP until interrupted."""

from __future__ import annotations

import gc
import json
import signal
import sys
from typing import Any

import attrs
import trio

from flowtel._errors import ConfigError
from flowtel.testing import Simulator, SimulatorConfig, load_config, profile, serve


def _int(args: dict[str, Any], name: str) -> int | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        return int(str(raw))
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None


def build_config(args: dict[str, Any]) -> SimulatorConfig:
    """The simulator config the command line asks for."""
    cfg = load_config(args["--config"]) if args.get("--config") else profile(args["--profile"])
    changes: dict[str, Any] = {}
    events = _int(args, "--events")
    if events is not None:
        if events < 1:
            raise ConfigError("--events must be at least 1")
        changes["events"] = events
    seed = _int(args, "--seed")
    if seed is not None:
        changes["seed"] = seed
    if args.get("--api-key"):
        changes["api_key"] = str(args["--api-key"])
    return attrs.evolve(cfg, **changes)


async def _run(sim: Simulator, host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            bound_host, bound_port = await nursery.start(serve, sim, host, port)
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            cfg = sim.config
            print(
                f"flowtel simulator listening on http://{shown}:{bound_port} "
                f"api_key={sim.api_key}  (profile {cfg.profile}, {cfg.events} events)",
                flush=True,
            )
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    # What it served, to hold against what a client says it met (faults included).
    print(f"flowtel simulator served {json.dumps(sim.stats.summary())}", flush=True)


def simulate(args: dict[str, Any]) -> int:
    try:
        cfg = build_config(args)
        port = _int(args, "--port")
        if port is None or not 0 <= port <= 65535:
            raise ConfigError(f"--port must be a port number, not {args.get('--port')!r}")
    except ConfigError as exc:
        print(f"flowtel-cli simulate: {exc}", file=sys.stderr)
        return 2
    sim = Simulator(cfg)
    # The dataset's fixed tables live as long as the process: keep them out of every GC pass.
    gc.collect()
    gc.freeze()
    code = 0
    try:
        trio.run(_run, sim, str(args.get("--host") or "127.0.0.1"), port)
    except* OSError as group:  # Trio's nursery wraps it: a port in use, a host not ours
        print(f"flowtel-cli simulate: cannot listen: {group.exceptions[0]}", file=sys.stderr)
        code = 2
    return code
