"""Reading the log back, for `dovecote log`, `replay` and `rewind`: filtering and describing records,
and a queue's state at a past instant. Pure, apart from paging through a store.

Every record names its queue, message and wall-clock time, so "what happened to message X" is a
filter over the log, in LSN order.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import msgspec

from dovecote.net.plain_data import plain
from dovecote.storage.records import (
    AnyRecord,
    DeliveryState,
    MessageDeleted,
    MessageSent,
    Published,
    PushAttempted,
    PushDone,
    PushQueued,
    QueueCreated,
    QueueDeleted,
    QueuePurged,
    SubscriptionChanged,
)
from dovecote.storage.store import Store


class LogFilter(msgspec.Struct, frozen=True):
    """Empty sets match everything; times are wall-clock milliseconds, since inclusive. Queues and
    topics together name the records to show (a record of any of them)."""

    queues: frozenset[str] = frozenset()
    message_ids: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    topics: frozenset[str] = frozenset()
    subscriptions: frozenset[str] = frozenset()  # subscription ARNs: their records, and publishes delivered to them
    # (topic id, subscription id) of those subscriptions, which push records name them by
    subscription_ids: frozenset[tuple[int, int]] = frozenset()

    def matches(self, record: AnyRecord) -> bool:
        if self.kinds and type(record).__name__ not in self.kinds:
            return False
        if (self.queues or self.topics) and not (
            getattr(record, "queue", None) in self.queues or getattr(record, "topic", None) in self.topics
        ):
            return False
        if self.subscriptions and not (
            getattr(record, "subscription_arn", None) in self.subscriptions
            or (isinstance(record, Published) and not self.subscriptions.isdisjoint(record.delivered_to))
            or (isinstance(record, (PushQueued, PushAttempted, PushDone)) and (record.topic_id, record.subscription_id) in self.subscription_ids)
        ):
            return False
        if self.message_ids and getattr(record, "message_id", None) not in self.message_ids:
            return False
        if self.since_ms is not None and record.at_ms < self.since_ms:
            return False
        return self.until_ms is None or record.at_ms < self.until_ms


def iter_log(store: Store, log_filter: LogFilter, after_lsn: int = 0, page: int = 10_000) -> Iterator[tuple[int, AnyRecord]]:
    """Matching records after after_lsn, in order, read a page at a time (no transaction is held
    between pages)."""
    if log_filter.subscriptions:  # the ids of subscriptions that exist now; the log names older ones
        current = {(s.topic_id, s.subscription_id) for s in store.load_subscriptions() if s.subscription_arn in log_filter.subscriptions}
        log_filter = msgspec.structs.replace(log_filter, subscription_ids=log_filter.subscription_ids | current)
    while True:
        records = store.read_log(after_lsn, limit=page)
        for lsn, record in records:
            if isinstance(record, SubscriptionChanged) and record.subscription_arn in log_filter.subscriptions:
                ids = log_filter.subscription_ids | {(record.topic_id, record.subscription_id)}
                log_filter = msgspec.structs.replace(log_filter, subscription_ids=ids)
            if log_filter.matches(record):
                yield lsn, record
        if len(records) < page:
            return
        after_lsn = records[-1][0]


def format_time(at_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(at_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}Z"


def parse_time(text: str) -> int:
    """Wall-clock milliseconds from epoch milliseconds or an ISO 8601 time (UTC unless it says)."""
    if text.isdigit():
        return int(text)
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp() * 1000)


_SKIPPED_IN_LINES = {"at_ms", "queue", "queue_id", "topic", "topic_id", "body", "message", "attributes", "system_attributes"}


def describe(lsn: int, record: AnyRecord) -> str:
    """One human-readable line."""
    owner = f"topic={record.topic}" if hasattr(record, "topic") else f"queue={getattr(record, 'queue', getattr(record, 'owner', ''))}"
    fields = [f"{format_time(record.at_ms)}  lsn {lsn}  {type(record).__name__:<22} {owner}"]
    for name in record.__struct_fields__:
        if name not in _SKIPPED_IN_LINES:
            fields.append(f"{name}={getattr(record, name)}")
    for name in ("body", "message"):  # sizes, not contents
        if name in record.__struct_fields__:
            fields.append(f"{name}={len(getattr(record, name).encode())}B attributes={len(record.attributes)}")
    return " ".join(fields)


def to_json(lsn: int, record: AnyRecord) -> dict[str, Any]:
    document: dict[str, Any] = {"lsn": lsn, "kind": type(record).__name__, "time": format_time(record.at_ms)}
    document.update(plain(record))
    return document


class PastMessage(msgspec.Struct):
    seq: int
    message_id: str
    body: str
    sent_ms: int
    receive_count: int
    visible_at_ms: int
    state: str = ""  # visible, in_flight or delayed at the instant asked about


class PastQueue(msgspec.Struct):
    queue: str
    at_ms: int
    complete: bool  # False when the log no longer holds the queue's creation (history was trimmed)
    messages: list[PastMessage]


def queue_state_at(records: Iterator[tuple[int, AnyRecord]], queue: str, at_ms: int) -> PastQueue:
    """A queue as it stood at at_ms, folded from its log records (oldest first): the messages it
    held, each visible, in flight or delayed, with its receive count."""
    messages: dict[int, PastMessage] = {}
    complete = False
    for _, record in records:
        if record.at_ms > at_ms:
            break
        if getattr(record, "queue", None) != queue:
            continue
        match record:
            case QueueCreated():
                messages.clear()
                complete = True
            case QueueDeleted():
                messages.clear()
                complete = False
            case QueuePurged(through_seq=through):
                for seq in [seq for seq in messages if seq <= through]:
                    del messages[seq]
            case MessageSent():
                messages[record.seq] = PastMessage(
                    record.seq, record.message_id, record.body, record.at_ms, 0,
                    record.at_ms + record.delay_seconds * 1000,
                )
            case DeliveryState():
                if record.seq in messages:
                    messages[record.seq].receive_count = record.receive_count
                    messages[record.seq].visible_at_ms = record.visible_at_ms
            case MessageDeleted():
                messages.pop(record.seq, None)
    for message in messages.values():
        if message.visible_at_ms <= at_ms:
            message.state = "visible"
        else:
            message.state = "in_flight" if message.receive_count else "delayed"
    return PastQueue(queue, at_ms, complete, sorted(messages.values(), key=lambda m: m.seq))
