"""A small HTTP/1.1 server on h11 for the AWS-compatible API and the broker's own endpoints. Thin:
it parses, enforces limits and timeouts, and hands each request to a handler.

Limits: request head at most `http_max_header_bytes` (431 beyond), body at most
`http_max_body_bytes`, enforced while it streams in (413 beyond); a request must arrive within
`http_read_timeout_s`; an idle keep-alive connection is closed after `http_keepalive_timeout_s`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import h11
import trio

from .limits import NetLimits

log = logging.getLogger("dovecote.http")


class HttpRequest(NamedTuple):
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    peer: str = ""  # the client's address, "HOST:PORT" ("[HOST]:PORT" for IPv6), for the audit trail


class HttpResponse(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def text_response(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> HttpResponse:
    return HttpResponse(status, [("Content-Type", content_type)], text.encode())


def peer_address(stream: trio.abc.Stream) -> str:
    """The address of a connection's other end, "HOST:PORT" ("[HOST]:PORT" for IPv6); "" if it has
    none to tell. A TLS stream is asked through the stream it wraps."""
    transport = getattr(stream, "transport_stream", stream)
    try:
        address = transport.socket.getpeername()
    except (AttributeError, OSError):
        return ""
    if not isinstance(address, tuple):
        return str(address)
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _RequestTooLarge(Exception):
    pass


class HttpServer:
    def __init__(self, make_handler: Callable[[], Handler], limits: NetLimits, stopping: trio.Event) -> None:
        """make_handler is called once per connection; the handler it returns serves that
        connection's requests, one at a time, in that connection's task."""
        self._make_handler = make_handler
        self._limits = limits
        self._stopping = stopping
        self._connections = trio.CapacityLimiter(limits.max_connections)

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound_port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._connection, listeners)
            task_status.started(bound_port)
            await self._stopping.wait()
            nursery.cancel_scope.cancel()

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            self._connections.acquire_on_behalf_of_nowait(stream)
        except trio.WouldBlock:
            await stream.aclose()
            return
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.http_max_header_bytes)
        handler = self._make_handler()
        peer = peer_address(stream)
        try:
            while True:
                timeout = (
                    self._limits.http_keepalive_timeout_s
                    if connection.their_state is h11.IDLE
                    else self._limits.http_read_timeout_s
                )
                request = None
                with trio.move_on_after(timeout):
                    request = await self._read_request(connection, stream, peer)
                if request is None:
                    return
                if isinstance(request, HttpResponse):  # a limit was hit while reading
                    await self._send(connection, stream, request, close=True)
                    return
                try:
                    response = await handler(request)
                except Exception:  # noqa: BLE001 - one bad request must not take the server down
                    log.exception("handler failed for %s %s", request.method, request.target)
                    response = text_response(500, "internal error\n")
                await self._send(connection, stream, response, close=False)
                if connection.our_state is h11.MUST_CLOSE or connection.their_state is h11.MUST_CLOSE:
                    return
                try:
                    connection.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass
        except Exception:  # noqa: BLE001 - one connection never stops the broker
            log.exception("an HTTP connection failed; the broker goes on")
        finally:
            self._connections.release_on_behalf_of(stream)
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read_request(
        self, connection: h11.Connection, stream: trio.SocketStream, peer: str
    ) -> HttpRequest | HttpResponse | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as error:
                # h11 hints 431 when the head outgrows max_incomplete_event_size, else 400.
                return text_response(error.error_status_hint, f"bad request: {error}\n")
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return None
                connection.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                head = event
                # h11 bounds a head that arrives in pieces; one that arrives whole is checked here.
                head_bytes = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if head_bytes > self._limits.http_max_header_bytes:
                    return text_response(431, "request header fields too large\n")
                length = dict(event.headers).get(b"content-length")
                if length is not None and int(length) > self._limits.http_max_body_bytes:
                    return text_response(413, "request body too large\n")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._limits.http_max_body_bytes:
                    return text_response(413, "request body too large\n")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return HttpRequest(
                    head.method.decode(),
                    head.target.decode(),
                    [(name.decode(), value.decode("latin-1")) for name, value in head.headers],
                    bytes(body),
                    peer,
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _send(self, connection: h11.Connection, stream: trio.SocketStream, response: HttpResponse, *, close: bool) -> None:
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        if close:
            headers.append(("Connection", "close"))
        try:
            data = connection.send(h11.Response(status_code=response.status, headers=headers))
            data += connection.send(h11.Data(data=response.body)) if response.body else b""
            data += connection.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        await stream.send_all(data)
