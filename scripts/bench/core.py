"""The durable-core benchmark: a real `dovecote serve` process, real TCP, the default sync mode.

    python -m dovecote.bench            # every scenario, a table of figures against targets
    python -m dovecote.bench --quick    # smaller counts, for a smoke run
    python -m dovecote.bench --tls --auth   # the same over TLS, with an access key proven

Each scenario is bounded in messages and stops by itself. The broker runs as a subprocess on a
fresh data directory under /tmp; the clients run in this process.
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import time

import trio

from dovecote.net.client import BlockingClient, open_client

from .harness import BODY, PLAIN, BrokerProcess, Figure, Security, consume, percentile, produce, running_broker


async def concurrent_single_sends(port: int, queue: str, clients: int, per_client: int, security: Security = PLAIN) -> float:
    async def one_client() -> None:
        async with open_client("127.0.0.1", port, **security.client_options) as client:
            for _ in range(per_client):
                await client.send_message(queue, BODY)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(one_client)
    return clients * per_client / (time.perf_counter() - started)


def round_trips(port: int, queue: str, rounds: int, security: Security = PLAIN) -> tuple[float, float, float]:
    """One message sent, received and deleted in turn, with the blocking client. Returns the p50
    of one request's round trip, the p99, and the p50 of the whole send-receive-delete."""
    singles: list[float] = []
    cycles: list[float] = []
    with BlockingClient("127.0.0.1", port, **security.client_options) as client:
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
        percentile(singles, 0.99) * 1000,
        statistics.median(cycles) * 1000,
    )


def run(quick: bool, security: Security = PLAIN) -> list[Figure]:
    scale = 10 if quick else 1
    figures: list[Figure] = []
    with running_broker(security=security) as broker:
        with broker.client() as client:
            client.create_queue("bench")
            client.create_queue("single")
            client.create_queue("latency")
        rate = trio.run(functools.partial(produce, broker.port, "bench", 200_000 // scale, 4, 8, security=security))
        figures.append(Figure("produce, batches of 10", rate, "msg/s", ">= 60,000", rate >= 60_000))
        rate = trio.run(functools.partial(consume, broker.port, "bench", 200_000 // scale, 4, 16, security=security))
        figures.append(Figure("receive + delete, batches of 10", rate, "msg/s", ">= 40,000", rate >= 40_000))
        rate = trio.run(concurrent_single_sends, broker.port, "single", 16, 4000 // scale, security)
        figures.append(Figure("16 clients, one message per request", rate, "msg/s", ">= 20,000", rate >= 20_000))
        p50, p99, cycle = round_trips(broker.port, "latency", 3000 // scale, security)
        figures.append(Figure("round trip of one request, p50", p50, "ms", "<= 0.8", p50 <= 0.8))
        figures.append(Figure("round trip of one request, p99", p99, "ms", "(reported)", True))
        figures.append(Figure("send + receive + delete, p50", cycle, "ms", "(reported)", True))

    with tempfile.TemporaryDirectory(prefix="dovecote-bench-") as data_dir:
        broker = BrokerProcess(data_dir, security=security)
        broker.start()
        try:
            with broker.client() as client:
                client.create_queue("stored")
            trio.run(functools.partial(produce, broker.port, "stored", 100_000 // scale, 2, 4, security=security))
            time.sleep(1.0)
            rss = broker.rss_bytes() / (1 << 20)
            figures.append(Figure("RSS, 100,000 messages queued, idle", rss, "MiB", "<= 48", rss <= 48))
            broker.kill()
            restart = broker.start() * 1000
            figures.append(Figure("restart after SIGKILL, 100,000 stored, to serving", restart, "ms", "<= 300", restart <= 300))
            time.sleep(1.0)
            rss = broker.rss_bytes() / (1 << 20)
            figures.append(Figure("RSS after that restart, idle", rss, "MiB", "<= 64", rss <= 64))
            with broker.client() as client:
                depth = int(client.get_queue_attributes("stored")["ApproximateNumberOfMessages"])
            if depth != 100_000 // scale:
                raise RuntimeError(f"after the restart the queue holds {depth} messages")
        finally:
            broker.stop()
    return figures
