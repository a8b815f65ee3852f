"""How each log record changes the state tables: a pure function, no I/O.

Besides the log, the store keeps tables of live state (queues, messages, deliveries) updated in the
same transaction as the log append. They are a checkpoint that is always current, so recovery reads
live state only and never replays history: start-up time grows with live data, not with the log.
The log itself is then pure history, trimmed by the retention window alone.
"""

from __future__ import annotations

from typing import NamedTuple

from . import keys
from .framing import frame
from .records import (
    MessageDeleted,
    MessageReceived,
    MessageSent,
    QueueAttributesChanged,
    QueueCreated,
    QueueDeleted,
    QueuePurged,
    Record,
    VisibilityChanged,
)

LOG = "log"
QUEUES = "queues"
MESSAGES = "messages"
DELIVERIES = "deliveries"
META = "meta"
TABLES = (LOG, QUEUES, MESSAGES, DELIVERIES, META)

NEXT_QUEUE_ID = b"next_queue_id"


class Put(NamedTuple):
    table: str
    key: bytes
    value: bytes


class Delete(NamedTuple):
    table: str
    key: bytes


class DeleteRange(NamedTuple):
    table: str
    first_key: bytes
    last_key: bytes  # inclusive


Change = Put | Delete | DeleteRange


def table_changes(record: Record, framed: bytes) -> list[Change]:
    """The state-table changes for one record; `framed` is the record as stored in the log, which
    is also what the state tables hold."""
    match record:
        case MessageSent(queue_id=q, seq=seq):
            return [Put(MESSAGES, keys.message_key(q, seq), framed)]
        case MessageReceived(queue_id=q, seq=seq) | VisibilityChanged(queue_id=q, seq=seq):
            return [Put(DELIVERIES, keys.message_key(q, seq), framed)]
        case MessageDeleted(queue_id=q, seq=seq):
            key = keys.message_key(q, seq)
            return [Delete(MESSAGES, key), Delete(DELIVERIES, key)]
        case QueueCreated(queue_id=q):
            return [
                Put(QUEUES, keys.queue_key(q), framed),
                Put(META, NEXT_QUEUE_ID, frame(keys.queue_key(q + 1))),
            ]
        case QueueAttributesChanged(queue_id=q):
            return [Put(QUEUES, keys.queue_key(q), framed)]
        case QueuePurged(queue_id=q, through_seq=through):
            first, last = keys.queue_message_range(q, through)
            return [DeleteRange(MESSAGES, first, last), DeleteRange(DELIVERIES, first, last)]
        case QueueDeleted(queue_id=q):
            first, last = keys.queue_message_range(q)
            return [
                Delete(QUEUES, keys.queue_key(q)),
                DeleteRange(MESSAGES, first, last),
                DeleteRange(DELIVERIES, first, last),
            ]
    raise TypeError(f"no table changes defined for {type(record).__name__}")
