"""The queue actor: the Trio task that owns one QueueCore.

Theory of operation
-------------------
The actor loops in cycles. It waits for a request (or for the core's next deadline), takes every
other request already in its mailbox, hands them in order to the core, lets the core run its timers,
forwards the messages the core hands over to other queues, and gives the cycle's records to the
writer: sends in one log entry that storage may refuse when the disk is full, everything else in
another. It does not wait for that commit: it goes on with the next cycle, and settles cycles (the
core makes their sends visible and gives their answers) in order as the writer reports them
committed, which it does in the order they were submitted. The writer's report arrives as a WAKE in
the mailbox. At most MAX_QUEUE_CYCLES_IN_FLIGHT cycles wait for the disk.

So no answer leaves before the records it depends on are committed, and a send is visible only
once it is committed. If a commit fails for any reason other than a refused send, memory may be
ahead of disk: the actor fails the answers of that cycle and of every later one and raises
RestartFromStorage; its supervisor rebuilds the queue from the store. If mail that had to arrive
was refused because the mailbox was full (mailbox.py), the actor raises Resync once its cycles have
settled, and is rebuilt the same way.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import trio

from dovecote.storage import crash_points
from dovecote.storage.records import MessageSent
from dovecote.storage.store import StorageError, Store
from dovecote.storage.writer import AppendEntry, LogWriter

from .clock import Clock
from .errors import actor_failed, failure, no_such_queue, storage_failed
from .limits import MAX_QUEUE_CYCLES_IN_FLIGHT, MAX_REQUESTS_PER_CYCLE
from .mailbox import Mailbox
from .messages import ActorMessage, Forward, MovedOut, Reply, Request, RestartFromStorage, Resync, move_error
from .ops import DeleteQueue, Done, Received, Result
from .queue_core import Cycle, HandOver, QueueCore

log = logging.getLogger("dovecote.queue")


class _Wake(ActorMessage):
    """Writer to actor, through the mailbox: one of this actor's commits has finished."""


WAKE = _Wake()


class QueueStatistics(NamedTuple):
    cycles: int
    cycles_in_flight: int  # waiting for the disk
    messages: int
    visible_messages: int  # the counts as of the queue's last step (QueueCore.running_counts)
    in_flight_messages: int
    delayed_messages: int
    oldest_message_age_s: float
    waiters: int
    # messages in and out since the broker started (QueueCounters)
    sent: int
    moved_in: int
    received: int
    deleted: int
    expired: int
    purged: int
    dead_lettered: int
    moved_out: int


class _InFlight(NamedTuple):
    """A cycle whose records the writer has, and the entries that say when they are committed."""

    cycle: Cycle
    sends: AppendEntry | None
    others: AppendEntry | None

    def committed(self) -> bool:
        return all(entry is None or entry.done.is_set() for entry in (self.sends, self.others))

    async def wait(self) -> None:
        for entry in (self.sends, self.others):
            if entry is not None:
                await entry.done.wait()


def _answer(answers: Sequence[tuple[Reply, Result]]) -> None:
    for reply, result in answers:
        reply(result)


class QueueActor:
    def __init__(
        self, core: QueueCore, mailbox: Mailbox, writer: LogWriter, store: Store, clock: Clock, forward: Forward
    ) -> None:
        self.core = core
        self._mailbox = mailbox
        self._writer = writer
        self._store = store
        self._clock = clock
        self._forward = forward
        self._in_flight: deque[_InFlight] = deque()
        self._cycles = 0

    def statistics(self) -> QueueStatistics:
        """A snapshot, read without waiting from any task; O(1) whatever the queue holds."""
        core = self.core
        counts, c = core.running_counts(), core.counters
        return QueueStatistics(
            self._cycles, len(self._in_flight), len(core.messages), counts.visible, counts.in_flight, counts.delayed,
            core.oldest_message_age_s(self._clock.now()), core.waiter_count(),
            c.sent, c.moved_in, c.received, c.deleted, c.expired, c.purged, c.dead_lettered, c.moved_out,
        )

    def _wake(self) -> None:
        self._mailbox.post_answer(WAKE)

    def _read(self, seqs: Sequence[int]) -> list[MessageSent | None]:
        return self._store.read_messages(self.core.queue_id, seqs)

    async def run(self) -> bool:
        """Serve until stopped (returns False) or deleted (returns True). Raises
        RestartFromStorage, or any bug, for the supervisor to handle."""
        core = self.core
        try:
            while True:
                self._complete_committed()
                if self._mailbox.missed:
                    await self._complete_all()
                    raise Resync(f"queue {core.name} missed mail while its mailbox was full")
                requests: list[Request] = []
                with trio.move_on_at(core.next_deadline(self._clock.now())):
                    try:
                        requests.append(await self._mailbox.receive())
                    except trio.EndOfChannel:
                        await self._complete_all()
                        return False
                self._mailbox.receive_waiting(requests, MAX_REQUESTS_PER_CYCLE)
                self._cycles += 1
                cycle = Cycle()
                handled = 0
                try:
                    now, wall_ms = self._clock.now(), self._clock.wall_ms()
                    for request in requests:
                        if request.op is not WAKE:
                            core.handle(request, cycle, self._read, now, wall_ms)
                        handled += 1
                    core.tick(cycle, self._read, now, wall_ms)
                    for warning in cycle.warnings:
                        log.warning("%s", warning, extra={"queue": core.name})
                    self._hand_over(cycle.hand_overs)
                    self._submit(cycle, wall_ms)
                    if cycle.ended_by is not None:
                        await self._complete_all()
                    elif len(self._in_flight) >= MAX_QUEUE_CYCLES_IN_FLIGHT:
                        await self._in_flight[0].wait()
                except BaseException:
                    failed = failure(actor_failed(f"The queue {core.name}"))
                    _answer(cycle.failed(failed))
                    for in_flight in self._in_flight:
                        _answer(in_flight.cycle.failed(failed))
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
            for waiter in core.drain_waiters():
                waiter.reply(Received([]))

    def _hand_over(self, hand_overs: list[HandOver]) -> None:
        """Send messages to other queues; each answer comes back into this mailbox as a MovedOut."""
        for hand_over in hand_overs:

            def answered(result: Result, hand_over: HandOver = hand_over) -> None:
                crash_points.reached("moved")
                self._mailbox.post_answer(MovedOut(hand_over.seqs, move_error(result), hand_over.task_started_ms))

            self._forward(hand_over.destination_arn, hand_over.message, answered)

    # --- commit ---------------------------------------------------------------------------------
    def _submit(self, cycle: Cycle, wall_ms: int) -> None:
        """Hand the cycle's records to the writer; the cycle settles when they are committed.
        Cycles settle in the order they were submitted, as the writer commits in that order."""
        if cycle.ended_by is not None and isinstance(cycle.ended_by.op, DeleteQueue):
            cycle.records.append(self.core.deleted_record(wall_ms))
        send_records = cycle.send_records()
        sends = others = None
        try:
            sends = self._writer.submit(send_records, needs_space=True, on_done=self._wake) if send_records else None
            others = self._writer.submit(cycle.records, needs_space=False, on_done=self._wake) if cycle.records else None
        except StorageError as error:
            # Receives and deletes of this cycle were applied in memory but will not be stored.
            _answer(cycle.failed(failure(storage_failed(error))))
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
        sends, others = in_flight.sends, in_flight.others
        others_error = others.error if others is not None else None
        _answer(
            self.core.settle(
                in_flight.cycle,
                list(sends.records) if sends is not None else [],
                sends.error if sends is not None else None,
                list(others.records) if others is not None else [],
                others_error,
                self._clock.now(),
            )
        )
        if others_error is not None:
            raise RestartFromStorage(str(others_error)) from others_error

    def _finish(self, request: Request) -> None:
        if isinstance(request.op, DeleteQueue):
            for waiter in self.core.drain_waiters():
                waiter.reply(failure(no_such_queue()))
        request.reply(Done())
