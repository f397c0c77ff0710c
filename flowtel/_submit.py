"""Handing the ids in: guarded, streamed from the database, recorded, never sent twice."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from flowtel._api import Api
from flowtel._database import Database
from flowtel._errors import ApiError, FlowtelError
from flowtel._ingest import api_total, connect_database, http_client
from flowtel._settings import Settings, check_url

log = logging.getLogger("flowtel.submit")

SUBMISSIONS_PATH = "/api/v1/submissions"
IDS_PER_CHUNK = 20_000  # about 740 KB of request body at a time


class SubmitRefused(FlowtelError):
    """The guard said no: nothing was sent."""


async def submit(
    settings: Settings,
    repo_url: str,
    *,
    force: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """Send every stored id to the API, once. Returns the API's answer as one line."""
    if settings.database_url is None:
        raise ValueError("submit() needs settings.database_url")
    # Checked here, not by the API: every submission it receives spends one of the key's five.
    check_url("--repo", repo_url)
    async with (
        connect_database(settings.database_url, settings.db_reconnect_timeout) as db,
        http_client(settings, transport) as http,
    ):
        api = Api(http, settings.api_key)
        count = await _guard(db, api, force)
        submission_id = await db.record_submission(repo_url, count)
        log.info("submitting %d ids for %s", count, repo_url)
        try:
            answer = await api.request(
                "POST",
                SUBMISSIONS_PATH,
                params={"github_repo": repo_url},
                headers={"Content-Type": "text/plain"},
                content=_id_lines(db),
            )
        except ApiError as exc:
            await db.finish_submission(
                submission_id, accepted=False, http_status=exc.status, error=str(exc)
            )
            raise
        except FlowtelError as exc:
            # The outcome is unknown (a cut connection): it stays recorded, and the guard will
            # refuse another try until someone looks.
            await db.finish_submission(submission_id, accepted=False, error=str(exc))
            raise
        accepted = answer.body.get("success") is True
        await db.finish_submission(
            submission_id,
            accepted=accepted,
            http_status=200,
            response_body=orjson.dumps(answer.body).decode(),
        )
        return describe(answer.body)


async def _guard(db: Database, api: Api, force: bool) -> int:
    total = await api_total(api)
    distinct = await db.count_distinct_ids()
    if total is None:
        raise SubmitRefused("refusing to submit: the API did not say how many events it has")
    if distinct != total:
        raise SubmitRefused(
            f"refusing to submit: {distinct:,} distinct ids stored, the API has {total:,} "
            f"({total - distinct:+,}); run `flowtel-cli run` to finish first"
        )
    if not force:
        for attempt in await db.submissions():
            if attempt["accepted"]:
                raise SubmitRefused(
                    f"refusing to submit: submission {attempt['id']} was already accepted "
                    f"at {attempt['finished_at']:%Y-%m-%d %H:%M}; use --force to send again"
                )
            if attempt["finished_at"] is None or (
                attempt["http_status"] is None and attempt["error"]
            ):
                raise SubmitRefused(
                    f"refusing to submit: the outcome of attempt {attempt['id']} is unknown "
                    "(interrupted or cut off); check GET /api/v1/submissions, then use --force"
                )
    return distinct


async def _id_lines(db: Database) -> AsyncIterator[bytes]:
    chunk: list[str] = []
    async for event_id in db.iter_ids():
        chunk.append(event_id)
        if len(chunk) >= IDS_PER_CHUNK:
            yield ("\n".join(chunk) + "\n").encode()
            chunk.clear()
    if chunk:
        yield ("\n".join(chunk) + "\n").encode()


def describe(body: dict[str, Any]) -> str:
    """One line of the API's answer: its message and the counts it gives (a simulator's answer
    also carries `check`: missing, extra and repeated ids)."""
    data = body.get("data")
    data = data if isinstance(data, dict) else {}
    check = data.get("check")
    counts = {**data, **(check if isinstance(check, dict) else {})}
    parts = [str(body.get("message") or ("accepted" if body.get("success") else "not accepted"))]
    for key in (
        "eventCount",
        "missing",
        "extra",
        "repeated",
        "submissionNumber",
        "remainingSubmissions",
    ):
        if key in counts:
            parts.append(f"{key}={counts[key]}")
    return " ".join(parts)
