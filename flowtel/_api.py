"""The HTTP edge: one place where httpx, HTTP statuses and JSON become flowtel's own errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs
import httpx
import orjson
import trio

from flowtel._errors import (
    ApiError,
    CursorExpired,
    CursorInvalid,
    FeedUnavailable,
    RateLimited,
    StreamTokenExpired,
    TransientError,
)
from flowtel._ratelimit import parse_retry_after
from flowtel._secret import Secret, redact

USER_AGENT = "flowtel"


@attrs.frozen
class Answer:
    """A successful answer: its decoded JSON object and its headers."""

    body: dict[str, Any]
    headers: httpx.Headers
    elapsed: float  # seconds from send to the last byte
    # The page's events end early, before one that could not be mended (see _mend.py): the
    # stream goes on from their watermark, not from the cursor.
    cut: bool = False


@attrs.frozen
class StreamAccess:
    """A stream-feed token and where to use it, as the token endpoint describes them."""

    endpoint: str
    header: str
    token: Secret
    renew_at: float  # trio clock: from then on a new token is asked for
    expires_at: float  # trio clock: not sent after this (its lifetime less a margin)


class Api:
    """Requests against the API with the key, answers decoded, failures as flowtel errors."""

    def __init__(self, http: httpx.AsyncClient, key: Secret) -> None:
        self.http = http
        self.key = key

    @property
    def base_url(self) -> str:
        url = self.http.base_url
        return f"{url.scheme}://{url.netloc.decode()}"

    async def get(
        self, path: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] = {}
    ) -> Answer:
        return await self.request("GET", path, params=params, headers=headers)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] = {},
        content: Any = None,
        json_body: Any = None,
        secrets: tuple[Secret, ...] = (),
    ) -> Answer:
        started = trio.current_time()
        try:
            async with self.http.stream(
                method,
                path,
                params=params,
                headers={"X-API-Key": self.key.reveal(), **headers},
                content=content,
                json=json_body,
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _error_for(response, path)
                # Bytes of our own, not `aread()`: that keeps the body on the Response, which
                # httpx holds in a reference cycle, so every page (MBs) would stay alive until
                # the cyclic collector's next full pass.
                data = b"".join([chunk async for chunk in response.aiter_bytes()])
        except httpx.TransportError as exc:
            # httpx messages name the URL, never headers; redact anyway.
            reason = redact(str(exc) or type(exc).__name__, self.key, *secrets)
            raise TransientError(f"{method} {path}: {type(exc).__name__}: {reason}") from None
        elapsed = trio.current_time() - started
        body = decode_json(data, path)
        if not isinstance(body, dict):
            raise TransientError(
                f"{path}: 200 with a {type(body).__name__} body, not an object", 200
            )
        return Answer(body=body, headers=response.headers, elapsed=elapsed)


def decode_json(content: bytes, path: str) -> Any:
    """JSON of a 200 body. A cut or empty body is a fault of the transport, not data."""
    if not content.strip():
        raise TransientError(f"{path}: 200 with an empty body", 200)
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        orjson_error = exc
    try:
        # orjson refuses invalid UTF-8 and lone surrogates; keep such a page, repaired.
        return json.loads(content.decode("utf-8", "replace"))
    except ValueError:
        raise TransientError(
            f"{path}: 200 whose body is not valid JSON ({len(content)} bytes, cut off?): "
            f"{orjson_error}",
            200,
        ) from None


def _error_for(response: httpx.Response, path: str) -> Exception:
    status = response.status_code
    code: str | None = None
    message = response.reason_phrase
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        code = body.get("code") if isinstance(body.get("code"), str) else None
        raw_message = body.get("message") or body.get("error")
        if isinstance(raw_message, str):
            message = raw_message[:200]
    request_id = response.headers.get("x-request-id")
    if status == 429:
        return RateLimited(parse_retry_after(response.headers.get("retry-after")), f"{path}: 429")
    if status >= 500 or status == 408:
        return TransientError(f"{path}: HTTP {status} {code or message}".rstrip(), status)
    if status == 400 and code == "CURSOR_EXPIRED":
        return CursorExpired(status, code, message, request_id)
    if status == 400 and code == "CURSOR_INVALID":
        return CursorInvalid(status, code, message, request_id)
    if status == 403 and code == "INVALID_STREAM_TOKEN":
        return StreamTokenExpired(status, code, message, request_id)
    if status == 403 and code == "DASHBOARD_REQUIRED":
        return FeedUnavailable(f"the stream feed refused a token: {message}")
    if status == 401:
        return ApiError(status, code, "the API key was refused (401)", request_id)
    return ApiError(status, code, f"{path}: {message}", request_id)
