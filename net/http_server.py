"""A small HTTP/1.1 server on h11 for the AWS-compatible API and the broker's own endpoints. Thin:
it parses, enforces limits and timeouts, and hands each request to a handler. The plain requests
the SDKs send are read and answered by a fast path (http_parse.py); h11 reads every other one.

With a certificate (tls.py) every connection is TLS: a plain HTTP request on the port gets a 400
saying so. A TLS handshake, like a request, must be done within `http_read_timeout_s`.

Limits: request head at most `http_max_header_bytes` (431 beyond), body at most
`http_max_body_bytes`, enforced while it streams in (413 beyond); a whole request, head and body,
must arrive within `http_read_timeout_s` of its first byte (and a connection's first request within
that of the connection), else it gets a 408 and the connection is closed, however slowly its bytes
trickle in; an idle keep-alive connection is closed after `http_keepalive_timeout_s`; an answer the
peer does not take within `write_timeout_s` closes the connection. Connections are admitted by the
accept loop (listener.py) against the limits in all and per peer address.

A request refused once its head is read (a body too large) or whose handler raises is answered by
the `Refuser`, which knows the protocols and answers in the request's own shape (an AWS request
gets an AWS error); the traceback of a handler that raised is logged at most once every
`failure_log_interval_s`. A HEAD request gets the headers of its GET, without the body.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple
from urllib.parse import urlsplit

import h11
import trio

from dovecote.actors.errors import KINDS
from dovecote.actors.principals import Keyring

from .failure_log import FailureLog
from .http_parse import DECLINED, NEED_MORE, parse_simple_request, response_bytes
from .limits import ConnectionCounts, NetLimits
from .listener import accept_loop
from .tls import Peer, ServerTls, certificate_principal, peer_address, starts_with_tls

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
# How a request is refused in its own protocol's shape: (the request, its body perhaps not read; an
# AWS error code of actors/errors.py; the message). Must not raise.
Refuser = Callable[[HttpRequest, str, str], HttpResponse]


def split_target(target: str) -> tuple[str, str]:
    """A request target's path and query. Never raises: a target urlsplit refuses (an absolute URL
    whose host is a malformed IPv6 address, `http://[x/`) is split at its first `?`."""
    try:
        parts = urlsplit(target)
    except ValueError:
        path, _, query = target.partition("?")
        return path, query
    return parts.path, parts.query


def text_response(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> HttpResponse:
    return HttpResponse(status, [("Content-Type", content_type)], text.encode())


def text_refusal(request: HttpRequest, code: str, message: str) -> HttpResponse:
    """A refusal for a server that speaks no AWS protocol: the code's status, the message as text."""
    return text_response(KINDS[code].http_status, f"{message}\n")


class _RequestTooLarge(Exception):
    pass


def _closing_response(status_line: bytes, text: bytes) -> bytes:
    """A whole response, sent as bytes where h11 cannot make one (no request was parsed)."""
    return (
        b"HTTP/1.1 " + status_line + b"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(text) + text
    )


_PLAIN_ON_TLS_PORT = _closing_response(b"400 Bad Request", b"This port speaks HTTPS: use an https:// endpoint.\n")


class HttpServer:
    def __init__(
        self,
        make_handler: Callable[[Peer], Handler],
        limits: NetLimits,
        stopping: trio.Event,
        counts: ConnectionCounts,
        tls: ServerTls | None = None,
        keyring: Keyring | None = None,
        refuse: Refuser = text_refusal,
    ) -> None:
        """make_handler is called once per connection with its peer; the handler it returns serves
        that connection's requests, one at a time, in that connection's task. counts: the
        connections held, shared with the native listener; tls: the certificate every connection is
        wrapped in (None: plain HTTP); keyring: the keys client certificates may name; refuse:
        answers a request refused by a limit, or whose handler raised."""
        self._make_handler = make_handler
        self._limits = limits
        self._stopping = stopping
        self._tls = tls
        self._keyring = keyring if keyring is not None else Keyring({})
        self._counts = counts
        self._request_timeout = _closing_response(
            b"408 Request Timeout", b"the request did not arrive within %g s\n" % limits.http_read_timeout_s
        )
        self._refuse = refuse
        self._failures = FailureLog(log, limits.failure_log_interval_s)

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await self.serve_listeners(await trio.open_tcp_listeners(port, host=host), task_status=task_status)

    async def serve_listeners(
        self, listeners: list[trio.SocketListener], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on listeners opened before (so that their port was known first); started with it."""
        bound_port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(accept_loop, "HTTP", listener, self._counts, self._limits, self._connection, nursery)
            task_status.started(bound_port)
            await self._stopping.wait()
            nursery.cancel_scope.cancel()

    async def _connection(self, socket_stream: trio.SocketStream) -> None:
        stream: trio.abc.Stream = socket_stream
        try:
            peer = None
            first_request_by = trio.current_time() + self._limits.http_read_timeout_s  # the TLS handshake's time counts
            with trio.move_on_at(first_request_by):
                stream, peer = await self._open(socket_stream)
            if peer is None:
                return
            await self._serve(stream, self._make_handler(peer), peer.address, first_request_by)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away, or failed the TLS handshake
        except Exception:  # noqa: BLE001 - one connection never stops the broker
            self._failures.exception("an HTTP connection failed; the broker goes on")
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    try:
                        await stream.aclose()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass

    async def _open(self, stream: trio.SocketStream) -> tuple[trio.abc.Stream, Peer | None]:
        """The connection's stream (TLS over the socket, if on) and its peer; None: refused or gone."""
        address = peer_address(stream)
        if self._tls is None:
            return stream, Peer(address)
        tls_first = await starts_with_tls(stream)
        if not tls_first:
            if tls_first is False:
                await stream.receive_some(self._limits.http_max_header_bytes)
                await stream.send_all(_PLAIN_ON_TLS_PORT)
            return stream, None
        tls_stream = trio.SSLStream(stream, self._tls.http_context, server_side=True, https_compatible=True)
        await tls_stream.do_handshake()
        return tls_stream, Peer(address, certificate_principal(tls_stream, self._keyring))

    async def _serve(self, stream: trio.abc.Stream, handler: Handler, peer: str, first_request_by: float) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.http_max_header_bytes)
        unparsed = bytearray()  # read, and neither taken by the fast path nor given to h11
        try:
            request_by = first_request_by
            while True:
                request = None
                with trio.move_on_at(request_by) as deadline:
                    request, fast = await self._read_request(connection, unparsed, stream, peer, deadline)
                if deadline.cancelled_caught:
                    if unparsed or _request_begun(connection):
                        await self._send_bytes(stream, self._request_timeout)
                    return
                if request is None:
                    return
                if isinstance(request, HttpResponse):  # a limit was hit while reading
                    await self._send(connection, stream, request, close=True)
                    return
                try:
                    response = await handler(request)
                except Exception:  # noqa: BLE001 - one bad request must not take the server down
                    self._failures.exception(f"handler failed for {request.method} {request.target[:200]}")
                    response = self._refuse(request, "InternalError", "The server failed to handle the request; it goes on.")
                if fast:
                    data = response_bytes(response.status, response.headers, response.body)
                    if data is None:  # a header h11 would not send either
                        return
                    await self._send_bytes(stream, data)
                else:
                    await self._send(connection, stream, response, close=False, head_only=request.method == "HEAD")
                    if connection.our_state is h11.MUST_CLOSE or connection.their_state is h11.MUST_CLOSE:
                        return
                    try:
                        connection.start_next_cycle()
                    except h11.LocalProtocolError:
                        return
                request_by = trio.current_time() + self._limits.http_keepalive_timeout_s
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass
        except Exception:  # noqa: BLE001 - one connection never stops the broker
            self._failures.exception("an HTTP connection failed; the broker goes on")

    async def _read_request(
        self, connection: h11.Connection, unparsed: bytearray, stream: trio.abc.Stream, peer: str, deadline: trio.CancelScope
    ) -> tuple[HttpRequest | HttpResponse | None, bool]:
        """The next request, or the error response a limit calls for (None: the peer closed), and
        whether the fast path took it (its answer is written without h11). deadline: brought
        forward to the read timeout from the request's first byte."""
        limits = self._limits
        timed = False
        # The fast path reads while h11 holds nothing; a request it declines goes to h11 whole.
        while connection.their_state is h11.IDLE and not connection.trailing_data[0]:
            if not timed and unparsed:
                deadline.deadline = min(deadline.deadline, trio.current_time() + limits.http_read_timeout_s)
                timed = True
            parsed = parse_simple_request(unparsed, limits.http_max_header_bytes, limits.http_max_body_bytes) if unparsed else NEED_MORE
            if parsed is DECLINED:
                connection.receive_data(bytes(unparsed))
                unparsed.clear()
                break
            if parsed is not NEED_MORE:
                simple, used = parsed
                del unparsed[:used]
                return HttpRequest(simple.method, simple.target, simple.headers, simple.body, peer), True
            data = await stream.receive_some(65536)
            if not data:
                return None, False
            unparsed += data
        return await self._read_with_h11(connection, stream, peer, deadline), False

    async def _read_with_h11(
        self, connection: h11.Connection, stream: trio.abc.Stream, peer: str, deadline: trio.CancelScope
    ) -> HttpRequest | HttpResponse | None:
        head: h11.Request | None = None
        body = bytearray()
        timed = False
        while True:
            if not timed and _request_begun(connection):
                deadline.deadline = min(deadline.deadline, trio.current_time() + self._limits.http_read_timeout_s)
                timed = True
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
                    return self._too_large(head, peer)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._limits.http_max_body_bytes:
                    return self._too_large(head, peer)
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

    def _too_large(self, head: h11.Request | None, peer: str) -> HttpResponse:
        assert head is not None  # h11 gives the head before any of the body
        request = HttpRequest(
            head.method.decode(), head.target.decode(), [(n.decode(), v.decode("latin-1")) for n, v in head.headers], b"", peer
        )
        return self._refuse(request, "RequestEntityTooLarge", f"The request body is larger than {self._limits.http_max_body_bytes} bytes.")

    async def _send(
        self, connection: h11.Connection, stream: trio.abc.Stream, response: HttpResponse, *, close: bool, head_only: bool = False
    ) -> None:
        """head_only: the answer to a HEAD, whose body is left out (its length is still told)."""
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        if close:
            headers.append(("Connection", "close"))
        try:
            data = connection.send(h11.Response(status_code=response.status, headers=headers))
            data += connection.send(h11.Data(data=response.body)) if response.body and not head_only else b""
            data += connection.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        await self._send_bytes(stream, data)

    async def _send_bytes(self, stream: trio.abc.Stream, data: bytes) -> None:
        """Raises BrokenResourceError when the peer does not take them within the write timeout."""
        with trio.move_on_after(self._limits.write_timeout_s) as deadline:
            await stream.send_all(data)
        if deadline.cancelled_caught:
            raise trio.BrokenResourceError(f"the peer took no answer for {self._limits.write_timeout_s:g} s")


def _request_begun(connection: h11.Connection) -> bool:
    """Whether a request has begun to arrive: some of its head is buffered, or all of it read."""
    return connection.their_state is not h11.IDLE or bool(connection.trailing_data[0])
