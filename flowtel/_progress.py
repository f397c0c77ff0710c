"""Progress of a running ingestion: a snapshot of numbers read from the `Run`, and the pure
functions that turn a snapshot into a line of text, a JSON object or a rich view.

The only I/O here is `watch`, the task that samples the `Run` and hands the snapshots to a
renderer; everything else is plain functions over plain values, tested without a loop.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

if TYPE_CHECKING:
    from rich.console import RenderableType

    from flowtel._ingest import BucketView, Run

#: How far back "events/s over the last minute" looks.
RATE_WINDOW = 60.0
BLOCKS = "▁▂▃▄▅▆▇█"


@attrs.frozen
class BucketSnapshot:
    """A rate bucket at one moment (see `flowtel.BucketView`), plus the time spent waiting."""

    name: str
    limit: int | None
    window: float | None
    remaining: int | None
    next_slot_in: float
    throttled: int
    in_flight: int
    concurrency: float | None = None
    waited: float = 0.0  # seconds requests spent waiting for a slot, summed


@attrs.frozen
class Snapshot:
    """Every number a progress display or a metrics scrape shows, read at one moment."""

    elapsed: float
    committed: int  # events in the database
    api_total: int | None
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    requests: int = 0
    throttled: int = 0
    retries: int = 0
    rate: float = 0.0  # events committed per second over the last minute
    buckets: tuple[BucketSnapshot, ...] = ()
    cursor_life_left: float | None = None
    channels: tuple[tuple[str, int], ...] = ()
    responses: tuple[tuple[str, int, int], ...] = ()  # (endpoint, status, count)
    commits: int = 0
    commit_seconds: float = 0.0
    last_commit_seconds: float = 0.0
    streams: int = 0
    streams_done: int = 0
    finished: bool = False

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None: no total or no rate yet)."""
        if self.api_total is None:
            return None
        left = self.api_total - self.committed
        if left <= 0:
            return 0.0
        if self.rate <= 0:
            return None
        return left / self.rate


class RateMeter:
    """Events per second over the last `window` seconds, from samples of a growing count."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> float:
        """Record `count` at `now`; return the rate over the window ending now."""
        self._samples.append((now, count))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()
        first_t, first_count = self._samples[0]
        if now - first_t <= 0:
            return 0.0
        return max(0, count - first_count) / (now - first_t)


def bucket_snapshots(run: Run) -> tuple[BucketSnapshot, ...]:
    """The `Run`'s buckets as the display shows them."""
    return tuple(_bucket(view, view.concurrency, view.waited) for view in run.buckets())


def _bucket(view: BucketView, concurrency: float | None, waited: float) -> BucketSnapshot:
    return BucketSnapshot(
        name=view.name,
        limit=view.limit,
        window=view.window,
        remaining=view.remaining,
        next_slot_in=max(0.0, view.next_slot_in),
        throttled=view.throttled,
        in_flight=view.in_flight,
        concurrency=concurrency,
        waited=waited,
    )


def take_snapshot(
    run: Run, meter: RateMeter, *, now: float | None = None, finished: bool = False
) -> Snapshot:
    """Read the `Run` (from the Trio thread: the buckets read the Trio clock)."""
    now = trio.current_time() if now is None else now
    stats = run.stats
    committed = run.committed()
    return Snapshot(
        elapsed=now - stats.started_at,
        committed=committed,
        api_total=run.api_total,
        inserted=stats.inserted,
        duplicates=stats.duplicates,
        rejected=stats.rejected,
        requests=stats.requests,
        throttled=stats.throttled,
        retries=stats.retries,
        rate=meter.add(now, committed),
        buckets=bucket_snapshots(run),
        cursor_life_left=run.cursor_life_left(),
        channels=tuple(sorted(run.channel_depth().items())),
        responses=tuple(sorted((ep, st, n) for (ep, st), n in dict(stats.responses).items())),
        commits=stats.commits,
        commit_seconds=stats.commit_seconds,
        last_commit_seconds=stats.last_commit_seconds,
        streams=len(run.checkpoints),
        streams_done=sum(1 for cp in run.checkpoints.values() if cp.done),
        finished=finished,
    )


# ---- formatting: pure ----------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """`42s`, `3m05s`, `1h02m`; `-` when unknown."""
    if seconds is None or math.isnan(seconds) or math.isinf(seconds):
        return "-"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def number(value: float) -> str:
    """`4`, `4.7`: one decimal at most (an adaptive concurrency is fractional)."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def fraction(snap: Snapshot) -> float | None:
    if not snap.api_total:
        return None
    return min(1.0, snap.committed / snap.api_total)


def bucket_text(bucket: BucketSnapshot) -> str:
    """`events 3/10 per 60s, next slot in 12s, 1 in flight` (what is known of it)."""
    if bucket.limit is not None and bucket.remaining is not None:
        window = f" per {duration(bucket.window)}" if bucket.window else ""
        budget = f"{bucket.remaining}/{bucket.limit}{window}"
    elif bucket.limit is not None:
        budget = f"{bucket.limit} per {duration(bucket.window)}"
    else:
        budget = "budget unknown"
    slot = "now" if bucket.next_slot_in <= 0 else f"in {duration(bucket.next_slot_in)}"
    parts = [f"{bucket.name} {budget}", f"next slot {slot}"]
    if bucket.concurrency is not None:
        parts.append(f"{bucket.in_flight}/{number(bucket.concurrency)} in flight")
    elif bucket.in_flight:
        parts.append(f"{bucket.in_flight} in flight")
    return ", ".join(parts)


def progress_line(snap: Snapshot) -> str:
    """One line for logs: where the run is, how fast, what holds it back."""
    share = fraction(snap)
    total = f"/{snap.api_total:,}" if snap.api_total is not None else ""
    percent = f" ({share:.1%})" if share is not None else ""
    parts = [
        f"{snap.committed:,}{total} events committed{percent}",
        f"{snap.rate:,.0f} events/s over the last minute",
        f"ETA {duration(snap.eta)}",
    ]
    parts += [bucket_text(b) for b in snap.buckets]
    parts.append(f"429s {snap.throttled:,}, retries {snap.retries:,}, rejected {snap.rejected:,}")
    if snap.cursor_life_left is not None:
        parts.append(f"oldest cursor {duration(snap.cursor_life_left)} left")
    return "progress: " + " | ".join(parts)


def progress_record(snap: Snapshot) -> dict[str, Any]:
    """The snapshot as one JSON object (a line of `--log-format=json`)."""
    return {
        "event": "progress",
        "elapsed": round(snap.elapsed, 3),
        "committed": snap.committed,
        "api_total": snap.api_total,
        "inserted": snap.inserted,
        "duplicates": snap.duplicates,
        "rejected": snap.rejected,
        "requests": snap.requests,
        "throttled": snap.throttled,
        "retries": snap.retries,
        "events_per_second": round(snap.rate, 1),
        "eta_seconds": None if snap.eta is None else round(snap.eta, 1),
        "cursor_life_left": (
            None if snap.cursor_life_left is None else round(snap.cursor_life_left, 1)
        ),
        "buckets": [attrs.asdict(b) for b in snap.buckets],
        "channels": dict(snap.channels),
        "streams": snap.streams,
        "streams_done": snap.streams_done,
        "finished": snap.finished,
    }


def json_line(record: dict[str, Any]) -> str:
    return json.dumps({"ts": round(time.time(), 3), **record}, separators=(",", ":"))


def sparkline(values: Sequence[int]) -> str:
    """One block character per value, scaled to the largest (zero: a blank)."""
    top = max(values, default=0)
    if top <= 0:
        return " " * len(values)
    return "".join(
        " " if v <= 0 else BLOCKS[min(len(BLOCKS) - 1, math.ceil(v / top * len(BLOCKS)) - 1)]
        for v in values
    )


def bar(share: float | None, width: int = 30) -> str:
    """`[██████░░░░]` for a share in [0, 1]."""
    if share is None:
        return "[" + "?" * width + "]"
    full = round(max(0.0, min(1.0, share)) * width)
    return "[" + "█" * full + "░" * (width - full) + "]"


def rich_view(snap: Snapshot) -> RenderableType:
    """The live view: a bar, the rates, and one row per bucket."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    share = fraction(snap)
    total = f" / {snap.api_total:,}" if snap.api_total is not None else ""
    percent = f"  {share:.1%}" if share is not None else ""
    head = Text.assemble(
        ("flowtel ", "bold"),
        (bar(share), "green"),
        f"  {snap.committed:,}{total} events committed{percent}",
    )
    rates = Text(
        f"{snap.rate:,.0f} events/s over the last minute   ETA {duration(snap.eta)}   "
        f"elapsed {duration(snap.elapsed)}   streams {snap.streams_done}/{snap.streams} done"
    )
    cursor = (
        "no cursor waiting"
        if snap.cursor_life_left is None
        else f"oldest cursor {duration(snap.cursor_life_left)} left"
    )
    faults = Text(
        f"429s {snap.throttled:,}   retries {snap.retries:,}   rejected {snap.rejected:,}   "
        f"duplicates {snap.duplicates:,}   requests {snap.requests:,}   {cursor}"
    )
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("bucket", "budget", "next slot", "in flight", "429s", "waited"):
        table.add_column(column, justify="left" if column in ("bucket", "budget") else "right")
    for b in snap.buckets:
        if b.limit is not None:
            left = "?" if b.remaining is None else str(b.remaining)
            budget = f"{left}/{b.limit} per {duration(b.window)}"
        else:
            budget = "learning"
        flight = f"{b.in_flight}" + (
            f"/{number(b.concurrency)}" if b.concurrency is not None else ""
        )
        table.add_row(
            b.name,
            budget,
            "now" if b.next_slot_in <= 0 else duration(b.next_slot_in),
            flight,
            f"{b.throttled:,}",
            duration(b.waited),
        )
    return Group(head, rates, faults, table)


# ---- sampling: the one task with I/O -----------------------------------------------------


@attrs.define
class Watch:
    """What the CLI shares between `ingest` (which hands over the `Run`), the renderer and the
    metrics endpoint (which reads `latest` from another thread: a plain attribute swap)."""

    run: Run | None = None
    latest: Snapshot | None = None
    meter: RateMeter = attrs.Factory(RateMeter)

    def started(self, run: Run) -> None:
        """`ingest`'s `on_start`: from now on, `sample` reads this run."""
        self.run = run
        self.meter.add(run.stats.started_at, run.initial_total)

    def sample(self, *, finished: bool = False) -> Snapshot | None:
        if self.run is None:
            return None
        self.latest = take_snapshot(self.run, self.meter, finished=finished)
        return self.latest


async def watch(
    state: Watch,
    render: Callable[[Snapshot], None],
    *,
    every: float,
    sample_every: float = 1.0,
) -> None:
    """Sample the run every `sample_every` seconds (for metrics and the rate) and `render`
    every `every` seconds, until cancelled."""
    next_render = trio.current_time() + every
    while True:
        await trio.sleep(sample_every)
        snap = state.sample()
        if snap is not None and trio.current_time() >= next_render:
            render(snap)
            next_render = trio.current_time() + every
