"""Promises 1-3 across `kill -9` of a real broker: what was acknowledged is there exactly once,
what was deleted stays gone, nothing appears that nobody sent, receive counts never go back."""

import random
import threading
import time
import zlib

from dovecote.net.client import DeleteEntry, SendEntry

from .serve import ServeProcess

ROUNDS = 4


class Ledger:
    """What the clients attempted and what the broker acknowledged. Each list is appended to by one
    thread only."""

    def __init__(self) -> None:
        self.attempted_sends: set[str] = set()
        self.acked_sends: set[str] = set()
        self.attempted_deletes: set[str] = set()
        self.acked_deletes: set[str] = set()
        self.receive_counts: dict[str, int] = {}


def produce(broker: ServeProcess, ledger: Ledger, round_number: int, stop: threading.Event) -> None:
    n = 0
    try:
        with broker.client() as client:
            while not stop.is_set():
                if n % 3 == 0:
                    body = f"r{round_number}-m{n}"
                    ledger.attempted_sends.add(body)
                    client.send_message("crash", body)
                    ledger.acked_sends.add(body)
                    n += 1
                else:
                    bodies = [f"r{round_number}-m{n + i}" for i in range(10)]
                    ledger.attempted_sends.update(bodies)
                    result = client.send_message_batch("crash", [SendEntry(str(i), b) for i, b in enumerate(bodies)])
                    assert not result.failed
                    ledger.acked_sends.update(bodies)
                    n += 10
    except (ConnectionError, OSError):
        pass  # the broker was killed


def deletes(body: str) -> bool:
    """Whether the consumer deletes this message when it receives it: about half of them."""
    return zlib.crc32(body.encode()) % 2 == 1


def consume(broker: ServeProcess, ledger: Ledger, stop: threading.Event) -> None:
    try:
        with broker.client() as client:
            while not stop.is_set():
                messages = client.receive_message(
                    "crash", max_number_of_messages=10, attribute_names=["ApproximateReceiveCount"]
                )
                deleting = []
                for message in messages:
                    count = int(message.attributes["ApproximateReceiveCount"])
                    ledger.receive_counts[message.body] = max(count, ledger.receive_counts.get(message.body, 0))
                    # delete about half; the rest come back after the visibility timeout. The choice
                    # depends on the body alone (not on hash(), which differs per process), so every
                    # run deletes the same bodies
                    if deletes(message.body):
                        deleting.append(message)
                if deleting:
                    ledger.attempted_deletes.update(m.body for m in deleting)
                    result = client.delete_message_batch(
                        "crash", [DeleteEntry(str(i), m.receipt_handle) for i, m in enumerate(deleting)]
                    )
                    assert not result.failed
                    ledger.acked_deletes.update(m.body for m in deleting)
    except (ConnectionError, OSError):
        pass


def test_acknowledged_work_survives_repeated_kill_9(tmp_path):
    rng = random.Random(20261123)
    ledger = Ledger()
    broker = ServeProcess(tmp_path / "data").start()
    with broker.client() as client:
        client.create_queue("crash", {"VisibilityTimeout": "1"})
    for round_number in range(ROUNDS):
        stop = threading.Event()
        threads = [
            threading.Thread(target=produce, args=(broker, ledger, round_number, stop)),
            threading.Thread(target=consume, args=(broker, ledger, stop)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.3, 1.0))
        broker.kill9()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        broker = ServeProcess(tmp_path / "data").start()

    assert len(ledger.acked_sends) > 100 and ledger.acked_deletes, "the load did too little to test anything"
    drained: list[str] = []
    counts: dict[str, int] = {}
    with broker.client() as client:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 2.5:  # longer than the 1 s visibility timeout
            messages = client.receive_message(
                "crash", max_number_of_messages=10, attribute_names=["ApproximateReceiveCount"]
            )
            if messages:
                quiet_since = time.monotonic()
            for message in messages:
                drained.append(message.body)
                counts[message.body] = int(message.attributes["ApproximateReceiveCount"])
                client.delete_message("crash", message.receipt_handle)
            if not messages:
                time.sleep(0.1)
    broker.terminate()

    present = set(drained)
    assert len(drained) == len(present), "a message came back after its delete was acknowledged"
    assert present <= ledger.attempted_sends, f"phantom messages: {sorted(present - ledger.attempted_sends)[:5]}"
    lost = ledger.acked_sends - ledger.attempted_deletes - present
    assert not lost, f"acknowledged sends lost: {sorted(lost)[:5]}"
    resurrected = ledger.acked_deletes & present
    assert not resurrected, f"acknowledged deletes came back: {sorted(resurrected)[:5]}"
    for body, seen in ledger.receive_counts.items():
        if body in counts:
            assert counts[body] > seen, f"receive count of {body} went back from {seen} to {counts[body]}"
