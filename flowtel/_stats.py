"""Counters of one run, shared by the stages, and the summary `ingest` returns."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define
class RunStats:
    started_at: float = 0.0  # trio clock
    requests: int = 0
    throttled: int = 0  # 429 answers
    retries: int = 0  # requests sent again after a fault (429s not included)
    damaged_pages: int = 0  # pages fetched again because they came back damaged
    mended_pages: int = 0  # damaged pages mended instead (_mend.py)
    mended_events: int = 0  # damaged events fetched whole by the bulk endpoint
    bulk_requests: int = 0
    pages: int = 0
    fetched: int = 0  # events received, repeats included
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    resumes: int = 0  # cursors that expired and were replaced by a watermark query
    rescans: int = 0  # listings walked again from the top (no feed to resume with)
    tokens: int = 0
    # Answers by (endpoint, status); status 0 is a request that got no answer.
    responses: dict[tuple[str, int], int] = attrs.Factory(dict)
    commits: int = 0
    commit_seconds: float = 0.0  # summed
    last_commit_seconds: float = 0.0
    # Events inserted in each minute since the start, for throughput charts.
    per_minute: list[int] = attrs.Factory(list)

    def answered(self, endpoint: str, status: int) -> None:
        key = (endpoint, status)
        self.responses[key] = self.responses.get(key, 0) + 1

    def committed(self, now: float, inserted: int, seconds: float) -> None:
        self.commits += 1
        self.commit_seconds += seconds
        self.last_commit_seconds = seconds
        minute = int((now - self.started_at) // 60)
        if len(self.per_minute) <= minute:
            self.per_minute.extend([0] * (minute + 1 - len(self.per_minute)))
        self.per_minute[minute] += inserted


@attrs.frozen
class Summary:
    """What one `ingest` did. `outcome` is "complete" when every stream reached its end."""

    outcome: str
    inserted: int
    duplicates: int
    rejected: int
    requests: int
    throttled: int
    retries: int
    pages: int
    elapsed: float
    total_in_database: int
    api_total: int | None
    per_minute: list[int] = attrs.Factory(list)  # events inserted in each minute of the run
    damaged_pages: int = 0  # pages fetched again because they came back damaged
    mended_pages: int = 0  # damaged pages mended by the bulk endpoint instead
    peak_feed_in_flight: int = 0

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def line(self) -> str:
        rate = self.inserted / self.elapsed if self.elapsed > 0 else 0.0
        total = f"/{self.api_total:,}" if self.api_total is not None else ""
        return (
            f"{self.outcome}: {self.inserted:,} new events in {self.elapsed:.1f} s "
            f"({rate:,.0f}/s), {self.duplicates:,} duplicates skipped, {self.rejected:,} rejected, "
            f"{self.requests:,} requests, {self.throttled:,} throttled (429), "
            f"{self.retries:,} retries; database holds {self.total_in_database:,}{total} events"
        )
