"""An endpoint's answer to a push is read up to push_max_response_bytes, not whole: one that
answers 200 with an endless body neither holds the push until its timeout nor fills memory."""

import trio

from dovecote.actors.push_types import PushRequest
from dovecote.net.http_push import Pusher

ENDLESS_BODY_LIMIT_BYTES = 64 << 20  # the endpoint gives up here (a test must end)


async def answer_with_an_endless_body(stream: trio.SocketStream, sent: list[int]) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        request += await stream.receive_some(65536)
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    try:
        while sent[0] < ENDLESS_BODY_LIMIT_BYTES:
            await stream.send_all(chunk)
            sent[0] += len(chunk)
    except trio.BrokenResourceError:
        pass  # the pusher stopped reading and closed
    await stream.aclose()


async def test_a_push_answer_with_an_endless_body_is_cut_off_at_the_cap(tmp_path):
    sent = [0]
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    pusher = Pusher(timeout_s=10, max_response_bytes=64 * 1024)
    request = PushRequest("http", f"http://127.0.0.1:{port}/", "Notification", "id", "arn:aws:sns:r:1:t", "arn:s", "hello")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, lambda stream: answer_with_an_endless_body(stream, sent), listeners)
        async with pusher.connection() as connection:
            with trio.fail_after(5):  # well within the push timeout
                assert await connection.send(request) == ""  # the status is what counts
        nursery.cancel_scope.cancel()
    assert sent[0] < ENDLESS_BODY_LIMIT_BYTES  # the pusher stopped reading long before the end
