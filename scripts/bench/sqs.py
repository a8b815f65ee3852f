"""The SQS-complete benchmark: FIFO queues, dead-letter moves and message move tasks, against a real
`dovecote serve` process over the native protocol, in the default sync mode.

    python -m dovecote.bench.sqs            # every scenario, a table of figures against targets
    python -m dovecote.bench.sqs --quick    # smaller counts, for a smoke run

Each scenario is bounded in messages and time and stops by itself.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable

import trio

from dovecote.net.client import BlockingClient, SendEntry, VisibilityEntry, open_client

from .harness import BODY, Figure, consume, main, produce, running_broker

ARN = "arn:aws:sqs:us-east-1:000000000000:"


def fifo_batches(groups: int) -> Callable[[], list[SendEntry]]:
    """Batches of 10 for a FIFO queue: groups in turn, every deduplication id new."""
    numbers = itertools.count()

    def make_batch() -> list[SendEntry]:
        entries = []
        for i in range(10):
            n = next(numbers)
            entries.append(SendEntry(f"e{i}", BODY, message_group_id=f"g{n % groups}", message_deduplication_id=str(n)))
        return entries

    return make_batch


def depth(client: BlockingClient, queue: str) -> int:
    attributes = client.get_queue_attributes(queue)
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def wait_until(condition: Callable[[], bool], limit_s: float = 300) -> None:
    deadline = time.perf_counter() + limit_s
    while not condition():
        if time.perf_counter() > deadline:
            raise RuntimeError("the scenario did not finish in time")
        time.sleep(0.005)


async def receive_all(port: int, queue: str, connections: int, visibility_s: int, handles: list[str] | None = None) -> int:
    """Receive until the queue looks empty; returns how many were received (and keeps their
    receipt handles in `handles`). On a queue whose maxReceiveCount is reached, these receive
    attempts move messages to the dead-letter queue instead."""
    done = 0

    async def worker() -> None:
        nonlocal done
        empty = 0
        async with open_client("127.0.0.1", port) as client:
            while empty < 50:
                received = await client.receive_message(queue, max_number_of_messages=10, visibility_timeout=visibility_s)
                done += len(received)
                if handles is not None:
                    handles.extend(m.receipt_handle for m in received)
                empty = 0 if received else empty + 1
                if not received:
                    await trio.sleep(0.002)

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)
    return done


async def release(port: int, queue: str, handles: list[str]) -> None:
    """Make received messages visible again at once."""
    async with open_client("127.0.0.1", port) as client:
        for start in range(0, len(handles), 10):
            entries = [VisibilityEntry(str(i), h, 0) for i, h in enumerate(handles[start : start + 10])]
            result = await client.change_message_visibility_batch(queue, entries)
            assert not result.failed


def run(quick: bool) -> list[Figure]:
    scale = 10 if quick else 1
    figures: list[Figure] = []
    count = 200_000 // scale
    with running_broker() as broker:
        with BlockingClient("127.0.0.1", broker.port) as client:
            for name in ("many.fifo", "one.fifo"):
                client.create_queue(name, {"FifoQueue": "true"})
        rate = trio.run(produce, broker.port, "many.fifo", count, 4, 8, fifo_batches(100))
        figures.append(Figure("FIFO produce, 100 groups, batches of 10", rate, "msg/s", ">= 30,000", rate >= 30_000))
        rate = trio.run(consume, broker.port, "many.fifo", count, 4, 16)
        figures.append(Figure("FIFO receive + delete, 100 groups", rate, "msg/s", ">= 20,000", rate >= 20_000))
        rate = trio.run(produce, broker.port, "one.fifo", count // 4, 4, 8, fifo_batches(1))
        figures.append(Figure("FIFO produce, 1 group", rate, "msg/s", "(reported)", True))
        rate = trio.run(consume, broker.port, "one.fifo", count // 4, 4, 16)
        figures.append(Figure("FIFO receive + delete, 1 group", rate, "msg/s", "(reported)", True))

    moves = 100_000 // scale
    with running_broker() as broker:
        with BlockingClient("127.0.0.1", broker.port) as client:
            client.create_queue("dead")
            redrive = json.dumps({"deadLetterTargetArn": ARN + "dead", "maxReceiveCount": 1})
            client.create_queue("work", {"RedrivePolicy": redrive})
            trio.run(produce, broker.port, "work", moves, 2, 8)
            moves = depth(client, "work")
            # Receive each once and make them visible again: the next receive attempts move them.
            handles: list[str] = []
            trio.run(receive_all, broker.port, "work", 4, 600, handles)
            trio.run(release, broker.port, "work", handles)
            if len(handles) != moves:
                raise RuntimeError(f"received {len(handles)} of {moves}")
            started = time.perf_counter()
            trio.run(receive_all, broker.port, "work", 4, 600)
            wait_until(lambda: depth(client, "dead") == moves)
            rate = moves / (time.perf_counter() - started)
            figures.append(Figure("dead-letter moves (receive attempts move them)", rate, "msg/s", ">= 10,000", rate >= 10_000))

            started = time.perf_counter()
            client.start_message_move_task("dead")
            wait_until(lambda: client.list_message_move_tasks("dead")[0].status != "RUNNING")
            rate = moves / (time.perf_counter() - started)
            task = client.list_message_move_tasks("dead")[0]
            if task.status != "COMPLETED" or depth(client, "work") != moves:
                raise RuntimeError(f"the move task ended {task.status} with {depth(client, 'work')} moved")
            figures.append(Figure("message move task, back to the source", rate, "msg/s", ">= 10,000", rate >= 10_000))
    return figures


if __name__ == "__main__":
    raise SystemExit(main(run, __doc__))
