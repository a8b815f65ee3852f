"""The native protocol's TCP listener: a thin shell around frames.py and a broker Session.

Each connection has two tasks: a reader that decodes requests and hands them to the broker, and a
writer that sends answers as the actors produce them (pipelined, in completion order, several per
send when they come together). A semaphore bounds the requests in flight per connection, so the
answer channel can never fill and a client that does not read cannot grow the broker's memory.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import trio

from dovecote.actors.errors import failure, invalid
from dovecote.actors.ops import QueueName, QueueNames, Result
from dovecote.actors.broker import Broker

from . import frames
from .limits import NetLimits

log = logging.getLogger("dovecote.net")

_ACCEPT_OVERLOAD_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class NativeServer:
    def __init__(
        self, broker: Broker, limits: NetLimits, stopping: trio.Event, queue_url: Callable[[str], str]
    ) -> None:
        self._broker = broker
        self._queue_url = queue_url
        self._limits = limits
        self._stopping = stopping
        self._connections = trio.CapacityLimiter(limits.max_connections)

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound_port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery)
            task_status.started(bound_port)
            await self._stopping.wait()
            for listener in listeners:
                await listener.aclose()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while not self._stopping.is_set():
            try:
                stream = await listener.accept()
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            except OSError as error:
                if error.errno in _ACCEPT_OVERLOAD_ERRNOS:
                    log.warning("accept failed (%s); pausing", error)
                    await trio.sleep(self._limits.accept_retry_pause_s)
                    continue
                raise
            nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            self._connections.acquire_on_behalf_of_nowait(stream)
        except trio.WouldBlock:
            await _close_quietly(stream)
            return
        try:
            await _Connection(self._broker, self._limits, self._stopping, self._queue_url, stream).run()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away; what it asked for stands
        except* Exception:
            log.exception("a native connection failed; the broker goes on")  # one connection never stops the broker
        finally:
            self._connections.release_on_behalf_of(stream)
            await _close_quietly(stream)


async def _close_quietly(stream: trio.abc.Stream) -> None:
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


class _Connection:
    def __init__(
        self,
        broker: Broker,
        limits: NetLimits,
        stopping: trio.Event,
        queue_url: Callable[[str], str],
        stream: trio.SocketStream,
    ):
        self._session = broker.session()
        self._queue_url = queue_url
        self._limits = limits
        self._stopping = stopping
        self._stream = stream
        self._inflight = trio.Semaphore(limits.max_inflight_per_connection)
        # One slot per request in flight, plus one for a protocol-error answer.
        self._answers_send, self._answers_receive = trio.open_memory_channel[tuple[int, Result]](
            limits.max_inflight_per_connection + 1
        )

    async def run(self) -> None:
        if not await self._handshake():
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_answers)
            reason = None
            async with trio.open_nursery() as reading:
                reading.start_soon(_cancel_when_set, self._stopping, reading.cancel_scope)
                reason = await self._read_requests()
                reading.cancel_scope.cancel()
            if reason is not None:
                self._answer(0, failure(invalid(f"protocol error: {reason}")))
            # Let every request already accepted finish and be answered, then close.
            with trio.move_on_after(self._limits.shutdown_grace_s):
                for _ in range(self._limits.max_inflight_per_connection):
                    await self._inflight.acquire()
            self._answers_send.close()

    async def _handshake(self) -> bool:
        data = b""
        with trio.move_on_after(self._limits.handshake_timeout_s):
            while len(data) < frames.HELLO_BYTES:
                chunk = await self._stream.receive_some(frames.HELLO_BYTES - len(data))
                if not chunk:
                    return False
                data += chunk
        try:
            version = frames.parse_hello(data)
        except frames.ProtocolError:
            return False
        if version != frames.PROTOCOL_VERSION:
            await self._stream.send_all(frames.welcome(frames.PROTOCOL_VERSION, frames.STATUS_UNSUPPORTED_VERSION))
            return False
        await self._stream.send_all(frames.welcome(frames.PROTOCOL_VERSION, frames.STATUS_OK))
        return True

    async def _read_requests(self) -> str | None:
        """Read until the peer closes or times out (None) or breaks the protocol (the reason)."""
        decoder = frames.FrameDecoder(self._limits.max_request_frame_bytes)
        while True:
            partial = decoder.has_partial_frame()
            timeout = self._limits.frame_timeout_s if partial else self._limits.idle_timeout_s
            with trio.move_on_after(timeout) as read_scope:
                data = await self._stream.receive_some(65536)
            if read_scope.cancelled_caught:
                if partial or self._idle():
                    return None
                continue
            if not data:
                return None
            decoder.feed(data)
            try:
                while (payload := decoder.next_payload()) is not None:
                    envelope = frames.decode_envelope(payload)
                    await self._inflight.acquire()
                    try:
                        op = frames.decode_op(envelope.op)
                    except ValueError as error:
                        self._answer(envelope.id, failure(invalid(str(error))))
                        continue
                    self._session.submit(op, self._answerer(envelope.id))
            except frames.ProtocolError as error:
                return str(error)

    def _idle(self) -> bool:
        return self._inflight.value == self._limits.max_inflight_per_connection

    def _answerer(self, request_id: int) -> Callable[[Result], None]:
        return lambda result: self._answer(request_id, result)

    def _answer(self, request_id: int, result: Result) -> None:
        # The actors name queues; clients of this protocol get queue URLs, as SQS clients do.
        if type(result) is QueueName:
            result = QueueName(self._queue_url(result.queue))
        elif type(result) is QueueNames:
            result = QueueNames([self._queue_url(name) for name in result.queues], result.next_token)
        try:
            self._answers_send.send_nowait((request_id, result))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the connection is gone; the request's effects stand

    async def _write_answers(self) -> None:
        out = bytearray()
        async for request_id, result in self._answers_receive:
            frames.encode_response(request_id, result, out)
            released = 1
            while True:
                try:
                    request_id, result = self._answers_receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                frames.encode_response(request_id, result, out)
                released += 1
            try:
                await self._stream.send_all(out)
            finally:
                out.clear()
                for _ in range(released):
                    if self._inflight.value < self._limits.max_inflight_per_connection:
                        self._inflight.release()


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
