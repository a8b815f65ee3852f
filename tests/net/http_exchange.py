"""One HTTP exchange with an HttpServer over an in-memory stream: the bytes sent, the bytes it
answered (for tests that look at the server's own framing and refusals)."""

from __future__ import annotations

import trio
import trio.testing

from dovecote.net.http_server import Handler, HttpServer


async def exchange_bytes(server: HttpServer, handler: Handler, data: bytes) -> bytes:
    client, server_side = trio.testing.memory_stream_pair()
    answer = bytearray()

    async def serve() -> None:
        await server._serve(server_side, handler, "test", trio.current_time() + 60)
        await server_side.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await client.send_all(data)
            await client.send_eof()
            while chunk := await client.receive_some(65536):
                answer += chunk
    return bytes(answer)
