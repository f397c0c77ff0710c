"""What any client could reach under a profile's limits and faults: a client that wastes nothing.

    python benchmarks/bench_ceiling.py [--profile live] [--events 3000000] [--runs 20000]

bench_pipeline.py's lower bound counts the buckets' rates and nothing else. This model adds
the profile's faults and asks how often a perfect client would still end within 1.05x and
1.15x of that bound. The perfect client:
- spends every request of every window of both buckets, from t = 0, each window opening the
  instant the last one ends, on full pages only (no partial page, no probe, no 429);
- pays one request for every fault that costs one (5xx, cut, empty or non-object bodies,
  dropped connections); a damaged page it mends as flowtel does (flowtel/_mend.py): the
  page's events before its first without an id are kept, and the rest of its request is
  lost, so it costs a share of a request, not one (--refetch-damaged: one, as before mending);
- in its last window, fetches the listing's pages first (a fraction of a second), splits the
  feed's part into equal requests, keeping `reserve` of the window's requests for faults, and
  sends them all at the window's opening onto the server's capacity (first come, first
  served), each fault sent again the moment it is seen.
Latencies, capacity and fault rates are the profile's own. What faults decide is how many
windows a run needs: one that needs a window more than its pages alone would ends no sooner
than that window's opening (in `live` at 3M: 780 s, 1.083x).
"""

from __future__ import annotations

import argparse  # a benchmark script, not the CLI: the CLI's docopt rule does not apply here
import heapq
import math
import random
import statistics
import sys
from pathlib import Path

import attrs

sys.path.append(str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_pipeline import lower_bound
from flowtel._mend import EVENT_FIELDS
from flowtel.testing import profile
from flowtel.testing._config import Faults, SimulatorConfig


def transport_faults(faults: Faults) -> float:
    """The share of answers lost to the transport: every transport fault but a slow answer
    (and a spurious 429, which the server does not count)."""
    return sum(p for kind, p in faults.transport_kinds() if kind not in ("slow", "rate_limited"))


def request_faults(faults: Faults) -> float:
    """The share of answers that cost a request: transport faults and damaged pages."""
    return 1 - (1 - transport_faults(faults)) * (1 - faults.missing_fields)


def feed_yield(config: SimulatorConfig, rng: random.Random, mend: bool) -> float:
    """The share of a page's events one feed request brings: 0 for a fault; for a damaged
    page, mended, what comes before its first event without an id (the simulator's damage
    hits a share of the page's events, each losing one of the event's fields)."""
    faults = config.feed.faults
    if rng.random() < transport_faults(faults):
        return 0.0
    if rng.random() >= faults.missing_fields:
        return 1.0
    if not mend:
        return 0.0
    hits = max(1, round(config.max_limit * faults.missing_fields_share))
    without_id = sum(rng.random() < 1 / len(EVENT_FIELDS) for _ in range(hits))
    return min((rng.random() for _ in range(without_id)), default=1.0)


def one_run(config: SimulatorConfig, rng: random.Random, reserve: int, mend: bool) -> float:
    """The end of one perfect run, in seconds."""
    page = config.max_limit
    events_left = float(config.events)
    listing, feed = config.listing, config.feed
    window = feed.window.window_s
    p_listing = request_faults(listing.faults)
    opening = 0.0
    while True:
        listed = sum(rng.random() >= p_listing for _ in range(listing.window.limit))
        events_left -= listed * page
        if events_left <= 0:  # the listing's window ends the run (its pages are quick)
            return opening + listing.window.limit * statistics.mean(listing.latency.base_s)
        budget = feed.window.limit
        if events_left <= budget * page:  # the feed may finish in this window
            requests = min(budget, max(math.ceil(events_left / page), budget - reserve))
            end, events_left = _last_window(
                config, rng, opening, events_left, requests, budget - requests
            )
            if events_left <= 0:
                return end
        else:  # every request of both buckets spent on full pages
            events_left -= sum(feed_yield(config, rng, mend) for _ in range(budget)) * page
        opening += window


def _last_window(
    config: SimulatorConfig,
    rng: random.Random,
    opening: float,
    events: float,
    requests: int,
    spare: int,
) -> tuple[float, float]:
    """When the feed's last `events`, split into `requests` equal ones sent at `opening`, are
    in, faults sent again while `spare` requests last; and the events still missing then."""
    feed = config.feed
    p_fault = request_faults(feed.faults)
    size = events / requests
    slots = [opening] * max(1, feed.latency.capacity or requests)
    queue, missing, end = requests, 0.0, opening
    while queue:
        queue -= 1
        start = heapq.heappop(slots)
        latency = rng.uniform(*feed.latency.base_s) + size * rng.uniform(*feed.latency.per_event_s)
        if rng.random() < feed.faults.slow:
            latency += rng.uniform(*feed.faults.slow_s)
        heapq.heappush(slots, start + latency)
        end = max(end, start + latency)
        if rng.random() < p_fault:
            if spare:
                spare -= 1
                queue += 1
            else:
                missing += size
    return end, missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="live")
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--refetch-damaged", action="store_true", help="damaged pages cost a request each"
    )
    args = parser.parse_args()
    config = attrs.evolve(profile(args.profile), events=args.events)
    if config.listing.window.window_s != config.feed.window.window_s:
        print("the model assumes both buckets count in windows of the same length", file=sys.stderr)
        return 2
    bound, how = lower_bound(config, config.max_limit)
    print(f"{args.profile}, N = {args.events:,}: bound {bound:.1f} s ({how})")
    print(
        f"requests that faults cost: listing {request_faults(config.listing.faults):.1%},"
        f" feed {request_faults(config.feed.faults):.1%}"
    )
    for reserve in (0, 4, 8, 12):
        rng = random.Random(args.seed)
        ratios = sorted(
            one_run(config, rng, reserve, not args.refetch_damaged) / bound
            for _ in range(args.runs)
        )
        within = {x: sum(r <= x for r in ratios) / len(ratios) for x in (1.05, 1.15)}
        print(
            f"reserve {reserve:2}: at or under 1.05x in {within[1.05]:.1%} of runs, 1.15x in"
            f" {within[1.15]:.1%}; median {statistics.median(ratios):.3f}x, 90th percentile"
            f" {ratios[int(0.9 * len(ratios))]:.3f}x, worst {ratios[-1]:.3f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
