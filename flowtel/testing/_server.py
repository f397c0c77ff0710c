"""The real face: an HTTP/1.1 server (h11 on trio sockets) in front of a Simulator."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from flowtel.testing._app import Simulator
from flowtel.testing._http import Request, Response

_RECEIVE = 256 * 1024
_MAX_DRAIN = 8 * 1024 * 1024


class _Conn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)

    async def next_event(self) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(_RECEIVE)
                self.h11.receive_data(data)  # b"" means the peer closed
                continue
            return event

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise h11.RemoteProtocolError("unexpected event in request body")

    async def send(self, response: Response) -> None:
        headers = [(k.encode(), v.encode()) for k, v in response.headers]
        headers.append((b"Content-Length", str(len(response.body)).encode()))
        headers.append((b"Server", b"flowtel-simulator"))
        head = self.h11.send(h11.Response(status_code=response.status, headers=headers))
        assert head is not None
        if response.drop_after is not None:
            await self.stream.send_all(head + response.body[: response.drop_after])
            return
        data = self.h11.send(h11.Data(data=response.body)) if response.body else b""
        end = self.h11.send(h11.EndOfMessage())
        await self.stream.send_all(head + (data or b"") + (end or b""))


async def _drain(conn: _Conn) -> bool:
    """Read what is left of the request body; False if the connection cannot be reused."""
    drained = 0
    while conn.h11.their_state is h11.SEND_BODY:
        event = await conn.next_event()
        if isinstance(event, h11.Data):
            drained += len(event.data)
            if drained > _MAX_DRAIN:
                return False
        elif not isinstance(event, h11.EndOfMessage):
            return False
    return conn.h11.their_state is h11.DONE


async def _serve_connection(sim: Simulator, stream: trio.SocketStream) -> None:
    conn = _Conn(stream)
    try:
        while True:
            event = await conn.next_event()
            if not isinstance(event, h11.Request):
                return
            target = urlsplit(event.target.decode("ascii", "replace"))
            query: dict[str, str] = {}
            for name, value in parse_qsl(target.query, True):
                query.setdefault(name, value)
            headers: dict[str, str] = {}
            for raw_name, raw_value in event.headers:
                name, value = raw_name.decode().lower(), raw_value.decode("latin-1")
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            if not chunked and headers.get("content-length", "0").strip() in ("", "0"):
                await _drain(conn)  # no body: take the EndOfMessage now
            request = Request(
                method=event.method.decode(),
                path=target.path,
                query=query,
                headers=headers,
                host=headers.get("host", ""),
                body=conn.body(),
            )
            response = await sim.handle(request)
            if conn.h11.their_state is h11.SEND_BODY:
                # Answered before reading the whole body: do not reuse the connection.
                response.headers.append(("Connection", "close"))
            await conn.send(response)
            if response.drop_after is not None:
                return
            if conn.h11.our_state is h11.MUST_CLOSE or not await _drain(conn):
                return
            conn.h11.start_next_cycle()
            sim.idle_work()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return
    finally:
        await stream.aclose()


async def serve(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `sim` over HTTP/1.1 until cancelled; `task_status.started((host, port))`."""
    sim.warm_up()
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            trio.serve_listeners, functools.partial(_serve_connection, sim), listeners
        )
        task_status.started((str(bound[0]), int(bound[1])))
