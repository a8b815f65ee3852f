"""Benchmark of the AWS-compatible API: unmodified boto3 against a real `dovecote serve`.

    python -m dovecote.bench.aws           # needs boto3 (pip install '.[test]')
    python -m dovecote.bench.aws --tls --auth --runs 3   # over HTTPS, with signatures checked

Batches of 10, 256-byte bodies, a few client threads, default sync mode. Bounded in messages.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import boto3
from botocore.config import Config

from .harness import BODY, PLAIN, Security, add_transport_flags, make_security, running_broker

THREADS = 4
ROUND_TRIPS = 1000


def client(endpoint: str, security: Security = PLAIN):
    key_id, secret = security.access_key or ("bench", "bench")  # signed either way; checked only with --auth
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        verify=security.ca_file if security.ca_file else True,
        config=Config(max_pool_connections=THREADS, retries={"max_attempts": 1}),
    )


def in_threads(work, count: int) -> float:
    threads = [threading.Thread(target=work) for _ in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def run(messages: int, security: Security = PLAIN) -> tuple[float, float, float]:
    """Messages sent per second, received and deleted per second, and the p50 of one SendMessage's
    round trip (ms, one client, keep-alive)."""
    with running_broker(security=security) as broker:
        endpoint = broker.http_endpoint
        url = client(endpoint, security).create_queue(QueueName="bench")["QueueUrl"]
        batches_per_thread = messages // 10 // THREADS

        def produce() -> None:
            sqs = client(endpoint, security)
            entries = [{"Id": str(i), "MessageBody": BODY} for i in range(10)]
            for _ in range(batches_per_thread):
                assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")

        sent_rate = batches_per_thread * 10 * THREADS / in_threads(produce, THREADS)
        consumed = [0] * THREADS

        def consume(index: int) -> None:
            sqs = client(endpoint, security)
            while True:
                received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
                if not received:
                    return
                entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)]
                assert not sqs.delete_message_batch(QueueUrl=url, Entries=entries).get("Failed")
                consumed[index] += len(received)

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(THREADS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        received_rate = sum(consumed) / (time.perf_counter() - started)
        sqs = client(endpoint, security)
        latency_url = sqs.create_queue(QueueName="latency")["QueueUrl"]
        sqs.send_message(QueueUrl=latency_url, MessageBody=BODY)  # the connection is open from here on
        round_trips = []
        for _ in range(ROUND_TRIPS):
            started = time.perf_counter()
            sqs.send_message(QueueUrl=latency_url, MessageBody=BODY)
            round_trips.append(time.perf_counter() - started)
    return sent_rate, received_rate, statistics.median(round_trips) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--runs", type=int, default=1, help="run this many times; the median of each figure is shown too")
    add_transport_flags(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dovecote-bench-pki-") as directory:
        security = make_security(args.tls, args.auth, directory)
        results = []
        for _ in range(args.runs):
            sent, received, round_trip = run(args.messages, security)
            results.append((sent, received, round_trip))
            print(f"boto3 ({security.label}), {THREADS} threads, batches of 10: sent {sent:,.0f} msg/s (target >= 5,000), "
                  f"received+deleted {received:,.0f} msg/s (target >= 3,000); SendMessage round trip p50 {round_trip:.2f} ms")
    if args.runs > 1:
        sent, received, round_trip = (statistics.median(column) for column in zip(*results))
        print(f"median of {args.runs}: sent {sent:,.0f} msg/s, received+deleted {received:,.0f} msg/s, round trip {round_trip:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
