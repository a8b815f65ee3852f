"""Wall-clock steps against a real `dovecote serve`, through the clock seam (actors/clock.py:
$DOVECOTE_TEST_WALL_OFFSET_FILE moves the broker's wall clock; faketime is not needed). While it
runs, a step of years either way expires, hides and reveals nothing: visibility, delay and
retention run on the monotonic clock. While it is stopped, a clock set from 1970 to today, or
from today back to 1970, ages nothing wrongly."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .serve import ServeProcess
from .test_topic_history import QUEUE as ARN
from .test_topic_history import drain, publish

YEAR_MS = 365 * 24 * 3600 * 1000
IN_1970_MS = 5_000  # a device without a real-time clock, five seconds after it booted


def stepped_broker(data_dir: Path, offset_file: Path) -> ServeProcess:
    return ServeProcess(data_dir, env={**os.environ, "DOVECOTE_TEST_WALL_OFFSET_FILE": str(offset_file)})


def set_clock(offset_file: Path, wall_ms: int) -> None:
    """The broker's wall clock reads wall_ms now (and runs on from there)."""
    offset_file.write_text(str(wall_ms - time.time_ns() // 1_000_000))


def counts(client, queue: str) -> tuple[int, int, int]:
    attributes = client.get_queue_attributes(queue, ["All"])
    return tuple(
        int(attributes[name])
        for name in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")
    )


def sent_at(message) -> int:
    return int(message.attributes["SentTimestamp"])


def test_steps_of_years_while_running_expire_hide_and_reveal_nothing(tmp_path):
    offset = tmp_path / "offset"
    offset.write_text("0")
    broker = stepped_broker(tmp_path / "data", offset).start()
    try:
        with broker.client() as client:
            client.create_queue("q", {"VisibilityTimeout": "30", "MessageRetentionPeriod": "60"})
            client.send_message("q", "in flight")
            (taken,) = client.receive_message("q")
            client.send_message("q", "delayed", delay_seconds=30)
            client.send_message("q", "waiting")
            assert counts(client, "q") == (1, 1, 1)
            now_ms = time.time_ns() // 1_000_000
            set_clock(offset, now_ms + 10 * YEAR_MS)  # NTP jumps ten years ahead
            assert counts(client, "q") == (1, 1, 1), "a step forward expired or revealed messages"
            (waiting,) = client.receive_message("q", attribute_names=["SentTimestamp"], visibility_timeout=30)
            assert waiting.body == "waiting"
            set_clock(offset, now_ms - 10 * YEAR_MS)  # and then far back
            assert counts(client, "q") == (0, 2, 1), "a step back revealed or lost messages"
            client.send_message("q", "after the steps")
            (after,) = client.receive_message("q", attribute_names=["SentTimestamp"])
            # What is shown and stored follows the clock as it now reads.
            assert abs(sent_at(after) - (now_ms - 10 * YEAR_MS)) < 60_000
            assert taken.body == "in flight"
    finally:
        assert broker.terminate() == 0
    assert "wall clock stepped" in broker.process.stderr.read()


def test_a_clock_set_from_1970_to_today_while_stopped_ages_nothing(tmp_path):
    offset = tmp_path / "offset"
    set_clock(offset, IN_1970_MS)
    broker = stepped_broker(tmp_path / "data", offset).start()
    try:
        with broker.client() as client:
            client.create_queue("q", {"MessageRetentionPeriod": "60"})
            client.send_message("q", "taken")
            (taken,) = client.receive_message("q", visibility_timeout=30, attribute_names=["SentTimestamp"])
            assert sent_at(taken) < 60_000, "the broker does not run on the stepped clock"
            client.send_message("q", "kept")
    finally:
        assert broker.terminate() == 0
    offset.write_text("0")  # NTP set the clock while the broker was stopped: fifty-odd years on
    broker = stepped_broker(tmp_path / "data", offset).start()
    try:
        with broker.client() as client:
            # Neither past its 60 s retention, nor its 30 s of invisibility, by the clock's jump.
            assert counts(client, "q") == (1, 1, 0)
            assert [m.body for m in client.receive_message("q", max_number_of_messages=10)] == ["kept"]
    finally:
        assert broker.terminate() == 0


def test_a_clock_set_back_to_1970_while_stopped_hides_nothing_for_decades(tmp_path):
    offset = tmp_path / "offset"
    offset.write_text("0")
    broker = stepped_broker(tmp_path / "data", offset).start()
    try:
        with broker.client() as client:
            client.create_queue("q", {"MessageRetentionPeriod": "60"})
            client.send_message("q", "taken")
            client.receive_message("q", visibility_timeout=2)
            client.send_message("q", "kept")
    finally:
        assert broker.terminate() == 0
    set_clock(offset, IN_1970_MS)  # the device lost its clock while stopped
    broker = stepped_broker(tmp_path / "data", offset).start()
    try:
        with broker.client() as client:
            assert sorted(counts(client, "q")[:2]) in ([0, 2], [1, 1]), "a message expired when the clock went back"
            seen: list[str] = []
            deadline = time.monotonic() + 10
            while len(seen) < 2:  # the 2 s visibility timeout runs out, as it would have without the step
                assert time.monotonic() < deadline, f"hidden after the clock went back: only {seen} came"
                seen += [m.body for m in client.receive_message("q", max_number_of_messages=10, visibility_timeout=600)]
                time.sleep(0.1)
            assert sorted(seen) == ["kept", "taken"]
    finally:
        assert broker.terminate() == 0


def test_a_step_forward_while_running_keeps_deduplication_and_the_sns_archive(tmp_path):
    """The deduplication window (5 minutes) and a topic's archive (its MessageRetentionPeriod)
    run out by time that passed, not by a clock that jumped."""
    offset = tmp_path / "offset"
    offset.write_text("0")
    broker = stepped_broker(tmp_path / "data", offset).start()
    try:
        with broker.client() as client:
            client.create_queue("q.fifo", {"FifoQueue": "true"})
            client.send_message("q.fifo", "once", message_group_id="g", message_deduplication_id="d")
            client.create_topic("t.fifo", {"FifoTopic": "true", "ArchivePolicy": json.dumps({"MessageRetentionPeriod": "1"})})
            client.create_queue("late.fifo", {"FifoQueue": "true"})
            publish(client, "t.fifo", 0, 10)
            set_clock(offset, time.time_ns() // 1_000_000 + 10 * YEAR_MS)
            time.sleep(2.5)  # the writer trims history and archives every second
            client.send_message("q.fifo", "once", message_group_id="g", message_deduplication_id="d")
            assert counts(client, "q.fifo")[0] == 1, "a step forward ended the deduplication window"
            arn = client.subscribe(
                "t.fifo", "sqs", ARN + "late.fifo",
                {"RawMessageDelivery": "true", "ReplayPolicy": json.dumps({"PointType": "Timestamp", "StartingPoint": 0})},
            )
            deadline = time.monotonic() + 20
            while client.get_subscription_attributes(arn)["ReplayStatus"] != "Completed":
                assert time.monotonic() < deadline, "the replay did not finish"
                time.sleep(0.1)
            assert drain(client, "late.fifo") == [f"m{i}" for i in range(10)], "a step forward emptied the archive"
    finally:
        assert broker.terminate() == 0


def test_an_archive_written_in_1970_survives_the_clock_being_set_while_stopped(tmp_path):
    """Publishes archived for a day, on a clock that read 1970, are still there to replay after a
    restart on a clock set to today (their age is unknown: it counts from the restart)."""
    offset = tmp_path / "offset"
    set_clock(offset, IN_1970_MS)
    broker = stepped_broker(tmp_path / "data", offset).start()
    try:
        with broker.client() as client:
            client.create_topic("t.fifo", {"FifoTopic": "true", "ArchivePolicy": json.dumps({"MessageRetentionPeriod": "1"})})
            client.create_queue("late.fifo", {"FifoQueue": "true"})
            publish(client, "t.fifo", 0, 10)
    finally:
        assert broker.terminate() == 0
    offset.write_text("0")
    broker = stepped_broker(tmp_path / "data", offset).start()
    try:
        time.sleep(2.5)  # the writer trims history and archives every second
        with broker.client() as client:
            arn = client.subscribe(
                "t.fifo", "sqs", ARN + "late.fifo",
                {"RawMessageDelivery": "true", "ReplayPolicy": json.dumps({"PointType": "Timestamp", "StartingPoint": 0})},
            )
            deadline = time.monotonic() + 20
            while client.get_subscription_attributes(arn)["ReplayStatus"] != "Completed":
                assert time.monotonic() < deadline, "the replay did not finish"
                time.sleep(0.1)
            assert drain(client, "late.fifo") == [f"m{i}" for i in range(10)], "the clock being set emptied the archive"
    finally:
        assert broker.terminate() == 0
