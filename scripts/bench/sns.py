"""The SNS benchmark: publishes fanned out to SQS subscriptions, against a real `dovecote serve`
process over the native protocol, in the default sync mode; and filter-policy matching in process.

    python -m dovecote.bench.sns            # every scenario, a table of figures against targets
    python -m dovecote.bench.sns --quick    # smaller counts, for a smoke run

Each scenario is bounded in messages and stops by itself.
"""

from __future__ import annotations

import json
import random
import time

import trio

from dovecote.actors.filter_policy import MessageView, compile_policy
from dovecote.net.client import BlockingClient, MessageAttributeValue, PublishEntry, open_client

from .harness import BODY, Figure, broker_cpu_s, main, running_broker

ARN = "arn:aws:sqs:us-east-1:000000000000:"
TENANTS = 10


def batch(rng: random.Random) -> list[PublishEntry]:
    return [
        PublishEntry(str(i), BODY, message_attributes={"tenant": MessageAttributeValue("String", f"t{rng.randrange(TENANTS)}")})
        for i in range(10)
    ]


async def publish(port: int, topic: str, publishes: int, connections: int, pipeline: int) -> float:
    """PublishBatch of 10 over `connections` connections with `pipeline` batches in flight each;
    returns publishes per second."""
    per_task = publishes // 10 // (connections * pipeline)
    rng = random.Random(1)

    async def worker(client) -> None:
        for _ in range(per_task):
            result = await client.publish_batch(topic, batch(rng))
            assert not result.failed

    async def connection() -> None:
        async with open_client("127.0.0.1", port) as client:
            async with trio.open_nursery() as nursery:
                for _ in range(pipeline):
                    nursery.start_soon(worker, client)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(connection)
    return per_task * connections * pipeline * 10 / (time.perf_counter() - started)


def fan_out(subscriptions: int, filtered: bool, publishes: int, signed: bool = True) -> tuple[float, int, float]:
    """Publishes per second to a topic with that many SQS subscriptions, the deliveries stored
    (checked against what the subscriptions should have received), and the broker's CPU time per
    publish in microseconds (less noisy than the rate on a shared machine)."""
    with running_broker(*(() if signed else ("--unsigned-sqs-envelopes",))) as broker:
        with BlockingClient("127.0.0.1", broker.port) as client:
            client.create_topic("bench")
            for i in range(subscriptions):
                client.create_queue(f"q{i}")
                attributes = {"FilterPolicy": json.dumps({"tenant": [f"t{i % TENANTS}"]})} if filtered else {}
                client.subscribe("bench", "sqs", f"{ARN}q{i}", attributes)
            assert broker.process is not None
            cpu_before = broker_cpu_s(broker.process.pid)
            rate = trio.run(publish, broker.port, "bench", publishes, 4, 8)
            cpu_us = (broker_cpu_s(broker.process.pid) - cpu_before) / publishes * 1e6
            stored = sum(int(client.get_queue_attributes(f"q{i}")["ApproximateNumberOfMessages"]) for i in range(subscriptions))
    return rate, stored, cpu_us


def archive_replay(publishes: int) -> float:
    """Messages per second of a replay of `publishes` archived publishes into a new subscription's
    FIFO queue, from setting the ReplayPolicy until the replay is completed and all are stored."""
    with running_broker() as broker:
        with BlockingClient("127.0.0.1", broker.port) as client:
            client.create_topic("archived.fifo", {"FifoTopic": "true", "ArchivePolicy": json.dumps({"MessageRetentionPeriod": "1"})})
            client.create_queue("replayed.fifo", {"FifoQueue": "true"})

            async def fill() -> None:
                async with open_client("127.0.0.1", broker.port) as async_client:
                    async def worker(first: int) -> None:
                        for start in range(first, publishes, 10 * 8):
                            entries = [
                                PublishEntry(str(i), BODY, message_group_id=f"g{i % 10}", message_deduplication_id=str(i))
                                for i in range(start, start + 10)
                            ]
                            assert not (await async_client.publish_batch("archived.fifo", entries)).failed

                    async with trio.open_nursery() as nursery:
                        for worker_number in range(8):
                            nursery.start_soon(worker, worker_number * 10)

            trio.run(fill)
            started = time.perf_counter()
            arn = client.subscribe(
                "archived.fifo", "sqs", f"{ARN}replayed.fifo",
                {"RawMessageDelivery": "true", "ReplayPolicy": json.dumps({"PointType": "Timestamp", "StartingPoint": 0})},
            )
            deadline = started + 300
            while client.get_subscription_attributes(arn)["ReplayStatus"] != "Completed":
                if time.perf_counter() > deadline:
                    raise RuntimeError("the replay did not finish")
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
            stored = int(client.get_queue_attributes("replayed.fifo")["ApproximateNumberOfMessages"])
            if stored != publishes:
                raise RuntimeError(f"the replay stored {stored} of {publishes}")
    return publishes / elapsed


def matching_time_ms(policies: int, rounds: int) -> float:
    """Milliseconds to match one message against `policies` compiled policies (a mix of the
    grammar's conditions), the median of `rounds`."""
    rng = random.Random(2)
    compiled = []
    for i in range(policies):
        compiled.append(
            compile_policy(
                json.dumps(
                    {
                        "tenant": [f"t{i % 50}", {"prefix": f"x{i % 7}"}],
                        "price": [{"numeric": [">=", i % 100, "<", 100 + i % 100]}],
                        "region": [{"anything-but": ["eu", "us"]}],
                    }
                )
            )
        )
    attributes = {
        "tenant": MessageAttributeValue("String", "t7"),
        "price": MessageAttributeValue("Number", "150"),
        "region": MessageAttributeValue("String", "ap"),
    }
    times = []
    for _ in range(rounds):
        rng.shuffle(compiled)
        started = time.perf_counter()
        view = MessageView(attributes, BODY)  # as a publish does: one view, every policy
        matched = sum(1 for policy in compiled if policy.first_failure(view) is None)
        times.append(time.perf_counter() - started)
    assert matched > 0
    times.sort()
    return times[len(times) // 2] * 1000


def run(quick: bool) -> list[Figure]:
    scale = 10 if quick else 1
    figures: list[Figure] = []
    for subscriptions, publishes in ((1, 50_000), (10, 20_000), (100, 3_200)):
        for filtered in (False, True):
            rate, stored, cpu_us = fan_out(subscriptions, filtered, max(320, publishes // scale))
            target = ">= 10,000" if subscriptions == 10 and not filtered else "(reported)"
            met = rate >= 10_000 if target != "(reported)" else True
            label = f"publish, {subscriptions} subscription{'s' if subscriptions > 1 else ''}{', filtered' if filtered else ''}"
            figures.append(Figure(f"{label} ({stored:,} deliveries)", rate, "pub/s", target, met))
            figures.append(Figure("  the broker's CPU per publish", cpu_us, "us", "(reported)", True))
        rate, stored, cpu_us = fan_out(subscriptions, False, max(320, publishes // scale), signed=False)
        target = ">= 20,000" if subscriptions == 10 else "(reported)"
        plural = "s" if subscriptions > 1 else ""
        figures.append(Figure(f"publish, {subscriptions} subscription{plural}, unsigned ({stored:,} deliveries)", rate, "pub/s", target,
                              rate >= 20_000 or target == "(reported)"))
        figures.append(Figure("  the broker's CPU per publish", cpu_us, "us", "(reported)", True))
    rate = archive_replay(100_000 // scale)
    figures.append(Figure(f"archive replay of {100_000 // scale:,} publishes into a queue", rate, "msg/s", ">= 10,000", rate >= 10_000))
    ms = matching_time_ms(1000, 200 // scale)
    figures.append(Figure("one message against 1,000 compiled policies", ms, "ms", "<= 1", ms <= 1))
    return figures


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
