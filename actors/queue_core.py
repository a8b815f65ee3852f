"""The rules of one SQS queue, as a pure object: no I/O, no clock of its own.

Theory of operation
-------------------
Every method takes the current time as arguments: `now` in seconds on the monotonic deadline clock,
`wall_ms` in wall-clock milliseconds for what is stored or shown. The Trio shell (`queue.py`) owns
the one QueueCore of a queue and calls it from its own task only.

Message bodies are not held here: the store keeps them, and the shell reads them when a message is
delivered. In memory each live message is a small `Live` record:

- ready:      `visible_at == READY`, and its seq is in the ReadySet: one heap per message group
              (lowest seq first, which gives standard queues their best-effort order), served
              round-robin across groups, so one group's backlog cannot starve the others (fair
              queues; a queue without groups has the one group "");
- delayed:    never received, `visible_at` in the future, a `_timers` entry;
- in flight:  received, `visible_at` in the future, a `_timers` entry;
- moving:     `visible_at == MOVING`: handed to another queue (dead-letter redrive, a move task)
              whose commit stores it there and deletes it here in one transaction; until that
              queue answers, it is neither deliverable nor deletable here.

FIFO queues add: a group with a message in flight (or moving) is locked, so no later message of
it is delivered (the ReadySet takes such groups out of its rotation, and a receive takes as many
messages of one group as it can, in order); deduplication ids are remembered for 5 minutes from the
send (`_dedup`), including for sends not yet committed, and survive restarts through the store's
dedup table; a retried receive with the same ReceiveRequestAttemptId gets the same messages.

Heaps are cleaned lazily: an entry whose message is gone, or whose deadline no longer matches
`visible_at`, is skipped when popped, so deletes and visibility changes are O(1).

Two phases. A send is validated and given its record (`prepare_send`) but becomes visible only
after its record is committed (`apply_sent`), because a send may still be refused by storage.
Every other change (receive, delete, visibility, purge, attributes) is applied at once and
committed by the shell before any reply; if that commit fails the shell discards this object and
rebuilds the queue from storage, so memory is never ahead of disk when anyone can observe it.

Receipt handles carry the receive count, so a handle stops working once its message is received
again; sequence numbers are never reused (after a restart they continue above the store's last
LSN), so an old handle can never name a newer message.
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

import msgspec
from dovecote.storage.records import (
    DedupWindowClosed,
    MessageAttribute,
    MessageDeleted,
    MessageReceived,
    MessageSent,
    MoveTaskChanged,
    QueueAttributesChanged,
    QueueDeleted,
    QueuePurged,
    VisibilityChanged,
)
from dovecote.storage.store import LoadedQueue

from . import policy, validation
from .dedup import DedupWindow
from .errors import BrokerError, invalid
from .ids import MessageIds, ReceiptHandle, decode_receipt_handle, encode_receipt_handle
from .ops import ReceivedMessage

READY = -math.inf
MOVING = math.inf
PURGE_INTERVAL_S = 60
RECEIVE_ATTEMPT_WINDOW_S = 300
HOUSEKEEPING_INTERVAL_S = 60  # how often expired dedup ids and receive attempts are dropped
MOVE_RETRY_S = 1.0  # a hand-over to another queue that failed is tried again after this
MAX_MOVES_IN_TRANSIT = 1000  # per move task
MOVE_BATCH = 100
KEPT_MOVE_TASKS = 10  # ListMessageMoveTasks shows at most this many
MAX_IN_FLIGHT = 120_000  # SQS's limit for a standard queue; receives past it get OverLimit
VISIBLE, IN_FLIGHT, DELAYED = "visible", "in_flight", "delayed"


class Live(msgspec.Struct, gc=False):
    seq: int
    sent_at: float  # monotonic seconds; retention counts from here
    receive_count: int
    first_receive_ms: int
    visible_at: float  # READY, or the monotonic deadline at which it becomes visible
    group: str = ""  # MessageGroupId


class ReadySet:
    """Ready seqs per message group, lowest first within a group, groups taken in turn.

    FIFO (`fifo=True`): a batch takes a group's messages in a row rather than rotating, and a
    locked group (one with messages in flight) is out of the rotation until unlocked. Locked
    groups leave the rotation lazily, when they reach its front."""

    __slots__ = ("_fifo", "_heaps", "_locks", "_rotating", "_rotation")

    def __init__(self, fifo: bool = False) -> None:
        self._heaps: dict[str, list[int]] = {}
        self._rotation: deque[str] = deque()
        self._rotating: set[str] = set()
        self._fifo = fifo
        self._locks: dict[str, int] = {}  # group -> messages in flight

    def push(self, seq: int, group: str) -> None:
        heap = self._heaps.get(group)
        if heap is None:
            self._heaps[group] = [seq]
            self._enter_rotation(group)
        else:
            heapq.heappush(heap, seq)

    def pop(self) -> int:
        """The next group's lowest seq; on a standard queue that group then waits for every
        other group's turn. Only when the set is true."""
        group = self._rotation[0]
        heap = self._heaps[group]
        seq = heapq.heappop(heap)
        if not heap:
            self._rotation.popleft()
            self._rotating.discard(group)
            del self._heaps[group]
        elif not self._fifo:
            self._rotation.rotate(-1)
        return seq

    def lock(self, group: str) -> None:
        self._locks[group] = self._locks.get(group, 0) + 1

    def unlock(self, group: str) -> None:
        count = self._locks[group] - 1
        if count:
            self._locks[group] = count
        else:
            del self._locks[group]
            if group in self._heaps:
                self._enter_rotation(group)

    def _enter_rotation(self, group: str) -> None:
        if group not in self._locks and group not in self._rotating:
            self._rotation.append(group)
            self._rotating.add(group)

    def clear(self) -> None:
        self._heaps.clear()
        self._rotation.clear()
        self._rotating.clear()
        self._locks.clear()

    def __bool__(self) -> bool:
        rotation = self._rotation
        while rotation and rotation[0] in self._locks:
            self._rotating.discard(rotation.popleft())
        return bool(rotation)


class Waiter(msgspec.Struct, gc=False):
    """A long-polling ReceiveMessage parked until messages arrive or its deadline passes."""

    max_messages: int
    visibility_timeout_s: int | None
    deadline: float
    attribute_names: Sequence[str]
    message_attribute_names: Sequence[str]
    reply: Callable
    attempt_id: str | None = None  # FIFO ReceiveRequestAttemptId


class Duplicate(msgspec.Struct, frozen=True):
    """A FIFO send whose deduplication id was seen within 5 minutes: accepted, not stored again."""

    message_id: str
    dedup_key: str
    body: str
    attributes: dict[str, MessageAttribute]
    system_attributes: dict[str, MessageAttribute]


class _ReceiveAttempt(msgspec.Struct, gc=False):
    expires_at: float
    deliveries: list[tuple[int, int]]  # (seq, receive_count) of each message it returned


class MoveTask(msgspec.Struct, gc=False):
    """The running message move task of this queue (its stored state is `record`)."""

    record: MoveTaskChanged
    tokens: float = 0.0  # messages it may start moving now, under max_per_second
    refilled_at: float = 0.0
    in_transit: int = 0
    idle_until: float = 0.0  # found nothing to move: look again then (no busy loop)


class QueueCounts(msgspec.Struct, frozen=True):
    visible: int
    in_flight: int
    delayed: int


class QueueCore:
    def __init__(
        self,
        queue_id: int,
        name: str,
        attributes: Mapping[str, str],
        arn: str,
        *,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.queue_id = queue_id
        self.name = name
        self.arn = arn
        self.region = arn.split(":")[3]
        self.account_id = arn.split(":")[4]
        self.attributes: dict[str, str] = dict(attributes)
        self.config = validation.queue_config(self.attributes)
        self.tags: dict[str, str] = dict(tags or {})
        self._last_purge_at = -math.inf
        self.messages: dict[int, Live] = {}
        self._ready = ReadySet()
        self._timers: list[tuple[float, int]] = []
        # Sends prepared but not yet stored, by MessageId -> the prepare ticket; a purge drops
        # every send prepared before it, whenever that send's commit completes.
        self._pending_sends: dict[str, int] = {}
        self._tickets = itertools.count(1)
        self._purged_through_ticket = 0
        self.in_flight_count = 0  # received and not yet visible again, deleted or expired
        self.max_in_flight = MAX_IN_FLIGHT
        self._expiry_check_at = math.inf
        self._waiters: dict[int, Waiter] = {}
        self._waiter_deadlines: list[tuple[float, int]] = []
        self._waiter_ids = itertools.count()
        self._message_ids = MessageIds()
        if self.config.fifo:
            self._ready = ReadySet(fifo=True)
        self._dedup = DedupWindow(self.config.dedup_per_group)
        self._housekeeping_at = -math.inf
        self._attempts: dict[str, _ReceiveAttempt] = {}
        self.outgoing: list[int] = []  # seqs marked MOVING for the dead-letter queue, not yet handed over
        self.move_tasks: list[MoveTaskChanged] = []  # newest last, at most KEPT_MOVE_TASKS
        self.move_task: MoveTask | None = None  # the running one
        # Messages other actors stored here (a topic's fan-out) arrive after their commit: those
        # at or below restored_lsn were read from the store already, and those at or below
        # purged_through were purged.
        self.restored_lsn = 0
        self.purged_through = 0

    @classmethod
    def restore(
        cls, loaded: LoadedQueue, arn: str, *, now: float, wall_ms: int, restored_lsn: int = 0
    ) -> QueueCore:
        """Rebuild a queue from its stored rows. Stored deadlines are wall-clock times; they are
        clamped to the longest timeout SQS allows, so a wall clock that went back while the broker
        was down cannot hide a message for longer than that."""
        row = loaded.row
        core = cls(row.queue_id, row.queue, row.attributes, arn, tags=row.tags)
        core.restored_lsn = restored_lsn
        messages, ready = core.messages, core._ready
        # Groups are read from the store for FIFO queues only (see Store.load_queue): on a standard
        # queue, messages stored before a restart are served oldest first, without the fair
        # rotation; new sends rotate again.
        for sent, delivery, group in loaded.messages:
            group = sys.intern(group) if group else ""
            age_s = max(0, wall_ms - sent.at_ms) / 1000
            if delivery is None:
                live = Live(sent.seq, now - age_s, 0, 0, READY, group)
                remaining = min(sent.delay_seconds - age_s, validation.MAX_DELAY_S)
            else:
                live = Live(sent.seq, now - age_s, delivery.receive_count, delivery.first_receive_ms, READY, group)
                remaining = min((delivery.visible_at_ms - wall_ms) / 1000, validation.MAX_VISIBILITY_TIMEOUT_S)
            messages[sent.seq] = live
            if remaining > 0:
                live.visible_at = now + remaining
                core._timers.append((live.visible_at, sent.seq))
                if core.config.fifo and live.receive_count:
                    ready.lock(group)
            else:
                ready.push(sent.seq, group)
        heapq.heapify(core._timers)
        core.in_flight_count = sum(1 for live in messages.values() if _in_flight(live))
        core._expiry_check_at = -math.inf
        core._dedup.restore(loaded.dedup, now, wall_ms)
        core.move_tasks = list(loaded.move_tasks[-KEPT_MOVE_TASKS:])
        if core.move_tasks and core.move_tasks[-1].status in ("RUNNING", "CANCELLING"):
            core.move_task = MoveTask(core.move_tasks[-1], refilled_at=now)
        return core

    # --- sends --------------------------------------------------------------------------------
    def prepare_send(
        self,
        body: str,
        delay_seconds: int | None,
        message_attributes: Mapping[str, MessageAttribute],
        sender_id: str,
        wall_ms: int,
        system_attributes: Mapping[str, MessageAttribute] | None = None,
        group_id: str | None = None,
        dedup_id: str | None = None,
        now: float = 0.0,
    ) -> MessageSent | Duplicate:
        """Validate a send and build its record; nothing changes until apply_sent. A FIFO send
        whose deduplication id was seen in the last 5 minutes gives a Duplicate instead."""
        validation.validate_delay(delay_seconds)
        validation.validate_message(body, message_attributes, self.config.max_message_bytes)
        validation.validate_system_attributes(system_attributes or {})
        config = self.config
        dedup_id = validation.fifo_send_parameters(
            config.fifo, config.content_based_dedup, body, delay_seconds, group_id, dedup_id
        )
        if dedup_id:
            key = self._dedup.key(dedup_id, group_id or "")
            seen = self._dedup.seen(key, now)
            if seen is not None:
                return Duplicate(seen.message_id, key, body, dict(message_attributes), dict(system_attributes or {}))
        record = MessageSent(
            at_ms=wall_ms,
            queue_id=self.queue_id,
            queue=self.name,
            seq=0,  # the store stamps the record's LSN here
            message_id=self._message_ids.new(),
            body=body,
            attributes=dict(message_attributes),
            delay_seconds=self.config.delay_s if delay_seconds is None else delay_seconds,
            sender_id=sender_id,  # "": the broker's account, filled in when shown
            system_attributes=dict(system_attributes or {}),
            group_id=group_id or "",
            dedup_id=dedup_id,
        )
        if dedup_id:
            self._dedup.remember(self._dedup.key(dedup_id, record.group_id), record.message_id, now)
        self._pending_sends[record.message_id] = next(self._tickets)
        return record

    def prepare_moved_in(
        self, rows: Sequence[MessageSent], source_arn: str, dead_letter: bool, wall_ms: int
    ) -> list[MessageSent]:
        """Records that store messages moved here from another queue: the same MessageId, body,
        attributes, group and original SentTimestamp; dead-lettered ones name their source."""
        records = []
        for row in rows:
            record = MessageSent(
                at_ms=wall_ms,
                queue_id=self.queue_id,
                queue=self.name,
                seq=0,
                delay_seconds=0,
                message_id=row.message_id,
                sender_id=row.sender_id,
                body=row.body,
                attributes=row.attributes,
                system_attributes=row.system_attributes,
                group_id=row.group_id,
                dedup_id="",
                first_sent_ms=row.first_sent_ms or row.at_ms,
                dead_letter_source_arn=source_arn if dead_letter else "",
            )
            self._pending_sends[record.message_id] = next(self._tickets)
            records.append(record)
        return records

    def stored_seq_of(self, duplicate: Duplicate) -> int:
        """The seq of the send a Duplicate repeats; 0 if storage refused that send."""
        return self._dedup.stored_seq(duplicate.dedup_key, duplicate.message_id)

    def forget_send(self, record: MessageSent) -> None:
        """A prepared send that storage refused."""
        self._pending_sends.pop(record.message_id, None)
        if record.dedup_id:
            self._dedup.forget(self._dedup.key(record.dedup_id, record.group_id), record.message_id)

    def apply_sent(self, record: MessageSent, now: float) -> None:
        """Make a stored send live (unless a purge handled after it already removed it)."""
        if record.dedup_id:
            self._dedup.stored(self._dedup.key(record.dedup_id, record.group_id), record.message_id, record.seq)
        ticket = self._pending_sends.pop(record.message_id, None)
        if ticket is not None and ticket <= self._purged_through_ticket:
            return
        self._make_live(record, now)

    def adopt(self, record: MessageSent, now: float) -> None:
        """A message another actor stored in this queue (after its commit, and after every commit
        of this queue's that was pending when it arrived)."""
        if record.seq <= max(self.restored_lsn, self.purged_through) or record.seq in self.messages:
            return
        if record.dedup_id:
            self._dedup.remember(self._dedup.key(record.dedup_id, record.group_id), record.message_id, now, record.seq)
        self._make_live(record, now)

    def _make_live(self, record: MessageSent, now: float) -> None:
        # Interned, so a group's messages share one string however many there are.
        live = Live(record.seq, now, 0, 0, READY, sys.intern(record.group_id))
        self.messages[record.seq] = live
        self._schedule(live, now + record.delay_seconds if record.delay_seconds > 0 else READY)
        if self._expiry_check_at == math.inf:
            self._expiry_check_at = now + self.config.retention_s

    # --- receives -----------------------------------------------------------------------------
    def take_ready(self, max_messages: int, now: float) -> list[Live]:
        """Pop up to max_messages ready messages, oldest first. The caller must pass them to
        mark_received (with their stored rows) in the same step."""
        self.advance(now)
        retention = self.config.retention_s
        max_receives = self.config.max_receive_count
        taken: list[Live] = []
        max_messages = min(max_messages, self.max_in_flight - self.in_flight_count)
        while self._ready and len(taken) < max_messages:
            seq = self._ready.pop()
            live = self.messages.get(seq)
            if live is None or live.visible_at != READY:
                continue
            if live.sent_at + retention <= now:
                self._expiry_check_at = now  # expired: never delivered, removed by the next expire()
                continue
            if max_receives and live.receive_count >= max_receives:
                # Received maxReceiveCount times already: this attempt sends it to the
                # dead-letter queue instead (the shell hands `outgoing` over).
                self._schedule(live, MOVING)
                self.outgoing.append(seq)
                continue
            taken.append(live)
        return taken

    # --- moving messages to other queues --------------------------------------------------------
    def take_outgoing(self) -> list[int]:
        outgoing, self.outgoing = self.outgoing, []
        return outgoing

    def moved_out(self, seqs: Iterable[int]) -> None:
        """The other queue stored these messages (and the deletion of them here)."""
        for seq in seqs:
            live = self.messages.get(seq)
            if live is not None and live.visible_at == MOVING:
                self._forget(live)

    def move_failed(self, seqs: Iterable[int], now: float) -> None:
        """A hand-over failed: the messages stay here, and are tried again after a pause."""
        for seq in seqs:
            live = self.messages.get(seq)
            if live is not None and live.visible_at == MOVING:
                self._schedule(live, now + MOVE_RETRY_S)

    def forget_lost(self, seqs: Iterable[int]) -> None:
        """Messages the store no longer has (salvage dropped them)."""
        for seq in seqs:
            live = self.messages.get(seq)
            if live is not None:
                self._forget(live)

    def check_in_flight_limit(self) -> None:
        """A receive past the in-flight limit is refused (OverLimit, as SQS does)."""
        if self.in_flight_count >= self.max_in_flight:
            raise BrokerError(
                "OverLimit",
                f"The queue has {self.in_flight_count} messages in flight, the most it allows; delete some first.",
            )

    def mark_received(
        self,
        lives: Sequence[Live],
        rows: Sequence[MessageSent | None],
        visibility_timeout_s: int | None,
        now: float,
        wall_ms: int,
    ) -> list[tuple[MessageReceived, MessageSent]]:
        timeout = self.config.visibility_timeout_s if visibility_timeout_s is None else visibility_timeout_s
        received = []
        for live, row in zip(lives, rows):
            if row is None:  # the store lost it (salvage); forget it here too
                self.messages.pop(live.seq, None)
                continue
            live.receive_count += 1
            if live.first_receive_ms == 0:
                live.first_receive_ms = wall_ms
            self._schedule(live, now + timeout)
            record = MessageReceived(
                at_ms=wall_ms,
                queue_id=self.queue_id,
                queue=self.name,
                seq=live.seq,
                message_id=row.message_id,
                receive_count=live.receive_count,
                visible_at_ms=wall_ms + timeout * 1000,
                first_receive_ms=live.first_receive_ms,
            )
            received.append((record, row))
        return received

    # --- deletes and visibility ---------------------------------------------------------------
    def delete(self, receipt_handle: str, wall_ms: int) -> MessageDeleted | None:
        """Delete by receipt handle; None if the message is already gone (SQS treats that as
        success). Raises ReceiptHandleIsInvalid for a handle of another receive or queue."""
        handle, live = self._resolve(receipt_handle)
        if live is None:
            return None
        if live.visible_at == MOVING:
            raise BrokerError(
                "ReceiptHandleIsInvalid", "The message is being moved to another queue (its dead-letter queue)."
            )
        self._attempts.clear()
        self._forget(live)
        return MessageDeleted(wall_ms, self.queue_id, self.name, handle.seq, handle.message_id, "deleted")

    def change_visibility(
        self, receipt_handle: str, timeout_s: int, now: float, wall_ms: int
    ) -> VisibilityChanged:
        validation.validate_visibility_timeout(timeout_s)
        handle, live = self._resolve(receipt_handle)
        if live is None:
            raise invalid(
                f"Value {receipt_handle[:100]} for parameter ReceiptHandle is invalid. "
                "Reason: Message does not exist or is not available for visibility timeout change."
            )
        if live.visible_at in (READY, MOVING) or live.visible_at <= now:
            raise BrokerError("MessageNotInflight", "The message referred to isn't in flight.")
        self._attempts.clear()
        self._schedule(live, now + timeout_s if timeout_s > 0 else READY)
        return VisibilityChanged(
            at_ms=wall_ms,
            queue_id=self.queue_id,
            queue=self.name,
            seq=live.seq,
            message_id=handle.message_id,
            receive_count=live.receive_count,
            visible_at_ms=wall_ms + timeout_s * 1000,
            first_receive_ms=live.first_receive_ms,
        )

    def _resolve(self, receipt_handle: str) -> tuple[ReceiptHandle, Live | None]:
        handle = decode_receipt_handle(receipt_handle)
        if handle.queue_id != self.queue_id:
            raise BrokerError("ReceiptHandleIsInvalid", "The receipt handle belongs to another queue.")
        live = self.messages.get(handle.seq)
        if live is not None and live.receive_count != handle.receive_count:
            raise BrokerError(
                "ReceiptHandleIsInvalid",
                "The receipt handle has expired: the message was received again since it was issued.",
            )
        return handle, live

    # --- queue-wide changes -------------------------------------------------------------------
    def purge(self, now: float, wall_ms: int) -> QueuePurged:
        if now - self._last_purge_at < PURGE_INTERVAL_S:
            raise BrokerError(
                "PurgeQueueInProgress",
                f"Only one PurgeQueue operation on {self.name} is allowed every {PURGE_INTERVAL_S} seconds.",
            )
        self._last_purge_at = now
        self._purged_through_ticket = max(self._pending_sends.values(), default=self._purged_through_ticket)
        self.messages.clear()
        self._ready.clear()
        self._timers.clear()
        self.outgoing.clear()
        self._attempts.clear()
        self.in_flight_count = 0
        self._expiry_check_at = math.inf
        return QueuePurged(wall_ms, self.queue_id, self.name, 0)  # the store stamps the purge's LSN

    def deleted_record(self, wall_ms: int) -> QueueDeleted:
        return QueueDeleted(wall_ms, self.queue_id, self.name)

    def expired_record(self, seq: int, row: MessageSent | None, wall_ms: int) -> MessageDeleted:
        message_id = row.message_id if row is not None else ""
        return MessageDeleted(wall_ms, self.queue_id, self.name, seq, message_id, "expired")

    def set_attributes(self, attributes: Mapping[str, str], wall_ms: int) -> QueueAttributesChanged:
        changed = validation.validate_queue_attributes(attributes, fifo=self.config.fifo)
        merged = {**self.attributes, **changed, "LastModifiedTimestamp": str(wall_ms // 1000)}
        validation.check_fifo_throughput(merged)
        if self.config.fifo and merged.get("DeduplicationScope") != self.attributes.get("DeduplicationScope"):
            self._dedup = DedupWindow(merged.get("DeduplicationScope") == "messageGroup")  # keys change meaning
        self.attributes = {name: value for name, value in merged.items() if value != "" or name != "RedrivePolicy"}
        self.config = validation.queue_config(self.attributes)
        self._expiry_check_at = -math.inf  # the retention period may have shrunk
        return self._configuration(wall_ms)

    def tag(self, tags: Mapping[str, str], wall_ms: int) -> QueueAttributesChanged:
        self.tags = policy.tagged(self.tags, tags)
        return self._configuration(wall_ms)

    def untag(self, keys: Sequence[str], wall_ms: int) -> QueueAttributesChanged:
        self.tags = policy.untagged(self.tags, keys)
        return self._configuration(wall_ms)

    def add_permission(
        self, label: str, account_ids: Sequence[str], actions: Sequence[str], wall_ms: int
    ) -> QueueAttributesChanged:
        document = policy.with_permission(self.attributes.get("Policy"), self.arn, label, account_ids, actions)
        self.attributes = {**self.attributes, "Policy": document}
        return self._configuration(wall_ms)

    def remove_permission(self, label: str, wall_ms: int) -> QueueAttributesChanged:
        self.attributes = policy.without_permission(self.attributes, self.arn, label)
        return self._configuration(wall_ms)

    def _configuration(self, wall_ms: int) -> QueueAttributesChanged:
        return QueueAttributesChanged(
            wall_ms, self.queue_id, self.name, dict(self.attributes), self.region, dict(self.tags)
        )

    # --- message move tasks ---------------------------------------------------------------------
    def start_move_task(
        self, destination_arn: str, max_per_second: int | None, now: float, wall_ms: int
    ) -> MoveTaskChanged:
        if self.move_task is not None:
            raise BrokerError("UnsupportedOperation", f"A message move task is already running on {self.name}.")
        if max_per_second is not None and not 1 <= max_per_second <= 500:
            raise invalid(f"Value {max_per_second} for parameter MaxNumberOfMessagesPerSecond is invalid. Reason: 1 to 500.")
        started_ms = max(wall_ms, self.move_tasks[-1].started_ms + 1) if self.move_tasks else wall_ms
        record = MoveTaskChanged(
            at_ms=wall_ms,
            queue_id=self.queue_id,
            queue=self.name,
            started_ms=started_ms,
            status="RUNNING",
            through_seq=next(reversed(self.messages), 0),
            destination_arn=destination_arn,
            max_per_second=max_per_second or 0,
            to_move=len(self.messages),
            moved=0,
        )
        self._keep_task(record)
        self.move_task = MoveTask(record, refilled_at=now)
        return record

    def cancel_move_task(self, started_ms: int, wall_ms: int) -> MoveTaskChanged:
        task = self.move_task
        if task is None or task.record.started_ms != started_ms or task.record.status != "RUNNING":
            raise BrokerError("ResourceNotFoundException", "The message move task does not exist or is not running.")
        return self._update_task(wall_ms, status="CANCELLING" if task.in_transit else "CANCELLED")

    def take_for_move_task(self, now: float) -> list[Live]:
        """Ready messages the running move task may hand over now (marked MOVING)."""
        task = self.move_task
        if task is None or task.record.status != "RUNNING" or task.in_transit >= MAX_MOVES_IN_TRANSIT:
            return []
        self.advance(now)
        limit = min(MOVE_BATCH, MAX_MOVES_IN_TRANSIT - task.in_transit)
        rate = task.record.max_per_second
        if rate:
            task.tokens = min(float(rate), task.tokens + (now - task.refilled_at) * rate)
            task.refilled_at = now
            limit = min(limit, int(task.tokens))
        taken: list[Live] = []
        through = task.record.through_seq
        for seq, live in self.messages.items():
            if seq > through or len(taken) >= limit:
                break
            if live.visible_at == READY:
                self._schedule(live, MOVING)
                taken.append(live)
        task.tokens -= len(taken) if rate else 0
        task.in_transit += len(taken)
        if not taken:
            task.idle_until = now + 0.1
        return taken

    def move_task_progress(self, started_ms: int, moved: int, error: str, wall_ms: int) -> MoveTaskChanged | None:
        """The outcome of one hand-over of a task: the running task's new state to store."""
        task = self.move_task
        if task is None or task.record.started_ms != started_ms:
            return None
        task.in_transit = max(0, task.in_transit - moved)  # a restart in between forgot the count
        if error:
            return self._update_task(wall_ms, status="FAILED", failure_reason=error)
        return self._update_task(wall_ms, moved=task.record.moved + moved)

    def move_task_finished(self, wall_ms: int) -> MoveTaskChanged | None:
        """The task's final state, once nothing it started is in transit and, when running,
        every message that was here when it started has left."""
        task = self.move_task
        if task is None or task.in_transit:
            return None
        if task.record.status == "CANCELLING":
            return self._update_task(wall_ms, status="CANCELLED")
        first = next(iter(self.messages), None)
        if task.record.status == "RUNNING" and (first is None or first > task.record.through_seq):
            return self._update_task(wall_ms, status="COMPLETED")
        return None

    def _task_can_move(self, task: MoveTask) -> bool:
        first = next(iter(self.messages), None)
        return task.in_transit < MAX_MOVES_IN_TRANSIT and bool(self._ready) and first is not None and first <= task.record.through_seq

    def _update_task(self, wall_ms: int, **changes: object) -> MoveTaskChanged:
        assert self.move_task is not None
        record = msgspec.structs.replace(self.move_task.record, at_ms=wall_ms, **changes)
        self._keep_task(record)
        if record.status in ("RUNNING", "CANCELLING"):
            self.move_task.record = record
        else:
            self.move_task = None
        return record

    def _keep_task(self, record: MoveTaskChanged) -> None:
        if self.move_tasks and self.move_tasks[-1].started_ms == record.started_ms:
            self.move_tasks[-1] = record
        else:
            self.move_tasks = [*self.move_tasks, record][-KEPT_MOVE_TASKS:]

    # --- receive attempts (FIFO) ----------------------------------------------------------------
    def repeat_attempt(self, attempt_id: str, now: float) -> list[Live] | None:
        """The messages an earlier receive with this ReceiveRequestAttemptId returned, if that was
        within 5 minutes and every one of them is still in flight from it."""
        attempt = self._attempts.get(attempt_id)
        if attempt is None or attempt.expires_at <= now:
            return None
        lives = []
        for seq, receive_count in attempt.deliveries:
            live = self.messages.get(seq)
            if live is None or live.receive_count != receive_count or message_state(live, now) != IN_FLIGHT:
                del self._attempts[attempt_id]
                return None
            lives.append(live)
        return lives

    def remember_attempt(self, attempt_id: str, seqs: Sequence[int], now: float) -> None:
        self._attempts[attempt_id] = _ReceiveAttempt(
            now + RECEIVE_ATTEMPT_WINDOW_S, [(seq, self.messages[seq].receive_count) for seq in seqs]
        )

    def counts(self, now: float) -> QueueCounts:
        states = [message_state(live, now) for live in self.messages.values()]
        return QueueCounts(states.count(VISIBLE), states.count(IN_FLIGHT), states.count(DELAYED))

    def peek(self, after_seq: int, max_messages: int, state: str, now: float) -> list[tuple[Live, str]]:
        """Up to max_messages live messages with seq > after_seq (in a state, if given), oldest
        first, with their states. Changes nothing."""
        if state not in ("", VISIBLE, IN_FLIGHT, DELAYED):
            raise invalid(f"Value {state[:40]} for parameter state is invalid: visible, in_flight or delayed.")
        if not 1 <= max_messages <= 1000:
            raise invalid("Value for parameter max_messages is invalid: 1 to 1000.")
        found = []
        for seq, live in self.messages.items():
            if seq <= after_seq:
                continue
            live_state = message_state(live, now)
            if not state or live_state == state:
                found.append((live, live_state))
                if len(found) >= max_messages:
                    break
        return found

    def get_attributes(self, names: Sequence[str], now: float) -> dict[str, str]:
        validation.check_attribute_names(names)
        counts = self.counts(now)
        everything = {
            **self.attributes,
            "QueueArn": self.arn,
            "ApproximateNumberOfMessages": str(counts.visible),
            "ApproximateNumberOfMessagesNotVisible": str(counts.in_flight),
            "ApproximateNumberOfMessagesDelayed": str(counts.delayed),
        }
        return select_named(everything, names)

    # --- time ---------------------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Make every message whose deadline has passed visible again."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, seq = heapq.heappop(timers)
            live = self.messages.get(seq)
            if live is not None and live.visible_at == deadline:
                self._schedule(live, READY)

    def expire(self, now: float) -> list[int]:
        """Remove messages past the retention period; returns their seqs (oldest first)."""
        if now < self._expiry_check_at:
            return []
        retention = self.config.retention_s
        expired = []
        self._expiry_check_at = math.inf
        for seq, live in self.messages.items():
            if live.sent_at + retention > now:
                self._expiry_check_at = live.sent_at + retention
                break
            expired.append(seq)
        for seq in expired:
            self._forget(self.messages[seq])
        return expired

    def expire_dedup(self, now: float, wall_ms: int) -> DedupWindowClosed | None:
        """About once a minute: forget deduplication ids and receive attempts older than 5
        minutes, and give a record that lets the store drop those ids too. (Sends compare
        expiry times themselves, so nothing waits for this.)"""
        if now < self._housekeeping_at:
            return None
        self._housekeeping_at = now + HOUSEKEEPING_INTERVAL_S
        for attempt_id in [a for a, attempt in self._attempts.items() if attempt.expires_at <= now]:
            del self._attempts[attempt_id]
        closed = self._dedup.expire(now)
        return None if closed is None else DedupWindowClosed(wall_ms, self.queue_id, self.name, closed)

    def next_deadline(self, now: float) -> float:
        """When the shell must next call tick-related methods even if no request arrives."""
        if self._waiters and self._ready:
            return now
        candidates = [self._expiry_check_at]
        task = self.move_task
        if task is not None and task.record.status == "RUNNING" and self._task_can_move(task):
            rate = task.record.max_per_second
            tokens_at = task.refilled_at + (1 - task.tokens) / rate if rate and task.tokens < 1 else now
            candidates.append(max(task.idle_until, tokens_at))
        if self._dedup or self._attempts:
            candidates.append(self._housekeeping_at)
        if self._timers:
            candidates.append(self._timers[0][0])
        if self._waiter_deadlines:
            candidates.append(self._waiter_deadlines[0][0])
        return min(candidates)

    # --- long polls ---------------------------------------------------------------------------
    def add_waiter(self, waiter: Waiter) -> None:
        waiter_id = next(self._waiter_ids)
        self._waiters[waiter_id] = waiter
        heapq.heappush(self._waiter_deadlines, (waiter.deadline, waiter_id))

    def pop_expired_waiters(self, now: float) -> list[Waiter]:
        expired = []
        while self._waiter_deadlines and self._waiter_deadlines[0][0] <= now:
            _, waiter_id = heapq.heappop(self._waiter_deadlines)
            waiter = self._waiters.pop(waiter_id, None)
            if waiter is not None:
                expired.append(waiter)
        return expired

    def pop_servable_waiters(self, now: float) -> list[tuple[Waiter, list[Live]]]:
        """Waiters, in arrival order, paired with the messages they now get."""
        served = []
        self.advance(now)
        while self._waiters and self._ready:
            waiter_id = next(iter(self._waiters))
            lives = self.take_ready(self._waiters[waiter_id].max_messages, now)
            if not lives:
                break
            served.append((self._waiters.pop(waiter_id), lives))
        return served

    def drain_waiters(self) -> list[Waiter]:
        waiters = list(self._waiters.values())
        self._waiters.clear()
        self._waiter_deadlines.clear()
        return waiters

    def waiter_count(self) -> int:
        return len(self._waiters)

    # --- helpers ------------------------------------------------------------------------------
    def _schedule(self, live: Live, visible_at: float) -> None:
        was_in_flight = _in_flight(live)
        live.visible_at = visible_at
        change = _in_flight(live) - was_in_flight
        if change:
            self.in_flight_count += change
            if self.config.fifo:
                (self._ready.lock if change > 0 else self._ready.unlock)(live.group)
        if visible_at == READY:
            self._ready.push(live.seq, live.group)
        elif visible_at != MOVING:
            heapq.heappush(self._timers, (visible_at, live.seq))

    def _forget(self, live: Live) -> None:
        del self.messages[live.seq]
        if _in_flight(live):
            self.in_flight_count -= 1
            if self.config.fifo:
                self._ready.unlock(live.group)


    def render_received(
        self,
        record: MessageReceived,
        row: MessageSent,
        attribute_names: Sequence[str],
        message_attribute_names: Sequence[str],
    ) -> ReceivedMessage:
        handle = encode_receipt_handle(
            ReceiptHandle(self.queue_id, record.seq, record.receive_count, record.message_id)
        )
        attributes = system_attributes(row, record, attribute_names, self.config.fifo, self.account_id)
        message_attributes = select_message_attributes(row.attributes, message_attribute_names)
        return ReceivedMessage(
            message_id=row.message_id,
            receipt_handle=handle,
            body=row.body,
            md5_of_body=validation.md5_of_body(row.body),
            md5_of_message_attributes=validation.md5_of_message_attributes(message_attributes),
            attributes=attributes,
            message_attributes=message_attributes,
        )


def _in_flight(live: Live) -> bool:
    """Received, with its visibility timeout still pending (structurally: the timer has not fired)."""
    return live.visible_at != READY and live.receive_count > 0


def message_state(live: Live, now: float) -> str:
    if live.visible_at == READY or live.visible_at <= now:
        return VISIBLE
    return IN_FLIGHT if live.receive_count else DELAYED


def system_attributes(
    row: MessageSent, record: MessageReceived, names: Sequence[str], fifo: bool, account_id: str
) -> dict[str, str]:
    if not names:
        return {}
    everything = {
        "SenderId": row.sender_id or account_id,
        "SentTimestamp": str(row.first_sent_ms or row.at_ms),
        "ApproximateReceiveCount": str(record.receive_count),
        "ApproximateFirstReceiveTimestamp": str(record.first_receive_ms),
    }
    if "AWSTraceHeader" in row.system_attributes:
        everything["AWSTraceHeader"] = row.system_attributes["AWSTraceHeader"].string_value or ""
    if row.group_id:
        everything["MessageGroupId"] = row.group_id
    if row.dedup_id:
        everything["MessageDeduplicationId"] = row.dedup_id
    if fifo:
        everything["SequenceNumber"] = sequence_number(row.seq)
    if row.dead_letter_source_arn:
        everything["DeadLetterQueueSourceArn"] = row.dead_letter_source_arn
    return select_named(everything, names)


def sequence_number(seq: int) -> str:
    """A FIFO message's SequenceNumber: its LSN, as the 20-digit string AWS uses."""
    return f"{seq:020d}"


def select_named(everything: dict[str, str], names: Sequence[str]) -> dict[str, str]:
    """The entries a request named, or all of them for `All` (as SQS attribute names work)."""
    if "All" in names:
        return everything
    return {name: everything[name] for name in names if name in everything}


def select_message_attributes(
    attributes: Mapping[str, MessageAttribute], names: Sequence[str]
) -> dict[str, MessageAttribute]:
    """The message attributes a receive asked for: `All` or `.*` for every one, a name, or a
    prefix such as `bar.*`."""
    if not attributes or not names:
        return {}
    if "All" in names or ".*" in names:
        return dict(attributes)
    prefixes = tuple(name[:-1] for name in names if name.endswith(".*"))
    exact = set(names)
    return {
        name: value
        for name, value in attributes.items()
        if name in exact or (prefixes and name.startswith(prefixes))
    }
