"""The native and HTTP listeners of an in-process broker on real loopback sockets. Every test has
an absolute deadline on trio's clock."""

import contextlib
import logging
import struct

import httpx
import msgspec
import pytest
import anyio.abc
import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import CreateQueue, Failure, ListQueues, MessageAttributeValue, ReceiveMessage, SendMessage
from dovecote.app import ServeConfig, run_broker
from dovecote.net import frames, tcp_server
from dovecote.net.client import open_client
from dovecote.net.limits import NetLimits

DEADLINE_S = 20


@contextlib.asynccontextmanager
async def broker(tmp_path, **limits):
    config = ServeConfig(data_dir=str(tmp_path / "data"), port=0, http_port=0, limits=NetLimits(**limits))
    stopping = trio.Event()
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(lambda task_status: run_broker(config, stopping=stopping, task_status=task_status))
            yield ports
            stopping.set()


async def raw_connection(port, *, local_address=None, stream=None):
    """A connection opened by hand: version 2, without a key (the broker has none). local_address:
    the client's (127.0.0.2: another peer); stream: one already connected."""
    stream = stream or await trio.open_tcp_stream("127.0.0.1", port, local_address=local_address)
    await stream.send_all(frames.hello())
    assert frames.parse_welcome(await receive_exactly(stream, frames.WELCOME_BYTES)) == (2, 0)
    (length,) = struct.unpack(">I", await receive_exactly(stream, 4))
    frames.decode_challenge(await receive_exactly(stream, length))
    out = bytearray()
    frames.encode_handshake(frames.Authenticate(), out)
    await stream.send_all(bytes(out))
    (length,) = struct.unpack(">I", await receive_exactly(stream, 4))
    assert frames.decode_handshake_answer(await receive_exactly(stream, length)) == frames.Authenticated("")
    return stream


async def receive_exactly(stream, count):
    data = b""
    while len(data) < count:
        chunk = await stream.receive_some(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


async def assert_closed(stream):
    try:
        assert await stream.receive_some(100) == b""
    except trio.BrokenResourceError:
        pass  # reset, because the broker closed without reading what was sent


async def read_frames_until_closed(stream):
    decoder = frames.FrameDecoder(1 << 24)
    results = []
    while chunk := await stream.receive_some(65536):
        decoder.feed(chunk)
        while (payload := decoder.next_payload()) is not None:
            results.append(frames.decode_response(payload))
    return results


async def test_many_pipelined_requests_on_one_connection(tmp_path):
    async with broker(tmp_path) as ports, open_client("127.0.0.1", ports.native) as client:
        url = await client.create_queue("q")
        assert url == f"http://127.0.0.1:{ports.http}/000000000000/q"
        ids = []

        async def send(i):
            ids.append((await client.send_message(url, f"m{i}")).message_id)

        async with trio.open_nursery() as nursery:
            for i in range(500):
                nursery.start_soon(send, i)
        assert len(set(ids)) == 500
        attributes = await client.get_queue_attributes(url)
        assert attributes["ApproximateNumberOfMessages"] == "500"
        with pytest.raises(BrokerError) as caught:
            await client.get_queue_url("missing")
        assert caught.value.code == "QueueDoesNotExist"


async def test_a_malformed_frame_closes_only_that_connection(tmp_path):
    async with broker(tmp_path) as ports:
        stream = await raw_connection(ports.native)
        await stream.send_all(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
        (answer,) = await read_frames_until_closed(stream)
        assert answer.id == 0 and answer.result.code == "InvalidParameterValue"
        assert "malformed" in answer.result.message
        async with open_client("127.0.0.1", ports.native) as client:
            await client.create_queue("still-serving")


async def test_an_oversized_frame_is_refused_before_its_body(tmp_path):
    async with broker(tmp_path, max_request_frame_bytes=1024) as ports:
        stream = await raw_connection(ports.native)
        await stream.send_all(struct.pack(">I", 10**9))  # no body follows: the header alone is enough
        (answer,) = await read_frames_until_closed(stream)
        assert "exceeds the limit" in answer.result.message


async def test_a_bad_operation_is_answered_and_the_connection_goes_on(tmp_path):
    async with broker(tmp_path) as ports:
        stream = await raw_connection(ports.native)
        out = bytearray()
        bad = msgspec.msgpack.encode([5, ["SendMessage", "q", 12345]])  # body must be a string
        out += struct.pack(">I", len(bad)) + bad
        unknown = msgspec.msgpack.encode([6, ["LaunchRocket"]])
        out += struct.pack(">I", len(unknown)) + unknown
        frames.encode_request(7, ListQueues(), out)
        await stream.send_all(bytes(out))
        decoder = frames.FrameDecoder(1 << 20)
        answers = {}
        while len(answers) < 3:
            decoder.feed(await stream.receive_some(65536))
            while (payload := decoder.next_payload()) is not None:
                frame = frames.decode_response(payload)
                answers[frame.id] = frame.result
        assert answers[5].code == "InvalidParameterValue" and "Expected `str`" in answers[5].message
        assert answers[6].code == "InvalidParameterValue"
        assert answers[7].queues == []
        await stream.aclose()


async def test_handshakes_that_are_not_dovecote_are_refused(tmp_path):
    async with broker(tmp_path) as ports:
        stream = await trio.open_tcp_stream("127.0.0.1", ports.native)
        await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
        await assert_closed(stream)
        stream = await trio.open_tcp_stream("127.0.0.1", ports.native)
        await stream.send_all(frames.hello(version=99))
        assert frames.parse_welcome(await receive_exactly(stream, frames.WELCOME_BYTES)) == (
            2,
            frames.STATUS_UNSUPPORTED_VERSION,
        )


async def test_connections_past_the_limit_are_closed(tmp_path):
    async with broker(tmp_path, max_connections=2, max_connections_per_peer=2) as ports:
        async with open_client("127.0.0.1", ports.native) as first, open_client("127.0.0.1", ports.native):
            extra = await trio.open_tcp_stream("127.0.0.1", ports.native)
            await extra.send_all(frames.hello())
            await assert_closed(extra)
            await first.list_queues()


async def test_health_and_http_limits(tmp_path):
    async with broker(tmp_path, http_max_header_bytes=2048, http_max_body_bytes=1000) as ports:
        base = f"http://127.0.0.1:{ports.http}"
        async with httpx.AsyncClient(base_url=base) as http:
            health = await http.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert (await http.get("/nowhere")).status_code == 404
            assert (await http.get("/health", headers={"X-Big": "y" * 4096})).status_code == 431
            assert (await http.post("/health", content=b"z" * 2000)).status_code == 413


async def test_peek_answers_every_field_by_name(tmp_path):
    """/peek gives the result's structs (arrays on the wire) as JSON objects with every field named,
    unset ones too, and binary attribute values in base64."""
    async with broker(tmp_path) as ports:
        async with open_client("127.0.0.1", ports.native) as client:
            await client.create_queue("browse")
            raw = MessageAttributeValue("Binary", binary_value=b"\x00\xff")
            await client.send_message("browse", "hello", message_attributes={"raw": raw})
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http}") as http:
            page = (await http.get("/peek", params={"queue": "browse"})).json()
    (message,) = page["messages"]
    assert page == {"messages": [message], "next_after_seq": None}
    assert set(message) == {
        "seq", "message_id", "state", "receive_count", "sent_timestamp", "visible_at_ms", "body", "message_attributes"
    }
    assert (message["body"], message["state"], message["receive_count"]) == ("hello", "visible", 0)
    assert message["message_attributes"] == {"raw": {"data_type": "Binary", "string_value": None, "binary_value": "AP8="}}


async def test_every_actor_reports_itself_in_metrics_and_actors(tmp_path):
    async with broker(tmp_path) as ports:
        async with open_client("127.0.0.1", ports.native) as client:
            await client.create_queue("orders")
            await client.create_topic("news")
            for i in range(3):
                await client.send_message("orders", f"m{i}")
            await client.receive_message("orders")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http}") as http:
            metrics = (await http.get("/metrics")).text
            reports = (await http.get("/actors")).json()
    queue_labels = '{region="us-east-1",queue="orders"}'
    samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if not line.startswith("#"))
    assert samples['dovecote_queue_messages{region="us-east-1",queue="orders",state="visible"}'] == "2"
    assert samples['dovecote_queue_messages{region="us-east-1",queue="orders",state="in_flight"}'] == "1"
    assert int(samples[f"dovecote_queue_cycles_total{queue_labels}"]) >= 4
    assert samples[f"dovecote_queue_restarts_total{queue_labels}"] == "0"
    assert samples['dovecote_topic_subscriptions{region="us-east-1",topic="news"}'] == "0"
    by_name = {report["name"]: report for report in reports}
    assert by_name["orders"]["actor"]["messages"] == 3 and by_name["orders"]["stopped"] is False
    assert by_name["orders"]["actor"]["sent"] == 3 and by_name["orders"]["actor"]["received"] == 1
    assert by_name["orders"]["mailbox"] == {"requests": 0, "carried": 0, "missed": False}
    (platform,) = [report for report in reports if report["kind"] == "platform"]
    assert (platform["restarts"], platform["stopped"], platform["last_error"]) == (0, False, "")
    assert (platform["actor"]["applications"], platform["actor"]["pending_pushes"], platform["actor"]["deliveries"]) == (0, 0, [])
    assert by_name["news"]["kind"] == "topic" and by_name["news"]["last_error"] == ""


async def test_shutdown_answers_long_polls_and_returns(tmp_path):
    config = ServeConfig(data_dir=str(tmp_path / "data"), port=0, http_port=0)
    stopping = trio.Event()
    answers = []
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(lambda task_status: run_broker(config, stopping=stopping, task_status=task_status))
            async with open_client("127.0.0.1", ports.native) as client:
                await client.create_queue("q")

                async def poll():
                    answers.append(await client.receive_message("q", wait_time_seconds=20))

                async with trio.open_nursery() as polls:
                    polls.start_soon(poll)
                    await trio.sleep(0.2)
                    stopping.set()
    assert answers == [[]]


async def test_a_client_that_vanishes_mid_answer_does_not_stop_the_broker(tmp_path):
    import socket

    async with broker(tmp_path) as ports:
        async with open_client("127.0.0.1", ports.native) as client:
            await client.create_queue("q")
            for _ in range(20):
                await client.send_message("q", "x" * 60_000)
        for _ in range(5):
            stream = await raw_connection(ports.native)
            out = bytearray()
            for request_id in range(1, 200):
                frames.encode_request(request_id, ReceiveMessage("q", 10, 0), out)
            await stream.send_all(bytes(out))
            # reset, not close: the broker's next write then fails with a broken pipe / reset
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()
        await trio.sleep(0.5)
        async with open_client("127.0.0.1", ports.native) as client:
            attributes = await client.get_queue_attributes("q")
            assert int(attributes["ApproximateNumberOfMessages"]) + int(
                attributes["ApproximateNumberOfMessagesNotVisible"]
            ) == 20


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\x13\x37" * 100,
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 100_000 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot hex\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"BREW /pot HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host header
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: AmazonSQS.SendMessage\r\nContent-Length: 10\r\n\r\n{\"Queue",
    ],
)
async def test_http_garbage_gets_an_error_or_a_close_and_the_listener_stays_up(tmp_path, garbage):
    async with broker(tmp_path, http_read_timeout_s=1.0) as ports:
        stream = await trio.open_tcp_stream("127.0.0.1", ports.http)
        try:
            await stream.send_all(garbage)
            with trio.fail_after(5):  # an answer or a close, within the read timeout, never a hang
                answer = await stream.receive_some(1000)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4")
        except trio.BrokenResourceError:
            pass  # closed on us: also fine
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{ports.http}/health")).status_code == 200


async def test_a_flood_of_native_connection_failures_logs_one_traceback_an_interval(tmp_path, monkeypatch, caplog):
    """A connection whose handling raises is closed and the broker goes on; a flood of them writes
    one traceback an interval, not one each (a client must not be able to fill the disk with log)."""

    async def failing_run(self):
        raise RuntimeError("a bug in the connection's handling")

    caplog.set_level(logging.ERROR, logger="dovecote.net")
    async with broker(tmp_path, failure_log_interval_s=3600) as ports:
        monkeypatch.setattr(tcp_server._Connection, "run", failing_run)
        for _ in range(20):
            stream = await trio.open_tcp_stream("127.0.0.1", ports.native)
            assert await stream.receive_some(1) == b""  # closed by the broker
            await stream.aclose()
        monkeypatch.undo()
        async with open_client("127.0.0.1", ports.native) as client:
            assert (await client.call(ListQueues())).queues == []  # still serving
    failures = [record for record in caplog.records if "a native connection failed" in record.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


async def test_a_lone_requests_answer_is_written_by_the_actor_not_a_task_of_the_connection(tmp_path, monkeypatch):
    """On plain TCP an answer the socket takes at once goes out from the task that produced it:
    no send through the connection's answer task (a task switch per request)."""
    server_sends = []
    send_all = trio.SocketStream.send_all

    async def noting_send_all(self, data):
        server_sends.append(self.socket.getsockname()[1])
        await send_all(self, data)

    async with broker(tmp_path) as ports:
        stream = await raw_connection(ports.native)
        monkeypatch.setattr(trio.SocketStream, "send_all", noting_send_all)
        decoder = frames.FrameDecoder(1 << 20)
        for request_id, op in enumerate(
            [CreateQueue("q"), *[SendMessage("q", f"m{i}") for i in range(20)], ReceiveMessage("q", 10)], start=1
        ):
            out = bytearray()
            frames.encode_request(request_id, op, out)
            await stream.send_all(bytes(out))
            while (payload := decoder.next_payload()) is None:
                decoder.feed(await stream.receive_some(65536))
            answer = frames.decode_response(payload)
            assert answer.id == request_id and not isinstance(answer.result, Failure), answer
        assert len(answer.result.messages) == 10
        await stream.aclose()
    assert ports.native not in server_sends


async def test_a_lone_call_writes_its_request_itself_not_through_a_send_task(tmp_path, monkeypatch):
    """On plain TCP the client's call writes its frame to the socket when it takes it at once."""
    client_sends = []

    async with broker(tmp_path) as ports, open_client("127.0.0.1", ports.native) as client:
        stream_type = type(client._stream)  # AnyIO's socket stream under Trio
        send = stream_type.send

        async def noting_send(self, data):
            client_sends.append(self.extra(anyio.abc.SocketAttribute.remote_port))
            await send(self, data)

        monkeypatch.setattr(stream_type, "send", noting_send)
        await client.create_queue("q")
        for i in range(10):
            await client.send_message("q", f"m{i}")
        assert len(await client.receive_message("q", max_number_of_messages=10)) == 10
    assert ports.native not in client_sends


async def test_requests_the_socket_cannot_take_at_once_go_out_whole_and_in_order(tmp_path, monkeypatch):
    """Many large requests at once: what a call cannot write itself, the client's send task does."""
    bodies = [f"{i:03d}" + "x" * 200_000 for i in range(24)]
    client_sends = []

    async with broker(tmp_path) as ports, open_client("127.0.0.1", ports.native) as client:
        stream_type = type(client._stream)  # AnyIO's socket stream under Trio
        send = stream_type.send

        async def noting_send(self, data):
            client_sends.append(self.extra(anyio.abc.SocketAttribute.remote_port))
            await send(self, data)

        monkeypatch.setattr(stream_type, "send", noting_send)
        await client.create_queue("q")
        async with trio.open_nursery() as nursery:
            for body in bodies:
                nursery.start_soon(client.send_message, "q", body)
        received = []
        while len(received) < len(bodies):
            batch = await client.receive_message("q", max_number_of_messages=10)
            assert batch
            received += [message.body for message in batch]
    assert sorted(received) == bodies
    assert ports.native in client_sends  # the send task had some to send
