"""Log output of `dovecote serve`: lines for people, or one JSON object a line for log collectors.

A JSON line has `time` (ISO 8601, UTC, milliseconds), `level`, `logger` and `message`, then
`queue`, `topic`, `subscription` and `request_id` where the log call gives them
(`log.warning(..., extra={"queue": name})`), `door`, `reason` or `action`, `key_id` and `peer` on
the audit's lines (net/audit.py), and `exception` with the traceback where there is one.
"""

from __future__ import annotations

import datetime
import json
import logging

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("queue", "topic", "subscription", "request_id", "door", "reason", "action", "key_id", "peer")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        time = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry = {
            "time": time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def configure(level: str, log_format: str) -> None:
    """Log to standard error at `level` and up, in `log_format` ("text" or "json"); warnings too."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx says INFO for every request it makes (the shovels' and pushes'): the broker's own lines say what matters.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
