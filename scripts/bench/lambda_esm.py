"""Event source mappings: messages a second through a mapping to a no-op Python handler (batch 10,
concurrency 2 and 4; Lambda's least MaximumConcurrency is 2, so "1" is one mapping with its
function's ReservedConcurrentExecutions at 1), and the latency from a send to the handler's start
with a warm function (p50, p99), against a real `dovecote serve` process with boto3 (the SQS
sends over the native protocol).

    python -m dovecote.bench.lambda_esm            # the figures against their targets
    python -m dovecote.bench.lambda_esm --quick    # smaller counts, for a smoke run

Throughput: a mapping's warm-up round starts its function's instances; then, the mapping disabled,
N messages are sent to its queue, and the time from enabling it until the queue is empty (each
message deleted after its batch succeeded) is measured. Latency: one message at a time, each sent
with the sender's clock in its body, 20 ms apart; the handler writes how long after that it started
(so the send's own commit is in it: with `--sync full`, an fsync). Both with the default
`--sync full` and with `--sync os`. Each scenario is bounded in messages and stops by itself.
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

from .harness import Figure, main, percentile, running_broker

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


def throughput(messages: int, concurrency: int, reserved: int | None, serve_args: tuple[str, ...]) -> float:
    """Messages a second from enabling a mapping until its queue, loaded while it was disabled, is
    empty; its function's instances were started by a warm-up round first."""
    with running_broker(*serve_args) as broker:
        client = lambda_client(broker.http_endpoint)
        name = f"noop{concurrency}"
        create_function(client, name, NO_OP, reserved=reserved)
        with broker.client() as native:
            native.call(CreateQueue("work"))
            mapping = client.create_event_source_mapping(
                EventSourceArn=ACCOUNT_QUEUE_ARN + "work", FunctionName=name, BatchSize=10,
                ScalingConfig={"MaximumConcurrency": concurrency},
            )["UUID"]
            load(native, 40 * concurrency)  # warm-up: every instance started
            drain(native, "work")
            client.update_event_source_mapping(UUID=mapping, Enabled=False)
            load(native, messages)
            began = time.perf_counter()
            client.update_event_source_mapping(UUID=mapping, Enabled=True)
            drain(native, "work")
            return messages / (time.perf_counter() - began)


def load(native: BlockingClient, messages: int) -> None:
    for _ in range(0, messages, 10):
        native.call(SendMessageBatch("work", [SendEntry(str(i), "x" * 64) for i in range(10)]))


def drain(native: BlockingClient, queue: str, timeout_s: float = 300) -> None:
    deadline = time.perf_counter() + timeout_s
    while in_queue(native, queue):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{queue} did not drain in {timeout_s} s")
        time.sleep(0.005)


def latency(samples: int, serve_args: tuple[str, ...]) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="dovecote-bench-lambda-") as directory, running_broker(*serve_args) as broker:
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
            drain(native, "timed")
        with open(out) as lines:
            return [float(line) for line in lines][1:]  # not the warm-up


def run(quick: bool) -> list[Figure]:
    messages = 2_000 if quick else 10_000
    figures = []
    for sync in ("full", "os"):
        serve_args = ("--sync", sync)
        for concurrency, reserved, label in ((2, 1, "1 (reserved concurrency 1)"), (4, None, "4")):
            rate = throughput(messages, concurrency, reserved, serve_args)
            figures.append(Figure(
                f"--sync {sync}: mapping, no-op handler, batch 10, concurrency {label}", rate, "msg/s",
                ">= 2,000" if reserved is None else "(reported)", rate >= 2_000 if reserved is None else True,
            ))
        latencies = sorted(latency(100 if quick else 400, serve_args))
        p50 = statistics.median(latencies)
        p99 = percentile(latencies, 0.99)
        figures.append(Figure(f"--sync {sync}: send to handler start, warm function, p50", p50, "ms", "< 10", p50 < 10))
        figures.append(Figure(f"--sync {sync}: send to handler start, warm function, p99", p99, "ms", "(reported)", True))
    return figures


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
