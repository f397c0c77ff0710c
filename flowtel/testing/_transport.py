"""The in-process face: an httpx transport that calls the Simulator directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

import httpx

from flowtel.testing._app import Simulator
from flowtel.testing._http import Request

BASE_URL = "http://simulator.test"


async def _chunks(stream: httpx.AsyncByteStream | httpx.SyncByteStream) -> AsyncIterator[bytes]:
    if isinstance(stream, httpx.AsyncByteStream):
        async for chunk in stream:
            yield chunk
    else:  # pragma: no cover - httpx async clients always hand an async stream
        for chunk in stream:
            yield chunk


class SimulatorTransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncClient(transport=SimulatorTransport(sim), base_url=BASE_URL)`.

    A dropped connection surfaces as `httpx.RemoteProtocolError`, as it would over a socket.
    """

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        query: dict[str, str] = {}
        for name, value in parse_qsl(request.url.query.decode("ascii", "replace"), True):
            query.setdefault(name, value)
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        req = Request(
            method=request.method,
            path=request.url.path,
            query=query,
            headers=headers,
            host=headers.get("host", request.url.netloc.decode("ascii")),
            body=_chunks(request.stream),
        )
        response = await self.simulator.handle(req)
        if response.drop_after is not None:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body", request=request
            )
        return httpx.Response(
            response.status,
            headers=[*response.headers, ("Content-Length", str(len(response.body)))],
            content=response.body,
            request=request,
        )
