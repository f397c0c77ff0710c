"""How fast `flowtel-cli simulate --profile fast` serves 5,000-event pages to one client.

    /tmp/venv/bin/python benchmarks/bench_simulator.py [PAGES]

Starts the simulator as a subprocess on a free port, walks PAGES pages (default 200) of the
listing sequentially with one httpx client (bodies fetched, not parsed beyond the cursor),
and prints pages/s and events/s.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx

LIMIT = 5000


def main() -> int:
    pages = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowtel_cli", "simulate", "--profile", "fast", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://\S+) api_key=(\S+)", line)
        if not match:
            print(f"unexpected first line: {line!r}", file=sys.stderr)
            return 1
        base_url, key = match.groups()
        cursor_re = re.compile(rb'"nextCursor":"([^"]+)"')
        with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30) as client:
            client.get("/api/v1/events", params={"limit": LIMIT})  # warm up (session table)
            cursor: str | None = None
            events = size = 0
            start = time.perf_counter()
            for _ in range(pages):
                params: dict[str, str | int] = {"limit": LIMIT}
                if cursor:
                    params["cursor"] = cursor
                response = client.get("/api/v1/events", params=params)
                response.raise_for_status()
                body = response.content
                size += len(body)
                events += body.count(b'"sessionId"')
                found = cursor_re.search(body[-400:])
                cursor = found.group(1).decode() if found else None
                if cursor is None:
                    break
            elapsed = time.perf_counter() - start
        done = events // LIMIT
        print(
            f"{done} pages, {events} events, {size / 1e6:.0f} MB in {elapsed:.2f} s: "
            f"{done / elapsed:.1f} pages/s, {events / elapsed:,.0f} events/s"
        )
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())
