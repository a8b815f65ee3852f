"""Reading the log back, for `dovecote log`, `replay` and `rewind`: filtering and describing records,
and a queue's state at a past instant. Pure, apart from paging through a store.

Every record names its queue, message and wall-clock time, so "what happened to message X" is a
filter over the log, in LSN order.

Encrypted records (storage/sse.py) are opened with the master key file when one is given
(`Revealer`); without it their bodies and attributes read `<encrypted>`, and replaying them is
refused.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from dovecote.net.plain_data import plain
from dovecote.storage.records import (
    AnyRecord,
    FunctionCodeStored,
    Sealed,
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
from dovecote.storage.store import Damage, StorageDamaged, Store
from dovecote.storage.sse import KEY_FILE_NAME, KeyFile, SealBroken, Sealer
from dovecote.storage import keys as store_keys
from dovecote.storage.tables import LOG

ENCRYPTED = "<encrypted>"  # what an encrypted body or message reads as without the master key file


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
        if self.message_ids and not (
            getattr(record, "message_id", None) in self.message_ids
            # the function that got it: its queued event and its invocation
            or not self.message_ids.isdisjoint(getattr(record, "message_ids", ()))
        ):
            return False
        if self.since_ms is not None and record.at_ms < self.since_ms:
            return False
        return self.until_ms is None or record.at_ms < self.until_ms


class Revealer:
    """Opens the log's encrypted records for reading, with the master key file if there is one.

    An opened record keeps its `sealed` with the ciphertext left out, so it still says which data
    key it was encrypted with; one that cannot be opened (no key file) keeps its ciphertext, and its
    body, message and subject read ENCRYPTED, its attributes nothing. A ciphertext that does not
    open with the keys it names is damage (StorageDamaged). Raises KeyUnavailable when the key file
    cannot unwrap the store's data keys."""

    def __init__(self, store: Store, key_file: str | os.PathLike[str] | None) -> None:
        self._store = store
        self._sealer = Sealer(KeyFile(key_file, create=False) if key_file is not None else None)
        self._sealer.load([], store.load_data_keys())

    @property
    def opens(self) -> bool:
        return self._sealer.has_key_file

    def __call__(self, lsn: int, record: AnyRecord) -> AnyRecord:
        sealed: Sealed | None = getattr(record, "sealed", None)
        if sealed is None:
            return record
        if not self._sealer.has_key_file:
            return _closed(record)
        if not self._sealer.holds(sealed.key_id):
            self._sealer.refresh(self._store.load_data_keys())  # a key made since this reader started
        try:
            opened = self._sealer.open(record)
        except SealBroken as error:
            key = store_keys.lsn_key(lsn)
            raise StorageDamaged([Damage(LOG, key, key, 1)], str(error)) from None
        return msgspec.structs.replace(opened, sealed=Sealed(sealed.key_id, sealed.nonce, b""))


def _closed(record: AnyRecord) -> AnyRecord:
    if isinstance(record, MessageSent):
        return msgspec.structs.replace(record, body=ENCRYPTED)
    if isinstance(record, Published):
        return msgspec.structs.replace(record, message=ENCRYPTED, subject=ENCRYPTED)
    return msgspec.structs.replace(record, body=ENCRYPTED, subject=ENCRYPTED)


def is_encrypted(record: AnyRecord) -> bool:
    """Stored encrypted (opened or not)."""
    return getattr(record, "sealed", None) is not None


def is_closed(record: AnyRecord) -> bool:
    """Stored encrypted and not opened: its content reads ENCRYPTED."""
    sealed = getattr(record, "sealed", None)
    return sealed is not None and bool(sealed.ciphertext)


def default_key_file(data_dir: str | os.PathLike[str], given: str | None) -> Path | None:
    """The master key file for reading the log: the one given (--sse-master-key-file, else
    $DOVECOTE_SSE_MASTER_KEY_FILE), else the data directory's if it has one."""
    given = given or os.environ.get("DOVECOTE_SSE_MASTER_KEY_FILE") or None
    if given:
        return Path(given)
    path = Path(data_dir) / KEY_FILE_NAME
    return path if path.exists() else None


def iter_log(
    store: Store, log_filter: LogFilter, after_lsn: int = 0, page: int = 10_000,
    reveal: Callable[[int, AnyRecord], AnyRecord] | None = None,
) -> Iterator[tuple[int, AnyRecord]]:
    """Matching records after after_lsn, in order, read a page at a time (no transaction is held
    between pages); encrypted ones as `reveal` shows them (None: as stored)."""
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
                yield lsn, (record if reveal is None else reveal(lsn, record))
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


_SKIPPED_IN_LINES = {
    "at_ms", "queue", "queue_id", "topic", "topic_id", "body", "message", "attributes", "system_attributes", "sealed", "wrapped", "alias",
    "zip", "payload", "name",
}


def describe(lsn: int, record: AnyRecord) -> str:
    """One human-readable line."""
    if hasattr(record, "topic"):
        owner = f"topic={record.topic}"
    elif hasattr(record, "alias"):  # a data key's record
        owner = f"alias={record.alias}"
    elif type(record).__name__.startswith("Function"):
        owner = f"function={record.name}"  # type: ignore[attr-defined]
    else:
        owner = f"queue={getattr(record, 'queue', getattr(record, 'owner', ''))}"
    fields = [f"{format_time(record.at_ms)}  lsn {lsn}  {type(record).__name__:<22} {owner}"]
    for name in record.__struct_fields__:
        if name not in _SKIPPED_IN_LINES:
            fields.append(f"{name}={getattr(record, name)}")
    for name in ("body", "message"):  # sizes, not contents
        if name in record.__struct_fields__:
            if is_closed(record):
                fields.append(f"{name}={ENCRYPTED} attributes={ENCRYPTED}")
            else:
                fields.append(f"{name}={len(getattr(record, name).encode())}B attributes={len(record.attributes)}")
    for name in ("zip", "payload"):  # a function's code and an invocation's event: sizes, not contents
        if name in record.__struct_fields__:
            fields.append(f"{name}={len(getattr(record, name))}B")
    if is_encrypted(record):
        fields.append(f"encrypted=data-key-{record.sealed.key_id}")  # type: ignore[attr-defined]
    return " ".join(fields)


def to_json(lsn: int, record: AnyRecord) -> dict[str, Any]:
    document: dict[str, Any] = {"lsn": lsn, "kind": type(record).__name__, "time": format_time(record.at_ms)}
    document.update(plain(record))
    sealed = document.pop("sealed", None)
    if sealed is not None:
        # the data key it was encrypted with, and whether this reading opened it
        document["encrypted"] = {"data_key": record.sealed.key_id, "opened": not is_closed(record)}  # type: ignore[attr-defined]
        if is_closed(record):
            document["attributes"] = ENCRYPTED
            if "system_attributes" in document:
                document["system_attributes"] = ENCRYPTED
    document.pop("wrapped", None)  # a data key's, wrapped: of no use to a reader
    if isinstance(record, FunctionCodeStored):  # a function's zip: its size, not its bytes
        document["zip"] = f"{len(record.zip)}B"
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
