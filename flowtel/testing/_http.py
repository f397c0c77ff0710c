"""The simulator's own small request / response types, shared by the two faces."""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import orjson


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover


@attrs.frozen
class Request:
    method: str
    path: str
    query: dict[str, str]  # first value of each parameter
    headers: dict[str, str]  # lower-case names
    host: str = ""
    body: AsyncIterator[bytes] = attrs.field(factory=_no_body)

    async def read(self, limit: int = 64 * 1024 * 1024) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.body:
            size += len(chunk)
            if size > limit:
                raise ValueError("body too large")
            parts.append(chunk)
        return b"".join(parts)


@attrs.define
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    #: Close the connection after this many bytes of the body (a dropped connection).
    drop_after: int | None = None


def json_response(
    status: int, payload: object, headers: list[tuple[str, str]] | None = None
) -> Response:
    return Response(
        status,
        [*(headers or []), ("Content-Type", "application/json; charset=utf-8")],
        orjson.dumps(payload),
    )
