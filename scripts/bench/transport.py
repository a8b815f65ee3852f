"""The cost of TLS and of access keys, side by side with plain TCP, on the native protocol and the
AWS API.

    python -m dovecote.bench.transport                       # plain against TLS + auth, 5 rounds
    python -m dovecote.bench.transport --variants plain,tls,auth,tls+auth --rounds 7

One `dovecote serve` per variant runs for the whole benchmark, each on a fresh data directory: plain
TCP; TLS (a throwaway CA's certificate, run from the checkout's root); auth (an access key, which
native clients prove when they connect and boto3 signs every request with, now checked); or both.
Each round measures every variant the same way, one scenario at a time, the variants back to back
in an order that rotates from round to round, so that whatever else the machine does weighs on all
alike. The table shows the median of the rounds and each variant's cost against plain, the median
of the rounds' own costs (for rates 1 - variant/plain, for times variant/plain - 1): each round's
pair was measured within seconds of each other, so that median is the steadier figure on a busy
machine. The broker's own CPU time per message produced (all its threads, from /proc) is given too:
the clients share the machine, and their TLS is counted in the rates but is not the broker's cost.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import threading
import time

import trio

from dovecote.net.client import open_client

from .aws import client as aws_client
from .harness import BODY, BrokerProcess, Security, broker_cpu_s, make_security, produce

NATIVE_CONNECTIONS, NATIVE_PIPELINE = 4, 8
AWS_THREADS = 4
ROUND_TRIPS = 500
OPENINGS = 100


def native_round_trip_ms(broker: BrokerProcess, queue: str) -> float:
    """p50 of one SendMessage on an open connection, blocking client."""
    times = []
    with broker.client() as client:
        client.send_message(queue, BODY)
        for _ in range(ROUND_TRIPS):
            started = time.perf_counter()
            client.send_message(queue, BODY)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def native_opening_ms(broker: BrokerProcess) -> float:
    """p50 of opening a connection: TCP, TLS, the version handshake and the key's proof."""
    times = []
    for _ in range(OPENINGS):
        started = time.perf_counter()
        async with open_client("127.0.0.1", broker.port, **broker.security.client_options):
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def aws_rates(broker: BrokerProcess, queue: str, messages: int) -> tuple[float, float]:
    """boto3 SendMessageBatch of 10 from AWS_THREADS threads (msg/s), and one SendMessage's p50 (ms)."""
    endpoint = broker.http_endpoint
    url = aws_client(endpoint, broker.security).create_queue(QueueName=queue)["QueueUrl"]
    batches = messages // 10 // AWS_THREADS
    entries = [{"Id": str(i), "MessageBody": BODY} for i in range(10)]

    def produce_batches() -> None:
        sqs = aws_client(endpoint, broker.security)
        for _ in range(batches):
            assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")

    threads = [threading.Thread(target=produce_batches) for _ in range(AWS_THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = batches * 10 * AWS_THREADS / (time.perf_counter() - started)
    sqs = aws_client(endpoint, broker.security)
    sqs.send_message(QueueUrl=url, MessageBody=BODY)
    times = []
    for _ in range(ROUND_TRIPS):
        started = time.perf_counter()
        sqs.send_message(QueueUrl=url, MessageBody=BODY)
        times.append(time.perf_counter() - started)
    return rate, statistics.median(times) * 1000


SCENARIOS = (
    ("native produce, batches of 10 (4 connections x 8)", "msg/s"),
    ("  the broker's CPU time per message produced", "us"),
    ("native round trip, one SendMessage, p50", "ms"),
    ("native connection opening, p50", "ms"),
    ("AWS API produce, boto3 batches of 10 (4 threads)", "msg/s"),
    ("AWS API round trip, boto3 SendMessage, p50", "ms"),
)


def measure_round(brokers: dict[str, BrokerProcess], order: list[str], round_number: int, native_messages: int,
                  aws_messages: int) -> dict[str, list[float]]:
    """Every scenario once for each variant, the variants back to back (in `order`) per scenario."""
    queue = f"round-{round_number}"
    figures: dict[str, list[float]] = {name: [] for name in order}
    for name in order:
        with brokers[name].client() as client:
            client.create_queue(queue)
    for name in order:
        broker = brokers[name]
        assert broker.process is not None
        cpu_s = broker_cpu_s(broker.process.pid)
        figures[name].append(trio.run(functools.partial(
            produce, broker.port, queue, native_messages, NATIVE_CONNECTIONS, NATIVE_PIPELINE, security=broker.security
        )))
        figures[name].append((broker_cpu_s(broker.process.pid) - cpu_s) / native_messages * 1e6)
    for name in order:
        figures[name].append(native_round_trip_ms(brokers[name], queue))
    for name in order:
        figures[name].append(trio.run(native_opening_ms, brokers[name]))
    for name in order:
        figures[name].extend(aws_rates(brokers[name], f"aws-{queue}", aws_messages))
    return figures


def cost(value: float, plain: float, unit: str) -> float:
    return (1 - value / plain) if unit == "msg/s" else (value / plain - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="plain,tls+auth", help="comma-separated: plain, tls, auth, tls+auth")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--native-messages", type=int, default=100_000)
    parser.add_argument("--aws-messages", type=int, default=20_000)
    args = parser.parse_args()
    names = [name.strip() for name in args.variants.split(",")]
    if names[0] != "plain" or not set(names) <= {"plain", "tls", "auth", "tls+auth"}:
        raise SystemExit("--variants: plain first, then any of tls, auth, tls+auth")
    with tempfile.TemporaryDirectory(prefix="dovecote-bench-transport-") as directory:
        brokers: dict[str, BrokerProcess] = {}
        try:
            for name in names:
                security: Security = make_security("tls" in name, "auth" in name, f"{directory}/pki-{name}")
                brokers[name] = BrokerProcess(f"{directory}/data-{name}", security=security)
                brokers[name].start()
            figures: dict[str, list[list[float]]] = {name: [] for name in names}
            for round_number in range(args.rounds):
                order = names[round_number % len(names):] + names[: round_number % len(names)]
                measured = measure_round(brokers, order, round_number, args.native_messages, args.aws_messages)
                for name in names:
                    figures[name].append(measured[name])
                print(f"round {round_number + 1}: " + "; ".join(
                    f"{name} {figures[name][-1][0]:,.0f} native msg/s ({figures[name][-1][1]:.1f} us CPU/msg), {figures[name][-1][4]:,.0f} AWS msg/s" for name in names
                ), flush=True)
        finally:
            for broker in brokers.values():
                broker.stop()
    medians = {name: [statistics.median(column) for column in zip(*rows)] for name, rows in figures.items()}
    width = max(len(scenario) for scenario, _ in SCENARIOS)
    print(f"\nmedians of {args.rounds} rounds; in brackets, the median of the rounds' own costs against plain")
    print(f"{'scenario':<{width}} " + " ".join(f"{name:>20}" for name in names))
    for index, (scenario, unit) in enumerate(SCENARIOS):
        cells = []
        for name in names:
            value = medians[name][index]
            if name == "plain":
                cells.append(f"{value:>12,.2f} {unit:<5}")
            else:
                paired = statistics.median(
                    cost(mine[index], plain[index], unit) for mine, plain in zip(figures[name], figures["plain"])
                )
                cells.append(f"{value:>10,.2f} ({paired:+6.1%})")
        print(f"{scenario:<{width}} " + " ".join(f"{cell:>20}" for cell in cells))
    print("(cost: for rates the share of plain's lost, for times how much longer)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
