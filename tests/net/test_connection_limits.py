"""Connection limits sized from the file-descriptor limit, the counts that enforce them, the accept
loop's back-off and its bounded log, and the async client's call timeout: on trio's clock."""

import errno
import logging

import anyio
import anyio.abc
import pytest
import trio
import trio.testing

from dovecote.actors.ops import ListQueues, ReceiveMessage
from dovecote.net.client import MAX_LONG_POLL_S, Client
from dovecote.net.limits import ConnectionCounts, NetLimits, connection_budget
from dovecote.net.listener import accept_loop


@pytest.mark.parametrize(
    ("descriptors", "expected"),
    [
        # RLIMIT_NOFILE -> (connections in all, per peer address, descriptors kept back)
        (256, (128, 32, 128)),  # 64 kept, and pushes take a quarter of the descriptors at most
        (1024, (704, 176, 320)),  # 64 kept + 256 pushes in flight
        (20_000, (4096, 1024, 320)),  # capped: a connection costs memory too
    ],
)
def test_the_connection_limits_follow_the_descriptor_limit(descriptors, expected):
    budget = connection_budget(NetLimits(), descriptors, push_max_in_flight=256)
    assert (budget.max_connections, budget.max_connections_per_peer, budget.kept_back) == expected
    assert budget.max_connections + budget.kept_back <= descriptors
    assert not budget.capped


def test_a_configured_limit_above_the_descriptors_is_lowered_and_says_so():
    budget = connection_budget(NetLimits(max_connections=5000, max_connections_per_peer=9000), 1024, 256)
    assert (budget.max_connections, budget.max_connections_per_peer, budget.capped) == (704, 704, True)
    within = connection_budget(NetLimits(max_connections=100, max_connections_per_peer=10), 1024, 256)
    assert (within.max_connections, within.max_connections_per_peer, within.capped) == (100, 10, False)


def test_too_few_descriptors_is_one_clear_error():
    with pytest.raises(ValueError, match=r"RLIMIT_NOFILE 64\) leaves no room for connections.*ulimit -n"):
        connection_budget(NetLimits(), 64, 256)


def test_one_address_cannot_take_the_connections_of_another():
    counts = ConnectionCounts(max_connections=5, max_per_peer=2)
    assert counts.admit("10.0.0.1") is None and counts.admit("10.0.0.1") is None
    assert counts.admit("10.0.0.1") == "10.0.0.1 holds 2 connections, the limit per address"
    assert counts.admit("10.0.0.2") is None and counts.admit("10.0.0.2") is None
    assert counts.admit("10.0.0.3") is None
    assert counts.admit("10.0.0.4") == "the broker holds 5 connections, its limit"
    counts.release("10.0.0.1")
    assert counts.open == 4
    assert counts.admit("10.0.0.4") is None
    for peer in ("10.0.0.1", "10.0.0.2", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
        counts.release(peer)
    assert counts.open == 0
    assert counts.admit("10.0.0.1") is None and counts.admit("10.0.0.1") is None  # its places are free again


class _ExhaustedListener:
    """A listener whose accepts fail as a process out of descriptors sees them fail."""

    def __init__(self) -> None:
        self.accepts = 0
        self.closed = trio.Event()

    async def accept(self):
        await trio.lowlevel.checkpoint()
        self.accepts += 1
        if self.closed.is_set():
            raise trio.ClosedResourceError
        raise OSError(errno.EMFILE, "Too many open files")


async def test_failed_accepts_back_off_and_are_logged_once_per_interval(autojump_clock, caplog):
    limits = NetLimits(accept_retry_pause_s=0.1, accept_retry_max_pause_s=2.0, accept_log_interval_s=10.0)
    listener = _ExhaustedListener()
    caplog.set_level(logging.WARNING, "dovecote.net")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_loop, "native", listener, ConnectionCounts(10, 10), limits, None, nursery)
        await trio.sleep(60)
        listener.closed.set()
    # 0.1, 0.2, ... 1.6 s, then every 2 s: 5 + about 28 accepts in a minute, not a spin.
    assert 30 <= listener.accepts <= 36
    lines = [record.getMessage() for record in caplog.records if "accept failed" in record.getMessage()]
    assert len(lines) == 6  # one at the first failure, then one per 10 s
    assert lines[0] == "native port: accept failed (Too many open files); pausing 0.1 s (1 in the last 10 s)"
    assert lines[1].endswith("pausing 2 s (9 in the last 10 s)")  # at 11.1 s: 0.3, 0.7, 1.5, 3.1, 5.1, ... 11.1


class AnyioByteStream(anyio.abc.ByteStream):
    """A Trio stream seen as an AnyIO byte stream, as the client takes it."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def send(self, item: bytes) -> None:
        await self._stream.send_all(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data = await self._stream.receive_some(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    async def send_eof(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self._stream.aclose()


async def test_a_call_the_broker_never_answers_times_out(autojump_clock):
    client_stream, broker_stream = trio.testing.memory_stream_pair()
    async with anyio.create_task_group() as tasks:
        client = Client(AnyioByteStream(client_stream), tasks, timeout_s=5)
        started = trio.current_time()
        with pytest.raises(TimeoutError, match="did not answer ListQueues within 5 s"):
            await client.call(ListQueues())
        assert trio.current_time() - started == pytest.approx(5)
        started = trio.current_time()
        with pytest.raises(TimeoutError, match=f"ReceiveMessage within {5 + MAX_LONG_POLL_S} s"):
            await client.call(ReceiveMessage("q", wait_time_seconds=20))
        assert trio.current_time() - started == pytest.approx(5 + MAX_LONG_POLL_S)
        assert await broker_stream.receive_some() != b""  # both were sent
        tasks.cancel_scope.cancel()


@pytest.mark.parametrize(("key", "value"), [("frame_timeout", 0.0), ("max_connections", -3), ("write_timeout", -1.0)])
def test_a_limit_that_is_not_positive_is_one_line_naming_it(key, value):
    from dovecote import config

    resolved = config.resolve({key: value}, None, {})
    with pytest.raises(config.ConfigError, match=rf"^{key} must be more than 0, not {value}$"):
        config.serve_config(resolved.values)


def test_the_network_settings_reach_the_limits():
    from dovecote import config

    flags = {
        "max_connections": 50, "max_connections_per_peer": 5, "http_read_timeout": 3.0, "frame_timeout": 4.0,
        "write_timeout": 6.0, "accept_retry_max_pause": 7.0, "accept_log_interval": 8.0,
    }
    limits = config.serve_config(config.resolve(flags, None, {}).values).limits
    assert (limits.max_connections, limits.max_connections_per_peer) == (50, 5)
    assert (limits.http_read_timeout_s, limits.frame_timeout_s, limits.write_timeout_s) == (3.0, 4.0, 6.0)
    assert (limits.accept_retry_max_pause_s, limits.accept_log_interval_s) == (7.0, 8.0)
    assert config.serve_config(config.resolve({}, None, {}).values).limits == NetLimits()
