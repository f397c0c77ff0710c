"""Client CPU per event on the hot path: decode a page, normalize it, commit it.

    FLOWTEL_BENCH_DSN=postgresql://postgres@127.0.0.1:5432/postgres \\
        python benchmarks/bench_hotpath.py [--pages 200] [--against REV] [--in-flight N]

The pages are the simulator's own feed pages (`fast` profile, 5,000 events each), committed one
per transaction into a fresh database (FLOWTEL_BENCH_DSN names a server to create it on;
otherwise an embedded PostgreSQL). The figure is this process's CPU time per event, not wall
time: PostgreSQL's share runs on the other core.

With --against REV (a git revision), the same pages also go through flowtel as it was at REV,
alternating page by page in one process, each into a database of its own. The speed of this VM
drifts by tens of percent within minutes, so two runs one after the other cannot show a change
of a few percent; two versions interleaved page by page can, since the drift weighs on both.

With --in-flight N each version keeps its last N batches alive, as a run keeps several in its
channels while the next pages are decoded. Then what else stays alive matters: with
--free-raw-early each raw page is freed right after it is normalized, as before f88026c, while
its events (which share its texts and properties) live on; the heap fills with holes, and the
next pages, decoded into them, cost far more:

    python benchmarks/bench_hotpath.py --pages 100 --in-flight 4
    python benchmarks/bench_hotpath.py --pages 100 --in-flight 4 --free-raw-early

Compare lifetimes in two runs like these, not with --against: versions interleaved in one
process share one heap.
"""

from __future__ import annotations

import argparse  # a benchmark script, not the CLI: the CLI's docopt rule does not apply here
import collections
import contextlib
import gc
import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import orjson
import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flowtel._ingest import GC_YOUNG_THRESHOLD
from flowtel.testing import Simulator, profile
from tests import pg

ROOT = Path(__file__).resolve().parent.parent
PAGE = 5_000


def feed_pages(count: int) -> list[bytes]:
    sim = Simulator(attrs.evolve(profile("fast"), events=count * PAGE))
    mix = sim._mix["feed"]
    return [
        b'{"data":[' + ",".join(sim.dataset.render(i * PAGE, (i + 1) * PAGE, mix)).encode() + b"]}"
        for i in range(count)
    ]


def flowtel_at(rev: str, folder: Path) -> str:
    """Import flowtel as it was at git revision `rev`, as the package `flowtel_at_rev`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "flowtel", "schema.sql"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    package = folder / "flowtel"
    for source in package.rglob("*.py"):
        text = source.read_text()
        text = re.sub(r"^(\s*)(from|import) flowtel\b", r"\1\2 flowtel_at_rev", text, flags=re.M)
        source.write_text(text.replace('files("flowtel")', 'files("flowtel_at_rev")'))
    package.rename(folder / "flowtel_at_rev")
    (folder / "flowtel_at_rev" / "schema.sql").write_bytes((folder / "schema.sql").read_bytes())
    sys.path.insert(0, str(folder))
    return "flowtel_at_rev"


@attrs.define
class Version:
    name: str
    normalize: Any
    database: ModuleType
    model: ModuleType
    cpu: float = 0.0
    held: collections.deque[Any] = attrs.field(factory=collections.deque)

    def batch(self, events: list[Any], rejected: list[Any], raw: list[Any], keep: bool) -> Any:
        """The batch as this version's Normalizer stage builds it: with its raw page, if the
        version's batches hold one (since f88026c) and `keep`."""
        if keep and "raw_events" in attrs.fields_dict(self.model.Batch):
            return self.model.Batch(events, rejected, [], raw_events=raw)
        return self.model.Batch(events, rejected, [])

    @classmethod
    def of(cls, name: str, package: str) -> Version:
        return cls(
            name,
            importlib.import_module(f"{package}._normalize").normalize,
            importlib.import_module(f"{package}._database"),
            importlib.import_module(f"{package}._model"),
        )


async def run(
    versions: list[Version], pages: list[bytes], dsns: list[str], in_flight: int, keep_raw: bool
) -> None:
    async with trio_asyncio.open_loop(), contextlib.AsyncExitStack() as stack:
        dbs = [
            await stack.enter_async_context(v.database.open_database(dsn))
            for v, dsn in zip(versions, dsns, strict=True)
        ]
        pairs = list(zip(versions, dbs, strict=True))
        for i, body in enumerate(pages):
            for version, db in pairs if i % 2 else pairs[::-1]:
                started = time.process_time()
                raw = orjson.loads(body)["data"]
                events, rejected = version.normalize(raw)
                batch = version.batch(events, rejected, raw, keep_raw)
                del raw, events, rejected  # held by the batch only as the version's own is
                await db.commit(batch)
                version.held.append(batch)
                del batch
                while len(version.held) > in_flight:
                    version.held.popleft()
                version.cpu += time.process_time() - started
        for version, db in pairs:
            stored = await db.count_events()
            assert stored == len(pages) * PAGE, f"{version.name}: {stored} events stored"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--against", metavar="REV", help="also run flowtel at this git revision")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=0,
        metavar="N",
        help="batches each version keeps alive after their commit (default 0); a run keeps "
        "about 4 in its channels and the Writer's merge while the next pages are decoded",
    )
    parser.add_argument(
        "--free-raw-early",
        action="store_true",
        help="free each raw page right after normalizing it, as flowtel did before f88026c",
    )
    args = parser.parse_args()
    if os.environ.get("FLOWTEL_BENCH_DSN"):
        os.environ[pg.ENV_DSN] = os.environ["FLOWTEL_BENCH_DSN"]
    server = pg.start_server()
    pages = feed_pages(args.pages)
    with tempfile.TemporaryDirectory(prefix="flowtel-hotpath-") as folder:
        versions = [Version.of("this tree", "flowtel")]
        if args.against:
            versions.append(Version.of(args.against, flowtel_at(args.against, Path(folder))))
        dsns = [server.create_database() for _ in versions]
        gc.freeze()  # as a run does (few_gc_passes)
        gc.set_threshold(GC_YOUNG_THRESHOLD)
        try:
            trio.run(run, versions, pages, dsns, args.in_flight, not args.free_raw_early)
        finally:
            for dsn in dsns:
                server.drop_database(dsn)
    events = args.pages * PAGE
    for version in versions:
        print(f"{version.name:>12}: {version.cpu / events * 1e6:6.2f} µs of client CPU per event")
    if len(versions) == 2:
        print(f"this tree / {args.against}: {versions[0].cpu / versions[1].cpu:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
