"""The fetch policy alone, in virtual time: how close shards, pacing and splits come to the bound.

    python benchmarks/bench_policy.py --events 3000000 --runs 5 [--faults profile|data|none]
        [--stats-range] [--seeds 1,6]

flowtel's own fetch side (the plan, the Paginators, the RateLimiter, the FeedPacer and the
splits, as `flowtel-cli run` composes them) against the in-process simulator (`live`
profile), on Trio's virtual clock, with every page drained instead of written: a 13-minute
run takes about 40 s of this machine, and no figure depends on its speed. Each run uses
another simulator seed. It checks that every id arrived and prints the virtual run time
against the bound of bench_pipeline.py, the requests per bucket, and the run time that the
requests made allow: requests beyond one per page (faults, partial last pages) are budget
the bound does not count, and both buckets open a window every 60 s, so a run whose
requests need k windows of one bucket cannot end before (k - 1) x 60 s. It also prints the
feed's window as the FeedPacer learned it (the simulator's is 60 s): each window opens that
much after the one before.

A seed gives the same run every time: it seeds the simulator, the order in which Trio runs the
tasks ready at the same instant (at random otherwise), and the retries' jitter. Unseeded, one
seed took anywhere from 744 to 783 s: which request meets which fault depends on that order.

/internal/stats says the total, not the time range (the contract), so each run first finds
the range on the feed; --stats-range has the simulator say it too. --faults data keeps only
the damaged and repeated pages of the profile; none removes every fault: what the policy
reaches when the API behaves. To compare with another revision:
`git worktree add /tmp/flowtel-REV REV`, then the same command with PYTHONPATH=/tmp/flowtel-REV.
"""

from __future__ import annotations

import argparse  # a benchmark script, not the CLI: the CLI's docopt rule does not apply here
import math
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
import trio.testing

# Appended, not prepended: PYTHONPATH=<a checkout of another revision> runs that one's policy.
sys.path.append(str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_pipeline import lower_bound
from flowtel._api import Api
from flowtel._ingest import Run, _paginate_all, api_stats, new_fetcher, plan_run
from flowtel._retry import Backoff
from flowtel._secret import Secret
from flowtel._settings import Settings
from flowtel._stats import RunStats
from flowtel._tokens import TokenKeeper
from flowtel.testing import Simulator, SimulatorTransport, profile
from flowtel.testing._config import Faults, SimulatorConfig


def simulator_config(
    events: int, seed: int, faults: str, stats_range: bool = False
) -> SimulatorConfig:
    config = attrs.evolve(profile("live"), events=events, seed=seed, stats_time_range=stats_range)
    if faults == "profile":
        return config
    changes = {}
    for name in ("listing", "feed", "token"):
        endpoint = getattr(config, name)
        kept = Faults()
        if faults == "data":
            kept = attrs.evolve(
                kept,
                missing_fields=endpoint.faults.missing_fields,
                repeated=endpoint.faults.repeated,
            )
        changes[name] = attrs.evolve(endpoint, faults=kept)
    return attrs.evolve(config, **changes)


async def fetch_all(
    config: SimulatorConfig, feed_shards: int = 8, mend: bool = True, jitter_seed: int = 0
) -> dict[str, Any]:
    sim = Simulator(config)
    settings = Settings(
        api_key=sim.api_key,
        api_url=config.base_url,
        database_url="postgresql://unused/x",
        feed_shards=feed_shards,
        mend_damaged_pages=mend,
    )
    transport = SimulatorTransport(sim)
    async with httpx.AsyncClient(base_url=config.base_url, transport=transport) as http:
        api = Api(http, Secret(sim.api_key))
        backoff = Backoff(
            settings.backoff_base,
            settings.backoff_cap,
            settings.max_retries,
            rng=random.Random(jitter_seed),
        )
        info = await api_stats(api)
        stats = RunStats()
        fetcher = new_fetcher(settings, api, backoff, TokenKeeper(api, backoff, stats=stats), stats)
        started = trio.current_time()
        streams, shards, first = await plan_run(settings, fetcher, [], info)
        send, receive = trio.open_memory_channel[Any](math.inf)
        ids: set[str] = set()
        partial = {"events": 0, "feed": 0}  # pages that came short: a shard's last one
        pages = {"events": 0, "feed": 0}
        events = {"events": 0, "feed": 0}

        async def drain() -> None:
            async for page in receive:
                ids.update(e["id"] for e in page.raw_events if isinstance(e, dict) and e.get("id"))
                if 0 < len(page.raw_events) < 0.99 * settings.page_size:
                    partial[page.checkpoint.source] += 1
                if page.raw_events:
                    pages[page.checkpoint.source] += 1
                    events[page.checkpoint.source] += len(page.raw_events)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            async with send:
                todo = [cp for cp in streams if not cp.done]
                run = Run(stats=stats, fetcher=fetcher)
                await _paginate_all(nursery, settings, run, todo, shards, send, first)
        elapsed = trio.current_time() - started
    assert len(ids) == config.events, f"{len(ids):,} distinct ids of {config.events:,}"
    listing, feed = fetcher.events_limiter, fetcher.feed_limiter
    # Refused requests (429) are not counted by the server's windows.
    counted = {
        "listing": listing.requests - listing.throttled,
        "feed": feed.requests - feed.throttled,
    }
    windows = {
        "listing": math.ceil(counted["listing"] / config.listing.window.limit),
        "feed": math.ceil(counted["feed"] / config.feed.window.limit),
    }
    return {
        "elapsed": elapsed,
        "counted": counted,
        "throttled": listing.throttled + feed.throttled,
        "retries": stats.retries,
        "damaged": stats.damaged_pages,
        "mended": stats.mended_pages,
        "partial": partial,
        "fill_waste": {k: pages[k] - events[k] / settings.page_size for k in pages},
        "shards": shards._next if shards else 0,
        "windows": windows,
        "floor": (max(windows.values()) - 1) * config.feed.window.window_s,
        "feed_window": feed.window,
        # The faults that cost the client a request (the token's too), as the simulator
        # counted them: retries and damaged pages add up to it (a token's 429 is a 429).
        "served_faults": sum(
            n
            for kind, n in sim.stats.faults.items()
            if not kind.endswith((":slow", ":repeated", ":rate_limited"))
            and not kind.startswith("bulk:")  # no budget counts the bulk endpoint
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--faults", choices=["profile", "data", "none"], default="profile")
    parser.add_argument(
        "--stats-range",
        action="store_true",
        help="/internal/stats also says the data's time range (the contract does not promise it)",
    )
    parser.add_argument(
        "--feed-shards", type=int, default=attrs.fields(Settings).feed_shards.default
    )
    parser.add_argument(
        "--no-mend", action="store_true", help="damaged pages fetched again, not mended"
    )
    parser.add_argument(
        "--seeds", help="simulator seeds to run, comma-separated (default: 1 to --runs)"
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else range(1, args.runs + 1)
    bound, how = lower_bound(profile("live"), 5000)
    bound *= args.events / profile("live").events
    print(
        f"live, N = {args.events:,}, faults: {args.faults},"
        f" range {'in stats' if args.stats_range else 'found on the feed'};"
        f" bound {bound:.1f} s ({how})"
    )
    ratios = []
    for seed in seeds:
        config = simulator_config(args.events, seed, args.faults, args.stats_range)
        # Trio has no public way to seed its scheduler: it is private, and may move.
        trio._core._run._r.seed(seed)  # type: ignore[attr-defined]
        r = trio.run(
            fetch_all,
            config,
            args.feed_shards,
            not args.no_mend,
            seed,
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
        ratios.append(r["elapsed"] / bound)
        print(
            f"seed {seed}: {r['elapsed']:6.1f} s = {ratios[-1]:.3f} x bound | requests counted"
            f" listing {r['counted']['listing']}, feed {r['counted']['feed']} (429s"
            f" {r['throttled']}, retries {r['retries']}, damaged {r['damaged']}, mended"
            f" {r['mended']} (the"
            f" simulator's faults {r['served_faults']}), partial"
            f" {r['partial']['events']}+{r['partial']['feed']} wasting"
            f" {r['fill_waste']['events']:.1f}+{r['fill_waste']['feed']:.1f},"
            f" shards {r['shards']}, feed window learned {r['feed_window'] or 0:.2f} s) | windows"
            f" listing {r['windows']['listing']}, feed {r['windows']['feed']}: at least"
            f" {r['floor']:.0f} s"
        )
    print(
        f"ratio to the bound: median {statistics.median(ratios):.3f},"
        f" best {min(ratios):.3f}, worst {max(ratios):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
