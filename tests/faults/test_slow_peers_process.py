"""Slow and many peers against a real `dovecote serve` under a low file-descriptor limit: floods of
idle connections from two addresses (127.0.0.3 and .4) on both ports, trickling peers from a third
(an HTTP head, an HTTP body, a native frame, a byte every 0.2 s), while a canary client on
127.0.0.2 is served throughout; the broker logs its connection limits once and a bounded number of refusal lines.
The big versions (1,100 connections under `ulimit -n 1024`, 100,000 native long polls) are in the
long tier."""

import re
import resource
import statistics
import struct
import subprocess
import time
from typing import NamedTuple

import pytest
import trio

from dovecote.actors.ops import Failure, ReceiveMessage
from dovecote.net import frames

from ..net.test_servers import raw_connection
from ..net.test_slow_peers import CANARY_MAX_LATENCY_S, Canary, read_until_closed, trickle
from .serve import ServeProcess


class Ports(NamedTuple):
    native: int
    http: int


def descriptor_limit(count: int):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


SLOW_HTTP_HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 1000 + b"\r\n\r\n"
SLOW_HTTP_BODY = b"a" * 1000  # after a head saying Content-Length: 1000
SLOW_NATIVE_FRAME = struct.pack(">I", 1000) + b"\x92" + b"\x01" * 999


class Slowloris:
    """One trickling peer: when the broker closed it, after its first byte, and what it answered."""

    def __init__(self, port: int, kind: str) -> None:
        self.port = port
        self.kind = kind
        self.closed_after_s: float | None = None
        self.answer = b""

    async def run(self) -> None:
        if self.kind == "native frame":
            stream = await raw_connection(self.port)
            data = SLOW_NATIVE_FRAME
        else:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            data = SLOW_HTTP_HEAD
            if self.kind == "http body":
                await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
                data = SLOW_HTTP_BODY
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle, stream, data, 0.2)
            self.answer = await read_until_closed(stream)
            self.closed_after_s = trio.current_time() - started
            nursery.cancel_scope.cancel()


async def flood(host: str, ports: Ports, count: int) -> tuple[list[trio.SocketStream], int]:
    """`count` idle connections from `host`, half to each port; those the broker holds (still open
    after a second), and how many it closed at once."""
    opened = []
    for index in range(count):
        port = ports.native if index % 2 else ports.http
        try:
            opened.append(await trio.open_tcp_stream("127.0.0.1", port, local_address=host))
        except OSError:
            pass  # refused by a full backlog: not held either
    await trio.sleep(1)
    held = []
    for stream in opened:
        with trio.move_on_after(0.01):
            try:
                if await stream.receive_some(1) == b"":
                    await stream.aclose()
                    continue
            except trio.BrokenResourceError:
                await stream.aclose()
                continue
        held.append(stream)
    return held, len(opened) - len(held)


async def slow_peers_scenario(tmp_path, descriptors: int, flood_per_address: int, timeout_s: float, extra_args=()):
    """Runs the scenario; returns the broker's log, the connections held per flooding address, the
    slowlorises and the canary."""
    broker = ServeProcess(
        tmp_path / "data", "--log-level", "INFO", *extra_args, preexec_fn=descriptor_limit(descriptors)
    ).start()
    ports = Ports(broker.port, broker.http_port)
    canary = Canary(ports)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(canary.run)
            held = {}
            for host in ("127.0.0.3", "127.0.0.4"):
                streams, _ = await flood(host, ports, flood_per_address)
                held[host] = streams
            slowlorises = [Slowloris(ports.http, "http head"), Slowloris(ports.http, "http body"), Slowloris(ports.native, "native frame")]
            with trio.fail_after(timeout_s + 10):
                async with trio.open_nursery() as slow:
                    for slowloris in slowlorises:
                        slow.start_soon(slowloris.run)
            nursery.cancel_scope.cancel()
        counts = {host: len(streams) for host, streams in held.items()}
        for streams in held.values():
            for stream in streams:
                await stream.aclose()
    finally:
        assert broker.terminate() == 0
    return broker.process.stderr.read(), counts, slowlorises, canary


def check_slow_peers(log: str, slowlorises, canary, timeout_s: float, canary_at_least: int) -> None:
    for slowloris in slowlorises:
        assert slowloris.closed_after_s is not None
        assert timeout_s - 0.3 <= slowloris.closed_after_s <= timeout_s + 2, (slowloris.kind, slowloris.closed_after_s)
        if slowloris.kind.startswith("http"):
            assert slowloris.answer.startswith(b"HTTP/1.1 408 ")
        else:
            (length,) = struct.unpack(">I", slowloris.answer[:4])
            assert "did not arrive whole" in frames.decode_response(slowloris.answer[4 : 4 + length]).result.message
    canary.check(at_least=canary_at_least)
    assert "Traceback" not in log
    assert not re.search(r"accept failed", log)  # the limits keep the process inside its descriptors
    refusal_lines = len(re.findall(r"refused a connection", log))
    assert 1 <= refusal_lines <= 2 * 2 * (1 + int(timeout_s // 10) + 2)  # once per port and 10 s, at most


async def test_floods_and_slowlorises_under_a_low_descriptor_limit_leave_a_canary_served(tmp_path):
    log, held, slowlorises, canary = await slow_peers_scenario(
        tmp_path, descriptors=256, flood_per_address=200, timeout_s=2,
        extra_args=("--http-read-timeout", "2", "--frame-timeout", "2"),
    )
    assert "connections: at most 128, 32 per peer address (RLIMIT_NOFILE 256, 128 descriptors kept for the store and pushes)" in log
    assert held == {"127.0.0.3": 32, "127.0.0.4": 32}  # the per-address limit
    check_slow_peers(log, slowlorises, canary, timeout_s=2, canary_at_least=20)
    print(
        f"held {held}; slowlorises closed after {[(s.kind, round(s.closed_after_s, 2)) for s in slowlorises]}; "
        f"canary answered {len(canary.latencies)} times, worst {max(canary.latencies) * 1000:.0f} ms"
    )


@pytest.mark.long
async def test_1100_connections_under_ulimit_1024_with_the_default_deadlines(tmp_path):
    log, held, slowlorises, canary = await slow_peers_scenario(
        tmp_path, descriptors=1024, flood_per_address=1100, timeout_s=30,
    )
    assert "connections: at most 704, 176 per peer address (RLIMIT_NOFILE 1024, 320 descriptors kept" in log
    assert held == {"127.0.0.3": 176, "127.0.0.4": 176}
    check_slow_peers(log, slowlorises, canary, timeout_s=30, canary_at_least=200)
    print(
        f"held {held}; slowlorises closed after {[(s.kind, round(s.closed_after_s, 2)) for s in slowlorises]}; "
        f"canary answered {len(canary.latencies)} times, worst {max(canary.latencies) * 1000:.0f} ms"
    )


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def long_polls(port: int, queues: list[str], first_id: int, count: int, results: list) -> None:
    """`count` long polls on one native connection, all sent at once; their results in `results`."""
    stream = await raw_connection(port)
    out = bytearray()
    for request_id in range(first_id, first_id + count):
        frames.encode_request(request_id, ReceiveMessage(queues[request_id % len(queues)], wait_time_seconds=20), out)
    await stream.send_all(bytes(out))
    decoder = frames.FrameDecoder(1 << 24)
    answered = 0
    while answered < count:
        chunk = await stream.receive_some(1 << 16)
        assert chunk, "the broker closed a connection with long polls waiting"
        decoder.feed(chunk)
        while (payload := decoder.next_payload()) is not None:
            results.append(frames.decode_response(payload).result)
            answered += 1
    await stream.aclose()


@pytest.mark.long
async def test_a_storm_of_100000_native_long_polls_is_answered_while_a_canary_is_served(tmp_path):
    waiters, per_connection, queue_count = 100_000, 250, 200
    broker = ServeProcess(tmp_path / "data").start()
    ports = Ports(broker.port, broker.http_port)
    queues = [f"storm{index}" for index in range(queue_count)]
    try:
        with broker.client() as client:
            for queue in queues:
                client.create_queue(queue)
        rss_before = rss_kib(broker.process.pid)
        results: list = []
        canary = Canary(ports)
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            await nursery.start(canary.run)
            with trio.fail_after(120):
                async with trio.open_nursery() as storm:
                    for first_id in range(1, waiters + 1, per_connection):
                        storm.start_soon(long_polls, ports.native, queues, first_id, per_connection, results)
                    await trio.sleep(10)  # every long poll is waiting by now
                    rss_waiting = rss_kib(broker.process.pid)
                    with broker.client() as client:
                        for queue in queues:
                            client.send_message(queue, "for one waiter")
            nursery.cancel_scope.cancel()
        took_s = time.monotonic() - started
    finally:
        assert broker.terminate() == 0
    assert len(results) == waiters
    failures = [result for result in results if isinstance(result, Failure)]
    assert not failures, failures[:3]
    received = sum(len(result.messages) for result in results)
    assert received == queue_count  # each message went to exactly one waiter; the rest got nothing at 20 s
    # While 100,000 requests come in at once (the test's own process encoding them on the same
    # two cores), the canary waits its turn behind them for seconds; then it is served at once.
    canary.check(at_least=100, max_latency_s=15)
    assert statistics.median(canary.latencies) < CANARY_MAX_LATENCY_S
    assert rss_waiting - rss_before < 1024 * 1024  # under a GiB for 100,000 waiters
    print(
        f"{waiters} long polls answered in {took_s:.1f} s; broker RSS {rss_before // 1024} MiB before, "
        f"{rss_waiting // 1024} MiB with them waiting; canary answered {len(canary.latencies)} times, "
        f"median {statistics.median(canary.latencies) * 1000:.0f} ms, worst {max(canary.latencies) * 1000:.0f} ms"
    )


def test_a_descriptor_limit_too_low_for_connections_is_one_line(tmp_path):
    broker = ServeProcess(tmp_path / "data")
    refused = subprocess.run(broker.command(), capture_output=True, text=True, timeout=60, preexec_fn=descriptor_limit(64))
    assert refused.returncode == 4
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert "RLIMIT_NOFILE 64) leaves no room for connections" in lines[0] and "ulimit -n" in lines[0]
