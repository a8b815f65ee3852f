"""The durable-core benchmark: a real `dovecote serve` process, real TCP, the default sync mode.

    python -m dovecote.bench            # every scenario, a table of figures against targets
    python -m dovecote.bench --quick    # smaller counts, for a smoke run

Each scenario is bounded in messages and stops by itself. The broker runs as a subprocess on a
fresh data directory under /tmp; the clients run in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import trio

from dovecote.net.client import BlockingClient, DeleteEntry, SendEntry, open_client

BODY = "x" * 256


class Figure(NamedTuple):
    name: str
    value: float
    unit: str
    target: str
    met: bool


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    """A `dovecote serve` subprocess on a data directory."""

    def __init__(self, data_dir: str, extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.http_port = free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None

    def start(self) -> float:
        """Start and wait until the native port answers; returns seconds from exec to serving."""
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dovecote", "serve", "--data-dir", self.data_dir,
             "--port", str(self.port), "--http-port", str(self.http_port), "--log-level", "WARNING",
             *self.extra_args],
        )
        deadline = started + 30
        while time.perf_counter() < deadline:
            try:
                with BlockingClient("127.0.0.1", self.port, timeout_s=1):
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.002)
        raise RuntimeError("the broker did not start")

    def rss_bytes(self) -> int:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@contextlib.contextmanager
def running_broker(*serve_args: str) -> Iterator[Broker]:
    with tempfile.TemporaryDirectory(prefix="dovecote-bench-") as data_dir:
        broker = Broker(data_dir, serve_args)
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


def standard_batch() -> list[SendEntry]:
    return [SendEntry(f"e{i}", BODY) for i in range(10)]


async def produce(
    port: int,
    queue: str,
    messages: int,
    connections: int,
    pipeline: int,
    make_batch: Callable[[], list[SendEntry]] = standard_batch,
) -> float:
    """Send `messages` in batches of 10 (from make_batch) over `connections` connections, each
    with `pipeline` batches in flight; returns messages per second."""
    batches = messages // 10
    per_task = batches // (connections * pipeline)

    async def worker(client) -> None:
        for _ in range(per_task):
            result = await client.send_message_batch(queue, make_batch())
            assert not result.failed

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(_with_client, port, worker, pipeline)
    return per_task * connections * pipeline * 10 / (time.perf_counter() - started)


async def _with_client(port: int, worker: Callable, tasks: int) -> None:
    async with open_client("127.0.0.1", port) as client:
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(worker, client)


async def consume(port: int, queue: str, messages: int, connections: int, pipeline: int) -> float:
    """Receive and delete in batches of 10 until `messages` are gone; messages per second. Empty
    receives are retried for a while (a FIFO queue's groups may all be locked for a moment)."""
    done = 0
    finished_at = time.perf_counter()

    async def worker(client) -> None:
        nonlocal done, finished_at
        empty = 0
        while done < messages and empty < 200:
            received = await client.receive_message(queue, max_number_of_messages=10)
            if not received:
                empty += 1
                await trio.sleep(0.001)
                continue
            empty = 0
            finished_at = time.perf_counter()
            result = await client.delete_message_batch(
                queue, [DeleteEntry(str(i), m.receipt_handle) for i, m in enumerate(received)]
            )
            assert not result.failed
            done += len(received)
            finished_at = time.perf_counter()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(_with_client, port, worker, pipeline)
    return done / (finished_at - started)


async def concurrent_single_sends(port: int, queue: str, clients: int, per_client: int) -> float:
    async def one_client() -> None:
        async with open_client("127.0.0.1", port) as client:
            for _ in range(per_client):
                await client.send_message(queue, BODY)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(one_client)
    return clients * per_client / (time.perf_counter() - started)


def round_trips(port: int, queue: str, rounds: int) -> tuple[float, float, float]:
    """One message sent, received and deleted in turn, with the blocking client. Returns the p50
    of one request's round trip, the p99, and the p50 of the whole send-receive-delete."""
    singles: list[float] = []
    cycles: list[float] = []
    with BlockingClient("127.0.0.1", port) as client:
        for _ in range(rounds):
            t0 = time.perf_counter()
            client.send_message(queue, BODY)
            t1 = time.perf_counter()
            (message,) = client.receive_message(queue)
            t2 = time.perf_counter()
            client.delete_message(queue, message.receipt_handle)
            t3 = time.perf_counter()
            singles += [t1 - t0, t2 - t1, t3 - t2]
            cycles.append(t3 - t0)
    singles.sort()
    return (
        statistics.median(singles) * 1000,
        singles[int(len(singles) * 0.99)] * 1000,
        statistics.median(cycles) * 1000,
    )


def run(quick: bool) -> list[Figure]:
    scale = 10 if quick else 1
    figures: list[Figure] = []
    with running_broker() as broker:
        with BlockingClient("127.0.0.1", broker.port) as client:
            client.create_queue("bench")
            client.create_queue("single")
            client.create_queue("latency")
        rate = trio.run(produce, broker.port, "bench", 200_000 // scale, 4, 8)
        figures.append(Figure("produce, batches of 10", rate, "msg/s", ">= 60,000", rate >= 60_000))
        rate = trio.run(consume, broker.port, "bench", 200_000 // scale, 4, 16)
        figures.append(Figure("receive + delete, batches of 10", rate, "msg/s", ">= 40,000", rate >= 40_000))
        rate = trio.run(concurrent_single_sends, broker.port, "single", 16, 4000 // scale)
        figures.append(Figure("16 clients, one message per request", rate, "msg/s", ">= 20,000", rate >= 20_000))
        p50, p99, cycle = round_trips(broker.port, "latency", 3000 // scale)
        figures.append(Figure("round trip of one request, p50", p50, "ms", "<= 0.8", p50 <= 0.8))
        figures.append(Figure("round trip of one request, p99", p99, "ms", "(reported)", True))
        figures.append(Figure("send + receive + delete, p50", cycle, "ms", "(reported)", True))

    with tempfile.TemporaryDirectory(prefix="dovecote-bench-") as data_dir:
        broker = Broker(data_dir)
        broker.start()
        try:
            with BlockingClient("127.0.0.1", broker.port) as client:
                client.create_queue("stored")
            trio.run(produce, broker.port, "stored", 100_000 // scale, 2, 4)
            time.sleep(1.0)
            rss = broker.rss_bytes() / (1 << 20)
            figures.append(Figure("RSS, 100,000 messages queued, idle", rss, "MiB", "<= 64", rss <= 64))
            broker.kill()
            restart = broker.start() * 1000
            figures.append(Figure("restart after SIGKILL, 100,000 stored, to serving", restart, "ms", "<= 300", restart <= 300))
            with BlockingClient("127.0.0.1", broker.port) as client:
                depth = int(client.get_queue_attributes("stored")["ApproximateNumberOfMessages"])
            if depth != 100_000 // scale:
                raise RuntimeError(f"after the restart the queue holds {depth} messages")
        finally:
            broker.stop()
    return figures


def main(run_benchmark: Callable[[bool], list[Figure]] | None = None, description: str = __doc__) -> int:
    """Run a benchmark (`--quick` for smaller counts) and print its figures against their targets."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    figures = (run_benchmark or run)(args.quick)
    print(f"{'scenario':<58} {'figure':>12}  {'target':<12} met")
    for figure in figures:
        print(f"{figure.name:<58} {figure.value:>9,.2f} {figure.unit:<5} {figure.target:<12} {'yes' if figure.met else 'NO'}")
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
