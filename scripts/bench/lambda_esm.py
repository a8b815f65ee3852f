"""Event source mappings: messages a second through a mapping to a no-op Python handler (batch 10,
concurrency 2 and 4; Lambda's least MaximumConcurrency is 2, so "1" is one mapping with its
function's ReservedConcurrentExecutions at 1), and the latency from a send to the handler's start
with a warm function (p50, p99), against a real `dovecote serve` process with boto3 (the SQS
sends over the native protocol).

    python -m dovecote.bench.lambda_esm            # the figures against their targets
    python -m dovecote.bench.lambda_esm --quick    # smaller counts, for a smoke run

Throughput: N messages are sent to a queue, then a mapping is made; the time from its creation
until the queue is empty (deleted after their batches succeeded). Latency: one message at a time,
each sent with the sender's clock in its body, 20 ms apart; the handler writes how long after that
it started. Each scenario is bounded in messages and stops by itself.
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
import zipfile

import boto3
from botocore.config import Config

from dovecote.actors.ops import CreateQueue, GetQueueAttributes, SendEntry, SendMessage, SendMessageBatch
from dovecote.net.client import BlockingClient

from .harness import Figure, main, running_broker

ACCOUNT_QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:"
NO_OP = "def handler(event, context):\n    return None\n"
STAMPING = (
    "import os, time\n"
    "def handler(event, context):\n"
    "    started = time.time()\n"
    "    with open(os.environ['OUT'], 'a') as out:\n"
    "        for record in event['Records']:\n"
    "            out.write(f\"{(started - float(record['body'])) * 1000:.3f}\\n\")\n"
)


def handler_zip(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", source)
    return buffer.getvalue()


def lambda_client(endpoint: str):
    return boto3.client(
        "lambda", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench",
        config=Config(retries={"max_attempts": 1}),
    )


def create_function(client, name: str, source: str, environment: dict[str, str] | None = None, reserved: int | None = None) -> None:
    client.create_function(
        FunctionName=name, Runtime="python3.12", Handler="handler.handler", Role="arn:aws:iam::000000000000:role/bench",
        Code={"ZipFile": handler_zip(source)}, Timeout=30, Environment={"Variables": environment or {}},
    )
    if reserved is not None:
        client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=reserved)


def in_queue(native: BlockingClient, queue: str) -> int:
    attributes = native.call(GetQueueAttributes(queue, ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])).attributes
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def throughput(messages: int, concurrency: int, reserved: int | None) -> float:
    with running_broker() as broker:
        client = lambda_client(broker.http_endpoint)
        name = f"noop{concurrency}"
        create_function(client, name, NO_OP, reserved=reserved)
        client.invoke(FunctionName=name, Payload=b"{}")  # warm
        with broker.client() as native:
            native.call(CreateQueue("work"))
            for _ in range(0, messages, 10):
                native.call(SendMessageBatch("work", [SendEntry(str(i), "x" * 64) for i in range(10)]))
            began = time.perf_counter()
            client.create_event_source_mapping(
                EventSourceArn=ACCOUNT_QUEUE_ARN + "work", FunctionName=name, BatchSize=10,
                ScalingConfig={"MaximumConcurrency": concurrency},
            )
            deadline = began + 300
            while in_queue(native, "work") and time.perf_counter() < deadline:
                time.sleep(0.01)
            return messages / (time.perf_counter() - began)


def latency(samples: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="dovecote-bench-lambda-") as directory, running_broker() as broker:
        out = os.path.join(directory, "latency.txt")
        client = lambda_client(broker.http_endpoint)
        create_function(client, "stamp", STAMPING, {"OUT": out})
        with broker.client() as native:
            native.call(CreateQueue("timed"))
            client.create_event_source_mapping(EventSourceArn=ACCOUNT_QUEUE_ARN + "timed", FunctionName="stamp", BatchSize=1)
            native.call(SendMessage("timed", str(time.time())))
            time.sleep(1)
            for _ in range(samples):
                native.call(SendMessage("timed", str(time.time())))
                time.sleep(0.02)
            deadline = time.perf_counter() + 60
            while in_queue(native, "timed") and time.perf_counter() < deadline:
                time.sleep(0.01)
        with open(out) as lines:
            return [float(line) for line in lines][1:]  # not the warm-up


def run(quick: bool) -> list[Figure]:
    messages = 2_000 if quick else 10_000
    figures = []
    for concurrency, reserved, label in ((2, 1, "1 (reserved concurrency 1)"), (4, None, "4")):
        rate = throughput(messages, concurrency, reserved)
        met = rate >= 2_000 if reserved is None else True
        figures.append(Figure(f"mapping, no-op handler, batch 10, concurrency {label}", rate, "msg/s",
                              ">= 2,000" if reserved is None else "(reported)", met))
    latencies = sorted(latency(100 if quick else 500))
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    figures.append(Figure("send to handler start, warm function, p50", p50, "ms", "< 10", p50 < 10))
    figures.append(Figure("send to handler start, warm function, p99", p99, "ms", "(reported)", True))
    return figures


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
