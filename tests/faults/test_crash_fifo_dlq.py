"""Promises 3 and 4 across `kill -9` of a real broker: FIFO order, group locks and deduplication
survive restarts; a dead-letter move leaves each message in exactly one queue."""

import json
import random
import threading
import time

from dovecote.net.client import BlockingClient, SendEntry

from .serve import ServeProcess

ROUNDS = 3
GROUPS = 4


def killed_at_random(broker: ServeProcess, rng: random.Random) -> threading.Timer:
    timer = threading.Timer(rng.uniform(0.3, 0.8), broker.kill9)
    timer.start()
    return timer


def test_fifo_order_and_deduplication_survive_kill_9(tmp_path):
    rng = random.Random(4)
    broker = ServeProcess(tmp_path / "data").start()
    with broker.client() as client:
        client.create_queue("orders.fifo", {"FifoQueue": "true", "VisibilityTimeout": "2"})
    next_number = [0] * GROUPS
    acked_sends: set[tuple[int, int]] = set()
    attempted_deletes: set[tuple[int, int]] = set()
    acked_deletes: set[tuple[int, int]] = set()
    deliveries: list[tuple[int, int]] = []
    out_of_order: list[str] = []

    def check_and_delete(client: BlockingClient) -> None:
        for message in client.receive_message("orders.fifo", max_number_of_messages=10):
            group, number = map(int, message.body.split(":"))
            deliveries.append((group, number))
            if (group, number) in acked_deletes:
                out_of_order.append(f"{message.body} came back after its delete was acknowledged")
            # everything sent before it in its group must have been deleted (or be in a delete
            # that was cut off by the kill)
            earlier = {(g, n) for g, n in acked_sends if g == group and n < number}
            if earlier - attempted_deletes:
                out_of_order.append(f"{message.body} delivered before {sorted(earlier - attempted_deletes)[:3]}")
            attempted_deletes.add((group, number))
            client.delete_message("orders.fifo", message.receipt_handle)
            acked_deletes.add((group, number))

    for _ in range(ROUNDS):
        timer = killed_at_random(broker, rng)
        try:
            with broker.client() as client:
                while True:
                    entries = []
                    for i in range(5):
                        group = rng.randrange(GROUPS)
                        entries.append((group, next_number[group]))
                        next_number[group] += 1
                    if acked_sends:  # a duplicate of something already acknowledged
                        entries.append(rng.choice(sorted(acked_sends)))
                    batch = [
                        SendEntry(str(i), f"{g}:{n}", message_group_id=str(g), message_deduplication_id=f"{g}:{n}")
                        for i, (g, n) in enumerate(entries)
                    ]
                    result = client.send_message_batch("orders.fifo", batch)
                    assert not result.failed
                    acked_sends.update(entries)
                    check_and_delete(client)
        except (ConnectionError, OSError):
            pass
        timer.join()
        broker = ServeProcess(tmp_path / "data").start()
        with broker.client() as client:  # duplicates of acknowledged sends, right after the restart
            for group, number in sorted(acked_sends)[-5:]:
                client.send_message(
                    "orders.fifo", f"{group}:{number}", message_group_id=str(group), message_deduplication_id=f"{group}:{number}"
                )

    with broker.client() as client:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 3:  # longer than the visibility timeout
            before = len(deliveries)
            check_and_delete(client)
            if len(deliveries) == before:
                time.sleep(0.1)
            else:
                quiet_since = time.monotonic()
    broker.terminate()
    assert len(acked_sends) > 50, "the load did too little to test anything"
    assert not out_of_order, out_of_order[:5]
    lost = acked_sends - set(deliveries)
    assert not lost, f"acknowledged sends never delivered: {sorted(lost)[:5]}"


def test_dead_letter_moves_survive_kill_9_in_exactly_one_queue(tmp_path):
    rng = random.Random(9)
    broker = ServeProcess(tmp_path / "data").start()
    arn = "arn:aws:sqs:us-east-1:000000000000:"
    with broker.client() as client:
        client.create_queue("dead")
        redrive = json.dumps({"deadLetterTargetArn": arn + "dead", "maxReceiveCount": 2})
        client.create_queue("work", {"RedrivePolicy": redrive})
    acked: set[str] = set()
    n = 0
    for _ in range(ROUNDS):
        timer = killed_at_random(broker, rng)
        try:
            with broker.client() as client:
                while True:
                    bodies = [f"m{n + i}" for i in range(10)]
                    n += 10
                    result = client.send_message_batch("work", [SendEntry(str(i), b) for i, b in enumerate(bodies)])
                    assert not result.failed
                    acked.update(bodies)
                    # receive without deleting, visible again at once: every third receive moves it
                    client.receive_message("work", max_number_of_messages=10, visibility_timeout=0)
        except (ConnectionError, OSError):
            pass
        timer.join()
        broker = ServeProcess(tmp_path / "data").start()

    seen: dict[str, list[str]] = {}
    with broker.client() as client:
        for queue in ("work", "dead"):
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < 1.5:
                messages = client.receive_message(queue, max_number_of_messages=10, visibility_timeout=600)
                for message in messages:
                    seen.setdefault(message.body, []).append(queue)
                if messages:
                    quiet_since = time.monotonic()
                else:
                    time.sleep(0.05)
    broker.terminate()
    assert len(acked) > 50, "the load did too little to test anything"
    assert any(queues == ["dead"] for queues in seen.values()), "nothing was dead-lettered"
    twice = {body: queues for body, queues in seen.items() if len(queues) > 1}
    assert not twice, f"messages in two places (or twice in one): {list(twice.items())[:5]}"
    lost = acked - set(seen)
    assert not lost, f"acknowledged sends lost: {sorted(lost)[:5]}"
    assert set(seen) <= acked | {f"m{i}" for i in range(n)}
