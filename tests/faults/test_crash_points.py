"""Kill -9 at each named commit boundary of a real broker (storage/crash_points.py), restart, and
check against a ledger: what was acknowledged is there exactly as acknowledged (once, FIFO order
and deduplication kept), what was cut off is wholly there or wholly absent, and the log tools
(`dovecote check`, `dovecote log`) agree with what the broker serves.

The suite runs each point once; the long tier (scripts/fault-matrix) runs each over
$DOVECOTE_CRASH_CYCLES cycles (default 20), at a different arrival each cycle.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dovecote.net.client import BlockingClient, DeleteEntry, PublishEntry, SendEntry
from dovecote.storage.crash_points import ENVIRONMENT_VARIABLE

from ..push_endpoint import ThreadedEndpoint
from .serve import ServeProcess, strace_can_run
from .test_topic_history import publish

ARN = "arn:aws:sqs:us-east-1:000000000000:"
MAX_REQUESTS = 3000  # a bound on every load loop: the armed point is reached long before
STRACE = shutil.which("strace")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dovecote", *args], capture_output=True, text=True, timeout=120, check=False)


def armed(data_dir: Path, point: str, nth: int, *extra_args: str) -> ServeProcess:
    """A broker that SIGKILLs itself the nth time it reaches `point`. "before-fsync" is inside
    LMDB's commit: strace injects the SIGKILL into the nth fdatasync of a thread instead."""
    if point == "before-fsync":
        strace = (STRACE, "-f", "-qq", "-o", os.devnull, "-e", "trace=fdatasync", "-e", f"inject=fdatasync:signal=KILL:when={nth}")
        return ServeProcess(data_dir, *extra_args, program=(*strace, sys.executable, "-m", "dovecote"))
    return ServeProcess(data_dir, *extra_args, env={**os.environ, ENVIRONMENT_VARIABLE: f"{point}:{nth}"})


def until_killed(broker: ServeProcess, work: Callable[[BlockingClient], None]) -> None:
    """Run the load until the broker dies; it must die by the armed point's SIGKILL."""
    try:
        with broker.client() as client:
            work(client)
    except (ConnectionError, OSError):
        pass
    assert broker.process is not None
    assert broker.process.wait(timeout=30) == -signal.SIGKILL, "the broker outlived its load: the crash point was never reached"


def bodies_in(client: BlockingClient, queue: str) -> list[str]:
    """Every message of a queue, in the order received, each deleted once received (so a FIFO
    group's next message comes)."""
    bodies: list[str] = []
    empty_receives = 0
    while empty_receives < 3:
        messages = client.receive_message(queue, max_number_of_messages=10, visibility_timeout=600)
        if not messages:
            empty_receives += 1
            time.sleep(0.05)
            continue
        empty_receives = 0
        bodies.extend(m.body for m in messages)
        client.delete_message_batch(queue, [DeleteEntry(str(i), m.receipt_handle) for i, m in enumerate(messages)])
    return bodies


def logged_bodies(data_dir: Path, queue: str) -> list[str]:
    """The bodies `dovecote log` shows sent to a queue (the broker stopped), after `dovecote check`
    found every stored checksum right."""
    checked = run("check", "--data-dir", str(data_dir))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    logged = run("log", "--data-dir", str(data_dir), "--queue", queue, "--kind", "MessageSent", "--json")
    assert logged.returncode == 0, logged.stderr
    return [json.loads(line)["body"] for line in logged.stdout.splitlines()]


def check_once_and_whole(found: list[str], acked: set[str], attempted: set[str], in_flight: set[str], where: str) -> bool:
    """Acknowledged: there once. Nothing nobody sent. The request cut off: all of it or none.
    Returns whether the cut-off request is there."""
    assert len(found) == len(set(found)), f"{where}: a message is there twice"
    assert acked <= set(found), f"{where}: acknowledged messages lost: {sorted(acked - set(found))[:5]}"
    assert set(found) <= attempted, f"{where}: messages nobody sent: {sorted(set(found) - attempted)[:5]}"
    cut_off = in_flight & set(found)
    assert cut_off in (set(), in_flight), f"{where}: only part of a request cut off by the kill: {sorted(cut_off)}"
    return bool(cut_off)


# --- the commit boundaries: before the write, after it before the fsync, after the fsync before the reply


def commit_boundary(data_dir: Path, point: str, nth: int) -> None:
    broker = armed(data_dir, point, nth).start()
    attempted: dict[str, set[str]] = {"plain": set(), "orders.fifo": set()}
    acked: dict[str, set[str]] = {"plain": set(), "orders.fifo": set()}
    last: dict[str, set[str]] = {"plain": set(), "orders.fifo": set()}
    in_flight: list[str] = []  # the queue whose request the kill cut off
    acked_fifo_batches: list[list[SendEntry]] = []

    def load(client: BlockingClient) -> None:
        client.create_queue("plain")
        client.create_queue("orders.fifo", {"FifoQueue": "true"})
        for n in range(MAX_REQUESTS):
            queue = "plain" if n % 2 == 0 else "orders.fifo"
            bodies = [f"{n}-{i}" for i in range(10)]
            if queue == "plain":
                entries = [SendEntry(str(i), body) for i, body in enumerate(bodies)]
            else:  # two groups, each in the order of its numbers; every body its own deduplication id
                entries = [SendEntry(str(i), body, message_group_id=str(i % 2), message_deduplication_id=body) for i, body in enumerate(bodies)]
            in_flight[:] = [queue]
            last[queue] = set(bodies)
            attempted[queue].update(bodies)
            assert not client.send_message_batch(queue, entries).failed
            acked[queue].update(bodies)
            if queue == "orders.fifo":
                acked_fifo_batches.append(entries)
            in_flight.clear()

    until_killed(broker, load)
    assert in_flight, "the kill came between requests, not during one"
    broker = ServeProcess(data_dir).start()
    try:
        with broker.client() as client:
            # Deduplication survives the crash: the last acknowledged FIFO batch, sent again, is dropped.
            if acked_fifo_batches:
                assert not client.send_message_batch("orders.fifo", acked_fifo_batches[-1]).failed
            found = {queue: bodies_in(client, queue) for queue in attempted}
    finally:
        assert broker.terminate() == 0
    assert len(acked["plain"]) >= 50, "the load did too little to test anything"
    for queue, bodies in found.items():
        cut_off_here = in_flight[0] == queue
        there = check_once_and_whole(bodies, acked[queue], attempted[queue], last[queue] if cut_off_here else set(), queue)
        if cut_off_here and point in ("before-write", "before-fsync"):  # LMDB writes its meta page after the fsync
            assert not there, f"{point}: a request killed before its commit was stored"
        if cut_off_here and point == "before-reply":
            assert there, "before-reply: a request killed after its commit was not stored"
        assert sorted(logged_bodies(data_dir, queue)) == sorted(bodies), f"{queue}: `dovecote log` disagrees with the broker"
    for group in ("0", "1"):  # FIFO: each group in the order sent
        numbers = [tuple(map(int, body.split("-"))) for body in found["orders.fifo"] if int(body.split("-")[1]) % 2 == int(group)]
        assert numbers == sorted(numbers), f"group {group} out of order"


# --- mid fan-out: a publish committed to every queue, handed to some of their actors only

FAN_QUEUES = ("fan-0", "fan-1", "fan-2")


def mid_fan_out(data_dir: Path, nth: int) -> None:
    broker = armed(data_dir, "fan-out", nth).start()
    attempted: set[str] = set()
    acked: set[str] = set()
    last: set[str] = set()

    def load(client: BlockingClient) -> None:
        nonlocal last
        client.create_topic("fan")
        for queue in FAN_QUEUES:
            client.create_queue(queue)
            client.subscribe("fan", "sqs", ARN + queue, {"RawMessageDelivery": "true"})
        for n in range(MAX_REQUESTS):
            last = {f"p{n}-{i}" for i in range(10)}
            attempted.update(last)
            assert not client.publish_batch("fan", [PublishEntry(str(i), f"p{n}-{i}") for i in range(10)]).failed
            acked.update(last)

    until_killed(broker, load)
    broker = ServeProcess(data_dir).start()
    try:
        with broker.client() as client:
            found = {queue: bodies_in(client, queue) for queue in FAN_QUEUES}
    finally:
        assert broker.terminate() == 0
    for queue, bodies in found.items():
        check_once_and_whole(bodies, acked, attempted, last, queue)
        assert sorted(logged_bodies(data_dir, queue)) == sorted(bodies), f"{queue}: `dovecote log` disagrees with the broker"
    # The kill came after a publish's one commit, mid fan-out: that publish is in every queue, not
    # only those told. It is the last one sent, or (its answer written to the socket before the kill,
    # in the same step) the one acknowledged before it, and the last never reached the broker.
    holding_last = {queue for queue, bodies in found.items() if last <= set(bodies)}
    assert holding_last in (set(), set(FAN_QUEUES)), f"the publish cut off is in {sorted(holding_last)} only"


# --- mid dead-letter move, and mid move task: the target queue committed, the source not yet told


def mid_move(data_dir: Path, nth: int) -> None:
    broker = armed(data_dir, "moved", nth).start()
    acked: set[str] = set()

    def dead_letter(client: BlockingClient) -> None:
        client.create_queue("dead")
        client.create_queue("work", {"RedrivePolicy": json.dumps({"deadLetterTargetArn": ARN + "dead", "maxReceiveCount": 1})})
        for n in range(30):
            bodies = [f"w{n}-{i}" for i in range(10)]
            assert not client.send_message_batch("work", [SendEntry(str(i), b) for i, b in enumerate(bodies)]).failed
            acked.update(bodies)
        for _ in range(MAX_REQUESTS):  # visible again at once: the second receive moves each one
            client.receive_message("work", max_number_of_messages=10, visibility_timeout=0)

    until_killed(broker, dead_letter)
    broker = ServeProcess(data_dir).start()
    try:
        with broker.client() as client:
            work, dead = bodies_in(client, "work"), bodies_in(client, "dead")
            assert dead, "nothing was dead-lettered"
            assert not set(work) & set(dead), f"in both queues: {sorted(set(work) & set(dead))[:5]}"
            check_once_and_whole(work + dead, acked, acked, set(), "work and dead")
            # Back into the dead-letter queue, then a move task out of it, killed in the middle.
            for n in range(0, len(acked), 10):
                chunk = sorted(acked)[n : n + 10]
                assert not client.send_message_batch("dead", [SendEntry(str(i), b) for i, b in enumerate(chunk)]).failed
    finally:
        assert broker.terminate() == 0
    broker = armed(data_dir, "moved", 2).start()

    def move_task(client: BlockingClient) -> None:
        client.start_message_move_task("dead", ARN + "work")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.05)
            client.list_message_move_tasks("dead")

    until_killed(broker, move_task)
    broker = ServeProcess(data_dir).start()
    try:
        with broker.client() as client:
            work, dead = bodies_in(client, "work"), bodies_in(client, "dead")
    finally:
        assert broker.terminate() == 0
    assert work, "the move task moved nothing before the kill"
    assert not set(work) & set(dead), f"in both queues after the move task: {sorted(set(work) & set(dead))[:5]}"
    check_once_and_whole(work + dead, acked, acked, set(), "work and dead after the move task")
    checked = run("check", "--data-dir", str(data_dir))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- mid push outcome: the endpoint took the push, its outcome is not stored


def mid_push_outcome(data_dir: Path, nth: int) -> None:
    with ThreadedEndpoint().running() as endpoint:

        def notifications() -> list[str]:
            return [r.json()["Message"] for r in endpoint.received() if r.headers.get("x-amz-sns-message-type") == "Notification"]

        broker = armed(data_dir, "push-sent", nth).start()
        attempted: set[str] = set()
        published: set[str] = set()

        def load(client: BlockingClient) -> None:
            client.create_topic("jobs")
            client.subscribe("jobs", "http", endpoint.url)
            deadline = time.monotonic() + 30
            while not endpoint.received():
                assert time.monotonic() < deadline, "no confirmation request came"
                time.sleep(0.02)
            client.confirm_subscription("jobs", endpoint.received()[0].json()["Token"])
            for n in range(MAX_REQUESTS):
                bodies = [f"j{n}-{i}" for i in range(10)]
                attempted.update(bodies)
                assert not client.publish_batch("jobs", [PublishEntry(str(i), b) for i, b in enumerate(bodies)]).failed
                published.update(bodies)
                time.sleep(0.01)

        until_killed(broker, load)
        sent_before = len(notifications())
        broker = ServeProcess(data_dir).start()
        try:
            deadline = time.monotonic() + 60
            while not published <= set(notifications()):
                assert time.monotonic() < deadline, f"pushes lost: {sorted(published - set(notifications()))[:5]}"
                time.sleep(0.05)
            # `dovecote log stats` (beside the running broker) shows them delivered once stored
            while json.loads(run("log", "stats", "--data-dir", str(data_dir)).stdout)["push_outcomes"].get("delivered", 0) < len(published):
                assert time.monotonic() < deadline, "the deliveries were not stored"
                time.sleep(0.1)
        finally:
            assert broker.terminate() == 0
        arrived = notifications()
    assert published, "nothing was published before the kill"
    assert set(arrived) <= attempted, f"pushes nobody published: {sorted(set(arrived) - attempted)[:5]}"
    again = set(arrived[:sent_before]) & set(arrived[sent_before:])
    assert again, "the push whose outcome the kill cut off was not sent again (at least once)"


# --- mid replay: an SNS archive replay, one batch of it stored with its progress


def mid_replay(data_dir: Path, nth: int) -> None:
    count = 1600  # more than three replay batches (REPLAY_BATCH_PUBLISHES)
    broker = armed(data_dir, "replayed", nth).start()

    def load(client: BlockingClient) -> None:
        client.create_topic("t.fifo", {"FifoTopic": "true", "ArchivePolicy": json.dumps({"MessageRetentionPeriod": "1"})})
        client.create_queue("late.fifo", {"FifoQueue": "true"})
        publish(client, "t.fifo", 0, count)
        # The first batch may be stored in the subscription's own commit, before it is answered.
        arn = client.subscribe(
            "t.fifo", "sqs", ARN + "late.fifo",
            {"RawMessageDelivery": "true", "ReplayPolicy": json.dumps({"PointType": "Timestamp", "StartingPoint": 0})},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            client.get_subscription_attributes(arn)
            time.sleep(0.02)

    until_killed(broker, load)
    broker = ServeProcess(data_dir).start()
    try:
        with broker.client() as client:
            (subscription,) = client.list_subscriptions_by_topic("t.fifo").subscriptions
            deadline = time.monotonic() + 60
            while client.get_subscription_attributes(subscription.subscription_arn)["ReplayStatus"] != "Completed":
                assert time.monotonic() < deadline, "the replay did not finish"
                time.sleep(0.1)
            assert bodies_in(client, "late.fifo") == [f"m{i}" for i in range(count)]  # complete, once, in order
    finally:
        assert broker.terminate() == 0
    assert len(logged_bodies(data_dir, "late.fifo")) == count


STRACE_RUNS = strace_can_run()
needs_strace = pytest.mark.skipif(
    not STRACE_RUNS, reason="strace is not installed or cannot trace processes here: the fdatasync inside LMDB's commit cannot be interrupted"
)

# Each point with the arrival it is killed at in the suite, and the scenario that checks it.
POINTS: dict[str, tuple[int, Callable[[Path, int], None]]] = {
    "before-write": (40, lambda data_dir, nth: commit_boundary(data_dir, "before-write", nth)),
    "before-fsync": (25, lambda data_dir, nth: commit_boundary(data_dir, "before-fsync", nth)),
    "before-reply": (40, lambda data_dir, nth: commit_boundary(data_dir, "before-reply", nth)),
    "fan-out": (31, mid_fan_out),
    "moved": (3, mid_move),
    "push-sent": (5, mid_push_outcome),
    "replayed": (1, mid_replay),
}


@pytest.mark.parametrize(
    "point", [pytest.param(p, marks=needs_strace) if p == "before-fsync" else p for p in POINTS]
)
def test_kill_9_at_a_crash_point_loses_nothing_acknowledged(tmp_path, point):
    nth, scenario = POINTS[point]
    scenario(tmp_path / "data", nth)


@pytest.mark.long
def test_every_crash_point_over_many_cycles(tmp_path, capsys):
    cycles = int(os.environ.get("DOVECOTE_CRASH_CYCLES", "20"))
    rng = random.Random(17)
    for point, (nth, scenario) in POINTS.items():
        if point == "before-fsync" and not STRACE_RUNS:
            with capsys.disabled():
                print(f"\n{point}: skipped, strace is not installed or cannot trace here")
            continue
        for cycle in range(cycles):
            scenario(tmp_path / f"{point}-{cycle}", max(1, nth + rng.randint(-nth // 2, nth)))
            shutil.rmtree(tmp_path / f"{point}-{cycle}")
        with capsys.disabled():
            print(f"\n{point} × {cycles} cycles, nothing lost")
