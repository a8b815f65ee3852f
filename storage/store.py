"""The store contract shared by the LMDB store and the memory store.

Theory of operation
-------------------
A store holds the append-only log (LSN -> framed record) and the state tables that `tables.py`
derives from each record, changed in the same transaction. Only the writer task calls `commit`,
`grow_map`, `trim_log`, `release_reserve`, `restore_reserve` and `room_bytes`; anyone may read. Readers copy values
out and never keep a transaction open across an await.

Subclasses provide four primitives: `_scan`, `_get_many`, `_apply` (one atomic transaction) and
`close`. Everything else — LSN assignment, encoding, checksums, decoding, damage reports — lives
here once, so both stores pass one conformance suite.

Encryption at rest: a store given a sealer (`attach_sealer`, storage/sse.py) seals the records it
commits whose queue or topic encrypts, and opens them again in `read_messages`, `read_pushes` and
`read_archive`; `read_log` gives records as stored. This module itself does not encrypt, so the
pure modules that import it load no cryptography.
"""

from __future__ import annotations

import abc
import itertools
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import msgspec

from . import keys
from .framing import DamagedValue, frame, unframe
from .records import (
    AnyRecord,
    DataKeyCreated,
    DataKeyRewrapped,
    DataKeyRow,
    DedupEntry,
    DeliveryRow,
    FunctionChanged,
    FunctionCodeStored,
    FunctionEventQueued,
    MessageReceived,
    MessageSent,
    MoveTaskChanged,
    EventSourceMappingChanged,
    PlatformApplicationChanged,
    PlatformEndpointChanged,
    Published,
    SMSAttributesChanged,
    SMSSandboxNumberChanged,
    PushAttempted,
    PushQueued,
    QueueAttributesChanged,
    QueueCreated,
    QueuePurged,
    QueueRow,
    Record,
    SubscriptionChanged,
    TopicAttributesChanged,
    TopicCreated,
    TopicRow,
    VisibilityChanged,
    decode_dedup_entry,
    decode_message_head,
    decode_push_head,
    decode_record,
    encode_record,
)
from .tables import (
    ARCHIVE,
    DATA_KEYS,
    DEDUP,
    DELIVERIES,
    DIRECT_PUSHES,
    FUNCTION_CODE,
    FUNCTION_EVENTS,
    FUNCTIONS,
    LOG,
    MESSAGES,
    META,
    MOVE_TASKS,
    FORMAT_VERSION_KEY,
    NEXT_QUEUE_ID,
    EVENT_SOURCE_MAPPINGS,
    PLATFORM_APPLICATIONS,
    PLATFORM_ENDPOINTS,
    Put,
    PUSH_ATTEMPTS,
    PUSHES,
    QUEUES,
    SMS_ATTRIBUTES,
    SMS_SANDBOX,
    SUBSCRIPTIONS,
    TABLES,
    TOPICS,
    Change,
    Delete,
    DeleteRange,
    table_changes,
)


# The format of what a data directory holds: the records (their tags and fields, by position), the
# tables and keys. A change that an older dovecote could not read raises it; a data directory that
# names a newer format than this is refused, never misread. Directories written before the format
# was recorded are format 1. A store opened for writing records this version: format 2 added
# encryption at rest (MessageSent, Published and PushQueued gained `sealed`; the data key records
# and table), which format 1 would misread as empty bodies; format 3 added the shovels' log records
# (MessageForwarded), SNS's platform applications and endpoints, the account's SMS attributes and its
# SMS sandbox's numbers (their records and tables), which format 2 cannot decode; format 4 the Lambda
# functions and event source mappings (their records and tables), which format 3 cannot decode.
FORMAT_VERSION = 4

TimeShift = Callable[[int, int], int]  # (a record's LSN, its at_ms) -> ms to add to its times


def no_shift(lsn: int, at_ms: int) -> int:
    return 0


class StorageError(Exception):
    """The store could not complete an operation."""


class FormatTooNew(StorageError):
    """The data directory was written by a newer dovecote, in a format this one cannot read."""


class StorageFull(StorageError):
    """The disk is full, or the map reached its configured limit."""


class MapFull(StorageError):
    """The LMDB map is full at its current size; the writer grows it and retries."""


class DataDirectoryInUse(StorageError):
    """Another process holds this data directory."""


class DataDirectoryUnusable(StorageError):
    """The data directory cannot be created, read or written (permissions, a read-only file
    system, a file in the way), or holds no store where one was expected."""


class Damage(NamedTuple):
    """A run of stored values in one table whose checksum or decoding failed."""

    table: str
    first_key: bytes
    last_key: bytes
    count: int

    def describe(self) -> str:
        if self.table == LOG:
            where = f"log records LSN {keys.lsn_of(self.first_key)}..{keys.lsn_of(self.last_key)}"
        elif self.table in (MESSAGES, DELIVERIES):
            q1, s1 = keys.message_key_parts(self.first_key)
            q2, s2 = keys.message_key_parts(self.last_key)
            where = f"{self.table} rows queue {q1} seq {s1}..queue {q2} seq {s2}"
        elif self.table == QUEUES and len(self.first_key) == 8:
            where = f"queue rows id {keys.lsn_of(self.first_key)}..{keys.lsn_of(self.last_key)}"
        else:
            where = f"{self.table} keys {self.first_key!r}..{self.last_key!r}"
        return f"{where} ({self.count} damaged value{'s' if self.count != 1 else ''})"


class StorageDamaged(StorageError):
    def __init__(self, damages: Sequence[Damage], reason: str = ""):
        self.damages = list(damages)
        super().__init__(
            "stored data is damaged: "
            + "; ".join(d.describe() for d in self.damages)
            + (f" ({reason})" if reason else "")
            + ". Start with --salvage to serve what is intact and drop the damaged values."
        )


class DamageCollector:
    """Coalesces consecutive damaged keys of one table into ranges, in scan order."""

    def __init__(self) -> None:
        self._damages: list[Damage] = []
        self._run_open = False

    def add(self, table: str, key: bytes) -> None:
        if self._run_open and self._damages[-1].table == table:
            last = self._damages[-1]
            self._damages[-1] = last._replace(last_key=key, count=last.count + 1)
        else:
            self._damages.append(Damage(table, key, key, 1))
            self._run_open = True

    def break_run(self) -> None:
        """Called on an intact value, so damaged values on either side form separate ranges."""
        self._run_open = False

    def result(self) -> list[Damage]:
        return list(self._damages)


class RecordSealer(Protocol):
    """What the store asks of a sealer (storage/sse.py's Sealer); see `commit` for the order."""

    made: Record | None

    def begin(self) -> None: ...
    def key_for(self, record: Record, fallback_owner: int, next_lsn: int) -> Any: ...
    def seal(self, record: Record, key: Any, lsn: int) -> Record: ...
    def done(self) -> None: ...
    def abort(self) -> None: ...
    def open(self, record: Record) -> Record: ...
    def load(self, configuration: Sequence[Record], data_keys: Sequence[DataKeyRow]) -> None: ...
    def retirement_candidates(self, now_ms: int) -> list[Any]: ...
    def retirable(self, candidates: Sequence[Any], oldest_stored_lsn: int, at_ms: int) -> list[Record]: ...


class LoadedMessages:
    """A queue's live messages as recovery reads them, in seq order: columns of plain numbers
    (seq, stored wall time, delay) and the few delivery rows by seq, rather than objects per
    message, which, freed once the queue is rebuilt, would leave the heap fragmented and the
    process that much larger. Iterating gives (seq, at_ms, delay_seconds, delivery, group)."""

    __slots__ = ("seqs", "sent_ms", "delays", "deliveries", "groups")

    def __init__(self) -> None:
        self.seqs = array("Q")
        self.sent_ms = array("q")
        self.delays = array("q")
        self.deliveries: dict[int, DeliveryRow] = {}  # by seq: the messages received at least once
        self.groups: list[str] = []  # one per message when read with groups (FIFO), else empty

    def __len__(self) -> int:
        return len(self.seqs)

    def __iter__(self) -> Iterator[tuple[int, int, int, DeliveryRow | None, str]]:
        deliveries = self.deliveries
        groups = self.groups or itertools.repeat("")
        for seq, at_ms, delay_seconds, group in zip(self.seqs, self.sent_ms, self.delays, groups):
            yield seq, at_ms, delay_seconds, deliveries.get(seq), group


class PendingPush(NamedTuple):
    """A pending push as recovery finds it (its body stays on disk)."""

    subscription_id: int
    seq: int
    message_id: str
    attempts: int  # failed attempts so far
    retry_at_ms: int  # when the next attempt is due (0: at once)


class LoadedTopic(NamedTuple):
    row: TopicRow
    subscriptions: list[SubscriptionChanged]
    dedup: list[tuple[int, DedupEntry]]  # (seq, entry), in seq order
    pushes: list[PendingPush] = []  # in (subscription, seq) order


class LoadedPlatform(NamedTuple):
    applications: list[PlatformApplicationChanged]
    endpoints: list[PlatformEndpointChanged]
    pushes: list[PendingPush]  # published straight to an endpoint, in (endpoint id, seq) order
    sms_attributes: dict[str, str]
    sandbox_numbers: list[SMSSandboxNumberChanged]  # the SMS sandbox's phone numbers, by number


class LoadedQueue(NamedTuple):
    row: QueueRow
    messages: LoadedMessages
    dedup: list[tuple[int, DedupEntry]] = []  # (seq, entry), in seq order
    move_tasks: list[MoveTaskChanged] = []  # oldest first


class Store(abc.ABC):
    """Subclasses set `last_lsn` at open and implement the primitives below."""

    commits_in_thread: bool = True
    last_lsn: int = 0
    # For /metrics, counted by the writer's transactions (in its worker thread) and read by anyone:
    syncs_each_commit: bool = False  # each write transaction is made durable with fsync (LMDB, sync mode full)
    write_transactions: int = 0  # committed: the writer's commits and its trims
    written_bytes: int = 0  # log records appended (framed, with their keys); the state tables' copies are not counted
    sealer: RecordSealer | None = None  # encryption at rest (attach_sealer)

    # --- primitives ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _scan(
        self, table: str, first: bytes | None = None, last: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) in key order (or reverse), first..last inclusive. The key is a copy;
        the value may be a view that is valid only until the next item is taken."""

    @abc.abstractmethod
    def _get_many(self, table: str, keys_: Sequence[bytes]) -> list[bytes | None]:
        """Values for keys in one read transaction; None where absent."""

    @abc.abstractmethod
    def _apply(self, log_puts: list[tuple[bytes, bytes]], changes: list[Change]) -> None:
        """Append log_puts (keys ascending, beyond the current end) and apply changes, atomically."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def grow_map(self) -> bool:
        """Grow the map after MapFull; False when already at the limit. Writer task only."""
        return False

    def release_reserve(self) -> bool:
        """Free the disk space held back for a disk-full emergency; False if none was held."""
        return False

    def restore_reserve(self) -> bool:
        """Take the reserve back once the disk has room again; True when it holds one again."""
        return True

    def release_mapped_pages(self) -> None:
        """Stop holding the stored pages read so far in this process's memory (they stay cached
        by the system); a store that maps nothing has nothing to release."""

    def room_bytes(self) -> int:
        """Room left for new data (the reserve's space, when given up, not counted): what the writer
        waits for before it accepts sends again. A store with no limit has room enough."""
        return 1 << 62

    # --- writing ------------------------------------------------------------------------------
    def commit(self, batches: Sequence[Sequence[Record]], fallback_owners: Sequence[int] = ()) -> list[list[Record]]:
        """Append every record of every batch in one transaction; returns the batches as stored.

        A MessageSent's seq, and a QueuePurged's through_seq, become the record's own LSN here:
        a message's seq is never reused, and a purge removes exactly what was sent before it.
        With a sealer, records whose queue or topic encrypts are stored sealed (the batches
        returned hold them in clear), a data key made for one is logged just before it, and
        `fallback_owners[i]` names the topic whose encryption applies to the messages of batch i
        that their queue would store in clear (0: none).
        Blocks (fsync). Raises MapFull, StorageFull or StorageError; on any error nothing was
        written and LSNs are not consumed.
        """
        lsn = self.last_lsn
        log_puts: list[tuple[bytes, bytes]] = []
        changes: list[Change] = []
        stored: list[list[Record]] = []
        framed_bytes = 0
        sealer = self.sealer
        if sealer is not None:
            sealer.begin()
        try:
            for index, records in enumerate(batches):
                fallback = fallback_owners[index] if fallback_owners else 0
                stamped = []
                for record in records:
                    key = None
                    if sealer is not None:
                        key = sealer.key_for(record, fallback, lsn + 1)
                        if sealer.made is not None:  # a new data key, logged before the first record it seals
                            lsn += 1
                            framed = frame(encode_record(sealer.made))
                            framed_bytes += len(framed)
                            log_puts.append((keys.lsn_key(lsn), framed))
                            changes.extend(table_changes(sealer.made, framed))
                            sealer.made = None
                    lsn += 1
                    record = stamp(record, lsn)
                    as_stored = record if key is None else sealer.seal(record, key, lsn)  # type: ignore[union-attr]
                    framed = frame(encode_record(as_stored))
                    framed_bytes += len(framed)
                    log_puts.append((keys.lsn_key(lsn), framed))
                    changes.extend(table_changes(as_stored, framed))
                    stamped.append(record)
                stored.append(stamped)
            if log_puts:
                self._apply(log_puts, changes)
        except BaseException:
            if sealer is not None:
                sealer.abort()
            raise
        if sealer is not None:
            sealer.done()
        if log_puts:
            self.last_lsn = lsn
            self.write_transactions += 1
            self.written_bytes += framed_bytes + keys.LSN_KEY_BYTES * len(log_puts)
        return stored

    def attach_sealer(self, sealer: RecordSealer) -> None:
        """Seal and open from now on with `sealer`, loaded with the stored queues' and topics'
        configuration and the stored data keys. Raises StorageDamaged for a damaged data key row,
        and what the sealer's load raises (KeyUnavailable)."""
        damage = DamageCollector()
        configuration = [row for _, row in self._rows(QUEUES, (QueueCreated, QueueAttributesChanged), damage)]
        configuration += [row for _, row in self._rows(TOPICS, (TopicCreated, TopicAttributesChanged), damage)]
        data_keys = self.load_data_keys(damage)
        if damage.result():
            raise StorageDamaged(damage.result())
        sealer.load(configuration, data_keys)
        self.sealer = sealer

    def load_data_keys(self, damage: DamageCollector | None = None) -> list[DataKeyRow]:
        """The stored data keys (wrapped), in id order; damaged rows left out (or added to `damage`)."""
        return [row for _, row in self._rows(DATA_KEYS, (DataKeyCreated, DataKeyRewrapped), damage or DamageCollector())]

    def check_format(self, *, writable: bool) -> int:
        """The data directory's format version. A writable store records this dovecote's format
        where it is missing or older, and returns it. Raises FormatTooNew for a directory written
        in a newer format."""
        (value,) = self._get_many(META, [FORMAT_VERSION_KEY])
        version = keys.lsn_of(unframe(value)) if value is not None else 1
        if version > FORMAT_VERSION:
            raise FormatTooNew(
                f"the data directory holds format {version}; this dovecote reads format {FORMAT_VERSION} and older"
            )
        if writable and (value is None or version < FORMAT_VERSION):
            # What this dovecote writes is format FORMAT_VERSION: an older one must refuse it from now on.
            self._apply([], [Put(META, FORMAT_VERSION_KEY, frame(keys.lsn_key(FORMAT_VERSION)))])
            return FORMAT_VERSION
        return version

    # --- reading ------------------------------------------------------------------------------
    def next_queue_id(self) -> int:
        (value,) = self._get_many(META, [NEXT_QUEUE_ID])
        if value is None:
            return 1
        try:
            return keys.lsn_of(unframe(value))
        except DamagedValue:
            # Recoverable without loss: ids only need to be unused, so skip past every known one.
            ids = [row.queue_id for row in self.load_queue_rows()[0]]
            ids += [topic.row.topic_id for topic in self.load_topics()[0]]
            return max(ids, default=0) + 1

    def _rows(
        self, table: str, kinds: tuple[type, ...], damage: DamageCollector, first: bytes | None = None, last: bytes | None = None
    ) -> list[tuple[bytes, Any]]:
        """(key, record) of a table's rows in key order; a row that is not one of `kinds` is damage."""
        rows = []
        for key, value in self._scan(table, first, last):
            record = _decode_or_none(value)
            if isinstance(record, kinds):
                rows.append((key, record))
                damage.break_run()
            else:
                damage.add(table, key)
        return rows

    def load_queue_rows(self) -> tuple[list[QueueRow], list[Damage]]:
        damage = DamageCollector()
        rows = [record for _, record in self._rows(QUEUES, (QueueCreated, QueueAttributesChanged), damage)]
        return rows, damage.result()

    def load_topics(self) -> tuple[list[LoadedTopic], list[Damage]]:
        """Every topic with its subscriptions and FIFO deduplication entries."""
        damage = DamageCollector()
        topics: list[LoadedTopic] = []
        for _, row in self._rows(TOPICS, (TopicCreated, TopicAttributesChanged), damage):
            first, last = keys.queue_message_range(row.topic_id)
            subscriptions = [record for _, record in self._rows(SUBSCRIPTIONS, (SubscriptionChanged,), damage, first, last)]
            topics.append(LoadedTopic(row, subscriptions, self._load_dedup(first, last, damage), self._load_pushes(row.topic_id, damage)))
        return topics, damage.result()

    def load_subscriptions(self) -> list[SubscriptionChanged]:
        """Every subscription of every topic (damaged rows left out: `dovecote check` names them)."""
        return [record for _, record in self._rows(SUBSCRIPTIONS, (SubscriptionChanged,), DamageCollector())]

    def load_platform(self) -> LoadedPlatform:
        """Every platform application and endpoint, and the publishes pending for the endpoints
        (damaged rows left out: `dovecote check` names them)."""
        damage = DamageCollector()
        return LoadedPlatform(
            [record for _, record in self._rows(PLATFORM_APPLICATIONS, (PlatformApplicationChanged,), damage)],
            [record for _, record in self._rows(PLATFORM_ENDPOINTS, (PlatformEndpointChanged,), damage)],
            self._load_pushes(DIRECT_PUSHES, damage),
            next((record.attributes for _, record in self._rows(SMS_ATTRIBUTES, (SMSAttributesChanged,), damage)), {}),
            [record for _, record in self._rows(SMS_SANDBOX, (SMSSandboxNumberChanged,), damage)],
        )

    def load_functions(self) -> list[FunctionChanged]:
        """Every Lambda function's configuration, without its code (damaged rows left out:
        `dovecote check` names them)."""
        return [record for _, record in self._rows(FUNCTIONS, (FunctionChanged,), DamageCollector())]

    def load_function_events(self) -> list[FunctionEventQueued]:
        """Every pending asynchronous invocation, by function and in the order they were queued
        (damaged rows left out: `dovecote check` names them)."""
        return [record for _, record in self._rows(FUNCTION_EVENTS, (FunctionEventQueued,), DamageCollector())]

    def function_code(self, region: str, name: str) -> FunctionCodeStored | None:
        """A function's stored zip (None: none stored, or damaged: `dovecote check` names it)."""
        (value,) = self._get_many(FUNCTION_CODE, [keys.function_key(region, name)])
        record = _decode_or_none(value) if value is not None else None
        return record if isinstance(record, FunctionCodeStored) else None

    def load_event_source_mappings(self) -> list[EventSourceMappingChanged]:
        """Every event source mapping (damaged rows left out: `dovecote check` names them)."""
        return [record for _, record in self._rows(EVENT_SOURCE_MAPPINGS, (EventSourceMappingChanged,), DamageCollector())]

    def pending_pushes(self, topic_id: int, subscription_id: int) -> list[PendingPush]:
        """One subscription's pending pushes, in seq order (damaged rows left out: `dovecote check`
        names them)."""
        return self._load_pushes(topic_id, DamageCollector(), subscription_id)

    def _load_pushes(self, topic_id: int, damage: DamageCollector, subscription_id: int | None = None) -> list[PendingPush]:
        first, last = keys.push_range(topic_id, subscription_id)
        attempts = {key: record for key, record in self._rows(PUSH_ATTEMPTS, (PushAttempted,), damage, first, last)}
        pushes: list[PendingPush] = []
        for key, value in self._scan(PUSHES, first, last):
            try:
                head = decode_push_head(unframe(value))  # bodies are decoded when they are sent
            except _DECODE_ERRORS:
                damage.add(PUSHES, key)
                continue
            damage.break_run()
            attempted = attempts.get(key)
            pushes.append(
                PendingPush(
                    head.subscription_id, head.seq, head.message_id,
                    attempted.attempt if attempted else 0, attempted.retry_at_ms if attempted else 0,
                )
            )
        return pushes

    def read_pushes(self, topic_id: int, subscription_id: int, seqs: Sequence[int]) -> list[PushQueued | None]:
        """The stored PushQueued of each seq (None where gone). Raises StorageDamaged."""
        wanted = [keys.push_key(topic_id, subscription_id, seq) for seq in seqs]
        out: list[PushQueued | None] = []
        for key, value in zip(wanted, self._get_many(PUSHES, wanted)):
            record = None if value is None else _decode_or_none(value)
            if value is not None and not isinstance(record, PushQueued):
                raise StorageDamaged([Damage(PUSHES, key, key, 1)])
            out.append(record if record is None or record.sealed is None else self._opened(record, PUSHES, key))
        return out

    def _load_dedup(self, first: bytes, last: bytes, damage: DamageCollector) -> list[tuple[int, DedupEntry]]:
        dedup: list[tuple[int, DedupEntry]] = []
        for key, value in self._scan(DEDUP, first, last):
            try:
                dedup.append((keys.message_key_parts(key)[1], decode_dedup_entry(unframe(value))))
            except _DECODE_ERRORS:
                damage.add(DEDUP, key)
            else:
                damage.break_run()
        return dedup

    def load_queue(self, row: QueueRow, *, with_groups: bool = False) -> tuple[LoadedQueue, list[Damage]]:
        """Every live message of one queue with its delivery state, in seq order, its FIFO
        deduplication entries and its message move tasks. Message groups are read only
        `with_groups`, as that decodes whole messages, bodies included."""
        damage = DamageCollector()
        first, last = keys.queue_message_range(row.queue_id)
        messages = LoadedMessages()
        for _, delivery in self._rows(DELIVERIES, (MessageReceived, VisibilityChanged), damage, first, last):
            messages.deliveries[delivery.seq] = delivery
        # One pass over what may be 100,000 rows: the columns' appends are bound once.
        add_seq, add_sent_ms, add_delay = messages.seqs.append, messages.sent_ms.append, messages.delays.append
        for key, value in self._scan(MESSAGES, first, last):
            try:
                sent = decode_record(unframe(value)) if with_groups else decode_message_head(unframe(value))
                if with_groups:
                    if not isinstance(sent, MessageSent):
                        raise DamagedValue("not a MessageSent")
                    messages.groups.append(sent.group_id)
            except _DECODE_ERRORS:
                damage.add(MESSAGES, key)
                continue
            add_seq(sent.seq)
            add_sent_ms(sent.at_ms)
            add_delay(sent.delay_seconds)
            damage.break_run()
        dedup = self._load_dedup(first, last, damage)
        tasks = [record for _, record in self._rows(MOVE_TASKS, (MoveTaskChanged,), damage, first, last)]
        return LoadedQueue(row, messages, dedup, tasks), damage.result()

    def read_messages(self, queue_id: int, seqs: Sequence[int]) -> list[MessageSent | None]:
        """The stored MessageSent of each seq (None where gone). Raises StorageDamaged."""
        values = self._get_many(MESSAGES, [keys.message_key(queue_id, s) for s in seqs])
        out: list[MessageSent | None] = []
        for seq, value in zip(seqs, values):
            if value is None:
                out.append(None)
                continue
            record = _decode_or_none(value)
            if not isinstance(record, MessageSent):
                key = keys.message_key(queue_id, seq)
                raise StorageDamaged([Damage(MESSAGES, key, key, 1)])
            out.append(record if record.sealed is None else self._opened(record, MESSAGES, keys.message_key(queue_id, seq)))
        return out

    def _opened(self, record: Any, table: str, key: bytes) -> Any:
        """A sealed record opened; StorageDamaged naming it when it does not open."""
        if self.sealer is None:
            raise StorageDamaged([Damage(table, key, key, 1)], "it is encrypted, and this store has no keys")
        try:
            return self.sealer.open(record)
        except DamagedValue as error:
            raise StorageDamaged([Damage(table, key, key, 1)], str(error)) from None

    def read_log(
        self, after_lsn: int = 0, limit: int | None = None
    ) -> list[tuple[int, AnyRecord]]:
        """Log records with LSN > after_lsn, in order. Raises StorageDamaged on a bad record."""
        out: list[tuple[int, AnyRecord]] = []
        for key, value in self._scan(LOG, keys.lsn_key(after_lsn + 1)):
            record = _decode_or_none(value)
            if record is None:
                raise StorageDamaged([Damage(LOG, key, key, 1)])
            out.append((keys.lsn_of(key), record))
            if limit is not None and len(out) >= limit:
                break
        return out

    def verify_log_tail(self, max_records: int) -> list[Damage]:
        """Check the checksums of the newest max_records log records; returns the damaged ranges
        (oldest first). `verify_all` also decodes every record."""
        damage = DamageCollector()
        for count, (key, value) in enumerate(self._scan(LOG, reverse=True)):
            if count >= max_records:
                break
            try:
                unframe(value)
            except DamagedValue:
                damage.add(LOG, key)
            else:
                damage.break_run()
        return [d._replace(first_key=d.last_key, last_key=d.first_key) for d in reversed(damage.result())]

    def verify_all(self) -> list[Damage]:
        """Check every stored value (the `dovecote check` scan); returns the damaged ranges. With
        a sealer, every encrypted record must also open."""
        damage = DamageCollector()
        for table in (t for t in TABLES if t != META):  # META holds counters, not records
            for key, value in self._scan(table):
                if not _decodes(table, value) or not self._opens(table, value):
                    damage.add(table, key)
                else:
                    damage.break_run()
            damage.break_run()
        return damage.result()

    def _opens(self, table: str, value: bytes) -> bool:
        if self.sealer is None or table not in (LOG, MESSAGES, PUSHES, ARCHIVE):
            return True
        record = _decode_or_none(value)
        if getattr(record, "sealed", None) is None:
            return True
        try:
            self.sealer.open(record)  # type: ignore[arg-type]
        except DamagedValue:
            return False
        return True

    def drop_damaged(self, damages: Sequence[Damage]) -> None:
        """Delete damaged values (salvage). Writer only, before serving."""
        self._apply([], [DeleteRange(d.table, d.first_key, d.last_key) for d in damages])

    def read_archive(self, topic_id: int, after_seq: int, limit: int) -> list[Published]:
        """A topic's archived publishes with seq > after_seq, oldest first. Raises StorageDamaged."""
        first, last = keys.message_key(topic_id, after_seq + 1), keys.queue_message_range(topic_id)[1]
        out: list[Published] = []
        for key, value in self._scan(ARCHIVE, first, last):
            record = _decode_or_none(value)
            if not isinstance(record, Published):
                raise StorageDamaged([Damage(ARCHIVE, key, key, 1)])
            out.append(record if record.sealed is None else self._opened(record, ARCHIVE, key))
            if len(out) >= limit:
                break
        return out

    def archive_counts(self) -> dict[int, int]:
        """Archived publishes per topic id."""
        counts: dict[int, int] = {}
        for key, _ in self._scan(ARCHIVE):
            topic_id = keys.message_key_parts(key)[0]
            counts[topic_id] = counts.get(topic_id, 0) + 1
        return counts

    def trim_history(self, before_ms: int, now_ms: int, max_records: int, shift: TimeShift = no_shift) -> int:
        """Trim log history older than before_ms, then archived publishes whose archive period
        has passed by now_ms; at most max_records in all. `shift(lsn, at_ms)` moves a record's
        times onto the clock before_ms and now_ms were read off (writer.py's ClockFrames).
        Writer task only."""
        trimmed = self.trim_log(before_ms, max_records, shift)
        trimmed += self._trim_archive(now_ms, max_records - trimmed, shift)
        if self.sealer is not None and trimmed < max_records:
            self._retire_data_keys(now_ms)
        return trimmed

    def _retire_data_keys(self, now_ms: int) -> None:
        """Forget data keys that nothing stored was sealed with (checked about once a minute)."""
        assert self.sealer is not None
        candidates = self.sealer.retirement_candidates(now_ms)
        if candidates:
            retired = self.sealer.retirable(candidates, self.oldest_stored_lsn(), now_ms)
            if retired:
                self.commit([retired])

    def oldest_stored_lsn(self) -> int:
        """The lowest LSN of what is stored and may be sealed: the log's oldest record, each
        queue's oldest message, each subscription's oldest pending push, each topic's oldest
        archived publish (above last_lsn when there is nothing). One seek per queue, subscription
        and topic."""
        oldest = self.last_lsn + 1
        for key, _ in self._scan(LOG):
            oldest = min(oldest, keys.lsn_of(key))
            break
        for table in (MESSAGES, PUSHES, ARCHIVE):
            start: bytes | None = None
            while True:
                found = next(iter(self._scan(table, start)), None)
                if found is None:
                    break
                key = found[0]
                oldest = min(oldest, keys.lsn_of(key[-keys.LSN_KEY_BYTES:]))
                owner = key[: -keys.LSN_KEY_BYTES]
                start = (int.from_bytes(owner, "big") + 1).to_bytes(len(owner), "big") + bytes(keys.LSN_KEY_BYTES)
        return oldest

    def _trim_archive(self, now_ms: int, max_records: int, shift: TimeShift) -> int:
        # Within a topic, archive periods end in seq order: delete from each topic's start until
        # a publish still archived, then go on at the next topic.
        doomed: list[Change] = []
        start: bytes | None = None
        while len(doomed) < max_records:
            next_topic = None
            for key, value in self._scan(ARCHIVE, start):
                if len(doomed) >= max_records:
                    break
                record = _decode_or_none(value)
                if (
                    record is None
                    or not isinstance(record, Published)
                    or record.archive_until_ms + shift(keys.lsn_of(key[-keys.LSN_KEY_BYTES:]), record.at_ms) < now_ms
                ):
                    doomed.append(Delete(ARCHIVE, key))
                    continue
                next_topic = keys.message_key_parts(key)[0] + 1
                break
            if next_topic is None:
                break
            start = keys.message_key(next_topic, 0)
        if doomed:
            self._apply([], doomed)
            self.write_transactions += 1
        return len(doomed)

    def trim_log(self, before_ms: int, max_records: int, shift: TimeShift = no_shift) -> int:
        """Delete up to max_records of the oldest log records written before before_ms; returns
        how many. Writer task only; bounded so a large backlog is trimmed in small steps."""
        doomed: list[Change] = []
        for key, value in self._scan(LOG):
            if len(doomed) >= max_records:
                break
            record = _decode_or_none(value)
            if record is not None and record.at_ms + shift(keys.lsn_of(key), record.at_ms) >= before_ms:
                break
            doomed.append(Delete(LOG, key))
        if doomed:
            self._apply([], doomed)
            self.write_transactions += 1
        return len(doomed)


def stamp(record: Record, lsn: int) -> Record:
    if type(record) is MessageSent:
        return msgspec.structs.replace(record, seq=lsn)
    if type(record) is QueuePurged:
        return msgspec.structs.replace(record, through_seq=lsn)
    if type(record) is Published or type(record) is PushQueued:
        return msgspec.structs.replace(record, seq=lsn)
    return record


_DECODE_ERRORS = (DamagedValue, msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)


def _decodes(table: str, value: bytes) -> bool:
    if table != DEDUP:
        return _decode_or_none(value) is not None
    try:
        decode_dedup_entry(unframe(value))
    except _DECODE_ERRORS:
        return False
    return True


def _decode_or_none(value: bytes) -> AnyRecord | None:
    try:
        return decode_record(unframe(value))
    except _DECODE_ERRORS:
        return None
