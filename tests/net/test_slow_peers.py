"""Slow and many peers against an in-process broker on real loopback sockets, with deadlines of a
second or so: trickled HTTP heads and bodies and native frames are closed at their deadline, peers
that do not read their answers at the write deadline, and one address's flood does not lock out
another (127.0.0.2); a canary client is served throughout, and its worst latency is checked."""

import socket
import struct

import httpx
import pytest
import trio

from dovecote.actors.ops import PeekMessages
from dovecote.net import frames
from dovecote.net.client import open_client

from .test_servers import broker, raw_connection, receive_exactly

DEADLINE_S = 1.5
CANARY_MAX_LATENCY_S = 1.0  # served, not locked out: far above its usual 5-30 ms


class Canary:
    """From 127.0.0.2, every 50 ms until stopped: asks for the broker's health over a new HTTP
    connection, and peeks at a queue over a new native connection; keeps each round's latency."""

    def __init__(self, ports) -> None:
        self.ports = ports
        self.latencies: list[float] = []

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=transport, timeout=5, headers={"Connection": "close"}) as http:
            task_status.started()
            while True:
                started = trio.current_time()
                assert (await http.get(f"http://127.0.0.1:{self.ports.http}/health")).status_code == 200
                stream = await raw_connection(self.ports.native, local_address="127.0.0.2")
                out = bytearray()
                frames.encode_request(1, PeekMessages("absent"), out)
                await stream.send_all(bytes(out))
                (length,) = struct.unpack(">I", await receive_exactly(stream, 4))
                assert frames.decode_response(await receive_exactly(stream, length)).id == 1
                await stream.aclose()
                self.latencies.append(trio.current_time() - started)
                await trio.sleep(0.05)

    def check(self, at_least: int, max_latency_s: float = CANARY_MAX_LATENCY_S) -> None:
        assert len(self.latencies) >= at_least, f"the canary was answered {len(self.latencies)} times"
        assert max(self.latencies) < max_latency_s, f"the canary waited {max(self.latencies):.3f} s"


async def trickle(stream, data: bytes, every_s: float = 0.1) -> None:
    for index in range(len(data)):
        await stream.send_all(data[index : index + 1])
        await trio.sleep(every_s)


async def read_until_closed(stream) -> bytes:
    received = b""
    try:
        while chunk := await stream.receive_some(65536):
            received += chunk
    except trio.BrokenResourceError:
        pass  # reset: closed with what we sent unread
    return received


async def closed_after(stream, data: bytes) -> tuple[bytes, float]:
    """Trickles data (far too slowly to finish) until the broker closes; what it answered, and when
    after the first byte."""
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle, stream, data)
        with trio.fail_after(DEADLINE_S + 3):  # closed at the deadline, not 75 s later
            answer = await read_until_closed(stream)
        nursery.cancel_scope.cancel()
    return answer, trio.current_time() - started


@pytest.mark.parametrize(
    "slow_request",
    [
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n", id="head"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n" + b"a" * 300, id="body"
        ),
    ],
)
async def test_a_trickled_http_request_gets_a_408_at_the_read_deadline(tmp_path, slow_request):
    async with broker(tmp_path, http_read_timeout_s=DEADLINE_S) as ports, trio.open_nursery() as nursery:
        canary = Canary(ports)
        await nursery.start(canary.run)
        stream = await trio.open_tcp_stream("127.0.0.1", ports.http)
        if b"Content-Length" in slow_request:  # the head at once, the body a byte at a time
            head, _, body = slow_request.partition(b"\r\n\r\n")
            await stream.send_all(head + b"\r\n\r\n")
            slow_request = body
        answer, after_s = await closed_after(stream, slow_request)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert answer.endswith(b"the request did not arrive within 1.5 s\n")
        assert DEADLINE_S - 0.1 <= after_s <= DEADLINE_S + 1
        canary.check(at_least=10)
        nursery.cancel_scope.cancel()


async def test_a_trickled_native_frame_is_refused_at_the_frame_deadline(tmp_path):
    async with broker(tmp_path, frame_timeout_s=DEADLINE_S) as ports, trio.open_nursery() as nursery:
        canary = Canary(ports)
        await nursery.start(canary.run)
        stream = await raw_connection(ports.native)
        answer, after_s = await closed_after(stream, struct.pack(">I", 200) + b"\x92" + b"\x01" * 199)
        (length,) = struct.unpack(">I", answer[:4])
        refusal = frames.decode_response(answer[4 : 4 + length])
        assert refusal.id == 0 and "a frame did not arrive whole within 1.5 s" in refusal.result.message
        assert DEADLINE_S - 0.1 <= after_s <= DEADLINE_S + 1
        canary.check(at_least=10)
        nursery.cancel_scope.cancel()


async def test_a_native_client_sending_steadily_is_not_held_to_one_frame_deadline(tmp_path):
    """Frames that keep completing each get their own deadline: pipelined traffic whose buffers
    always end mid-frame is not closed."""
    async with broker(tmp_path, frame_timeout_s=0.5) as ports:
        stream = await raw_connection(ports.native)
        out = bytearray()
        for request_id in range(1, 21):
            frames.encode_request(request_id, PeekMessages("absent"), out)
        for start in range(0, len(out), 7):  # every send ends inside a frame, for 1.5 s in all
            await stream.send_all(bytes(out[start : start + 7]))
            await trio.sleep(1.5 * 7 / len(out))
        decoder = frames.FrameDecoder(1 << 20)
        answered = set()
        with trio.fail_after(5):
            while len(answered) < 20:
                decoder.feed(await stream.receive_some(65536))
                while (payload := decoder.next_payload()) is not None:
                    answered.add(frames.decode_response(payload).id)
        assert answered == set(range(1, 21))


def small_receive_buffer_socket() -> trio.socket.SocketType:
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def big_queue(ports) -> None:
    async with open_client("127.0.0.1", ports.native) as client:
        await client.create_queue("big")
        for _ in range(10):
            await client.send_message("big", "x" * 200_000)


@pytest.mark.parametrize("port_name", ["native", "http"])
async def test_a_peer_that_does_not_read_its_answers_is_closed_at_the_write_deadline(tmp_path, port_name):
    async with broker(tmp_path, write_timeout_s=DEADLINE_S) as ports, trio.open_nursery() as nursery:
        await big_queue(ports)
        canary = Canary(ports)
        await nursery.start(canary.run)
        sock = small_receive_buffer_socket()
        await sock.connect(("127.0.0.1", getattr(ports, port_name)))
        stream = trio.SocketStream(sock)
        answer_bytes = 2_000_000  # ten 200 kB messages, each answer at least
        if port_name == "native":
            stream = await raw_connection(ports.native, stream=stream)
            out = bytearray()
            for request_id in range(1, 21):
                frames.encode_request(request_id, PeekMessages("big"), out)
        else:
            out = b"GET /peek?queue=big HTTP/1.1\r\nHost: x\r\n\r\n" * 20
        await stream.send_all(bytes(out))
        await trio.sleep(DEADLINE_S + 1)  # reading nothing
        with trio.fail_after(5):  # closed, not waiting for this reader forever
            received = await read_until_closed(stream)
        assert len(received) < 20 * answer_bytes  # the answers were cut off, not all sent
        canary.check(at_least=20)
        nursery.cancel_scope.cancel()


async def test_one_address_flood_does_not_lock_out_another(tmp_path):
    async with broker(tmp_path, max_connections=60, max_connections_per_peer=20) as ports, trio.open_nursery() as nursery:
        flood = []
        for index in range(80):  # idle: connected, sending nothing
            port = ports.native if index % 2 else ports.http
            flood.append(await trio.open_tcp_stream("127.0.0.1", port))
        held = 0
        for stream in flood:  # those over the limit are closed at once; the others wait
            with trio.move_on_after(0.05):
                if await stream.receive_some(1) == b"":
                    continue
            held += 1
        assert held == 20
        canary = Canary(ports)
        await nursery.start(canary.run)
        await trio.sleep(1)
        canary.check(at_least=10)
        for stream in flood:  # else the native ones, still opening, hold shutdown for the handshake timeout
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_silent_connections_are_closed_at_their_idle_deadlines(tmp_path):
    limits = {"http_read_timeout_s": 1.0, "http_keepalive_timeout_s": 2.5, "handshake_timeout_s": 1.0, "idle_timeout_s": 1.0}
    async with broker(tmp_path, **limits) as ports:

        async def closed_after_s(stream) -> float:
            started = trio.current_time()
            with trio.fail_after(5):
                await read_until_closed(stream)
            return trio.current_time() - started

        silent_http = await trio.open_tcp_stream("127.0.0.1", ports.http)
        assert 0.9 <= await closed_after_s(silent_http) <= 1.5  # a first request has the read timeout
        kept_alive = await trio.open_tcp_stream("127.0.0.1", ports.http)
        await kept_alive.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await kept_alive.receive_some(1000)).startswith(b"HTTP/1.1 200 ")
        assert 2.4 <= await closed_after_s(kept_alive) <= 3.0  # then the keep-alive timeout
        silent_native = await trio.open_tcp_stream("127.0.0.1", ports.native)
        assert 0.9 <= await closed_after_s(silent_native) <= 1.5  # the handshake timeout
        opened_native = await raw_connection(ports.native)
        assert 0.9 <= await closed_after_s(opened_native) <= 1.5  # the idle timeout


async def test_shutdown_does_not_wait_for_a_native_connection_still_opening(tmp_path):
    async with broker(tmp_path) as ports:  # the handshake timeout is 10 s
        stream = await trio.open_tcp_stream("127.0.0.1", ports.native)
        await stream.send_all(frames.hello()[:2])
        await trio.sleep(0.1)
        stopping_at = trio.current_time()
    assert trio.current_time() - stopping_at < 2
    await stream.aclose()
