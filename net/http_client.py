"""The broker's own HTTP/1.1 requests (SNS pushes, the shovels' remotes): one keep-alive connection,
h11 on a Trio stream, one exchange at a time, a request written in one send. Through httpx a
push or a forward cost the broker about twice as much: its pool, models and tracing were half of it.

A connection is opened at its first exchange and again whenever it closed; an idle kept-alive
connection the server closed meanwhile is seen before it is used (its socket is readable) and
opened anew, so no request is lost to a stale connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import h11
import trio

if TYPE_CHECKING:
    import ssl

READ_BYTES = 65536


class Unreachable(Exception):
    """No connection could be made (refused, no route, name unknown, a TLS handshake refused); the
    cause says which."""


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    complete: bool  # False: the body went beyond the cap, and the rest was not read


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """A server's certificate checked against certifi's CAs (True), a CA bundle file, or not at all.
    ssl and certifi are imported here, at the first https request: a broker that makes none never
    loads them."""
    import ssl

    import certifi

    context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else certifi.where())
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class HttpConnection:
    """One keep-alive connection to one server. Owned by one task."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._stream: trio.abc.Stream | None = None
        self._socket: trio.socket.SocketType | None = None  # under the stream, to see whether it was closed while idle
        self._http = h11.Connection(h11.CLIENT)

    async def exchange(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, max_body_bytes: int
    ) -> Answer:
        """Send a request (its headers must include Host and Content-Length) and read the answer,
        its body up to max_body_bytes. Raises Unreachable, h11.ProtocolError, OSError or
        trio.BrokenResourceError; after any of them (or a cancellation in the middle) the
        connection is closed, and the next exchange opens another."""
        if self._stream is not None and (self._http.our_state is not h11.IDLE or self._closed_while_idle()):
            await self.close()
        if self._stream is None:
            await self._open()
        http, stream = self._http, self._stream
        assert stream is not None
        ok = False
        try:
            # One write for the whole request (h11 checks the header values: none can add a header).
            await stream.send_all(
                http.send(h11.Request(method=method, target=target, headers=headers)) + http.send(h11.Data(data=body))
                + http.send(h11.EndOfMessage())
            )
            answer = await self._read_answer(max_body_bytes)
            ok = answer.complete and http.our_state is h11.DONE and http.their_state is h11.DONE
        finally:
            if ok:
                http.start_next_cycle()  # kept alive
            else:
                await self.close()
        return answer

    async def _read_answer(self, max_body_bytes: int) -> Answer:
        http, status, headers, chunks, read = self._http, 0, {}, [], 0
        assert self._stream is not None
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await self._stream.receive_some(READ_BYTES)
                if not data and not status:
                    raise h11.RemoteProtocolError("the endpoint closed the connection without answering")
                http.receive_data(data)
            elif type(event) is h11.Response:
                status = event.status_code
                headers = {name.decode().lower(): value.decode("latin-1") for name, value in event.headers}
            elif type(event) is h11.Data:
                read += len(event.data)
                if read > max_body_bytes:
                    return Answer(status, headers, b"".join(chunks), False)
                chunks.append(event.data)
            elif type(event) is h11.EndOfMessage:
                return Answer(status, headers, b"".join(chunks), True)
            elif type(event) is h11.ConnectionClosed:
                return Answer(status, headers, b"".join(chunks), False)
            # an informational answer (100 Continue) is passed over: the final one follows

    def _closed_while_idle(self) -> bool:
        """An idle keep-alive connection with something to read has been closed by the server (or
        sent what no request asked for): it is not used again."""
        assert self._socket is not None
        return self._socket.is_readable()

    async def _open(self) -> None:
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(self._host, self._port)
        except OSError as error:
            raise Unreachable() from error
        self._socket = stream.socket
        if self._tls is not None:
            import ssl

            stream = trio.SSLStream(stream, self._tls, server_hostname=self._host, https_compatible=True)
            try:
                await stream.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError) as error:
                await trio.aclose_forcefully(stream)
                raise Unreachable() from (error.__cause__ or error)
        self._stream = stream
        self._http = h11.Connection(h11.CLIENT)

    async def close(self) -> None:
        if self._stream is not None:
            stream, self._stream, self._socket = self._stream, None, None
            await trio.aclose_forcefully(stream)
