"""Promise 5 across `kill -9` of a real broker: an acknowledged publish lands exactly once in every
subscribed queue whose filter policy matches it, and an unacknowledged one in all of them or none."""

import json
import random
import subprocess
import sys
import threading
import time

from dovecote.actors.ops import MessageAttributeValue
from dovecote.net.client import PublishEntry

from .serve import ServeProcess

ROUNDS = 3
QUEUES = ("all-0", "all-1", "even", "raw")
ARN = "arn:aws:sqs:us-east-1:000000000000:"


def parity(n: int) -> str:
    return "even" if n % 2 == 0 else "odd"


def test_fan_out_is_exact_across_kill_9(tmp_path):
    rng = random.Random(5)
    broker = ServeProcess(tmp_path / "data").start()
    with broker.client() as client:
        client.create_topic("fan")
        for queue in QUEUES:
            client.create_queue(queue)
        client.subscribe("fan", "sqs", ARN + "all-0")
        client.subscribe("fan", "sqs", ARN + "all-1")
        client.subscribe("fan", "sqs", ARN + "even", {"FilterPolicy": json.dumps({"parity": ["even"]})})
        client.subscribe("fan", "sqs", ARN + "raw", {"RawMessageDelivery": "true"})
    attempted: set[int] = set()
    acked: set[int] = set()
    n = 0
    for _ in range(ROUNDS):
        timer = threading.Timer(rng.uniform(0.3, 0.8), broker.kill9)
        timer.start()
        try:
            with broker.client() as client:
                while True:
                    numbers = list(range(n, n + (1 if n % 3 == 0 else 10)))
                    n += len(numbers)
                    attempted.update(numbers)
                    attributes = [{"parity": MessageAttributeValue("String", parity(i))} for i in numbers]
                    if len(numbers) == 1:
                        client.publish("fan", f"p{numbers[0]}", message_attributes=attributes[0])
                    else:
                        result = client.publish_batch(
                            "fan", [PublishEntry(str(i), f"p{i}", message_attributes=a) for i, a in zip(numbers, attributes)]
                        )
                        assert not result.failed
                    acked.update(numbers)
        except (ConnectionError, OSError):
            pass
        timer.join()
        broker = ServeProcess(tmp_path / "data").start()

    found: dict[str, list[int]] = {}
    with broker.client() as client:
        for queue in QUEUES:
            numbers = found[queue] = []
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < 1.0:
                messages = client.receive_message(queue, max_number_of_messages=10, visibility_timeout=600)
                for message in messages:
                    body = message.body if queue == "raw" else json.loads(message.body)["Message"]
                    numbers.append(int(body[1:]))
                if messages:
                    quiet_since = time.monotonic()
                else:
                    time.sleep(0.05)
    explained = subprocess.run(
        [sys.executable, "-m", "dovecote", "explain", "fan", "--message", "x", "--attribute", "parity=String:odd",
         "--port", str(broker.port)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    broker.terminate()

    assert len(acked) > 50, "the load did too little to test anything"
    for queue, numbers in found.items():
        assert len(numbers) == len(set(numbers)), f"{queue} holds a publish twice"
        expected = {i for i in acked if queue != "even" or i % 2 == 0}
        assert expected <= set(numbers), f"{queue} lost acknowledged publishes {sorted(expected - set(numbers))[:5]}"
        assert set(numbers) <= attempted, f"{queue} holds publishes nobody made"
    unacknowledged = attempted - acked
    for i in unacknowledged:  # cut off by a kill: in every matching queue, or in none
        holders = {queue for queue, numbers in found.items() if i in numbers}
        matching = {q for q in QUEUES if q != "even" or i % 2 == 0}
        assert holders in (set(), matching), f"publish {i} reached only {sorted(holders)}"
    assert explained.returncode == 0, explained.stderr
    verdicts = {v["Endpoint"]: v for v in json.loads(explained.stdout)["Subscriptions"]}  # the CLI prints AWS's names
    assert verdicts[ARN + "all-0"]["Delivered"] is True
    assert verdicts[ARN + "even"]["Delivered"] is False and "parity" in verdicts[ARN + "even"]["Reason"]
