"""The push sender's HTTP/1.1 connection (net/http_push.py) against raw endpoints in the test's
Trio loop: a request written whole in one send and kept alive, a connection the endpoint closed
replaced without a failed attempt, and each way an exchange can fail said as an outcome."""

import functools

import h11
import pytest
import trio

from dovecote.actors.push_types import UNREACHABLE, PushRequest
from dovecote.net.http_push import Pusher, parse_endpoint

from ..push_endpoint import unused_port_url

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def request(url: str, body: str = "hello", content_type: str = "text/plain; charset=UTF-8") -> PushRequest:
    return PushRequest("http", url, "Notification", "m-1", "arn:aws:sns:r:1:t", "arn:aws:sns:r:1:t:s", body, content_type=content_type)


class RawEndpoint:
    """Reads requests with h11, and answers each as `answer(number)` says: the bytes to write,
    and whether to close the connection after them. Records the connections, and the bytes of
    each read, per connection."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.reads: list[list[bytes]] = []  # per connection
        self.requests: list[tuple[h11.Request, bytes]] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        reads: list[bytes] = []
        self.reads.append(reads)
        http = h11.Connection(h11.SERVER)
        body = b""
        async with stream:
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    reads.append(data)
                    http.receive_data(data)
                elif type(event) is h11.Request:
                    head, body = event, b""
                elif type(event) is h11.Data:
                    body += event.data
                elif type(event) is h11.EndOfMessage:
                    self.requests.append((head, body))
                    answer, close = self.answer(len(self.requests))
                    await stream.send_all(answer)
                    if close:
                        return
                    http = h11.Connection(h11.SERVER)  # the answers are written by hand

    async def __aenter__(self):
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        listeners = await nursery.start(functools.partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1"))
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/push?x=1"
        self._nursery = nursery
        return self

    async def __aexit__(self, *exc):
        self._nursery.cancel_scope.cancel()
        return await self._nursery_manager.__aexit__(*exc)


async def test_a_push_is_one_write_and_its_connection_is_kept_alive():
    async with RawEndpoint(lambda n: (OK, False)) as endpoint:
        async with Pusher().connection() as connection:
            for i in range(5):
                assert await connection.send(request(endpoint.url, f"m{i}")) == ""
    assert len(endpoint.reads) == 1  # one connection for all five
    # each request arrived whole in one segment: written in one send, head and body together
    assert all(read.endswith(f"m{i}".encode()) for i, read in enumerate(endpoint.reads[0]))
    head, body = endpoint.requests[0]
    headers = dict(head.headers)
    assert head.method == b"POST" and head.target == b"/push?x=1" and body == b"m0"
    assert headers[b"host"] == endpoint.url.split("/")[2].encode()
    assert headers[b"x-amz-sns-message-type"] == b"Notification" and headers[b"x-amz-sns-message-id"] == b"m-1"
    assert headers[b"x-amz-sns-subscription-arn"] == b"arn:aws:sns:r:1:t:s"
    assert headers[b"user-agent"] == b"Amazon Simple Notification Service Agent"


async def test_a_connection_the_endpoint_closed_is_replaced_without_a_failed_attempt():
    # The first answer says it closes; the second closes silently after answering.
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    async with RawEndpoint(lambda n: (closing, True) if n == 1 else (OK, n == 2)) as endpoint:
        async with Pusher().connection() as connection:
            for _ in range(3):
                assert await connection.send(request(endpoint.url)) == ""
                await trio.sleep(0.05)  # the close reaches the sender while it is idle
    assert len(endpoint.reads) == 3


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (b"", "RemoteProtocolError: the endpoint closed the connection without answering"),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "HTTP 503"),
        (b"not http at all\r\n\r\n", "RemoteProtocolError: "),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", ""),
    ],
)
async def test_each_answer_is_an_outcome_and_the_next_push_goes_through(answer, outcome):
    async with RawEndpoint(lambda n: (answer, True) if n == 1 else (OK, False)) as endpoint:
        async with Pusher().connection() as connection:
            first = await connection.send(request(endpoint.url))
            assert first.startswith(outcome) and (first == "" or outcome)
            assert await connection.send(request(endpoint.url)) == ""


async def test_what_cannot_be_sent_is_an_outcome_not_an_exception():
    async with RawEndpoint(lambda n: (OK, False)) as endpoint:
        async with Pusher().connection() as connection:
            # a delivery policy's content type that would add a header of its own
            injected = await connection.send(request(endpoint.url, content_type="text/plain\r\nX-Evil: 1"))
            assert injected.startswith("LocalProtocolError: ")
            assert (await connection.send(request("ftp://example.com/x"))).startswith("InvalidURL: ")
            assert (await connection.send(request("http://127.0.0.1:99999/"))).startswith("InvalidURL: ")
            assert (await connection.send(request(unused_port_url()))).startswith(f"{UNREACHABLE}: ")
            assert await connection.send(request(endpoint.url)) == ""
    assert len(endpoint.requests) == 1


async def test_an_endpoint_that_does_not_answer_times_out(autojump_clock):
    async def silent(stream):
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
        async with Pusher(timeout_s=15).connection() as connection:
            started = trio.current_time()
            assert await connection.send(request(url)) == "timeout"
            assert trio.current_time() - started == pytest.approx(15)
        nursery.cancel_scope.cancel()


def test_endpoints_are_taken_apart_once():
    endpoint = parse_endpoint("https://user:pw@Example.com:8443/a/b?c=d")
    assert (endpoint.https, endpoint.host, endpoint.port, endpoint.target, endpoint.host_header) == (
        True, "example.com", 8443, b"/a/b?c=d", b"Example.com:8443",
    )
    assert parse_endpoint("http://127.0.0.1").port == 80 and parse_endpoint("http://127.0.0.1").target == b"/"
    with pytest.raises(ValueError):
        parse_endpoint("mailto:someone@example.com")


async def test_a_connection_reset_is_said_with_its_cause():
    import socket
    import struct

    async def reset(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
        stream.socket.close()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, reset, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
        async with Pusher().connection() as connection:
            outcome = await connection.send(request(url))
        nursery.cancel_scope.cancel()
    assert outcome.startswith("ConnectionError: ") and "reset" in outcome.lower()
