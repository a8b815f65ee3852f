"""The queue actor: the Trio task that owns one QueueCore.

Theory of operation
-------------------
The actor loops in cycles. It waits for a request (or for the core's next deadline), takes every
other request already in its mailbox, handles them in order against the core, runs the timers
(visibility, delays, retention, long-poll deadlines), then commits the cycle's records — sends in
one log entry that storage may refuse when the disk is full, everything else in another — and only
then replies. While it waits for the commit, new requests queue in the mailbox and form the next
cycle, so one queue's throughput grows with its load (group commit at the actor level).

If a commit fails for any reason other than a refused send, memory may be ahead of disk, so the
actor fails the cycle's requests and raises RestartFromStorage; the registry rebuilds the queue from
the store. Requests reach the actor only through its bounded mailbox; every request carries its own
reply callable, which the actor calls exactly once and never awaits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import trio

from dovecote.storage.records import MessageSent, Record
from dovecote.storage.store import Store, StorageError, StorageFull
from dovecote.storage.writer import LogWriter

from . import validation
from .clock import Clock
from .errors import BrokerError
from .ops import (
    Attributes,
    BatchFailure,
    BatchResult,
    ChangeMessageVisibility,
    ChangeMessageVisibilityBatch,
    DeleteMessage,
    DeleteMessageBatch,
    DeleteQueue,
    Done,
    Failure,
    GetQueueAttributes,
    Op,
    PurgeQueue,
    ReceiveMessage,
    Received,
    Result,
    SendBatchResult,
    SendMessage,
    SendMessageBatch,
    Sent,
    SentEntry,
    SetQueueAttributes,
)
from .queue_core import Live, QueueCore, Waiter

log = logging.getLogger("dovecote.queue")

Reply = Callable[[Result], None]
MAX_REQUESTS_PER_CYCLE = 256


class Request(NamedTuple):
    op: Op
    reply: Reply


class Stop(Op):
    """Registry to actor: answer long polls with nothing and end (broker shutdown)."""


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
    complete: Callable[[StorageError | None], None]


class _Cycle:
    """What one cycle will commit, and the replies that wait for that commit."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.send_groups: list[_SendGroup] = []
        self.replies: list[tuple[Reply, Result]] = []
        self.ended_by: Request | None = None  # a DeleteQueue or Stop request

    def reply_after_commit(self, reply: Reply, result: Result) -> None:
        self.replies.append((reply, result))

    def fail_all(self, result: Result) -> None:
        for group in self.send_groups:
            group.complete(StorageError(result.message if isinstance(result, Failure) else "failed"))
        for reply, _ in self.replies:
            reply(result)
        self.send_groups.clear()
        self.replies.clear()


class QueueActor:
    def __init__(
        self,
        core: QueueCore,
        mailbox: trio.MemoryReceiveChannel[Request],
        writer: LogWriter,
        store: Store,
        clock: Clock,
    ) -> None:
        self.core = core
        self._mailbox = mailbox
        self._writer = writer
        self._store = store
        self._clock = clock

    async def run(self) -> bool:
        """Serve until stopped (returns False) or deleted (returns True). Raises
        RestartFromStorage, or any bug, for the registry to handle."""
        try:
            while True:
                cycle = _Cycle()
                requests: list[Request] = []
                with trio.move_on_at(self.core.next_deadline(self._clock.now())):
                    try:
                        requests.append(await self._mailbox.receive())
                    except trio.EndOfChannel:
                        return False
                while len(requests) < MAX_REQUESTS_PER_CYCLE:
                    try:
                        requests.append(self._mailbox.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                handled = 0
                try:
                    for request in requests:
                        if cycle.ended_by is not None:
                            request.reply(Failure("QueueDoesNotExist", f"The specified queue {self.core.name} does not exist."))
                        else:
                            self._handle(request, cycle)
                        handled += 1
                    self._tick(cycle)
                    await self._commit(cycle)
                except BaseException:
                    failed = Failure("InternalError", "The queue failed while handling this request; retry.")
                    cycle.fail_all(failed)
                    for request in requests[handled:]:
                        request.reply(failed)
                    raise
                if cycle.ended_by is not None:
                    self._finish(cycle.ended_by)
                    return isinstance(cycle.ended_by.op, DeleteQueue)
        finally:
            for waiter in self.core.drain_waiters():
                waiter.reply(Received([]))

    # --- requests -----------------------------------------------------------------------------
    def _handle(self, request: Request, cycle: _Cycle) -> None:
        op, reply = request
        now, wall_ms = self._clock.now(), self._clock.wall_ms()
        core = self.core
        try:
            match op:
                case SendMessage():
                    record = core.prepare_send(op.body, op.delay_seconds, op.message_attributes, op.sender_id, wall_ms)
                    cycle.send_groups.append(_SendGroup([record], lambda error: reply(_sent_result(record, error))))
                case SendMessageBatch():
                    self._send_batch(op, reply, cycle, wall_ms)
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
                    cycle.records.append(core.purge(wall_ms))
                    cycle.reply_after_commit(reply, Done())
                case DeleteQueue() | Stop():
                    cycle.ended_by = request
                case _:
                    reply(Failure("InvalidAction", f"{type(op).__name__} is not a queue operation."))
        except BrokerError as error:
            reply(failure(error))

    def _send_batch(self, op: SendMessageBatch, reply: Reply, cycle: _Cycle, wall_ms: int) -> None:
        validation.validate_batch([entry.id for entry in op.entries])
        validation.check_batch_size(
            [e.body for e in op.entries], [e.message_attributes for e in op.entries], validation.MAX_MESSAGE_BYTES
        )
        accepted: list[tuple[str, MessageSent]] = []
        failed: list[BatchFailure] = []
        for entry in op.entries:
            try:
                record = self.core.prepare_send(
                    entry.body, entry.delay_seconds, entry.message_attributes, op.sender_id, wall_ms
                )
            except BrokerError as error:
                failed.append(BatchFailure(entry.id, error.code, error.message, error.kind.sender_fault))
            else:
                accepted.append((entry.id, record))

        def complete(error: StorageError | None) -> None:
            if error is None:
                reply(SendBatchResult([_sent_entry(entry_id, record) for entry_id, record in accepted], failed))
                return
            refused = storage_failure(error)
            reply(SendBatchResult([], failed + [BatchFailure(i, refused.code, refused.message, False) for i, _ in accepted]))

        if accepted:
            cycle.send_groups.append(_SendGroup([record for _, record in accepted], complete))
        else:
            reply(SendBatchResult([], failed))

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

    def _receive(self, op: ReceiveMessage, reply: Reply, cycle: _Cycle, now: float, wall_ms: int) -> None:
        validation.validate_receive(op.max_number_of_messages, op.wait_time_seconds)
        if op.visibility_timeout is not None:
            validation.validate_visibility_timeout(op.visibility_timeout)
        validation.check_system_attribute_names(op.attribute_names)
        waiter = Waiter(
            op.max_number_of_messages,
            op.visibility_timeout,
            0.0,
            op.attribute_names,
            op.message_attribute_names,
            reply,
        )
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
        cycle.reply_after_commit(waiter.reply, Received(messages))

    # --- time ---------------------------------------------------------------------------------
    def _tick(self, cycle: _Cycle) -> None:
        now, wall_ms = self._clock.now(), self._clock.wall_ms()
        for waiter in self.core.pop_expired_waiters(now):
            waiter.reply(Received([]))
        expired = self.core.expire(now)
        if expired:
            rows = self._store.read_messages(self.core.queue_id, expired)
            cycle.records.extend(
                self.core.expired_record(seq, row, wall_ms) for seq, row in zip(expired, rows)
            )
        for waiter, lives in self.core.pop_servable_waiters(now):
            self._deliver(waiter, lives, cycle, now, wall_ms)

    # --- commit -------------------------------------------------------------------------------
    async def _commit(self, cycle: _Cycle) -> None:
        if cycle.ended_by is not None and isinstance(cycle.ended_by.op, DeleteQueue):
            cycle.records.append(self.core.deleted_record(self._clock.wall_ms()))
        send_records = [record for group in cycle.send_groups for record in group.records]
        try:
            sends = self._writer.submit(send_records, needs_space=True) if send_records else None
            others = self._writer.submit(cycle.records, needs_space=False) if cycle.records else None
        except StorageError as error:
            # Nothing of this cycle was queued, but receives and deletes were applied in memory.
            cycle.fail_all(storage_failure(error))
            raise RestartFromStorage(str(error)) from error
        sends_error: StorageError | None = None
        others_error: StorageError | None = None
        if sends is not None:
            try:
                await sends.wait()
            except StorageError as error:
                sends_error = error
        if others is not None:
            try:
                await others.wait()
            except StorageError as error:
                others_error = error
        now = self._clock.now()
        for group in cycle.send_groups:
            if sends_error is None:
                for record in group.records:
                    self.core.apply_sent(record, now)
            group.complete(sends_error)
        cycle.send_groups.clear()
        if others_error is not None:
            cycle.fail_all(storage_failure(others_error))
            raise RestartFromStorage(str(others_error)) from others_error
        for reply, result in cycle.replies:
            reply(result)
        cycle.replies.clear()

    def _finish(self, request: Request) -> None:
        if isinstance(request.op, DeleteQueue):
            for waiter in self.core.drain_waiters():
                waiter.reply(Failure("QueueDoesNotExist", f"The specified queue {self.core.name} does not exist."))
        request.reply(Done())


def _sent_entry(entry_id: str, record: MessageSent) -> SentEntry:
    return SentEntry(
        entry_id,
        record.message_id,
        validation.md5_of_body(record.body),
        validation.md5_of_message_attributes(record.attributes),
    )


def _sent_result(record: MessageSent, error: StorageError | None) -> Result:
    if error is not None:
        return storage_failure(error)
    return Sent(
        record.message_id,
        validation.md5_of_body(record.body),
        validation.md5_of_message_attributes(record.attributes),
    )
