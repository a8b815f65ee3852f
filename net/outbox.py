"""Frames on their way out of one connection, for the server's answers and the client's requests.

Theory of operation
-------------------
Whoever has frames encodes them into `pending` and calls `added`, without waiting. On plain TCP,
when no send is under way, `added` writes them to the socket at once, from the caller's task: a lone
request or answer then costs no switch to another task. What the socket does not take at once (it
is full, or the stream is TLS, which only the stream itself can write) waits for `run`, the
connection's flushing task, which sends all that has gathered in one go and lets nothing else write
meanwhile, so frames leave in the order they were added. `on_sent(count)` is told, from whichever
task sent them, how many frames the kernel has taken: the server frees a request's in-flight slot
then, so a peer that does not read holds its slots and cannot make the buffer grow.

The socket's descriptor is written only while the connection is open (`attach` .. `detach`): once
the stream is closed its number may belong to another connection.

The server runs it on Trio's streams, the client (client.py) on AnyIO's, under Trio or asyncio, with
AnyIO's events (the server's stay Trio's, so it loads no AnyIO backend). Under asyncio the write at
once goes to the connection's transport, not its socket: the transport keeps what the kernel did not
take in a buffer of its own, which a write to the socket would pass; and it is made only while that
buffer is empty, so what waits stays bounded by run()'s sends, which wait for the buffer to drain.
(AnyIO keeps the transport private: without it, everything goes through run(), only later.)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    import asyncio

    import anyio
    import anyio.abc


def _writer_to(transport: asyncio.WriteTransport) -> Callable[[bytearray], int]:
    """Writes to an asyncio transport when it holds nothing unsent; returns how much it took."""

    def write(data: bytearray) -> int:
        if transport.get_write_buffer_size() or transport.is_closing():
            return 0  # run() sends it, after what the transport holds
        transport.write(bytes(data))  # a copy: the transport may keep it, and pending is reused
        return len(data)

    return write


class Outbox:
    def __init__(
        self, on_sent: Callable[[int], None] = lambda count: None, new_event: Callable[[], trio.Event | anyio.Event] = trio.Event
    ) -> None:
        self.pending = bytearray()  # frames encoded and not yet handed to the kernel
        self._pending_frames = 0
        self._on_sent = on_sent
        self._write_now: Callable[[bytearray], int] | None = None  # writes at once while set
        self._flushing = False  # run() is sending: no one else writes
        self._new_event = new_event
        self._waiting = new_event()  # wakes run()
        self._closed = False

    def attach(self, stream: trio.abc.Stream | anyio.abc.ByteStream) -> None:
        """Write straight to the stream's socket (asyncio's transport) from now on, if it is plain TCP."""
        if isinstance(stream, trio.SocketStream):  # the broker's connections: it loads no AnyIO
            self._write_now = functools.partial(os.write, stream.socket.fileno())
            return
        import anyio.abc  # the client's connections, which loaded it already

        if isinstance(stream, anyio.abc.SocketStream) and trio.lowlevel.in_trio_run():
            self._write_now = functools.partial(os.write, stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno())
        elif isinstance(stream, anyio.abc.SocketStream) and (transport := getattr(stream, "_transport", None)) is not None:
            self._write_now = _writer_to(transport)

    def detach(self) -> None:
        """The connection is ending: no more direct writes; run() returns once pending is sent."""
        self._write_now = None
        self._closed = True
        self._waiting.set()

    def added(self, frames: int = 1) -> None:
        """`frames` more frames are in pending: write them now if the socket takes them."""
        self._pending_frames += frames
        if self._write_now is not None and not self._flushing:
            try:
                written = self._write_now(self.pending)
            except OSError:  # full (EAGAIN), or broken: run()'s send meets the same and raises it
                written = 0
            if written == len(self.pending):
                self.pending.clear()
                sent, self._pending_frames = self._pending_frames, 0
                self._on_sent(sent)
                return
            del self.pending[:written]
        self._waiting.set()

    async def run(self, stream: trio.abc.Stream | anyio.abc.ByteStream, timeout_s: float = float("inf")) -> None:
        """Send what was not written when added, until detached and all sent. Raises
        trio.BrokenResourceError when the peer takes nothing for timeout_s (a Trio stream's; an
        AnyIO stream's calls have deadlines of their own), and what the stream's send raises."""
        while True:
            if not self.pending:
                if self._closed:
                    return
                await self._waiting.wait()
                self._waiting = self._new_event()
                continue
            out, count = self.pending, self._pending_frames
            self.pending, self._pending_frames = bytearray(), 0
            self._flushing = True
            try:
                if isinstance(stream, trio.abc.SendStream):
                    with trio.move_on_after(timeout_s) as write_scope:
                        await stream.send_all(out)
                    if write_scope.cancelled_caught:
                        raise trio.BrokenResourceError(f"the peer took nothing for {timeout_s:g} s")
                else:
                    await stream.send(out)
            finally:
                self._flushing = False
                self._on_sent(count)
