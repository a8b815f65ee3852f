"""Topic history against a real broker: `dovecote log --topic/--subscription`, `dovecote replay
--topic`, and an archive replay that a kill -9 interrupts and that resumes without loss or repeat."""

import json
import subprocess
import sys
import time

from dovecote.net.client import DeleteEntry, PublishEntry

from .serve import ServeProcess

QUEUE = "arn:aws:sqs:us-east-1:000000000000:"


def run(*args):
    return subprocess.run([sys.executable, "-m", "dovecote", *args], capture_output=True, text=True, timeout=120, check=False)


def drain(client, queue):
    bodies = []
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 1.0:
        messages = client.receive_message(queue, max_number_of_messages=10)
        if messages:
            quiet_since = time.monotonic()
            bodies.extend(m.body for m in messages)
            client.delete_message_batch(queue, [DeleteEntry(str(i), m.receipt_handle) for i, m in enumerate(messages)])
        else:
            time.sleep(0.05)
    return bodies


def publish(client, topic, first, count):
    for start in range(first, first + count, 10):
        entries = [
            PublishEntry(str(i), f"m{i}", message_group_id="g", message_deduplication_id=f"d{i}")
            for i in range(start, min(start + 10, first + count))
        ]
        assert not client.publish_batch(topic, entries).failed


def test_topic_log_filters_and_replay_into_a_queue(tmp_path):
    data = tmp_path / "data"
    broker = ServeProcess(data).start()
    try:
        with broker.client() as client:
            client.create_topic("t.fifo", {"FifoTopic": "true"})
            client.create_queue("a.fifo", {"FifoQueue": "true"})
            client.create_queue("scratch")
            arn = client.subscribe("t.fifo", "sqs", QUEUE + "a.fifo", {"RawMessageDelivery": "true"})
            publish(client, "t.fifo", 0, 30)
        published = run("log", "--data-dir", str(data), "--topic", "t.fifo", "--kind", "Published", "--json")
        records = [json.loads(line) for line in published.stdout.splitlines()]
        assert [r["message"] for r in records] == [f"m{i}" for i in range(30)]
        assert all(r["delivered_to"] == [arn] for r in records)
        by_subscription = run("log", "--data-dir", str(data), "--subscription", arn)
        lines = by_subscription.stdout.splitlines()
        assert len(lines) == 31 and "SubscriptionChanged" in lines[0] and "topic=t.fifo" in lines[0]
        replayed = run("replay", "--data-dir", str(data), "--topic", "t.fifo", "--into", "scratch", "--port", str(broker.port))
        assert replayed.returncode == 0, replayed.stderr
        with broker.client() as client:  # complete; several batches are sent at once, so not in order
            assert sorted(drain(client, "scratch"), key=lambda body: int(body[1:])) == [f"m{i}" for i in range(30)]
    finally:
        broker.terminate()


def test_an_archive_replay_cut_by_kill_9_resumes_without_loss_or_repeat(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    with broker.client() as client:
        client.create_topic("t.fifo", {"FifoTopic": "true", "ArchivePolicy": json.dumps({"MessageRetentionPeriod": "1"})})
        client.create_queue("late.fifo", {"FifoQueue": "true"})
        publish(client, "t.fifo", 0, 3000)
        arn = client.subscribe(
            "t.fifo", "sqs", QUEUE + "late.fifo",
            {"RawMessageDelivery": "true", "ReplayPolicy": json.dumps({"PointType": "Timestamp", "StartingPoint": 0})},
        )
    broker.kill9()  # the replay has just begun
    broker = ServeProcess(tmp_path / "data").start()
    try:
        with broker.client() as client:
            deadline = time.monotonic() + 60
            while client.get_subscription_attributes(arn)["ReplayStatus"] != "Completed":
                assert time.monotonic() < deadline, "the replay did not finish"
                time.sleep(0.1)
            assert drain(client, "late.fifo") == [f"m{i}" for i in range(3000)]  # complete, once, in order
    finally:
        broker.terminate()
    stats = json.loads(run("log", "stats", "--data-dir", str(tmp_path / "data")).stdout)
    assert stats["archived_publishes"] == {"t.fifo": 3000}
