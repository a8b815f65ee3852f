"""`--log-format json`: one JSON object a line, carrying the queue or topic a line is about."""

import json
import logging

import trio

from dovecote.actors.config import BrokerConfig
from dovecote.actors.ops import CreateQueue, Failure, GetQueueAttributes
from dovecote.actors.queue_core import QueueCore
from dovecote.logs import JsonFormatter

from .conftest import running_broker


def test_a_json_line_has_time_level_logger_message_and_what_it_is_about():
    record = logging.LogRecord("dovecote.queue", logging.WARNING, __file__, 1, "queue %s: %d\nlines", ("q", 2), None)
    record.created = 1_700_000_000.123456
    record.queue = "q"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.123Z", "level": "warning", "logger": "dovecote.queue", "message": "queue q: 2\nlines",
        "queue": "q",
    }
    try:
        raise ValueError("boom")
    except ValueError as error:
        failed = logging.LogRecord("dovecote", logging.ERROR, __file__, 1, "failed", (), (ValueError, error, error.__traceback__))
    entry = json.loads(JsonFormatter().format(failed))
    assert "queue" not in entry and entry["exception"].startswith("Traceback") and "ValueError: boom" in entry["exception"]


async def test_a_failing_queue_is_logged_with_its_name(autojump_clock, monkeypatch, caplog):
    async with running_broker(config=BrokerConfig(restart_backoff_s=(0.0, 1.0), max_restarts=2)) as h:
        await h.ok(CreateQueue("sick"))

        def crash(self, names, now):
            raise RuntimeError("a bug")

        monkeypatch.setattr(QueueCore, "get_attributes", crash)
        for _ in range(2):
            assert isinstance(await h.call(GetQueueAttributes("sick", ["All"])), Failure)
            await trio.sleep(2)
    entries = [json.loads(JsonFormatter().format(record)) for record in caplog.records if record.name == "dovecote.supervisor"]
    assert [entry["queue"] for entry in entries] == ["sick", "sick", "sick"]
    assert "RuntimeError: a bug" in entries[0]["exception"] and entries[-1]["message"].startswith("queue sick stopped")
