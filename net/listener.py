"""Both listeners' accept loop: it admits each connection against the connection counts (in all
and per peer address) and closes at once those over a limit, so one address's flood cannot lock
out the others and the process never runs out of descriptors by accepting. An accept that fails
for want of descriptors or memory is retried after a pause that doubles while it keeps failing.
Failures and refusals are logged at most once per interval, with how many there were."""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

import trio

from .limits import ConnectionCounts, NetLimits

log = logging.getLogger("dovecote.net")

ACCEPT_OVERLOAD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class IntervalLog:
    """A warning logged at most once per interval, saying how many times it happened since."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next_at = float("-inf")
        self._unlogged = 0

    def note(self, message: str, *args: object) -> None:
        self._unlogged += 1
        now = trio.current_time()
        if now < self._next_at:
            return
        count, self._unlogged = self._unlogged, 0
        log.warning(message + " (%d in the last %g s)", *args, count, self._interval_s)
        self._next_at = now + self._interval_s


def peer_host(stream: trio.SocketStream) -> str | None:
    """The peer's address without its port; None when it is already gone."""
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return None


async def accept_loop(
    name: str,
    listener: trio.SocketListener,
    counts: ConnectionCounts,
    limits: NetLimits,
    handle: Callable[[trio.SocketStream], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Accept until the listener closes, running `handle` for each admitted connection in
    `nursery`. name: the listener's, for the log."""
    accept_failures = IntervalLog(limits.accept_log_interval_s)
    refusals = IntervalLog(limits.accept_log_interval_s)
    pause_s = limits.accept_retry_pause_s
    while True:
        try:
            stream = await listener.accept()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        except OSError as error:
            if error.errno not in ACCEPT_OVERLOAD_ERRNOS:
                raise
            accept_failures.note("%s port: accept failed (%s); pausing %g s", name, error.strerror, pause_s)
            await trio.sleep(pause_s)
            pause_s = min(pause_s * 2, limits.accept_retry_max_pause_s)
            continue
        pause_s = limits.accept_retry_pause_s
        host = peer_host(stream)
        if host is None:  # gone before it was seen
            _close_now(stream)
            continue
        refusal = counts.admit(host)
        if refusal is not None:
            refusals.note("%s port: refused a connection: %s", name, refusal)
            _close_now(stream)
            continue
        nursery.start_soon(_run, handle, stream, counts, host)


async def _run(
    handle: Callable[[trio.SocketStream], Awaitable[None]], stream: trio.SocketStream, counts: ConnectionCounts, host: str
) -> None:
    try:
        await handle(stream)
    finally:
        counts.release(host)


def _close_now(stream: trio.SocketStream) -> None:
    """Close without waiting, so the refused peer's descriptor is free at once."""
    stream.socket.close()
