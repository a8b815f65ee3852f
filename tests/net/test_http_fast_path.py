"""The HTTP server's fast path (net/http_parse.py): the plain requests the SDKs send are read and
answered without h11, byte for byte as h11 would answer them; everything else still goes to h11,
on the same connection, in order, with its limits and refusals."""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from dovecote.net.http_parse import DECLINED, NEED_MORE, SimpleRequest, parse_simple_request, response_bytes
from dovecote.net.http_server import HttpRequest, HttpResponse, HttpServer
from dovecote.net.limits import ConnectionCounts, NetLimits

from .http_exchange import exchange_bytes

BODY = b'{"QueueUrl": "http://127.0.0.1/000000000000/q", "MessageBody": "hello"}'
BOTO3_REQUEST = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1:7481\r\nAccept-Encoding: identity\r\nX-Amz-Target: AmazonSQS.SendMessage\r\n"
    b"Content-Type: application/x-amz-json-1.0\r\nx-amzn-query-mode: true\r\n"
    b"Authorization: AWS4-HMAC-SHA256 Credential=k/20261126/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=ab\r\n"
    b"amz-sdk-request: attempt=1; max=2\r\nContent-Length: %d\r\n\r\n" % len(BODY)
) + BODY
LIMITS = (16 * 1024, 1024 * 1024)


def test_a_boto3_request_is_parsed_whole():
    request, used = parse_simple_request(BOTO3_REQUEST + b"GET /next", *LIMITS)
    assert used == len(BOTO3_REQUEST)
    assert request == SimpleRequest(
        "POST",
        "/",
        [
            ("host", "127.0.0.1:7481"),
            ("accept-encoding", "identity"),
            ("x-amz-target", "AmazonSQS.SendMessage"),
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amzn-query-mode", "true"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=k/20261126/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=ab"),
            ("amz-sdk-request", "attempt=1; max=2"),
            ("content-length", str(len(BODY))),
        ],
        BODY,
    )


def test_the_headers_read_are_those_h11_reads():
    fast, _ = parse_simple_request(BOTO3_REQUEST, *LIMITS)
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(BOTO3_REQUEST)
    head = connection.next_event()
    assert fast.headers == [(name.decode(), value.decode("latin-1")) for name, value in head.headers]
    assert (fast.method, fast.target) == (head.method.decode(), head.target.decode())


@pytest.mark.parametrize("cut", [0, 10, BOTO3_REQUEST.index(b"\r\n\r\n") + 2, len(BOTO3_REQUEST) - 1])
def test_a_request_not_all_here_asks_for_more(cut):
    assert parse_simple_request(BOTO3_REQUEST[:cut], *LIMITS) == NEED_MORE


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}",
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nNo-Colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n Folded: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x0bc\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n",  # past the body limit
        b"GET / HTTP/1.1\r\nHost: x\r\nA: " + b"a" * 20000 + b"\r\n\r\n",  # past the head limit
        b"GET / HTTP/1.1\r\nHost: x\r\nA: " + b"a" * 20000,  # past it, not yet ended
    ],
)
def test_anything_but_the_plainest_request_is_left_to_h11(request_bytes):
    assert parse_simple_request(request_bytes, *LIMITS) == DECLINED


def test_an_answer_is_written_as_h11_writes_it():
    headers = [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", "r-1"), ("x-amzn-query-error", "A;Sender")]
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    connection.next_event()
    connection.next_event()
    body = b'{"a":1}'
    expected = connection.send(h11.Response(status_code=400, headers=[*headers, ("Content-Length", str(len(body)))]))
    expected += connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage())
    assert response_bytes(400, headers, body) == expected


@pytest.mark.parametrize("header", [("X-Bad", "a\r\nInjected: 1"), ("X-Bad", "caf\u00e9"), ("Bad Name", "v")])
def test_an_answer_with_a_header_h11_would_refuse_is_not_written(header):
    assert response_bytes(200, [header], b"") is None


async def echo(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, [("Content-Type", "text/plain")], f"{request.method} {request.target} {len(request.body)}".encode())


def server(limits: NetLimits = NetLimits()) -> HttpServer:
    return HttpServer(lambda peer: echo, limits, trio.Event(), ConnectionCounts(1, 1))


async def test_plain_requests_are_answered_without_h11(monkeypatch):
    def no_h11(self):
        raise AssertionError("h11 parsed a plain request")

    monkeypatch.setattr(h11.Connection, "next_event", no_h11)
    answer = await exchange_bytes(server(), echo, BOTO3_REQUEST * 3)
    assert answer == response_bytes(200, [("Content-Type", "text/plain")], b"POST / %d" % len(BODY)) * 3


async def test_fast_and_h11_requests_on_one_connection_are_answered_in_order():
    chunked = b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    head = b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = await exchange_bytes(server(), echo, BOTO3_REQUEST + chunked + BOTO3_REQUEST + head + BOTO3_REQUEST)
    bodies = [part.rpartition(b"\r\n\r\n")[2] for part in answer.split(b"HTTP/1.1 200 ")[1:]]
    fast = b"POST / %d" % len(BODY)
    assert bodies == [fast, b"POST /chunked 3", fast, b"", fast]


async def test_a_plain_request_that_stops_short_is_timed_out(autojump_clock):
    limits = NetLimits(http_read_timeout_s=2.0)
    client, server_side = trio.testing.memory_stream_pair()

    async def serve() -> None:
        await server(limits)._serve(server_side, echo, "test", trio.current_time() + 60)
        await server_side.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await client.send_all(BOTO3_REQUEST[:-5])
            started = trio.current_time()
            answer = b""
            while chunk := await client.receive_some(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ") and trio.current_time() - started == pytest.approx(limits.http_read_timeout_s, abs=0.1)


# --- the fast path against h11, on generated requests --------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Mostly what a client sends (printable text, spaces and tabs, any byte above 0x7f), some anything.
FIELD_BYTES = st.one_of(
    *[st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from(["\t", "\xe9"]), max_size=30).map(
        lambda text: text.encode("latin-1")
    )] * 3,
    st.binary(max_size=40),
)
HEADER_NAMES = st.one_of(
    *[st.text(TOKEN_CHARS, min_size=1, max_size=12)] * 6,
    st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect", "X-Amz-Target", "Content-Type"]),
    st.text(max_size=6),
)


def h11_request(data: bytes) -> tuple[str, str, list[tuple[str, str]], bytes, int] | None:
    """What h11 reads from data: the request and how many bytes it took; None if it reads no whole
    request (refused, or more is needed)."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=LIMITS[0])
    connection.receive_data(data)
    head, body = None, b""
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = [(n.decode(), v.decode("latin-1")) for n, v in head.headers]
                return head.method.decode(), head.target.decode(), headers, body, len(data) - len(connection.trailing_data[0])
    except h11.RemoteProtocolError:
        return None


@settings(max_examples=600, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "POST", "HEAD", "PUT"]),
    target=st.one_of(st.just(b"/"), st.just(b"/?Action=ListQueues"), st.binary(min_size=1, max_size=20).map(lambda b: b"/" + b)),
    headers=st.lists(st.tuples(HEADER_NAMES, FIELD_BYTES), max_size=4),
    host=st.sampled_from([True, True, True, False]),
    body=st.binary(max_size=30),
    length=st.sampled_from([None, "exact", "exact", "exact", "exact", "7", "+1", " 3", "1 ", "٣", "-1", ""]),
    trailing=st.binary(max_size=10),
)
def test_whatever_the_fast_path_takes_h11_reads_the_same(method, target, headers, host, body, length, trailing):
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    if host:
        lines.append(b"Host: x")
    lines += [name.encode("utf-8") + b": " + value for name, value in headers]
    if length is not None:
        lines.append(b"Content-Length: " + (str(len(body)) if length == "exact" else length).encode("utf-8"))
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body + trailing
    fast = parse_simple_request(data, *LIMITS)
    if fast in (DECLINED, NEED_MORE):
        return
    request, used = fast
    assert h11_request(data) == (*request, used)
