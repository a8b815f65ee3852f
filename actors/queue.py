"""The queue actor: the Trio task that owns one QueueCore.

Theory of operation
-------------------
The actor loops in cycles. It waits for a request (or for the core's next deadline), takes every
other request already in its mailbox, handles them in order against the core, runs the timers
(visibility, delays, retention, long-poll deadlines), and hands the cycle's records to the writer:
sends in one log entry that storage may refuse when the disk is full, everything else in another.
It does not wait for that commit: it goes on with the next cycle, and completes cycles (makes their
sends visible, sends their replies) in order as the writer reports them committed, which it does in
the order they were submitted. The writer's report arrives as a WAKE token in the mailbox (when the
mailbox is full there is no need for one). At most MAX_CYCLES_IN_FLIGHT cycles wait for the disk.

So no reply leaves before the records it depends on are committed, and a send is visible only
once it is committed. If a commit fails for any reason other than a refused send, memory may be
ahead of disk: the actor fails the replies of that cycle and of every later one and raises
RestartFromStorage; the registry rebuilds the queue from the store. Requests reach the actor only
through its bounded mailbox; every request carries its own reply callable, which the actor calls
exactly once and never awaits.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

import msgspec
import trio
from dovecote.storage.records import (
    MessageDeleted,
    MessageReceived,
    MessageSent,
    MoveTaskChanged,
    QueuePurged,
    Record,
)
from dovecote.storage.store import StorageError, StorageFull, Store
from dovecote.storage.writer import AppendEntry, LogWriter

from . import validation
from .clock import Clock
from .mailbox import take_waiting
from .errors import BrokerError, invalid
from .ids import decode_task_handle, encode_task_handle
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
    Failure,
    GetQueueAttributes,
    ListMessageMoveTasks,
    ListQueueTags,
    MovedCount,
    MoveTask,
    MoveTasks,
    Op,
    Peeked,
    PeekedMessage,
    PeekMessages,
    PurgeQueue,
    Received,
    ReceiveMessage,
    RemovePermission,
    Result,
    SendBatchResult,
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
from .queue_core import VISIBLE, Duplicate, Live, QueueCore, Waiter, sequence_number

log = logging.getLogger("dovecote.queue")

Reply = Callable[[Result], None]
MAX_REQUESTS_PER_CYCLE = 256
MAX_CYCLES_IN_FLIGHT = 8


class Request(NamedTuple):
    op: Op
    reply: Reply
    region: str = ""  # the namespace a registry operation acts in ("": the broker's default)


class Stop(Op):
    """Registry to actor: answer long polls with nothing and end (broker shutdown)."""


class MoveIn(Op):
    """To a queue (through the registry): store these messages here and, in the same commit, the
    records that remove them from where they come from (a queue's MessageDeleted, a subscription's
    PushDone). Answered with Done once committed."""

    source_arn: str
    rows: list[MessageSent]
    dead_letter: bool  # True: redrive to a dead-letter queue; False: a message move task
    removals: list[Record]


def move_error(result: Result) -> str:
    """The answer to a MoveIn in words: "" when the destination stored the messages."""
    return "" if isinstance(result, Done) else f"{getattr(result, 'code', '')}: {getattr(result, 'message', result)}"


class Adopt(Op):
    """Messages another actor stored in this queue (a topic's fan-out), posted after its commit."""

    records: list[MessageSent]


class MovedOut(Op):
    """The answer to a MoveIn, posted back into the source queue's mailbox."""

    seqs: list[int]
    error: str  # "" when the destination stored them
    task_started_ms: int = 0  # the move task that sent them (0: dead-letter redrive)


Forward = Callable[[str, Op, "Reply"], None]  # (queue ARN, op, reply): deliver op to that queue's actor


class RestartFromStorage(Exception):
    """The actor's memory may differ from the store; the registry must rebuild it."""


def failure(error: BrokerError) -> Failure:
    return Failure(error.code, error.message)


def storage_failure(error: StorageError) -> Failure:
    if isinstance(error, StorageFull):
        return Failure("ServiceUnavailable", f"Storage is full; sends are refused until space returns ({error}).")
    return Failure("ServiceUnavailable", f"Storage failed: {error}")


class _SendGroup(NamedTuple):
    records: list[MessageSent]
    # Called with the records as stored (seqs stamped), or as prepared with the error.
    complete: Callable[[Sequence[MessageSent], StorageError | None], None]


class _Cycle:
    """What one cycle will commit, and the replies that wait for that commit."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.send_groups: list[_SendGroup] = []
        self.replies: list[tuple[Reply, Result]] = []
        self.ended_by: Request | None = None  # a DeleteQueue or Stop request
        self.adopted: list[MessageSent] = []
        # Whether `records` hold what must be applied once stored (messages moved in, a purge),
        # so the usual cycle of receives and deletes is not looked through again.
        self.stores_here = False

    def reply_after_commit(self, reply: Reply, result: Result) -> None:
        self.replies.append((reply, result))

    def fail_all(self, result: Result) -> None:
        for group in self.send_groups:
            group.complete(group.records, StorageError(result.message if isinstance(result, Failure) else "failed"))
        for reply, _ in self.replies:
            reply(result)
        self.send_groups.clear()
        self.replies.clear()


class _Wake(Op):
    """Writer to actor, through the mailbox: one of this actor's commits has finished."""


WAKE = _Wake()


class _InFlight(NamedTuple):
    """A cycle whose records the writer has, and the entries that say when they are committed."""

    cycle: _Cycle
    sends: AppendEntry | None
    others: AppendEntry | None

    def committed(self) -> bool:
        return all(entry is None or entry.done.is_set() for entry in (self.sends, self.others))

    async def wait(self) -> None:
        for entry in (self.sends, self.others):
            if entry is not None:
                await entry.done.wait()


class QueueActor:
    def __init__(
        self,
        core: QueueCore,
        mailbox: trio.MemoryReceiveChannel[Request],
        writer: LogWriter,
        store: Store,
        clock: Clock,
        post: Callable[[Op], None],
        forward: Forward,
    ) -> None:
        self.core = core
        self._mailbox = mailbox
        self._writer = writer
        self._store = store
        self._clock = clock
        self._post = post  # into this actor's own mailbox, from any task; never blocks
        self._forward = forward
        self._in_flight: deque[_InFlight] = deque()

    def _wake(self) -> None:
        self._post(WAKE)

    async def run(self) -> bool:
        """Serve until stopped (returns False) or deleted (returns True). Raises
        RestartFromStorage, or any bug, for the registry to handle."""
        try:
            while True:
                self._complete_committed()
                requests: list[Request] = []
                with trio.move_on_at(self.core.next_deadline(self._clock.now())):
                    try:
                        requests.append(await self._mailbox.receive())
                    except trio.EndOfChannel:
                        await self._complete_all()
                        return False
                take_waiting(self._mailbox, requests, MAX_REQUESTS_PER_CYCLE)
                requests = [request for request in requests if request.op is not WAKE]
                cycle = _Cycle()
                handled = 0
                try:
                    for request in requests:
                        if cycle.ended_by is not None:
                            request.reply(Failure("QueueDoesNotExist", f"The specified queue {self.core.name} does not exist."))
                        else:
                            self._handle(request, cycle)
                        handled += 1
                    self._tick(cycle)
                    self._submit(cycle)
                    if cycle.ended_by is not None:
                        await self._complete_all()
                    elif len(self._in_flight) >= MAX_CYCLES_IN_FLIGHT:
                        await self._in_flight[0].wait()
                except BaseException:
                    failed = Failure("InternalError", "The queue failed while handling this request; retry.")
                    cycle.fail_all(failed)
                    for in_flight in self._in_flight:
                        in_flight.cycle.fail_all(failed)
                    for request in requests[handled:]:
                        request.reply(failed)
                    # The queue is rebuilt from the store next: first let everything this actor
                    # handed to the writer settle, or a commit landing after the rebuild would be
                    # missing from the rebuilt queue.
                    with trio.CancelScope(shield=True):
                        for in_flight in self._in_flight:
                            await in_flight.wait()
                    self._in_flight.clear()
                    raise
                if cycle.ended_by is not None:
                    self._finish(cycle.ended_by)
                    return isinstance(cycle.ended_by.op, DeleteQueue)
        finally:
            for waiter in self.core.drain_waiters():
                waiter.reply(Received([]))

    # --- requests -----------------------------------------------------------------------------
    def _handle(self, request: Request, cycle: _Cycle) -> None:
        op, reply = request.op, request.reply
        now, wall_ms = self._clock.now(), self._clock.wall_ms()
        core = self.core
        try:
            match op:
                case SendMessage():
                    prepared = core.prepare_send(
                        op.body,
                        op.delay_seconds,
                        op.message_attributes,
                        op.sender_id,
                        wall_ms,
                        op.message_system_attributes,
                        op.message_group_id,
                        op.message_deduplication_id,
                        now,
                    )
                    cycle.send_groups.append(
                        _SendGroup(
                            [prepared] if isinstance(prepared, MessageSent) else [],
                            lambda stored, error: reply(self._sent(prepared, stored[0] if stored else None, error)),
                        )
                    )
                case SendMessageBatch():
                    self._send_batch(op, reply, cycle, now, wall_ms)
                case ReceiveMessage():
                    self._receive(op, reply, cycle, now, wall_ms)
                case DeleteMessage():
                    record = core.delete(op.receipt_handle, wall_ms)
                    if record is not None:
                        cycle.records.append(record)
                    cycle.reply_after_commit(reply, Done())
                case DeleteMessageBatch():
                    validation.validate_batch([entry.id for entry in op.entries])
                    self._batch(op.entries, reply, cycle, lambda e: core.delete(e.receipt_handle, wall_ms))
                case ChangeMessageVisibility():
                    cycle.records.append(core.change_visibility(op.receipt_handle, op.visibility_timeout, now, wall_ms))
                    cycle.reply_after_commit(reply, Done())
                case ChangeMessageVisibilityBatch():
                    validation.validate_batch([entry.id for entry in op.entries])
                    self._batch(
                        op.entries,
                        reply,
                        cycle,
                        lambda e: core.change_visibility(e.receipt_handle, e.visibility_timeout, now, wall_ms),
                    )
                case GetQueueAttributes():
                    reply(Attributes(core.get_attributes(op.attribute_names, now)))
                case SetQueueAttributes():
                    cycle.records.append(core.set_attributes(op.attributes, wall_ms))
                    cycle.reply_after_commit(reply, Done())
                case PurgeQueue():
                    cycle.records.append(core.purge(now, wall_ms))
                    cycle.stores_here = True
                    cycle.reply_after_commit(reply, Done())
                case TagQueue():
                    cycle.records.append(core.tag(op.tags, wall_ms))
                    cycle.reply_after_commit(reply, Done())
                case UntagQueue():
                    cycle.records.append(core.untag(op.tag_keys, wall_ms))
                    cycle.reply_after_commit(reply, Done())
                case ListQueueTags():
                    reply(Tags(dict(core.tags)))
                case AddPermission():
                    cycle.records.append(core.add_permission(op.label, op.account_ids, op.actions, wall_ms))
                    cycle.reply_after_commit(reply, Done())
                case RemovePermission():
                    cycle.records.append(core.remove_permission(op.label, wall_ms))
                    cycle.reply_after_commit(reply, Done())
                case PeekMessages():
                    reply(self._peek(op, now, wall_ms))
                case Adopt():
                    cycle.adopted.extend(op.records)
                case MoveIn():
                    cycle.stores_here = True
                    moved = core.prepare_moved_in(op.rows, op.source_arn, op.dead_letter, wall_ms)
                    cycle.records.extend(moved)
                    cycle.records.extend(op.removals)
                    cycle.reply_after_commit(reply, Done())
                case MovedOut():
                    if op.error:
                        log.warning("queue %s: moving %d messages failed: %s", core.name, len(op.seqs), op.error)
                        core.move_failed(op.seqs, now)
                    else:
                        core.moved_out(op.seqs)
                    if op.task_started_ms:
                        self._record(cycle, core.move_task_progress(op.task_started_ms, len(op.seqs), op.error, wall_ms))
                case StartMessageMoveTask():
                    record = core.start_move_task(op.destination_arn, op.max_number_of_messages_per_second, now, wall_ms)
                    cycle.records.append(record)
                    cycle.reply_after_commit(reply, TaskHandle(encode_task_handle(core.arn, record.started_ms)))
                case ListMessageMoveTasks():
                    if not 1 <= op.max_results <= 10:
                        raise invalid(f"Value {op.max_results} for parameter MaxResults is invalid. Reason: 1 to 10.")
                    tasks = [_move_task(core.arn, record) for record in reversed(core.move_tasks)]
                    reply(MoveTasks(tasks[: op.max_results]))
                case CancelMessageMoveTask():
                    arn, started_ms = decode_task_handle(op.task_handle)
                    if arn != core.arn:
                        raise BrokerError("ResourceNotFoundException", "The task handle names a task of another queue.")
                    record = core.cancel_move_task(started_ms, wall_ms)
                    cycle.records.append(record)
                    cycle.reply_after_commit(reply, MovedCount(record.moved))
                case DeleteQueue() | Stop():
                    cycle.ended_by = request
                case _:
                    reply(Failure("InvalidAction", f"{type(op).__name__} is not a queue operation."))
        except BrokerError as error:
            reply(failure(error))

    def _send_batch(self, op: SendMessageBatch, reply: Reply, cycle: _Cycle, now: float, wall_ms: int) -> None:
        validation.validate_batch([entry.id for entry in op.entries])
        validation.check_batch_size(
            [e.body for e in op.entries], [e.message_attributes for e in op.entries], validation.MAX_MESSAGE_BYTES
        )
        accepted: list[tuple[str, MessageSent | Duplicate]] = []
        failed: list[BatchFailure] = []
        for entry in op.entries:
            try:
                prepared = self.core.prepare_send(
                    entry.body,
                    entry.delay_seconds,
                    entry.message_attributes,
                    op.sender_id,
                    wall_ms,
                    entry.message_system_attributes,
                    entry.message_group_id,
                    entry.message_deduplication_id,
                    now,
                )
            except BrokerError as error:
                failed.append(BatchFailure(entry.id, error.code, error.message, error.kind.sender_fault))
            else:
                accepted.append((entry.id, prepared))

        def complete(stored: Sequence[MessageSent], error: StorageError | None) -> None:
            records = iter(stored)
            successful: list[SentEntry] = []
            refused = list(failed)
            for entry_id, prepared in accepted:
                result = self._sent(prepared, next(records) if isinstance(prepared, MessageSent) else None, error)
                if isinstance(result, Sent):
                    successful.append(SentEntry(entry_id, *msgspec.structs.astuple(result)))
                else:
                    refused.append(BatchFailure(entry_id, result.code, result.message, False))
            reply(SendBatchResult(successful, refused))

        if accepted:
            records = [prepared for _, prepared in accepted if isinstance(prepared, MessageSent)]
            cycle.send_groups.append(_SendGroup(records, complete))
        else:
            reply(SendBatchResult([], failed))

    def _sent(self, prepared: MessageSent | Duplicate, stored: MessageSent | None, error: StorageError | None) -> Result:
        """The reply to one send once its commit (or, for a duplicate, the original's) is settled."""
        if isinstance(prepared, Duplicate):
            seq = self.core.stored_seq_of(prepared)
            if not seq:
                return Failure("ServiceUnavailable", "The message this one duplicates was not stored; send it again.")
            body, attributes, system = prepared.body, prepared.attributes, prepared.system_attributes
            message_id = prepared.message_id
        else:
            if error is not None:
                return storage_failure(error)
            assert stored is not None
            seq, body, attributes, system = stored.seq, stored.body, stored.attributes, stored.system_attributes
            message_id = stored.message_id
        return Sent(
            message_id,
            validation.md5_of_body(body),
            validation.md5_of_message_attributes(attributes),
            validation.md5_of_message_attributes(system),
            sequence_number(seq) if self.core.config.fifo else None,
        )

    def _batch(self, entries: Sequence, reply: Reply, cycle: _Cycle, change: Callable) -> None:
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

    def _peek(self, op: PeekMessages, now: float, wall_ms: int) -> Peeked:
        found = self.core.peek(op.after_seq, op.max_messages, op.state, now)
        rows = self._store.read_messages(self.core.queue_id, [live.seq for live, _ in found])
        messages = [
            PeekedMessage(
                seq=live.seq,
                message_id=row.message_id,
                state=state,
                receive_count=live.receive_count,
                sent_timestamp=row.at_ms,
                visible_at_ms=wall_ms if state == VISIBLE else wall_ms + int((live.visible_at - now) * 1000),
                body=row.body,
                message_attributes=row.attributes,
            )
            for (live, state), row in zip(found, rows)
            if row is not None
        ]
        more = len(found) == op.max_messages
        return Peeked(messages, found[-1][0].seq if more and found else None)

    def _receive(self, op: ReceiveMessage, reply: Reply, cycle: _Cycle, now: float, wall_ms: int) -> None:
        validation.validate_receive(op.max_number_of_messages, op.wait_time_seconds)
        if op.visibility_timeout is not None:
            validation.validate_visibility_timeout(op.visibility_timeout)
        validation.check_system_attribute_names(op.attribute_names)
        attempt_id = op.receive_request_attempt_id
        if attempt_id is not None:
            validation.validate_group_id(attempt_id, "ReceiveRequestAttemptId")
            if not self.core.config.fifo:
                attempt_id = None  # meaningful on FIFO queues only, as on AWS
        waiter = Waiter(
            op.max_number_of_messages,
            op.visibility_timeout,
            0.0,
            op.attribute_names,
            op.message_attribute_names,
            reply,
            attempt_id,
        )
        if attempt_id is not None and (repeated := self.core.repeat_attempt(attempt_id, now)) is not None:
            self._repeat(repeated, waiter, cycle, wall_ms)
            return
        self.core.check_in_flight_limit()
        lives = self.core.take_ready(op.max_number_of_messages, now)
        if lives:
            self._deliver(waiter, lives, cycle, now, wall_ms)
            return
        wait_s = self.core.config.receive_wait_s if op.wait_time_seconds is None else op.wait_time_seconds
        if wait_s > 0:
            waiter.deadline = now + wait_s
            self.core.add_waiter(waiter)
        else:
            reply(Received([]))

    def _deliver(self, waiter: Waiter, lives: list[Live], cycle: _Cycle, now: float, wall_ms: int) -> None:
        rows = self._store.read_messages(self.core.queue_id, [live.seq for live in lives])
        received = self.core.mark_received(lives, rows, waiter.visibility_timeout_s, now, wall_ms)
        messages = []
        for record, row in received:
            cycle.records.append(record)
            messages.append(
                self.core.render_received(record, row, waiter.attribute_names, waiter.message_attribute_names)
            )
        if waiter.attempt_id is not None:
            self.core.remember_attempt(waiter.attempt_id, [record.seq for record, _ in received], now)
        cycle.reply_after_commit(waiter.reply, Received(messages))

    def _repeat(self, lives: list[Live], waiter: Waiter, cycle: _Cycle, wall_ms: int) -> None:
        """A retried receive (same ReceiveRequestAttemptId): the same messages and handles again."""
        core = self.core
        rows = self._store.read_messages(core.queue_id, [live.seq for live in lives])
        messages = [
            core.render_received(
                MessageReceived(wall_ms, core.queue_id, core.name, live.seq, row.message_id, live.receive_count, 0, live.first_receive_ms),
                row,
                waiter.attribute_names,
                waiter.message_attribute_names,
            )
            for live, row in zip(lives, rows)
            if row is not None
        ]
        cycle.reply_after_commit(waiter.reply, Received(messages))

    def _hand_over(self, seqs: list[int], destination_of: Callable[[MessageSent], str], task_started_ms: int) -> None:
        """Send messages marked MOVING to the queues destination_of names; each destination
        stores them and deletes them here in one commit, and answers with a MovedOut."""
        core = self.core
        rows = self._store.read_messages(core.queue_id, seqs)
        gone = [seq for seq, row in zip(seqs, rows) if row is None]
        if gone:  # the store lost them (salvage)
            core.forget_lost(gone)
            self._post(MovedOut(gone, "", task_started_ms))
        by_destination: dict[str, list[MessageSent]] = {}
        for row in rows:
            if row is not None:
                by_destination.setdefault(destination_of(row), []).append(row)
        for destination, moving in by_destination.items():
            moved_seqs = [row.seq for row in moving]
            if not destination:
                self._post(MovedOut(moved_seqs, "CouldNotDetermineMessageSource: a message has no DeadLetterQueueSourceArn", task_started_ms))
                continue

            def answered(result: Result, moved_seqs: list[int] = moved_seqs) -> None:
                self._post(MovedOut(moved_seqs, move_error(result), task_started_ms))

            wall_ms = self._clock.wall_ms()
            removals: list[Record] = [MessageDeleted(wall_ms, core.queue_id, core.name, row.seq, row.message_id, "moved") for row in moving]
            self._forward(destination, MoveIn(core.arn, moving, task_started_ms == 0, removals), answered)

    def _record(self, cycle: _Cycle, record: Record | None) -> None:
        if record is not None:
            cycle.records.append(record)

    # --- time ---------------------------------------------------------------------------------
    def _tick(self, cycle: _Cycle) -> None:
        now, wall_ms = self._clock.now(), self._clock.wall_ms()
        core = self.core
        for waiter in core.pop_expired_waiters(now):
            waiter.reply(Received([]))
        expired = core.expire(now)
        if expired:
            rows = self._store.read_messages(core.queue_id, expired)
            cycle.records.extend(core.expired_record(seq, row, wall_ms) for seq, row in zip(expired, rows))
        self._record(cycle, core.expire_dedup(now, wall_ms))
        for waiter, lives in core.pop_servable_waiters(now):
            self._deliver(waiter, lives, cycle, now, wall_ms)
        dead_letter_arn = core.config.dead_letter_arn
        if outgoing := core.take_outgoing():
            self._hand_over(outgoing, lambda row: dead_letter_arn, 0)
        if task_lives := core.take_for_move_task(now):
            task = core.move_task
            assert task is not None
            destination = task.record.destination_arn
            self._hand_over(
                [live.seq for live in task_lives],
                lambda row: destination or row.dead_letter_source_arn,
                task.record.started_ms,
            )
        self._record(cycle, core.move_task_finished(wall_ms))

    # --- commit ---------------------------------------------------------------------------------
    def _submit(self, cycle: _Cycle) -> None:
        """Hand the cycle's records to the writer; the cycle completes when they are committed.
        Cycles complete in the order they were submitted, as the writer commits in that order."""
        if cycle.ended_by is not None and isinstance(cycle.ended_by.op, DeleteQueue):
            cycle.records.append(self.core.deleted_record(self._clock.wall_ms()))
        send_records = [record for group in cycle.send_groups for record in group.records]
        sends = others = None
        try:
            sends = self._writer.submit(send_records, needs_space=True, on_done=self._wake) if send_records else None
            others = self._writer.submit(cycle.records, needs_space=False, on_done=self._wake) if cycle.records else None
        except StorageError as error:
            # Receives and deletes of this cycle were applied in memory but will not be stored.
            cycle.fail_all(storage_failure(error))
            self._in_flight.append(_InFlight(cycle, sends, None))  # the sends, if queued, still settle
            raise RestartFromStorage(str(error)) from error
        self._in_flight.append(_InFlight(cycle, sends, others))

    def _complete_committed(self) -> None:
        while self._in_flight and self._in_flight[0].committed():
            self._complete(self._in_flight.popleft())

    async def _complete_all(self) -> None:
        while self._in_flight:
            await self._in_flight[0].wait()
            self._complete(self._in_flight.popleft())

    def _complete(self, in_flight: _InFlight) -> None:
        cycle = in_flight.cycle
        sends_error = in_flight.sends.error if in_flight.sends is not None else None
        others_error = in_flight.others.error if in_flight.others is not None else None
        now = self._clock.now()
        core = self.core
        stored = list(in_flight.sends.records) if in_flight.sends is not None else []
        if sends_error is None:
            for record in stored:
                core.apply_sent(record, now)
        position = 0
        for group in cycle.send_groups:
            count = len(group.records)
            if sends_error is None:
                group.complete(stored[position : position + count], None)
            else:
                for record in group.records:
                    core.forget_send(record)
                group.complete(group.records, sends_error)
            position += count
        cycle.send_groups.clear()
        if others_error is not None:
            cycle.fail_all(storage_failure(others_error))
            raise RestartFromStorage(str(others_error)) from others_error
        if in_flight.others is not None and cycle.stores_here:
            for record in in_flight.others.records:
                if type(record) is MessageSent and record.queue_id == core.queue_id:  # moved in
                    core.apply_sent(record, now)
                elif type(record) is QueuePurged:
                    core.purged_through = record.through_seq
        for record in cycle.adopted:
            core.adopt(record, now)
        cycle.adopted.clear()
        for reply, result in cycle.replies:
            reply(result)
        cycle.replies.clear()

    def _finish(self, request: Request) -> None:
        if isinstance(request.op, DeleteQueue):
            for waiter in self.core.drain_waiters():
                waiter.reply(Failure("QueueDoesNotExist", f"The specified queue {self.core.name} does not exist."))
        request.reply(Done())


def _move_task(source_arn: str, record: MoveTaskChanged) -> MoveTask:
    return MoveTask(
        task_handle=encode_task_handle(source_arn, record.started_ms),
        status=record.status,
        source_arn=source_arn,
        destination_arn=record.destination_arn,
        max_number_of_messages_per_second=record.max_per_second or None,
        approximate_number_of_messages_moved=record.moved,
        approximate_number_of_messages_to_move=record.to_move,
        failure_reason=record.failure_reason,
        started_timestamp=record.started_ms,
    )
