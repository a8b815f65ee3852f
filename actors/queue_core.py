"""The rules of one SQS queue, as a pure object: no I/O, no clock of its own.

Theory of operation
-------------------
The Trio shell (`queue.py`) owns the one QueueCore of a queue and drives it in cycles from its own
task only: each request of a cycle goes to `handle`, then `tick` runs the timers, and both fill a
`Cycle` with what the shell must do: records to commit, sends (which storage may refuse when the
disk is full), answers that wait for the commit, and hand-overs of messages to other queues. What
needs no commit (a read, a refusal) is answered at once. Once the shell has the cycle committed,
`settle` applies it and gives the answers to send. Every step takes the current time as arguments:
`now` in seconds on the monotonic deadline clock, `wall_ms` in wall-clock milliseconds for what is
stored or shown; steps that need message bodies are given a `read` function (seqs -> stored rows).

Message bodies are not held here: the store keeps them. In memory each live message is a small
`Live` record:

- ready:      `visible_at == READY`, and its seq is in the ready set (ready_set.py): one heap per
              message group, lowest seq first, groups served in turn (FIFO: by when their next
              message became ready);
- delayed:    never received, `visible_at` in the future, a `_timers` entry;
- in flight:  received, `visible_at` in the future, a `_timers` entry;
- moving:     `visible_at == MOVING`: handed to another queue (dead-letter redrive, a move task)
              whose commit stores it there and deletes it here in one transaction; until that
              queue answers, it is neither deliverable nor deletable here.

FIFO queues add: a message in flight (or moving) holds back its group's later messages (an earlier
one that became visible again is delivered), and a receive takes as many messages of one group as
it can, in order;
deduplication ids are remembered for 5 minutes from the send (`_dedup`), including for sends not
yet committed, and survive restarts through the store's dedup table; a retried receive with the
same ReceiveRequestAttemptId gets the same messages.

Heaps are cleaned lazily: an entry whose message is gone, or whose deadline no longer matches
`visible_at`, is skipped when popped, so deletes and visibility changes are O(1).

What /metrics reads is kept as it changes, so a scrape costs the same for a queue of any size: the
counts in flight and delayed (visible is the rest), moved in `_schedule` and `_forget` as a message
starts or stops waiting for a timer, and `counters` of messages in and out by way (sent, received,
deleted, expired, ...). They are plain ints of this object, changed only by its actor's task.

Two phases. A send is validated and given its record (`prepare_send`, the one place a send is
checked, for SendMessage and each batch entry alike) but becomes visible only once `settle` is
told it was committed, because a send may still be refused by storage. Every other change
(receive, delete, visibility, purge, attributes) is applied at once and committed by the shell
before any answer; if that commit fails the shell discards this object and rebuilds the queue from
storage, so memory is never ahead of disk when anyone can observe it.

Receipt handles carry the receive count, as AWS's do: on a standard queue any handle of a message
still deletes it (and changes its visibility while it is in flight), on a FIFO queue only the handle
of the receive it is in flight from does. Sequence numbers are never reused (after a restart they
continue above the store's last LSN), so an old handle can never name a newer message.
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, TypeVar

import msgspec
from dovecote.storage.records import (
    DedupWindowClosed,
    MessageAttribute,
    MessageDeleted,
    MessageReceived,
    MessageSent,
    QueueAttributesChanged,
    QueueDeleted,
    QueuePurged,
    Record,
    VisibilityChanged,
)
from dovecote.storage.store import LoadedQueue

from . import authorization, policy, sqs_results, validation
from .attributes import to_stored, to_wire
from .dedup import DedupWindow
from .errors import (
    BrokerError,
    failure,
    invalid,
    no_such_queue,
    not_an_operation,
    original_not_stored,
    storage_failed,
)
from .ids import MessageIds, ReceiptHandle, decode_receipt_handle, decode_task_handle, encode_task_handle
from .limits import (
    HOUSEKEEPING_INTERVAL_S,
    MOVE_RETRY_S,
    SQS_MAX_DELAY_S,
    SQS_MAX_IN_FLIGHT_MESSAGES,
    SQS_MAX_MESSAGE_BYTES,
    SQS_MAX_VISIBILITY_TIMEOUT_S,
    SQS_PURGE_INTERVAL_S,
    SQS_RECEIVE_ATTEMPT_WINDOW_S,
)
from .messages import Adopt, AdoptedMessage, MovedOut, MoveIn, Reply, Request, Stop
from .move_tasks import QueueMoveTasks
from .ops import (
    AddPermission,
    Attributes,
    BatchFailure,
    BatchResult,
    CancelMessageMoveTask,
    ChangeMessageVisibility,
    ChangeMessageVisibilityBatch,
    DeleteMessage,
    DeleteMessageBatch,
    DeleteQueue,
    Done,
    GetQueueAttributes,
    ListMessageMoveTasks,
    ListQueueTags,
    MovedCount,
    MoveTasks,
    PeekMessages,
    Peeked,
    PeekedMessage,
    PurgeQueue,
    Received,
    ReceiveMessage,
    RemovePermission,
    Result,
    SendBatchResult,
    SendEntry,
    SendMessage,
    SendMessageBatch,
    Sent,
    SentEntry,
    SetQueueAttributes,
    StartMessageMoveTask,
    TagQueue,
    Tags,
    TaskHandle,
    UntagQueue,
)
from .ready_set import FifoReadySet, ReadySet
from .stored_time import elapsed_since

READY = -math.inf
MOVING = math.inf
VISIBLE, IN_FLIGHT, DELAYED = "visible", "in_flight", "delayed"

R = TypeVar("R", MessageReceived, VisibilityChanged)
MessageReader = Callable[[Sequence[int]], Sequence[MessageSent | None]]  # seqs -> stored rows (None: gone)


class Live(msgspec.Struct, gc=False):
    seq: int
    sent_at: float  # monotonic seconds; retention counts from here
    receive_count: int
    first_receive_ms: int
    visible_at: float  # READY, or the monotonic deadline at which it becomes visible
    group: str = ""  # MessageGroupId


class Waiter(msgspec.Struct, gc=False):
    """A long-polling ReceiveMessage parked until messages arrive or its deadline passes."""

    max_messages: int
    visibility_timeout_s: int | None
    deadline: float
    attribute_names: Sequence[str]
    message_attribute_names: Sequence[str]
    reply: Callable
    attempt_id: str | None = None  # FIFO ReceiveRequestAttemptId


class DuplicateSend(msgspec.Struct, frozen=True):
    """A FIFO send whose deduplication id was seen within 5 minutes: accepted, not stored again."""

    message_id: str
    dedup_key: str
    body: str
    attributes: dict[str, MessageAttribute]
    system_attributes: dict[str, MessageAttribute]


class _ReceiveAttempt(msgspec.Struct, gc=False):
    expires_at: float
    deliveries: list[tuple[int, int]]  # (seq, receive_count) of each message it returned


class QueueCounts(msgspec.Struct, frozen=True):
    visible: int
    in_flight: int
    delayed: int


class QueueCounters:
    """How many messages came into this queue and left it, and how, since the broker started: plain
    counts, changed by the queue's own task alone and read by anyone (/metrics). A queue rebuilt
    from the store after a failure keeps its counters (recovery.py hands them on)."""

    __slots__ = ("sent", "moved_in", "received", "deleted", "expired", "purged", "dead_lettered", "moved_out")

    def __init__(self) -> None:
        self.sent = 0  # stored by SendMessage(Batch) (FIFO duplicates not), or delivered by a topic
        self.moved_in = 0  # stored here by a move from another queue (dead letters, move tasks) or a push's dead letter
        self.received = 0  # handed to a receive (each message each time)
        self.deleted = 0  # deleted by a receipt handle
        self.expired = 0  # past the retention period
        self.purged = 0  # removed by PurgeQueue
        self.dead_lettered = 0  # moved to this queue's dead-letter queue (counted once that queue stored it)
        self.moved_out = 0  # moved to another queue by a message move task (likewise)


class SendGroup(NamedTuple):
    """One SendMessage or SendMessageBatch of a cycle, answered once its records are settled."""

    reply: Reply
    entry_ids: list[str] | None  # the batch entries of `prepared`, in order; None: a SendMessage
    prepared: list[MessageSent | DuplicateSend]
    refused: list[BatchFailure]  # batch entries refused before anything was stored


class HandOver(NamedTuple):
    """Messages to send to another queue now; its answer comes back as a MovedOut."""

    destination_arn: str
    message: MoveIn
    seqs: list[int]
    task_started_ms: int  # the move task handing them over (0: dead-letter redrive)


class Cycle:
    """What one cycle of a queue will commit, and what waits for that commit."""

    __slots__ = ("records", "sends", "replies", "hand_overs", "ended_by", "adopted", "stores_here", "warnings")

    def __init__(self) -> None:
        self.records: list[Record] = []  # committed in one entry storage does not refuse for space
        self.sends: list[SendGroup] = []  # their records go in an entry storage may refuse
        self.replies: list[tuple[Reply, Result]] = []  # sent once the cycle is committed
        self.hand_overs: list[HandOver] = []
        self.ended_by: Request | None = None  # a DeleteQueue or Stop
        self.adopted: list[AdoptedMessage] = []
        # Whether `records` hold what must be applied once stored (messages moved in, a purge),
        # so the usual cycle of receives and deletes is not looked through again.
        self.stores_here = False
        self.warnings: list[str] = []  # for the shell's log

    def reply_after_commit(self, reply: Reply, result: Result) -> None:
        self.replies.append((reply, result))

    def send_records(self) -> list[MessageSent]:
        return [p for group in self.sends for p in group.prepared if isinstance(p, MessageSent)]

    def failed(self, result: Result) -> list[tuple[Reply, Result]]:
        """Every answer of this cycle as `result` (the queue is rebuilt from the store next)."""
        answers = [(group.reply, result) for group in self.sends] + [(reply, result) for reply, _ in self.replies]
        self.sends.clear()
        self.replies.clear()
        return answers


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
        self.access = authorization.OwnPolicy()  # the Policy attribute, parsed (see the attributes setter)
        self.attributes: dict[str, str] = dict(attributes)
        self.config = validation.queue_config(self.attributes)
        self.tags: dict[str, str] = dict(tags or {})
        self._last_purge_at = -math.inf
        self.messages: dict[int, Live] = {}
        self._ready: ReadySet | FifoReadySet = FifoReadySet() if self.config.fifo else ReadySet()
        self._timers: list[tuple[float, int]] = []
        # Sends prepared but not yet stored, by MessageId -> the prepare ticket; a purge drops
        # every send prepared before it, whenever that send's commit completes.
        self._pending_sends: dict[str, int] = {}
        self._tickets = itertools.count(1)
        self._purged_through_ticket = 0
        self.in_flight_count = 0  # received and not yet visible again, deleted or expired
        self.delayed_count = 0  # never received and not yet visible (or moving): see _delayed()
        self.counters = QueueCounters()
        self.max_in_flight = SQS_MAX_IN_FLIGHT_MESSAGES
        self._expiry_check_at = math.inf
        self._waiters: dict[int, Waiter] = {}
        self._waiter_deadlines: list[tuple[float, int]] = []
        self._waiter_ids = itertools.count()
        self._message_ids = MessageIds()
        self._dedup = DedupWindow(self.config.dedup_per_group)
        self._housekeeping_at = -math.inf
        self._attempts: dict[str, _ReceiveAttempt] = {}
        self._outgoing: list[int] = []  # seqs marked MOVING for the dead-letter queue, not yet handed over
        self.move_tasks = QueueMoveTasks(queue_id, name, arn)
        # Messages other actors stored here (a topic's fan-out) arrive after their commit: those
        # at or below restored_lsn were read from the store already, and those at or below
        # purged_through were purged.
        self.restored_lsn = 0
        self.purged_through = 0

    @classmethod
    def restore(
        cls, loaded: LoadedQueue, arn: str, *, now: float, wall_ms: int, last_written_ms: int, restored_lsn: int = 0
    ) -> QueueCore:
        """Rebuild a queue from its stored rows. How long ago each was stored is worked out as
        stored_time.py says (a wall clock set while the broker was stopped ages nothing), and the
        deadlines are clamped to the longest timeout SQS allows."""
        row = loaded.row
        core = cls(row.queue_id, row.queue, row.attributes, arn, tags=row.tags)
        core.restored_lsn = restored_lsn
        messages, ready = core.messages, core._ready
        elapsed_ms = elapsed_since(last_written_ms, wall_ms)
        # Groups are read from the store for FIFO queues only (see Store.load_queue): on a standard
        # queue, messages stored before a restart are served oldest first, without the fair
        # rotation; new sends rotate again.
        fifo = core.config.fifo
        ready_seqs: list[int] = []  # a standard queue's, all of group "": pushed at once
        # Messages stored in one commit share their wall time, and so their age and sent_at.
        last_at_ms, age_s, sent_at = None, 0.0, 0.0
        for seq, at_ms, delay_seconds, delivery, group in loaded.messages:
            group = sys.intern(group) if group else ""
            if at_ms != last_at_ms:
                last_at_ms, age_s = at_ms, elapsed_ms(at_ms) / 1000
                sent_at = now - age_s
            if delivery is None:
                live = Live(seq, sent_at, 0, 0, READY, group)
                remaining = min(delay_seconds - age_s, SQS_MAX_DELAY_S)
            else:
                live = Live(seq, sent_at, delivery.receive_count, delivery.first_receive_ms, READY, group)
                timeout_ms = delivery.visible_at_ms - delivery.at_ms
                remaining_ms = timeout_ms - elapsed_ms(delivery.at_ms)
                remaining = min(remaining_ms / 1000, SQS_MAX_VISIBILITY_TIMEOUT_S)
            messages[seq] = live
            if remaining > 0:
                live.visible_at = now + remaining
                core._timers.append((live.visible_at, seq))
                core.in_flight_count += _in_flight(live)
                core.delayed_count += _delayed(live)
                if fifo and live.receive_count:
                    ready.lock(group, seq)
            elif fifo or group:
                ready.push(seq, group)
            else:
                ready_seqs.append(seq)
        if ready_seqs:  # a standard queue's (a FIFO queue's all have groups)
            ready.push_all(ready_seqs, "")
        heapq.heapify(core._timers)
        core._expiry_check_at = -math.inf
        core._dedup.restore(loaded.dedup, now, elapsed_ms)
        core.move_tasks.restore(loaded.move_tasks, now)
        return core

    @property
    def attributes(self) -> dict[str, str]:
        return self._attributes

    @attributes.setter
    def attributes(self, attributes: dict[str, str]) -> None:
        self._attributes = attributes
        self.access.update(attributes.get("Policy"))

    def share_policy(self, slot: authorization.PolicySlot) -> None:
        """Publish the queue's parsed Policy in `slot` (its directory entry's) from now on."""
        self.access.share(slot)

    # --- one request --------------------------------------------------------------------------
    def handle(self, request: Request, cycle: Cycle, read: MessageReader, now: float, wall_ms: int) -> None:
        """Handle one request of a cycle: answer it now, or fill `cycle` with what it commits and
        the answer that waits for the commit."""
        op, reply = request.op, request.reply
        if cycle.ended_by is not None:
            reply(failure(no_such_queue()))
            return
        try:
            self._handle(op, reply, request, cycle, read, now, wall_ms)
        except BrokerError as error:
            reply(failure(error))

    def _handle(
        self, op: object, reply: Reply, request: Request, cycle: Cycle, read: MessageReader, now: float, wall_ms: int
    ) -> None:
        records = cycle.records
        match op:
            case SendMessage():
                cycle.sends.append(SendGroup(reply, None, [self.prepare_send(op, op.sender_id, now, wall_ms)], []))
            case SendMessageBatch():
                self._send_batch(op, reply, cycle, now, wall_ms)
            case ReceiveMessage():
                self._receive(op, reply, cycle, read, now, wall_ms)
            case DeleteMessage():
                if (deleted := self.delete(op.receipt_handle, now, wall_ms)) is not None:
                    records.append(deleted)
                cycle.reply_after_commit(reply, Done())
            case DeleteMessageBatch():
                validation.validate_batch(type(op).__name__, [entry.id for entry in op.entries])
                self._batch(op.entries, reply, cycle, lambda e: self.delete(e.receipt_handle, now, wall_ms))
            case ChangeMessageVisibility():
                if (changed := self.change_visibility(op.receipt_handle, op.visibility_timeout, now, wall_ms)) is not None:
                    records.append(changed)
                cycle.reply_after_commit(reply, Done())
            case ChangeMessageVisibilityBatch():
                validation.validate_batch(type(op).__name__, [entry.id for entry in op.entries])
                self._batch(
                    op.entries, reply, cycle, lambda e: self.change_visibility(e.receipt_handle, e.visibility_timeout, now, wall_ms)
                )
            case GetQueueAttributes():
                reply(Attributes(self.get_attributes(op.attribute_names, now)))
            case SetQueueAttributes():
                records.append(self.set_attributes(op.attributes, wall_ms))
                cycle.reply_after_commit(reply, Done())
            case PurgeQueue():
                records.append(self.purge(now, wall_ms))
                cycle.stores_here = True
                cycle.reply_after_commit(reply, Done())
            case TagQueue():
                records.append(self.tag(op.tags, wall_ms))
                cycle.reply_after_commit(reply, Done())
            case UntagQueue():
                records.append(self.untag(op.tag_keys, wall_ms))
                cycle.reply_after_commit(reply, Done())
            case ListQueueTags():
                reply(Tags(dict(self.tags)))
            case AddPermission():
                records.append(self.add_permission(op.label, op.account_ids, op.actions, wall_ms))
                cycle.reply_after_commit(reply, Done())
            case RemovePermission():
                records.append(self.remove_permission(op.label, wall_ms))
                cycle.reply_after_commit(reply, Done())
            case PeekMessages():
                reply(self.peek(op, read, now, wall_ms))
            case Adopt():
                cycle.adopted.extend(op.messages)
            case MoveIn():
                cycle.stores_here = True
                records.extend(self.prepare_moved_in(op.rows, op.source_arn, op.dead_letter, wall_ms))
                records.extend(op.removals)
                cycle.reply_after_commit(reply, Done())
            case MovedOut():
                self._moved_out(op.seqs, op.error, op.task_started_ms, cycle, now, wall_ms)
            case StartMessageMoveTask():
                record = self.move_tasks.start(
                    op.destination_arn, op.max_number_of_messages_per_second, next(reversed(self.messages), 0),
                    len(self.messages), now, wall_ms,
                )
                records.append(record)
                cycle.reply_after_commit(reply, TaskHandle(encode_task_handle(self.arn, record.started_ms)))
            case ListMessageMoveTasks():
                reply(MoveTasks(self.move_tasks.listed(op.max_results)))
            case CancelMessageMoveTask():
                arn, started_ms = decode_task_handle(op.task_handle)
                if arn != self.arn:
                    raise BrokerError("ResourceNotFoundException", "The task handle names a task of another queue.")
                record = self.move_tasks.cancel(started_ms, wall_ms)
                records.append(record)
                cycle.reply_after_commit(reply, MovedCount(record.moved))
            case DeleteQueue() | Stop():
                cycle.ended_by = request
            case _:
                raise not_an_operation("queue", op)

    # --- sends --------------------------------------------------------------------------------
    def prepare_send(self, entry: SendMessage | SendEntry, sender_id: str, now: float, wall_ms: int) -> MessageSent | DuplicateSend:
        """Validate one send (a SendMessage, or one entry of a batch) and build its record; nothing
        changes until it is settled as stored. A FIFO send whose deduplication id was seen in the
        last 5 minutes gives a DuplicateSend instead."""
        attributes, system_attributes = entry.message_attributes, entry.message_system_attributes
        validation.validate_delay(entry.delay_seconds)
        validation.validate_message(entry.body, attributes, self.config.max_message_bytes)
        validation.validate_system_attributes(system_attributes)
        config = self.config
        group_id = entry.message_group_id
        dedup_id = validation.fifo_send_parameters(
            config.fifo, config.content_based_dedup, entry.body, entry.delay_seconds, group_id, entry.message_deduplication_id
        )
        if dedup_id:
            key = self._dedup.key(dedup_id, group_id or "")
            seen = self._dedup.seen(key, now)
            if seen is not None:
                return DuplicateSend(seen.message_id, key, entry.body, to_stored(attributes), to_stored(system_attributes))
        record = MessageSent(
            at_ms=wall_ms,
            queue_id=self.queue_id,
            queue=self.name,
            seq=0,  # the store stamps the record's LSN here
            message_id=self._message_ids.new(),
            body=entry.body,
            attributes=to_stored(attributes),
            # (a FIFO queue's messages take the queue's delay: their DelaySeconds can only be 0)
            delay_seconds=config.delay_s if entry.delay_seconds is None or config.fifo else entry.delay_seconds,
            sender_id=sender_id,  # "": the broker's account, filled in when shown
            system_attributes=to_stored(system_attributes),
            group_id=group_id or "",
            dedup_id=dedup_id,
        )
        if dedup_id:
            self._dedup.remember(self._dedup.key(dedup_id, record.group_id), record.message_id, now)
        self._pending_sends[record.message_id] = next(self._tickets)
        return record

    def _send_batch(self, op: SendMessageBatch, reply: Reply, cycle: Cycle, now: float, wall_ms: int) -> None:
        validation.validate_batch(type(op).__name__, [entry.id for entry in op.entries])
        validation.check_batch_size(
            [e.body for e in op.entries], [e.message_attributes for e in op.entries], SQS_MAX_MESSAGE_BYTES
        )
        validation.check_fifo_batch_ids(
            self.config.fifo, self.config.content_based_dedup,
            [(e.message_group_id, e.message_deduplication_id) for e in op.entries],
        )
        entry_ids: list[str] = []
        prepared: list[MessageSent | DuplicateSend] = []
        refused: list[BatchFailure] = []
        for entry in op.entries:
            try:
                prepared.append(self.prepare_send(entry, op.sender_id, now, wall_ms))
            except BrokerError as error:
                refused.append(BatchFailure(entry.id, error.code, error.message, error.kind.sender_fault))
            else:
                entry_ids.append(entry.id)
        if prepared:
            cycle.sends.append(SendGroup(reply, entry_ids, prepared, refused))
        else:
            reply(SendBatchResult([], refused))

    def _send_result(self, prepared: MessageSent | DuplicateSend, stored: MessageSent | None, error: Exception | None) -> Result:
        """The answer to one send once its commit (or, for a duplicate, the original's) is settled."""
        fifo = self.config.fifo
        if isinstance(prepared, DuplicateSend):
            seq = self._dedup.stored_seq(prepared.dedup_key, prepared.message_id)
            if not seq:
                return failure(original_not_stored("send"))
            return sqs_results.sent(prepared.message_id, prepared.body, prepared.attributes, prepared.system_attributes, seq if fifo else None)
        if error is not None:
            return failure(storage_failed(error))
        assert stored is not None
        return sqs_results.sent(stored.message_id, stored.body, stored.attributes, stored.system_attributes, stored.seq if fifo else None)

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

    # --- the commit settled -------------------------------------------------------------------
    def settle(
        self,
        cycle: Cycle,
        stored_sends: Sequence[MessageSent],
        sends_error: Exception | None,
        stored_records: Sequence[Record],
        records_error: Exception | None,
        now: float,
    ) -> list[tuple[Reply, Result]]:
        """Apply a cycle the writer has settled: its sends as stored (or refused with
        `sends_error`), then what it stored here (messages moved in, a purge) and what other
        actors stored here. Returns the cycle's answers, in order. When `records_error` is set,
        the answers waiting for those records are failures, and the caller rebuilds the queue."""
        if sends_error is None:
            self.counters.sent += len(stored_sends)
            for record in stored_sends:
                self._apply_sent(record, now)
        else:
            for record in cycle.send_records():
                self._forget_send(record)
        answers: list[tuple[Reply, Result]] = []
        stored = iter(stored_sends)
        for group in cycle.sends:
            results = [
                self._send_result(p, next(stored) if isinstance(p, MessageSent) and sends_error is None else None, sends_error)
                for p in group.prepared
            ]
            if group.entry_ids is None:
                answers.append((group.reply, results[0]))
            else:
                answers.append((group.reply, _batch_result(group, results)))
        cycle.sends.clear()
        if records_error is not None:
            answers += [(reply, failure(storage_failed(records_error))) for reply, _ in cycle.replies]
            cycle.replies.clear()
            return answers
        if cycle.stores_here:
            for record in stored_records:
                if type(record) is MessageSent and record.queue_id == self.queue_id:  # moved in
                    self.counters.moved_in += 1
                    self._apply_sent(record, now)
                elif type(record) is QueuePurged:
                    self.purged_through = record.through_seq
        for message in cycle.adopted:
            self.adopt(message, now)
        cycle.adopted.clear()
        answers += cycle.replies
        cycle.replies.clear()
        return answers

    def _forget_send(self, record: MessageSent) -> None:
        """A prepared send that storage refused."""
        self._pending_sends.pop(record.message_id, None)
        if record.dedup_id:
            self._dedup.forget(self._dedup.key(record.dedup_id, record.group_id), record.message_id)

    def _apply_sent(self, record: MessageSent, now: float) -> None:
        """Make a stored send live (unless a purge handled after it already removed it)."""
        if record.dedup_id:
            self._dedup.stored(self._dedup.key(record.dedup_id, record.group_id), record.message_id, record.seq)
        ticket = self._pending_sends.pop(record.message_id, None)
        if ticket is not None and ticket <= self._purged_through_ticket:
            self.counters.purged += 1
            return
        self._make_live(record.seq, record.delay_seconds, record.group_id, now)

    def adopt(self, message: AdoptedMessage, now: float) -> None:
        """A message another actor stored in this queue (after its commit, and after every commit
        of this queue's that was pending when it arrived)."""
        if message.seq <= self.restored_lsn or message.seq in self.messages:
            return
        self.counters.sent += 1
        if message.seq <= self.purged_through:
            self.counters.purged += 1
            return
        if message.dedup_id:
            self._dedup.remember(self._dedup.key(message.dedup_id, message.group_id), message.message_id, now, message.seq)
        self._make_live(message.seq, message.delay_seconds, message.group_id, now)

    def _make_live(self, seq: int, delay_seconds: int, group_id: str, now: float) -> None:
        # Interned, so a group's messages share one string however many there are.
        live = Live(seq, now, 0, 0, READY, sys.intern(group_id))
        self.messages[seq] = live
        self._schedule(live, now + delay_seconds if delay_seconds > 0 else READY)
        if self._expiry_check_at == math.inf:
            self._expiry_check_at = now + self.config.retention_s

    # --- receives -----------------------------------------------------------------------------
    def _receive(self, op: ReceiveMessage, reply: Reply, cycle: Cycle, read: MessageReader, now: float, wall_ms: int) -> None:
        validation.validate_receive(op.max_number_of_messages, op.wait_time_seconds)
        if op.visibility_timeout is not None:
            validation.validate_visibility_timeout(op.visibility_timeout)
        validation.check_system_attribute_names(op.attribute_names)
        attempt_id = op.receive_request_attempt_id
        if attempt_id is not None:
            validation.validate_group_id(attempt_id, "ReceiveRequestAttemptId")
            if not self.config.fifo:
                attempt_id = None  # meaningful on FIFO queues only, as on AWS
        waiter = Waiter(
            op.max_number_of_messages, op.visibility_timeout, 0.0, op.attribute_names, op.message_attribute_names, reply, attempt_id
        )
        if attempt_id is not None and (repeated := self._repeat_attempt(attempt_id, now)) is not None:
            self._answer_again(repeated, waiter, cycle, read, wall_ms)
            return
        self.check_in_flight_limit()
        if self._serve(waiter, cycle, read, now, wall_ms):
            return
        wait_s = self.config.receive_wait_s if op.wait_time_seconds is None else op.wait_time_seconds
        if wait_s > 0:
            waiter.deadline = now + wait_s
            self._add_waiter(waiter)
        else:
            reply(Received([]))

    def deliver(
        self, max_messages: int, visibility_timeout_s: int | None, read: MessageReader, now: float, wall_ms: int
    ) -> list[tuple[MessageReceived, MessageSent]]:
        """Receive up to max_messages ready messages, oldest first: each one's receive record (to
        commit) and its stored row."""
        lives = self._take_ready(max_messages, now)
        rows = read([live.seq for live in lives]) if lives else []
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
            received.append((self._delivery_state(MessageReceived, live, row.message_id, timeout, wall_ms), row))
        self.counters.received += len(received)
        return received

    def _serve(self, waiter: Waiter, cycle: Cycle, read: MessageReader, now: float, wall_ms: int) -> bool:
        """Deliver what is ready to a receive; False if nothing was."""
        received = self.deliver(waiter.max_messages, waiter.visibility_timeout_s, read, now, wall_ms)
        if not received:
            return False
        messages = []
        for record, row in received:
            cycle.records.append(record)
            messages.append(self._rendered(record, row, waiter))
        if waiter.attempt_id is not None:
            self._remember_attempt(waiter.attempt_id, [record.seq for record, _ in received], now)
        cycle.reply_after_commit(waiter.reply, Received(messages))
        return True

    def _answer_again(self, lives: list[Live], waiter: Waiter, cycle: Cycle, read: MessageReader, wall_ms: int) -> None:
        """A retried receive (same ReceiveRequestAttemptId): the same messages and handles again."""
        rows = read([live.seq for live in lives])
        messages = [
            self._rendered(
                MessageReceived(wall_ms, self.queue_id, self.name, live.seq, row.message_id, live.receive_count, 0, live.first_receive_ms),
                row,
                waiter,
            )
            for live, row in zip(lives, rows)
            if row is not None
        ]
        cycle.reply_after_commit(waiter.reply, Received(messages))

    def _rendered(self, record: MessageReceived, row: MessageSent, waiter: Waiter):
        return sqs_results.received_message(
            record, row, waiter.attribute_names, waiter.message_attribute_names, fifo=self.config.fifo, account_id=self.account_id
        )

    def _take_ready(self, max_messages: int, now: float) -> list[Live]:
        """Pop up to max_messages ready messages, oldest first; those received maxReceiveCount
        times already go to `_outgoing` (the dead-letter queue) instead."""
        self.advance(now)
        retention = self.config.retention_s
        max_receives = self.config.max_receive_count
        taken: list[Live] = []
        max_messages = min(max_messages, self.max_in_flight - self.in_flight_count)
        if self.config.fifo:
            self._ready.start_receive()
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
                # dead-letter queue instead (the next tick hands `_outgoing` over).
                self._schedule(live, MOVING)
                self._outgoing.append(seq)
                continue
            taken.append(live)
        return taken

    def check_in_flight_limit(self) -> None:
        """A receive past the in-flight limit is refused (OverLimit, as SQS does)."""
        if self.in_flight_count >= self.max_in_flight:
            raise BrokerError(
                "OverLimit",
                f"The queue has {self.in_flight_count} messages in flight, the most it allows; delete some first.",
            )

    # --- moving messages to other queues --------------------------------------------------------
    def _hand_over(
        self,
        seqs: list[int],
        destination_of: Callable[[MessageSent], str],
        task_started_ms: int,
        cycle: Cycle,
        read: MessageReader,
        now: float,
        wall_ms: int,
    ) -> None:
        """Hand messages marked MOVING to the queues destination_of names: each destination
        stores them and, in the same commit, the records that delete them here."""
        rows = read(seqs)
        gone = [seq for seq, row in zip(seqs, rows) if row is None]
        if gone:  # the store lost them (salvage)
            self._forget_lost(gone)
            self._moved_out(gone, "", task_started_ms, cycle, now, wall_ms)
        by_destination: dict[str, list[MessageSent]] = {}
        for row in rows:
            if row is not None:
                by_destination.setdefault(destination_of(row), []).append(row)
        for destination, moving in by_destination.items():
            moved_seqs = [row.seq for row in moving]
            if not destination:
                error = "CouldNotDetermineMessageSource: a message has no DeadLetterQueueSourceArn"
                self._moved_out(moved_seqs, error, task_started_ms, cycle, now, wall_ms)
                continue
            removals: list[Record] = [MessageDeleted(wall_ms, self.queue_id, self.name, row.seq, row.message_id, "moved") for row in moving]
            message = MoveIn(self.arn, moving, task_started_ms == 0, removals)
            cycle.hand_overs.append(HandOver(destination, message, moved_seqs, task_started_ms))

    def _moved_out(self, seqs: list[int], error: str, task_started_ms: int, cycle: Cycle, now: float, wall_ms: int) -> None:
        """The answer to a hand-over: the destination stored the messages (and their deletion
        here), or they stay and are tried again after a pause."""
        if error:
            cycle.warnings.append(f"queue {self.name}: moving {len(seqs)} messages failed: {error}")
            for seq in seqs:
                live = self.messages.get(seq)
                if live is not None and live.visible_at == MOVING:
                    self._schedule(live, now + MOVE_RETRY_S)
        else:
            moved = 0
            for seq in seqs:
                live = self.messages.get(seq)
                if live is not None and live.visible_at == MOVING:
                    self._forget(live)
                    moved += 1
            if task_started_ms:
                self.counters.moved_out += moved
            else:
                self.counters.dead_lettered += moved
        if task_started_ms and (record := self.move_tasks.progress(task_started_ms, len(seqs), error, wall_ms)) is not None:
            cycle.records.append(record)

    def _forget_lost(self, seqs: Iterable[int]) -> None:
        """Messages the store no longer has (salvage dropped them)."""
        for seq in seqs:
            live = self.messages.get(seq)
            if live is not None:
                self._forget(live)

    def _take_for_move_task(self, now: float) -> list[Live]:
        """Ready messages the running move task may hand over now (marked MOVING)."""
        if self.move_tasks.moving() is None:
            return []
        self.advance(now)
        limit = self.move_tasks.allowance(now)
        through = self.move_tasks.running.record.through_seq  # type: ignore[union-attr]
        taken: list[Live] = []
        for seq, live in self.messages.items():
            if seq > through or len(taken) >= limit:
                break
            if live.visible_at == READY:
                self._schedule(live, MOVING)
                taken.append(live)
        self.move_tasks.took(len(taken), now)
        return taken

    # --- receive attempts (FIFO) ----------------------------------------------------------------
    def _repeat_attempt(self, attempt_id: str, now: float) -> list[Live] | None:
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

    def _remember_attempt(self, attempt_id: str, seqs: Sequence[int], now: float) -> None:
        self._attempts[attempt_id] = _ReceiveAttempt(
            now + SQS_RECEIVE_ATTEMPT_WINDOW_S, [(seq, self.messages[seq].receive_count) for seq in seqs]
        )

    # --- deletes and visibility ---------------------------------------------------------------
    def delete(self, receipt_handle: str, now: float, wall_ms: int) -> MessageDeleted | None:
        """Delete by receipt handle; None if the message is already gone (SQS treats that as
        success). Raises ReceiptHandleIsInvalid for a handle of another queue or not issued here.

        On a standard queue any handle of the message deletes it, also one whose visibility
        timeout has passed or whose message was received again since: AWS acts on the message
        (its guide's "might not be deleted" is not what it is seen to do). The record says which
        receive's handle it was. On a FIFO queue only the handle of the receive the message is in
        flight from works; any other has expired, as AWS answers it."""
        handle, live = self._resolve(receipt_handle)
        if live is None:
            return None
        if live.visible_at == MOVING:
            raise BrokerError(
                "ReceiptHandleIsInvalid", "The message is being moved to another queue (its dead-letter queue)."
            )
        if self.config.fifo and not self._in_flight_from(handle, live, now):
            raise invalid(f"Value {receipt_handle[:100]} for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired.")
        self._attempts.clear()
        self._forget(live)
        self.counters.deleted += 1
        reason = "deleted" if handle.receive_count == live.receive_count else f"deleted with the handle of receive {handle.receive_count}"
        return MessageDeleted(wall_ms, self.queue_id, self.name, handle.seq, handle.message_id, reason)

    def change_visibility(
        self, receipt_handle: str, timeout_s: int, now: float, wall_ms: int
    ) -> VisibilityChanged | None:
        """Change the visibility timeout of a message in flight; None when nothing changes.

        On a standard queue any handle of the message works while it is in flight (also from an
        earlier receive), and a message no longer in flight is left as it is with a success: AWS
        answers OK and changes nothing (observed; its MessageNotInflight is not seen). On a FIFO
        queue only the handle of the current receive works, while in flight."""
        validation.validate_visibility_timeout(timeout_s)
        handle, live = self._resolve(receipt_handle)
        if live is not None and live.visible_at == MOVING:
            raise BrokerError("MessageNotInflight", "The message referred to isn't in flight.")
        if live is None or (self.config.fifo and not self._in_flight_from(handle, live, now)):
            raise invalid(
                f"Value {receipt_handle[:100]} for parameter ReceiptHandle is invalid. "
                "Reason: Message does not exist or is not available for visibility timeout change."
            )
        if not self.config.fifo and (not _in_flight(live) or live.visible_at <= now):
            return None
        self._attempts.clear()
        self._schedule(live, now + timeout_s if timeout_s > 0 else READY)
        return self._delivery_state(VisibilityChanged, live, handle.message_id, timeout_s, wall_ms)

    @staticmethod
    def _in_flight_from(handle: ReceiptHandle, live: Live, now: float) -> bool:
        """Whether the message is in flight from the receive that issued this handle."""
        return handle.receive_count == live.receive_count and _in_flight(live) and live.visible_at > now

    def _delivery_state(self, kind: type[R], live: Live, message_id: str, timeout_s: int, wall_ms: int) -> R:
        """A message's delivery state after a receive or a visibility change, to store."""
        return kind(wall_ms, self.queue_id, self.name, live.seq, message_id, live.receive_count, wall_ms + timeout_s * 1000, live.first_receive_ms)

    def _batch(self, entries: Sequence, reply: Reply, cycle: Cycle, change: Callable) -> None:
        successful: list[str] = []
        failed: list[BatchFailure] = []
        for entry in entries:
            try:
                record = change(entry)
            except BrokerError as error:
                failed.append(BatchFailure(entry.id, error.code, error.message, error.kind.sender_fault))
                continue
            if record is not None:
                cycle.records.append(record)
            successful.append(entry.id)
        cycle.reply_after_commit(reply, BatchResult(successful, failed))

    def _resolve(self, receipt_handle: str) -> tuple[ReceiptHandle, Live | None]:
        """The handle and its message (None: gone). Sequence numbers are never reused, so a
        handle names no other message than the one it was issued for."""
        handle = decode_receipt_handle(receipt_handle)
        if handle.queue_id != self.queue_id:
            raise BrokerError("ReceiptHandleIsInvalid", "The receipt handle belongs to another queue.")
        return handle, self.messages.get(handle.seq)

    # --- queue-wide changes -------------------------------------------------------------------
    def purge(self, now: float, wall_ms: int) -> QueuePurged:
        if now - self._last_purge_at < SQS_PURGE_INTERVAL_S:
            raise BrokerError(
                "PurgeQueueInProgress",
                f"Only one PurgeQueue operation on {self.name} is allowed every {SQS_PURGE_INTERVAL_S} seconds.",
            )
        self._last_purge_at = now
        self._purged_through_ticket = max(self._pending_sends.values(), default=self._purged_through_ticket)
        self.counters.purged += len(self.messages)
        self.messages.clear()
        self._ready.clear()
        self._timers.clear()
        self._outgoing.clear()
        self._attempts.clear()
        self._dedup.clear()  # AWS takes a deduplication id sent again after a purge as a new message
        self.in_flight_count = 0
        self.delayed_count = 0
        self._expiry_check_at = math.inf
        return QueuePurged(wall_ms, self.queue_id, self.name, 0)  # the store stamps the purge's LSN

    def deleted_record(self, wall_ms: int) -> QueueDeleted:
        return QueueDeleted(wall_ms, self.queue_id, self.name)

    def set_attributes(self, attributes: Mapping[str, str], wall_ms: int) -> QueueAttributesChanged:
        changed = validation.validate_queue_attributes(attributes, fifo=self.config.fifo)
        merged = {**self.attributes, **changed, "LastModifiedTimestamp": str(wall_ms // 1000)}
        validation.check_fifo_throughput(merged)
        scope = self.attributes.get("DeduplicationScope")
        if self.config.fifo and merged.get("DeduplicationScope") != scope:
            merged.setdefault(validation.CREATED_DEDUPLICATION_SCOPE, scope or "queue")
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

    # --- reading without changing -------------------------------------------------------------
    def running_counts(self) -> QueueCounts:
        """The counts as of this queue's last step, kept as messages change state, so O(1): a
        message whose timer is due but has not fired yet still counts as in flight or delayed
        (counts() below looks at each message and the time instead)."""
        waiting = self.in_flight_count + self.delayed_count
        return QueueCounts(len(self.messages) - waiting, self.in_flight_count, self.delayed_count)

    def oldest_message_age_s(self, now: float) -> float:
        """Seconds since the oldest message still here arrived (0 when there is none). Messages
        are kept in arrival order, so this is the first one: O(1), but for the deleted entries
        CPython's dict skips at its front until it is next resized (about 0.4 ms for 600,000 of
        them)."""
        oldest = next(iter(self.messages.values()), None)
        return max(0.0, now - oldest.sent_at) if oldest is not None else 0.0

    def counts(self, now: float) -> QueueCounts:
        states = [message_state(live, now) for live in self.messages.values()]
        return QueueCounts(states.count(VISIBLE), states.count(IN_FLIGHT), states.count(DELAYED))

    def peek(self, op: PeekMessages, read: MessageReader, now: float, wall_ms: int) -> Peeked:
        """Up to max_messages live messages with seq > after_seq (in a state, if given), oldest
        first, with their states. Changes nothing."""
        state = op.state
        if state not in ("", VISIBLE, IN_FLIGHT, DELAYED):
            raise invalid(f"Value {state[:40]} for parameter state is invalid: visible, in_flight or delayed.")
        if not 1 <= op.max_messages <= 1000:
            raise invalid("Value for parameter max_messages is invalid: 1 to 1000.")
        found: list[tuple[Live, str]] = []
        for seq, live in self.messages.items():
            if seq <= op.after_seq:
                continue
            live_state = message_state(live, now)
            if not state or live_state == state:
                found.append((live, live_state))
                if len(found) >= op.max_messages:
                    break
        rows = read([live.seq for live, _ in found])
        messages = [
            PeekedMessage(
                seq=live.seq,
                message_id=row.message_id,
                state=live_state,
                receive_count=live.receive_count,
                sent_timestamp=row.at_ms,
                visible_at_ms=wall_ms if live_state == VISIBLE else wall_ms + int((live.visible_at - now) * 1000),
                body=row.body,
                message_attributes=to_wire(row.attributes),
            )
            for (live, live_state), row in zip(found, rows)
            if row is not None
        ]
        more = len(found) == op.max_messages
        return Peeked(messages, found[-1][0].seq if more and found else None)

    def get_attributes(self, names: Sequence[str], now: float) -> dict[str, str]:
        validation.check_attribute_names(names)
        counts = self.counts(now)
        everything = {
            **{name: value for name, value in self.attributes.items() if name != validation.CREATED_DEDUPLICATION_SCOPE},
            "QueueArn": self.arn,
            "ApproximateNumberOfMessages": str(counts.visible),
            "ApproximateNumberOfMessagesNotVisible": str(counts.in_flight),
            "ApproximateNumberOfMessagesDelayed": str(counts.delayed),
        }
        return sqs_results.select_named(everything, names)

    # --- time ---------------------------------------------------------------------------------
    def tick(self, cycle: Cycle, read: MessageReader, now: float, wall_ms: int) -> None:
        """What time brings, once a cycle: long polls that end empty or get messages, messages
        past their retention, expired deduplication ids, hand-overs to dead-letter queues and
        move tasks, and a move task's end."""
        for waiter in self._pop_expired_waiters(now):
            waiter.reply(Received([]))
        expired = self.expire(now)
        if expired:
            rows = read(expired)
            cycle.records.extend(
                MessageDeleted(wall_ms, self.queue_id, self.name, seq, row.message_id if row is not None else "", "expired")
                for seq, row in zip(expired, rows)
            )
        if (closed := self.expire_dedup(now, wall_ms)) is not None:
            cycle.records.append(closed)
        self.advance(now)
        while self._waiters and self._ready:
            waiter_id = next(iter(self._waiters))
            if not self._serve(self._waiters[waiter_id], cycle, read, now, wall_ms):
                break
            del self._waiters[waiter_id]
        if self._outgoing:
            outgoing, self._outgoing = self._outgoing, []
            dead_letter_arn = self.config.dead_letter_arn
            self._hand_over(outgoing, lambda row: dead_letter_arn, 0, cycle, read, now, wall_ms)
        if task_lives := self._take_for_move_task(now):
            task = self.move_tasks.running
            assert task is not None
            destination = task.record.destination_arn
            self._hand_over(
                [live.seq for live in task_lives], lambda row: destination or row.dead_letter_source_arn,
                task.record.started_ms, cycle, read, now, wall_ms,
            )
        # The first live message is looked up only while a task runs: after many deletes from the
        # front, finding it means stepping over their empty slots.
        if self.move_tasks.running is not None and (finished := self.move_tasks.finished(self._first_seq(), wall_ms)) is not None:
            cycle.records.append(finished)

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
        self.counters.expired += len(expired)
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
        """When the shell must next tick even if no request arrives."""
        if self._waiters and self._ready:
            return now
        candidates = [self._expiry_check_at]
        if self.move_tasks.moving() is not None:  # (see tick: the first message is looked up only then)
            candidates.append(self.move_tasks.wake_at(now, self._first_seq(), bool(self._ready)))
        if self._dedup or self._attempts:
            candidates.append(self._housekeeping_at)
        if self._timers:
            candidates.append(self._timers[0][0])
        if self._waiter_deadlines:
            candidates.append(self._waiter_deadlines[0][0])
        return min(candidates)

    # --- long polls ---------------------------------------------------------------------------
    def _add_waiter(self, waiter: Waiter) -> None:
        waiter_id = next(self._waiter_ids)
        self._waiters[waiter_id] = waiter
        heapq.heappush(self._waiter_deadlines, (waiter.deadline, waiter_id))

    def _pop_expired_waiters(self, now: float) -> list[Waiter]:
        expired = []
        while self._waiter_deadlines and self._waiter_deadlines[0][0] <= now:
            _, waiter_id = heapq.heappop(self._waiter_deadlines)
            waiter = self._waiters.pop(waiter_id, None)
            if waiter is not None:
                expired.append(waiter)
        return expired

    def drain_waiters(self) -> list[Waiter]:
        waiters = list(self._waiters.values())
        self._waiters.clear()
        self._waiter_deadlines.clear()
        return waiters

    def waiter_count(self) -> int:
        return len(self._waiters)

    # --- helpers ------------------------------------------------------------------------------
    def _first_seq(self) -> int | None:
        return next(iter(self.messages), None)

    def _schedule(self, live: Live, visible_at: float) -> None:
        was_waiting = live.visible_at != READY  # in flight, delayed or moving
        live.visible_at = visible_at
        waiting = visible_at != READY
        if waiting != was_waiting:
            change = 1 if waiting else -1
            if live.receive_count:
                self.in_flight_count += change
                if self.config.fifo:
                    (self._ready.lock if change > 0 else self._ready.unlock)(live.group, live.seq)
            else:
                self.delayed_count += change
        if visible_at == READY:
            self._ready.push(live.seq, live.group, live.receive_count > 0)
        elif visible_at != MOVING:
            heapq.heappush(self._timers, (visible_at, live.seq))

    def _forget(self, live: Live) -> None:
        del self.messages[live.seq]
        if live.visible_at != READY:
            if live.receive_count:
                self.in_flight_count -= 1
                if self.config.fifo:
                    self._ready.unlock(live.group, live.seq)
            else:
                self.delayed_count -= 1


def _batch_result(group: SendGroup, results: list[Result]) -> SendBatchResult:
    successful: list[SentEntry] = []
    refused = list(group.refused)
    for entry_id, result in zip(group.entry_ids or [], results):
        if isinstance(result, Sent):
            successful.append(SentEntry(entry_id, *msgspec.structs.astuple(result)))
        else:
            refused.append(BatchFailure(entry_id, result.code, result.message, False))  # type: ignore[attr-defined]
    return SendBatchResult(successful, refused)


def _in_flight(live: Live) -> bool:
    """Received, with its visibility timeout still pending (structurally: the timer has not fired)."""
    return live.visible_at != READY and live.receive_count > 0


def _delayed(live: Live) -> bool:
    """Never received and not ready (structurally: its delay's timer has not fired, or it is moving)."""
    return live.visible_at != READY and live.receive_count == 0


def message_state(live: Live, now: float) -> str:
    if live.visible_at == READY or live.visible_at <= now:
        return VISIBLE
    return IN_FLIGHT if live.receive_count else DELAYED
