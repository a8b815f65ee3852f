"""A broker inside the calling process: `dovecote.open_broker` in a Trio program's own nursery, and
`dovecote.embedded`, which runs open_broker in a thread of its own with its own Trio loop, for any
other program (plain scripts, asyncio, tests).

    with dovecote.embedded() as broker:
        sqs = boto3.client("sqs", endpoint_url=broker.endpoint_url, region_name="us-east-1", ...)

Both run `dovecote serve`'s machinery (app.run_broker) with settings given as keywords, named and
checked as serve's (scripts/config.py's table), so a mistake is one ConfigError naming it. They
differ from serve's defaults only where an embedded broker must: both ports are chosen by binding
port 0, and with no data directory given, one is made in the temporary directory, with sync "os"
(an fsync protects nothing there), and removed after the broker stops. Neither reads a file or
the environment, sets up logging (the broker logs to the logger "dovecote"; the application decides
where that goes) or handles signals: that is the application's. Every broker keeps its state in
its own tasks, so several run side by side in one process.

The controllable clock (clock="controllable"): the broker reads all of its time from the Trio
loop's clock, deadlines and the wall-clock times it stamps alike (app.run_broker's
wall_follows_loop), so a trio.testing.MockClock under the loop controls it: it runs at the
system's pace, and `advance(seconds)` jumps it forward at once. Visibility timeouts, delays,
retention, long polls, push retries and timestamps all move together; an hour passes in
milliseconds. embedded() gives its loop such a clock; a Trio program gives its own
(`trio.run(main, clock=MockClock(rate=1))`, or pytest-trio's mock_clock and autojump_clock).
"""

from __future__ import annotations

import contextlib
import functools
import queue
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator

import trio

from .app import Ports, run_broker, sole_error
from .config import resolve_keywords, serve_config

CLOCKS = ("system", "controllable")
STOP_TIMEOUT_S = 60.0  # how long leaving embedded() waits for the broker's thread before saying it hangs


class ClockNotControllable(RuntimeError):
    """advance() on a broker whose clock is the system's."""


class BrokerClock:
    """The clock of one broker: `advance` jumps it when it is controllable."""

    def __init__(self, mock_clock: trio.abc.Clock | None, token: trio.lowlevel.TrioToken, loop_thread: int) -> None:
        self._mock_clock = mock_clock
        self._token = token
        self._loop_thread = loop_thread

    @property
    def controllable(self) -> bool:
        return self._mock_clock is not None

    def advance(self, seconds: float) -> None:
        """Move the broker's time forward by `seconds` at once: every deadline in that span passes
        (visibility timeouts, delays, retention, long polls, push retries) and the timestamps it
        stamps move as far. Blocks until the clock has moved (the broker handles what fell due just
        after); callable from any thread, the broker's own loop included. Raises ValueError for a
        negative time, ClockNotControllable unless the broker was started with
        clock="controllable", and trio.RunFinishedError once the broker has stopped."""
        if seconds < 0:
            raise ValueError(f"time only moves forward: cannot advance by {seconds:g} s")
        if self._mock_clock is None:
            raise ClockNotControllable(
                "this broker runs on the system's clock: start it with clock='controllable' to advance its time"
            )
        jump = functools.partial(self._mock_clock.jump, seconds)
        if threading.get_ident() == self._loop_thread:
            jump()
            return
        # Run in the loop's thread (which it wakes, so that sleeps are measured again) and wait for it.
        moved = threading.Event()

        def jump_in_loop() -> None:
            try:
                jump()
            finally:
                moved.set()

        self._token.run_sync_soon(jump_in_loop)
        moved.wait()


class EmbeddedBroker:
    """A running embedded broker: where to reach it, and its clock."""

    def __init__(self, data_dir: str, host: str, ports: Ports, scheme: str, clock: BrokerClock, region: str, account_id: str) -> None:
        self.data_dir = data_dir
        self.endpoint_url = f"{scheme}://{host}:{ports.http}"  # the AWS API (SQS, SNS) and /health, for any SDK
        self.native_address = (host, ports.native)  # for dovecote.net.client's open_client and BlockingClient
        self.clock = clock
        self.region = region  # of requests that name none (the native protocol's)
        self.account_id = account_id

    def advance(self, seconds: float) -> None:
        """The clock's advance (BrokerClock.advance)."""
        self.clock.advance(seconds)


def _keywords(temporary: bool, settings: dict[str, object]) -> dict[str, object]:
    """The settings an embedded broker runs with: the caller's, over the embedded defaults (a
    temporary directory, which nothing outlives, is not fsynced)."""
    defaults: dict[str, object] = {"port": 0, "http_port": 0}
    if temporary:
        defaults["sync"] = "os"
    return {**defaults, **settings}


@contextlib.asynccontextmanager
async def open_broker(
    data_dir: str | None = None, *, clock: str = "system", **settings: object
) -> AsyncIterator[EmbeddedBroker]:
    """Run a broker in the calling Trio program, in a nursery of its own, until the block ends;
    then stop it cleanly (long polls answered, mailboxes drained, the log committed and closed).
    data_dir: the store's directory (None: a temporary one, removed afterwards). settings: serve's
    settings by key (sync="os", region="eu-west-1", commit_delay_ms=2, ...). clock: "system", or
    "controllable", for which the program runs on a trio.testing.MockClock (the module's
    docstring). Raises ConfigError for a setting that cannot be used, ValueError for a clock that
    is not one, and what app.run_broker raises when the broker cannot start (ListenerError,
    StorageError, ...), each alone, not in a group."""
    mock_clock = None
    if clock == "controllable":
        from trio.testing import MockClock

        mock_clock = trio.lowlevel.current_clock()
        if not isinstance(mock_clock, MockClock):
            raise ValueError(
                "clock='controllable' needs the Trio loop to run on trio.testing.MockClock "
                "(trio.run(main, clock=MockClock(rate=1)), or pytest-trio's mock_clock fixture); "
                "dovecote.embedded(clock='controllable') runs a loop of its own on one"
            )
    elif clock != "system":
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, not {clock!r}")
    made_dir = None
    if data_dir is None:
        made_dir = data_dir = tempfile.mkdtemp(prefix="dovecote-")
    try:
        config = serve_config(resolve_keywords({**_keywords(made_dir is not None, settings), "data_dir": str(data_dir)}, "dovecote.embedded").values)
        stopping = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                ports = await nursery.start(
                    functools.partial(run_broker, config, stopping=stopping, wall_follows_loop=mock_clock is not None)
                )
                broker = EmbeddedBroker(
                    config.data_dir, config.host, ports, "https" if config.tls is not None else "http",
                    BrokerClock(mock_clock, trio.lowlevel.current_trio_token(), threading.get_ident()),
                    config.broker.region, config.broker.account_id,
                )
                try:
                    yield broker
                finally:
                    stopping.set()
        except BaseExceptionGroup as group:  # a failed start, or the caller's own error, alone (its cause kept)
            error = sole_error(group)
            raise error from error.__cause__
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)


@contextlib.contextmanager
def embedded(data_dir: str | None = None, *, clock: str = "system", **settings: object) -> Iterator[EmbeddedBroker]:
    """open_broker's broker, run in a thread of its own (its own Trio loop), for programs that are
    not Trio's: plain scripts, asyncio, tests. Blocks until the broker serves, or raises what
    open_broker raises; leaving the block stops the broker cleanly and waits for it (raising what
    stopped it, if it failed). The broker's thread is a daemon named dovecote-embedded."""
    handoff: queue.SimpleQueue = queue.SimpleQueue()  # from the thread: (broker, stop) once serving, then its error if any

    async def serve() -> None:
        stop = trio.Event()
        try:
            async with open_broker(data_dir, clock=clock, **settings) as broker:
                handoff.put((broker, functools.partial(trio.lowlevel.current_trio_token().run_sync_soon, stop.set)))
                await stop.wait()
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread, which raises it
            handoff.put(error)

    def run() -> None:
        if clock == "controllable":
            from trio.testing import MockClock

            trio.run(serve, clock=MockClock(rate=1))
        else:
            trio.run(serve)

    thread = threading.Thread(target=run, name="dovecote-embedded", daemon=True)
    thread.start()
    started = handoff.get()
    if isinstance(started, BaseException):
        thread.join()
        raise started
    broker, stop = started
    try:
        yield broker
    finally:
        with contextlib.suppress(trio.RunFinishedError):  # it stopped by itself, failing: raised below
            stop()
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"the embedded broker of {broker.data_dir} did not stop within {STOP_TIMEOUT_S:g} s")
        if not handoff.empty():
            raise handoff.get()
