"""The soak (long tier): a real broker under a steady mixed load for $DOVECOTE_SOAK_SECONDS (default
1800) — standard and FIFO sends, receives and deletes, publishes fanned out to two queues and pushed
to an HTTP endpoint — with its resident memory and open file descriptors sampled every few seconds.

Resident memory is two things: the process's own (RssAnon: the Python heap, buffers) and pages of
the LMDB data file it has mapped (RssFile), which grow with what is stored — the log keeps
`--history-hours` (24) of history, so under a steady load the file grows all day by design. A leak
is in the first. Flat means: the median of the last third of the samples of RssAnon is within
RSS_GROWTH_ALLOWED of the second third's (the first third is warm-up: caches, the map, thread pools
filling), and the open descriptors' median grows by at most FDS_GROWTH_ALLOWED. RssFile is reported. The load is paced, so it measures
leaks, not throughput, and leaves the machine's other work room.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dovecote.net.client import BlockingClient, DeleteEntry, PublishEntry, SendEntry

from ..push_endpoint import ThreadedEndpoint
from .serve import ServeProcess

SAMPLE_EVERY_S = 5.0
RSS_GROWTH_ALLOWED = 0.10  # the last third's median RSS at most 10% above the second third's
FDS_GROWTH_ALLOWED = 4  # descriptors: connections come and go, a leak keeps climbing
PACE_S = 0.02  # each load thread's pause between requests
MAX_BACKLOG = 2_000  # messages left queued at the end: more, and the soak measured a growing queue
ARN = "arn:aws:sqs:us-east-1:000000000000:"


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of /proc/PID/status, in KiB."""
    fields = (line.split() for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {f[0].rstrip(":"): int(f[1]) for f in fields if f and f[0] in ("VmRSS:", "RssAnon:", "RssFile:")}


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thirds_median(samples: list[int]) -> tuple[float, float]:
    third = len(samples) // 3
    return statistics.median(samples[third : 2 * third]), statistics.median(samples[2 * third :])


def test_flat_thirds_judge_growth():
    assert thirds_median([9, 9, 9, 10, 10, 10, 10, 11, 10]) == (10, 10)
    second, last = thirds_median([5, 5, 10, 11, 12, 13, 14, 15])
    assert (second, last) == (10.5, 13.5)  # a climb shows in the last third


@pytest.mark.long
def test_soak_mixed_load_keeps_memory_and_descriptors_flat(tmp_path, capsys):
    duration_s = float(os.environ.get("DOVECOTE_SOAK_SECONDS", "1800"))
    broker = ServeProcess(tmp_path / "data").start()
    assert broker.process is not None
    pid = broker.process.pid
    log_lines: list[str] = []  # the broker's stderr, read so that it never blocks on a full pipe
    reader = threading.Thread(target=lambda: log_lines.extend(broker.process.stderr), daemon=True)
    reader.start()
    stop = threading.Event()
    counts = {"sent": 0, "received": 0, "fifo": 0, "published": 0, "errors": 0}
    errors: list[str] = []

    with ThreadedEndpoint().running() as endpoint, broker.client() as setup:
        setup.create_queue("soak", {"VisibilityTimeout": "5"})
        setup.create_queue("soak.fifo", {"FifoQueue": "true", "ContentBasedDeduplication": "true"})
        setup.create_topic("soak-topic")
        for queue in ("fan-a", "fan-b"):
            setup.create_queue(queue)
            setup.subscribe("soak-topic", "sqs", ARN + queue, {"RawMessageDelivery": "true"})
        setup.subscribe("soak-topic", "http", endpoint.url)
        deadline = time.monotonic() + 30
        while not endpoint.received():
            assert time.monotonic() < deadline, "no confirmation request came"
            time.sleep(0.05)
        setup.confirm_subscription("soak-topic", endpoint.received()[0].json()["Token"])

        def loop(step: Callable[[BlockingClient, int], None]) -> None:
            n = 0
            while not stop.is_set():
                try:  # a fresh connection now and then, as real clients reconnect
                    with broker.client() as client:
                        for _ in range(500):
                            if stop.is_set():
                                return
                            step(client, n)
                            n += 1
                            time.sleep(PACE_S)
                except Exception as exc:  # noqa: BLE001 - counted and shown, the load goes on
                    counts["errors"] += 1
                    errors.append(repr(exc))
                    time.sleep(1)

        def send(client: BlockingClient, n: int) -> None:
            assert not client.send_message_batch("soak", [SendEntry(str(i), f"s{n}-{i}") for i in range(10)]).failed
            counts["sent"] += 10

        def receive(client: BlockingClient, n: int) -> None:
            # Each queue drained, so the consumers keep up: a backlog that grows would be memory
            # that grows by design (every queued message has its entry in its queue's index).
            for queue in ("soak", "fan-a", "fan-b"):
                while messages := client.receive_message(queue, max_number_of_messages=10):
                    client.delete_message_batch(queue, [DeleteEntry(str(i), m.receipt_handle) for i, m in enumerate(messages)])
                    counts["received"] += len(messages)

        def fifo(client: BlockingClient, n: int) -> None:
            client.send_message("soak.fifo", f"f{n}", message_group_id=str(n % 4))
            for message in client.receive_message("soak.fifo", max_number_of_messages=10):
                client.delete_message("soak.fifo", message.receipt_handle)
                counts["fifo"] += 1

        def publish(client: BlockingClient, n: int) -> None:
            if n % 5 == 0:  # fewer publishes: each is three deliveries and a push
                assert not client.publish_batch("soak-topic", [PublishEntry(str(i), f"p{n}-{i}") for i in range(5)]).failed
                counts["published"] += 5

        threads = [threading.Thread(target=loop, args=(step,)) for step in (send, receive, fifo, publish)]
        samples: list[tuple[float, dict[str, int], int]] = []
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            while time.monotonic() - started < duration_s:
                samples.append((time.monotonic() - started, memory_kib(pid), open_fds(pid)))
                assert broker.process.poll() is None, "the broker died"
                time.sleep(SAMPLE_EVERY_S)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        pushed = len(endpoint.received())
        with broker.client() as client:  # what the consumers left behind
            backlog = {
                queue: int(client.get_queue_attributes(queue, ["ApproximateNumberOfMessages"])["ApproximateNumberOfMessages"])
                for queue in ("soak", "fan-a", "fan-b", "soak.fifo")
            }
        assert broker.terminate() == 0

    rss = [s[1]["VmRSS"] for s in samples]
    anon = [s[1]["RssAnon"] for s in samples]
    mapped = [s[1]["RssFile"] for s in samples]
    fds = [s[2] for s in samples]
    anon_second, anon_last = thirds_median(anon)
    fds_second, fds_last = thirds_median(fds)
    with capsys.disabled():
        print(
            f"\nsoak {duration_s:.0f} s, {len(samples)} samples: {counts}, {pushed} pushes;"
            f" RSS start {rss[0] / 1024:.1f} MiB, end {rss[-1] / 1024:.1f} MiB, of which the process's own (RssAnon)"
            f" {anon[0] / 1024:.1f} -> {anon[-1] / 1024:.1f} MiB (medians: second third {anon_second / 1024:.1f},"
            f" last third {anon_last / 1024:.1f}) and mapped files (RssFile) {mapped[0] / 1024:.1f} -> {mapped[-1] / 1024:.1f} MiB;"
            f" data.mdb {(tmp_path / 'data' / 'lmdb' / 'data.mdb').stat().st_size / 2**20:.0f} MiB;"
            f" open files start {fds[0]}, end {fds[-1]} (medians {fds_second:.0f}, {fds_last:.0f});"
            f" {len(log_lines)} log lines; left queued {backlog}"
        )
    assert len(samples) >= 9, "too short to judge"
    assert counts["sent"] and counts["received"] and counts["fifo"] and counts["published"] and pushed
    assert counts["errors"] == 0, errors[:5]
    assert sum(backlog.values()) <= MAX_BACKLOG, f"the consumers fell behind, so memory grows with the queues: {backlog}"
    assert anon_last <= anon_second * (1 + RSS_GROWTH_ALLOWED), f"the process's own memory grows: {anon_second} KiB -> {anon_last} KiB"
    assert fds_last <= fds_second + FDS_GROWTH_ALLOWED, f"open files grow: {fds_second} -> {fds_last}"
