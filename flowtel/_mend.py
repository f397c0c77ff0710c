"""Damaged feed pages mended, not fetched again.

A damaged page (X-Chaos-Applied: missingFields) has lost fields of a few dozen of its 5,000
events, the id of a few. Fetched again, it costs a whole request of the feed's budget for
those. Instead, the events that kept their id are fetched whole by the bulk endpoint, which
no bucket counts, and the page ends just before the first event without one: the stream goes
on from there (its watermark), and only the rest of the page comes again, with new events
after it. The first event without an id lies about a sixth of the way in, so a damaged page
costs about five sixths of a request instead of one.

The contract calls the bulk endpoint unreliable, and does not say which budget it spends.
What it does not answer whole is not mended (the page ends before it instead), and an answer
with rate-limit headers, or a 429, stops the mending for the run: it would spend a budget.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

from flowtel._api import Api
from flowtel._errors import ApiError, RateLimited, TransientError
from flowtel._stats import RunStats

log = logging.getLogger("flowtel.mend")

BULK_PATH = "/api/v1/events/bulk"
BULK_MAX_IDS = 100  # the contract's limit on one bulk request
# An event of the contract has every one of these; a damaged one lacks some (or has null).
EVENT_FIELDS = ("id", "timestamp", "type", "name", "sessionId", "userId", "properties", "session")
_BUDGET_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "retry-after")


def whole(event: Any) -> bool:
    return isinstance(event, dict) and all(event.get(field) is not None for field in EVENT_FIELDS)


def _has_id(event: Any) -> bool:
    return isinstance(event, dict) and isinstance(event.get("id"), str) and bool(event["id"])


@attrs.define
class Mender:
    api: Api
    stats: RunStats
    # Per bulk request: it costs no budget, but its stream waits for it. What is not back in
    # time is not mended: the page ends before it, at no more cost than fetching it again.
    attempts: int = 2
    timeout: float = 3.0
    enabled: bool = True

    async def mend(self, events: list[Any]) -> list[Any]:
        """The page's events up to its first that could not be mended, the damaged ones
        fetched whole: up to the first without an id, or the first that the bulk endpoint
        did not answer whole. Empty if that is the first event."""
        end = next((i for i, event in enumerate(events) if not _has_id(event)), len(events))
        damaged = [i for i in range(end) if not whole(events[i])]
        found: dict[str, Any] = {}
        for start in range(0, len(damaged), BULK_MAX_IDS):
            ids = [events[i]["id"] for i in damaged[start : start + BULK_MAX_IDS]]
            found.update(await self._bulk(ids))
            if not self.enabled:
                break
        kept = events[:end]
        for i in damaged:
            replacement = found.get(kept[i]["id"])
            if replacement is None:
                return kept[:i]
            kept[i] = replacement
        self.stats.mended_events += len(damaged)
        return kept

    async def _bulk(self, ids: list[str]) -> dict[str, Any]:
        """The whole events of `ids` that one bulk request gives, by id."""
        for _ in range(self.attempts):
            try:
                with trio.fail_after(self.timeout):
                    answer = await self.api.request("POST", BULK_PATH, json_body={"ids": ids})
            except trio.TooSlowError:
                log.info("the bulk endpoint took more than %.0f s", self.timeout)
                continue
            except RateLimited:
                self._stop("it answered 429")
                return {}
            except ApiError as exc:
                log.info("the bulk endpoint refused to mend a page: %s", exc)
                return {}
            except TransientError as exc:
                log.info("the bulk endpoint failed: %s", exc)
                continue
            finally:
                self.stats.bulk_requests += 1
            if any(name in answer.headers for name in _BUDGET_HEADERS):
                self._stop("its answers carry rate-limit headers")
            data = answer.body.get("data")
            asked = set(ids)
            events = data if isinstance(data, list) else []
            return {e["id"]: e for e in events if whole(e) and e["id"] in asked}
        return {}

    def _stop(self, why: str) -> None:
        if self.enabled:
            log.warning(
                "the bulk endpoint spends a rate-limit budget (%s): damaged pages are fetched "
                "again from now on, not mended",
                why,
            )
        self.enabled = False
