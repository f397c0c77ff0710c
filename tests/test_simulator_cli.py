"""`flowtel-cli simulate` as a real process, and the real server's socket behaviour."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import attrs
import httpx
import pytest
import trio

from flowtel.testing import Endpoint, Faults, Simulator, profile, serve

pytestmark = pytest.mark.e2e


def test_cli_prints_its_line_and_serves_a_page() -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowtel_cli",
            "simulate",
            "--profile",
            "chaos",
            "--port",
            "0",
            "--events",
            "1000",
            "--seed",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        _check_serving(proc)


def _check_serving(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(
            r"flowtel simulator listening on (http://127\.0\.0\.1:(\d+)) "
            r"api_key=(ds_[0-9a-f]{32})  \(profile chaos, 1000 events\)\n",
            line,
        )
        assert match, line
        base, port, key = match.groups()
        assert int(port) > 0
        with httpx.Client(base_url=base, headers={"X-API-Key": key}) as c:
            for _ in range(30):  # chaos: retry faults
                try:
                    r = c.get("/api/v1/events", params={"limit": 50})
                    if r.status_code == 200 and r.content.endswith(b"}}"):
                        break
                except httpx.TransportError:
                    pass
            assert len(r.json()["data"]) == 50
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "argv",
    [["--profile", "nope"], ["--events", "many"], ["--config", "/nonexistent/sim.toml"]],
)
def test_cli_bad_values_exit_2_with_one_line(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flowtel_cli", "simulate", "--port", "0", *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


async def test_real_server_drops_connections_and_keeps_alive() -> None:
    faults = Faults(dropped=0.5)
    sim = Simulator(attrs.evolve(profile("fast"), events=500, listing=Endpoint(faults=faults)))
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve, sim, "127.0.0.1", 0)
        async with httpx.AsyncClient(
            base_url=f"http://{host}:{port}", headers={"X-API-Key": sim.api_key}
        ) as c:
            outcomes = {"ok": 0, "dropped": 0}
            for _ in range(40):
                try:
                    r = await c.get("/api/v1/events", params={"limit": 5})
                    assert len(r.json()["data"]) == 5
                    outcomes["ok"] += 1
                except httpx.RemoteProtocolError:
                    outcomes["dropped"] += 1
            body = b"\n".join(i.encode() for i in sim.dataset.ids())
            r = await c.post(
                "/api/v1/submissions?github_repo=x",
                content=body,
                headers={"Content-Type": "text/plain"},
            )
            assert r.json()["data"]["check"]["missing"] == 0
        nursery.cancel_scope.cancel()
    assert outcomes["ok"] >= 8 and outcomes["dropped"] >= 8
    assert outcomes["dropped"] == sim.stats.faults["listing:dropped"]
