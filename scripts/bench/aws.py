"""Benchmark of the AWS-compatible API: unmodified boto3 against a real `dovecote serve`.

    python -m dovecote.bench.aws           # needs boto3 (pip install '.[test]')

Batches of 10, 256-byte bodies, a few client threads, default sync mode. Bounded in messages.
"""

from __future__ import annotations

import argparse
import threading
import time

import boto3
from botocore.config import Config

from .harness import BODY, running_broker

THREADS = 4


def client(endpoint: str):
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
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


def run(messages: int) -> tuple[float, float]:
    with running_broker() as broker:
        endpoint = f"http://127.0.0.1:{broker.http_port}"
        url = client(endpoint).create_queue(QueueName="bench")["QueueUrl"]
        batches_per_thread = messages // 10 // THREADS

        def produce() -> None:
            sqs = client(endpoint)
            entries = [{"Id": str(i), "MessageBody": BODY} for i in range(10)]
            for _ in range(batches_per_thread):
                assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")

        sent_rate = batches_per_thread * 10 * THREADS / in_threads(produce, THREADS)
        consumed = [0] * THREADS

        def consume(index: int) -> None:
            sqs = client(endpoint)
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
    return sent_rate, received_rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=40_000)
    args = parser.parse_args()
    sent, received = run(args.messages)
    print(f"boto3, {THREADS} threads, batches of 10: sent {sent:,.0f} msg/s (target >= 5,000), "
          f"received+deleted {received:,.0f} msg/s (target >= 3,000)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
