"""Real HTTP endpoints for push tests: an h11 server in the test's own Trio loop (so the autojump
clock drives retries and timeouts), and a threaded http.server for tests of a `dovecote serve`
process. Both listen on 127.0.0.1, record every request and answer as `answer` says.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import NamedTuple

import h11
import trio


class Pushed(NamedTuple):
    path: str
    headers: dict[str, str]  # lower-case names
    body: str
    at: float  # trio.current_time() on arrival (0 for the threaded server)

    def json(self) -> dict:
        return json.loads(self.body)


Answer = Callable[[Pushed], int | None]  # the status to answer with; None: never answer


class TrioEndpoint:
    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self._tls = tls
        self.requests: list[Pushed] = []
        self.url = ""
        self._arrived = trio.Event()

    async def wait_for(self, count: int) -> list[Pushed]:
        while len(self.requests) < count:
            await self._arrived.wait()
        return self.requests

    def of_type(self, message_type: str) -> list[Pushed]:
        return [r for r in self.requests if r.headers.get("x-amz-sns-message-type") == message_type]

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        scheme = "https" if self._tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{listeners[0].socket.getsockname()[1]}/push"
        task_status.started(self.url)
        if self._tls is not None:
            listeners = [trio.SSLListener(listener, self._tls) for listener in listeners]
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.abc.Stream) -> None:
        try:
            await self._serve_connection(stream)
        except trio.BrokenResourceError:
            pass  # the client went away (or refused our certificate)

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        connection = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                head: h11.Request | None = None
                body = b""
                while True:
                    event = connection.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        connection.receive_data(data)
                    elif isinstance(event, h11.Request):
                        head = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert head is not None
                headers = {name.decode().lower(): value.decode() for name, value in head.headers}
                pushed = Pushed(head.target.decode(), headers, body.decode(), trio.current_time())
                self.requests.append(pushed)
                self._arrived.set()
                self._arrived = trio.Event()
                status = self.answer(pushed)
                if status is None:
                    await trio.sleep_forever()
                response = h11.Response(status_code=status, headers=[("Content-Length", "0")])
                await stream.send_all(connection.send(response) + connection.send(h11.EndOfMessage()))
                if connection.our_state is h11.MUST_CLOSE:
                    return
                connection.start_next_cycle()


@contextlib.asynccontextmanager
async def trio_endpoint(answer: Answer = lambda pushed: 200, tls: ssl.SSLContext | None = None) -> AsyncIterator[TrioEndpoint]:
    endpoint = TrioEndpoint(answer, tls)
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.serve)
        yield endpoint
        nursery.cancel_scope.cancel()


def unused_port_url() -> str:
    """The URL of a port nothing listens on: a dead endpoint (connections are refused)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/dead"


class ThreadedEndpoint:
    """For tests of a broker process: answers `status` (changeable while it runs)."""

    def __init__(self) -> None:
        self.requests: list[Pushed] = []
        self.status = 200
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode()
                if len(body.encode()) < length:
                    return  # the sender went away mid-request (a broker killed with -9)
                endpoint.requests.append(Pushed(self.path, {k.lower(): v for k, v in self.headers.items()}, body, 0.0))
                self.send_response(endpoint.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/push"

    def received(self) -> list[Pushed]:
        return list(self.requests)  # a copy: handler threads append meanwhile

    @contextlib.contextmanager
    def running(self) -> Iterator[ThreadedEndpoint]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()
