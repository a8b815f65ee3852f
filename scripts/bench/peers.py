"""dovecote beside Redis, one client on one connection, one request at a time, in the same run.

    python -m dovecote.bench.peers              # 3 runs, medians
    python -m dovecote.bench.peers --runs 5 --quick

Each run measures dovecote (a `dovecote serve` on a fresh data directory, the blocking native
client) and, when `redis-server` is on PATH, Redis 7 with an append-only file synced before every
answer (`--appendonly yes --appendfsync always --save ''`, a loopback port, a temporary directory)
through redis-py, the two taking turns, the one that goes first alternating from run to run. Both
store 256-byte bodies: produce in batches of 1 and of 10 (SendMessage / SendMessageBatch; XADD, ten
XADDs in one MULTI for a batch), consume in batches of 1 and 10 (ReceiveMessage and
DeleteMessage[Batch]; XREADGROUP and XACK), and the round trip of one message sent, received and
deleted (p50 and p99). The table shows each figure's median over the runs, and dovecote's against
Redis's as the median of the runs' own ratios (each pair measured within seconds of each other, the
steadier figure on a busy machine). The servers' own CPU time per request (all threads, from /proc)
is shown too: the clients share the machine, and it is the less noisy measure of the work each does.
Redis is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

from dovecote.net.client import BlockingClient, DeleteEntry, SendEntry

from .harness import BODY, broker_cpu_s, free_port, running_broker, stop_process

QUEUE = "peers"
REDIS_STREAM, REDIS_GROUP = "peers", "consumers"
TARGET_RATE_RATIO = 0.8  # dovecote's rate against Redis's, at least
TARGET_ROUND_TRIP_RATIO = 1.25  # dovecote's round trip p50 against Redis's, at most


class Counts(NamedTuple):
    singles: int  # requests of one message, produced and then consumed
    batches: int  # requests of ten
    round_trips: int


FULL, QUICK = Counts(2000, 1000, 1000), Counts(300, 150, 200)


class Peer(Protocol):
    """One system's client, the five workloads' requests on one connection."""

    name: str
    pid: int

    def send(self, count: int) -> None: ...
    def receive_and_delete(self, count: int) -> int: ...  # messages received (and deleted)


class Dovecote:
    name = "dovecote, native protocol"

    def __init__(self, client: BlockingClient, pid: int) -> None:
        self._client = client
        self.pid = pid
        self._batch = [SendEntry(str(i), BODY) for i in range(10)]

    def send(self, count: int) -> None:
        if count == 1:
            self._client.send_message(QUEUE, BODY)
        else:
            assert not self._client.send_message_batch(QUEUE, self._batch[:count]).failed

    def receive_and_delete(self, count: int) -> int:
        received = self._client.receive_message(QUEUE, max_number_of_messages=count)
        if count == 1 and received:
            self._client.delete_message(QUEUE, received[0].receipt_handle)
        elif received:
            entries = [DeleteEntry(str(i), message.receipt_handle) for i, message in enumerate(received)]
            assert not self._client.delete_message_batch(QUEUE, entries).failed
        return len(received)


class Redis:
    name = "Redis, AOF appendfsync always"

    def __init__(self, client, pid: int) -> None:  # client: a redis.Redis
        self._client = client
        self.pid = pid
        client.xgroup_create(REDIS_STREAM, REDIS_GROUP, id="0", mkstream=True)

    def send(self, count: int) -> None:
        if count == 1:
            self._client.xadd(REDIS_STREAM, {"body": BODY})
            return
        pipeline = self._client.pipeline(transaction=True)  # one MULTI/EXEC: one write to the AOF
        for _ in range(count):
            pipeline.xadd(REDIS_STREAM, {"body": BODY})
        pipeline.execute()

    def receive_and_delete(self, count: int) -> int:
        answer = self._client.xreadgroup(REDIS_GROUP, "bench", {REDIS_STREAM: ">"}, count=count)
        ids = [message_id for _, messages in answer for message_id, _ in messages]
        if ids:
            self._client.xack(REDIS_STREAM, REDIS_GROUP, *ids)
        return len(ids)


class Figures(NamedTuple):
    rates: dict[str, float]  # per workload: messages per second
    cpu_us: dict[str, float]  # per workload: the server's CPU microseconds per request
    round_trip_p50_ms: float
    round_trip_p99_ms: float


RATE_WORKLOADS = ("produce b=1", "produce b=10", "consume b=1", "consume b=10")


def measure(peer: Peer, counts: Counts) -> Figures:
    rates: dict[str, float] = {}
    cpu_us: dict[str, float] = {}

    def timed(workload: str, requests: int, request: Callable[[], int]) -> None:
        cpu = broker_cpu_s(peer.pid)
        started = time.perf_counter()
        messages = sum(request() for _ in range(requests))
        elapsed = time.perf_counter() - started
        rates[workload] = messages / elapsed
        cpu_us[workload] = (broker_cpu_s(peer.pid) - cpu) / requests * 1e6

    def sending(size: int) -> Callable[[], int]:
        def send() -> int:
            peer.send(size)
            return size

        return send

    timed("produce b=1", counts.singles, sending(1))
    timed("produce b=10", counts.batches, sending(10))
    # a receive and its delete are two requests
    timed("consume b=1", counts.singles, lambda: peer.receive_and_delete(1))
    timed("consume b=10", counts.batches, lambda: peer.receive_and_delete(10))
    cpu_us["consume b=1"] /= 2
    cpu_us["consume b=10"] /= 2
    times = []
    for _ in range(counts.round_trips):
        started = time.perf_counter()
        peer.send(1)
        if peer.receive_and_delete(1) != 1:
            raise RuntimeError(f"{peer.name}: a message sent was not received")
        times.append(time.perf_counter() - started)
    times.sort()
    return Figures(rates, cpu_us, statistics.median(times) * 1000, times[int(len(times) * 0.99)] * 1000)


def measure_dovecote(counts: Counts) -> Figures:
    with running_broker() as broker, broker.client() as client:
        client.create_queue(QUEUE)
        assert broker.process is not None
        return measure(Dovecote(client, broker.process.pid), counts)


@contextlib.contextmanager
def running_redis(server: str) -> Iterator[tuple[object, int]]:
    """A redis-server with every write synced before its answer, on a loopback port and a
    temporary directory; yields a redis-py client and the server's PID, then stops it by PID."""
    import redis  # the test extra's; only this benchmark needs it

    with tempfile.TemporaryDirectory(prefix="dovecote-bench-redis-") as directory:
        port = free_port()
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--appendonly", "yes",
             "--appendfsync", "always", "--save", "", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(host="127.0.0.1", port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.01)
            yield client, process.pid
            client.close()
        finally:
            stop_process(process)


def measure_redis(server: str, counts: Counts) -> Figures:
    with running_redis(server) as (client, pid):
        return measure(Redis(client, pid), counts)


def table(dovecote: list[Figures], redis: list[Figures]) -> list[str]:
    """The medians of the runs and the ratios, as lines to print."""
    lines = []
    header = f"{'workload':<26} {'dovecote':>14} {'Redis':>14} {'ratio':>7}  {'target':<10} {'CPU µs/request (dovecote / Redis)':>34}"
    lines.append(header)

    def median(values: list[float]) -> float:
        return statistics.median(values)

    for workload in RATE_WORKLOADS:
        ours = median([figures.rates[workload] for figures in dovecote])
        cpu = median([figures.cpu_us[workload] for figures in dovecote])
        if redis:
            theirs = median([figures.rates[workload] for figures in redis])
            ratio = median([d.rates[workload] / r.rates[workload] for d, r in zip(dovecote, redis)])
            their_cpu = median([figures.cpu_us[workload] for figures in redis])
            met = "met" if ratio >= TARGET_RATE_RATIO else "short"
            lines.append(
                f"{workload + ', msg/s':<26} {ours:>14,.0f} {theirs:>14,.0f} {ratio:>7.2f}  "
                f"{'>= ' + str(TARGET_RATE_RATIO):<10} {cpu:>18.0f} / {their_cpu:<.0f}  {met}"
            )
        else:
            lines.append(f"{workload + ', msg/s':<26} {ours:>14,.0f} {'-':>14} {'-':>7}  {'':<10} {cpu:>18.0f}")
    for label, field in (("round trip p50, ms", "round_trip_p50_ms"), ("round trip p99, ms", "round_trip_p99_ms")):
        ours = median([getattr(figures, field) for figures in dovecote])
        if redis:
            theirs = median([getattr(figures, field) for figures in redis])
            ratio = median([getattr(d, field) / getattr(r, field) for d, r in zip(dovecote, redis)])
            if field == "round_trip_p50_ms":
                target, met = f"<= {TARGET_ROUND_TRIP_RATIO}", "met" if ratio <= TARGET_ROUND_TRIP_RATIO else "short"
            else:
                target, met = "", ""
            lines.append(f"{label:<26} {ours:>14.2f} {theirs:>14.2f} {ratio:>7.2f}  {target:<10} {'':>34}  {met}")
        else:
            lines.append(f"{label:<26} {ours:>14.2f} {'-':>14} {'-':>7}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs to take the medians of (default 3)")
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--redis-server", default=shutil.which("redis-server"), help="the redis-server to run (default: on PATH)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    counts = QUICK if args.quick else FULL
    if args.redis_server is None:
        print("redis-server is not on PATH (Debian: apt-get install redis-server): measuring dovecote alone")
    dovecote: list[Figures] = []
    redis: list[Figures] = []
    for run in range(args.runs):
        turns = [lambda: dovecote.append(measure_dovecote(counts))]
        if args.redis_server is not None:
            turns.append(lambda: redis.append(measure_redis(args.redis_server, counts)))
        for turn in turns if run % 2 == 0 else reversed(turns):
            turn()
    print(f"one client, one connection, one request at a time, 256-byte bodies; medians of {args.runs} runs")
    for line in table(dovecote, redis):
        print(line)
    print(f"({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
