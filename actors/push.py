"""The delivery actor of one HTTP/S or email subscription: the Trio task that owns its pending pushes.

Theory of operation
-------------------
A publish stores a `PushQueued` record per push subscription it matches, in the publish's own
commit; the topic actor then posts the new (seq, MessageId)s here. This actor keeps only those and
attempt counts in memory (bodies stay in the store until an attempt reads them) and hands what its
PushSchedule says is due to its sending tasks: `max_in_flight` of them, each with a keep-alive
connection of its own, each posting its outcome back into this mailbox. A success is stored as
`PushDone` "delivered"; a failure as `PushAttempted` with the time of the next attempt, so a
restarted broker resumes every push where it was (at least once: a push delivered just before a
crash, whose PushDone was not yet stored, is sent again). Outcomes go to the writer one commit at a
time, without holding up the next attempts. A push that exhausts its delivery policy goes to the
subscription's dead-letter queue (MoveIn: that queue stores it and this PushDone in one commit), or
is stored as "dropped".

A slow or dead endpoint holds up only its own actor: attempts time out, and the cap on attempts in
flight (here, and in all, in the Sender) keeps it from taking every connection. While an endpoint
refuses connections, one refused attempt stands for the others that fall due within
UNREACHABLE_HOLD_S: they fail as it did, without a connection and without reading their bodies, so
a long outage does not page every stored push in.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import msgspec
import trio

from dovecote.storage.records import MessageSent, PushAttempted, PushDone, PushQueued, Record
from dovecote.storage.store import PendingPush, StorageError, Store
from dovecote.storage.writer import AppendEntry, LogWriter

from .clock import Clock
from .mailbox import take_waiting
from .delivery_policy import EffectivePolicy, retry_delays
from .ops import Op, Result
from .push_schedule import PushSchedule
from .queue import Forward, MoveIn, move_error

log = logging.getLogger("dovecote.push")

MAX_IN_FLIGHT = 8  # attempts (and connections) at once per subscription
MAX_PENDING = 100_000  # pending pushes per subscription; beyond, new ones are dropped (and recorded)
UNREACHABLE = "unreachable"  # how an outcome starts when no connection could be made
UNREACHABLE_HOLD_S = 1.0  # after a refused connection, attempts due this soon fail without one
INFERRED = " (not sent: the endpoint refused a connection just before)"
PUSH_PROTOCOLS = ("http", "https", "email", "email-json")


class PushRequest(msgspec.Struct, frozen=True):
    protocol: str  # http, https, email, email-json
    endpoint: str  # a URL or a mail address
    message_type: str  # Notification, SubscriptionConfirmation or UnsubscribeConfirmation
    message_id: str
    topic_arn: str
    subscription_arn: str
    body: str
    raw: bool = False
    subject: str = ""  # mail only
    content_type: str = "text/plain; charset=UTF-8"


class Connection(Protocol):
    async def send(self, request: PushRequest) -> str:
        """"" when delivered, else what went wrong."""


class Sender(Protocol):
    """Sends pushes (net/push.py)."""

    protocols: frozenset[str]  # those of PUSH_PROTOCOLS it can reach

    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A keep-alive connection, for one request at a time."""


class PushTarget(msgspec.Struct, frozen=True):
    """What a delivery actor knows of its subscription, from the topic."""

    topic_id: int
    topic: str
    topic_arn: str
    subscription_id: int
    subscription_arn: str
    protocol: str
    endpoint: str
    raw: bool
    policy: EffectivePolicy
    dead_letter_arn: str  # "": exhausted pushes are dropped


class NewPushes(Op):
    """Topic to delivery actor: pushes stored for this subscription, as (seq, MessageId)."""

    pushes: list[tuple[int, str]]


class Reconfigured(Op):
    target: PushTarget


class StopPushing(Op):
    flush: bool = False  # store the outcomes not yet stored first (a shutdown, not an unsubscribe)


class _Stored(Op):
    """The writer committed this actor's last outcomes."""


class _Attempted(Op):
    seq: int
    message_id: str
    outcome: str  # "": delivered


class _DeadLettered(Op):
    seq: int
    message_id: str
    attempts: int
    error: str  # "": the dead-letter queue stored it


class PushActor:
    def __init__(
        self,
        target: PushTarget,
        pending: list[PendingPush],
        sender: Sender,
        writer: LogWriter,
        store: Store,
        clock: Clock,
        forward: Forward,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._target = target
        self._max_pending = max_pending
        self._sender = sender
        self._writer = writer
        self._store = store
        self._clock = clock
        self._forward = forward
        self.mailbox, self._inbox = trio.open_memory_channel[Op](math.inf)
        self._unstored: list[Record] = []  # outcomes not yet handed to the writer
        self._storing: AppendEntry | None = None  # the outcomes the writer has, until committed
        # To the sending tasks: (seq, request); never more than max_in_flight are in it or sending.
        self._due_send, self._due_receive = trio.open_memory_channel[tuple[int, PushRequest]](math.inf)
        now, wall_ms = clock.now(), clock.wall_ms()
        self._schedule = PushSchedule(target.policy, max_in_flight, now)
        self._message_ids: dict[int, str] = {}  # seq -> MessageId of every pending push, for the log
        for push in pending:
            self._message_ids[push.seq] = push.message_id
            self._schedule.add(push.seq, push.attempts, now + max(0, push.retry_at_ms - wall_ms) / 1000 if push.retry_at_ms else -math.inf)
        # While an endpoint refuses connections, one attempt stands for all that fall due with it.
        self._unreachable_until = -math.inf
        self._unreachable = ""

    def post(self, op: Op) -> None:
        """From the topic actor (or a sending task): never blocks; ignored once this actor ended."""
        try:
            self.mailbox.send_nowait(op)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as senders:
                # One task per connection, each sending one push at a time: a connection pool
                # of one is never searched (httpcore looks through every connection of a pool
                # on each request).
                for _ in range(self._schedule.max_in_flight):
                    senders.start_soon(self._send_pushes, self._due_receive.clone())
                while (stop := await self._cycle()) is None:
                    pass
                senders.cancel_scope.cancel()  # unfinished attempts stay pending in the store
            if stop.flush:  # so a restart repeats as little as it can
                if self._storing is not None:
                    await self._storing.done.wait()
                self._store_outcomes()
                if self._storing is not None:
                    await self._storing.done.wait()
        finally:
            self.mailbox.close()

    async def _send_pushes(self, due: trio.MemoryReceiveChannel[tuple[int, PushRequest]]) -> None:
        async with self._sender.connection() as connection:
            async for seq, request in due:
                self.post(_Attempted(seq, request.message_id, await connection.send(request)))

    async def _cycle(self) -> StopPushing | None:
        """One round: take the messages that arrived, store what they changed, start what is due.
        The StopPushing when told to stop."""
        messages: list[Op] = []
        with trio.move_on_at(self._schedule.wake_at(self._clock.now())):
            messages.append(await self._inbox.receive())
        take_waiting(self._inbox, messages)
        for message in messages:
            if isinstance(message, StopPushing):
                return message
            self._handle(message, self._unstored)
        self._store_outcomes()
        self._start_due()
        return None

    def _store_outcomes(self) -> None:
        """Hand the outcomes gathered so far to the writer, one commit at a time. Attempts do not
        wait for them: what they record only spares a restarted broker some repeats."""
        if not self._unstored or (self._storing is not None and not self._storing.done.is_set()):
            return
        records, self._unstored = self._unstored, []
        try:
            self._storing = self._writer.submit(records, needs_space=False, on_done=lambda: self.post(_Stored()))
        except (StorageError, trio.ClosedResourceError) as error:
            log.warning("subscription %s: push outcomes not stored: %s", self._target.subscription_arn, error)
            self._storing = None

    def _handle(self, message: Op, records: list[Record]) -> None:
        target, schedule = self._target, self._schedule
        now, wall_ms = self._clock.now(), self._clock.wall_ms()
        match message:
            case _Stored():  # the next outcomes may go to the writer now
                if self._storing is not None and self._storing.error is not None:
                    log.warning("subscription %s: storing push outcomes failed: %s", target.subscription_arn, self._storing.error)
            case NewPushes(pushes=pushes):
                for seq, message_id in pushes:
                    if len(schedule) >= self._max_pending:
                        # Memory stays bounded however long the endpoint is away; the publisher
                        # and the other subscriptions go on.
                        outcome = f"dropped: the subscription already has {self._max_pending} pending pushes"
                        records.append(PushDone(wall_ms, target.topic_id, target.topic, target.subscription_id, seq, message_id, 0, outcome))
                        continue
                    self._message_ids[seq] = message_id
                    schedule.add(seq)
            case Reconfigured(target=new):
                self._target = new
                schedule.set_policy(new.policy)
            case _Attempted(seq=seq, message_id=message_id, outcome=""):
                self._unreachable_until = -math.inf
                self._message_ids.pop(seq, None)
                attempts = schedule.succeeded(seq)
                records.append(
                    PushDone(wall_ms, target.topic_id, target.topic, target.subscription_id, seq, message_id, attempts, "delivered")
                )
            case _Attempted(seq=seq, message_id=message_id, outcome=outcome):
                if outcome.startswith(UNREACHABLE) and not outcome.endswith(INFERRED):
                    self._unreachable_until, self._unreachable = now + UNREACHABLE_HOLD_S, outcome
                elif not outcome.startswith(UNREACHABLE):
                    self._unreachable_until = -math.inf
                attempt, retry_at = schedule.failed(seq, now)
                if retry_at is not None:
                    retry_at_ms = wall_ms + int((retry_at - now) * 1000)
                    records.append(
                        PushAttempted(
                            wall_ms, target.topic_id, target.topic, target.subscription_id, seq, message_id, attempt, outcome, retry_at_ms
                        )
                    )
                elif target.dead_letter_arn:
                    self._dead_letter(seq, attempt)
                else:
                    schedule.drop(seq)
                    self._message_ids.pop(seq, None)
                    log.info("subscription %s: push %d dropped after %d attempts (%s)", target.subscription_arn, seq, attempt, outcome)
                    records.append(
                        PushDone(wall_ms, target.topic_id, target.topic, target.subscription_id, seq, message_id, attempt, "dropped")
                    )
            case _DeadLettered(seq=seq, message_id=message_id, attempts=attempts, error=error):
                schedule.drop(seq)
                self._message_ids.pop(seq, None)
                if error:
                    log.warning("subscription %s: push %d dropped: its dead-letter queue refused it (%s)", target.subscription_arn, seq, error)
                    outcome = f"dropped: {error}"[:200]
                    records.append(PushDone(wall_ms, target.topic_id, target.topic, target.subscription_id, seq, message_id, attempts, outcome))

    def _dead_letter(self, seq: int, attempts: int) -> None:
        """Hand an exhausted push to the dead-letter queue, which stores it with its PushDone."""
        target = self._target
        (row,) = self._store.read_pushes(target.topic_id, target.subscription_id, [seq])
        if row is None:
            self.post(_DeadLettered(seq, "", attempts, ""))
            return
        message = MessageSent(
            at_ms=row.at_ms, queue_id=0, queue="", seq=0, delay_seconds=0, message_id=row.message_id, sender_id="",
            body=row.body, attributes=row.attributes if target.raw else {},
        )
        done = PushDone(self._clock.wall_ms(), target.topic_id, target.topic, target.subscription_id, seq, row.message_id, attempts, "dead-lettered")

        def answered(result: Result) -> None:
            self.post(_DeadLettered(seq, row.message_id, attempts, move_error(result)))

        self._forward(target.dead_letter_arn, MoveIn(target.subscription_arn, [message], True, [done]), answered)

    def _start_due(self) -> None:
        now = self._clock.now()
        seqs = self._schedule.take(now)
        if not seqs:
            return
        if now < self._unreachable_until:
            # The endpoint refused a connection a moment ago: these fail as that attempt did,
            # without reading their bodies (a long outage must not page in every stored push).
            for seq in seqs:
                self._handle(_Attempted(seq, self._message_ids.get(seq, ""), self._unreachable + INFERRED), self._unstored)
            self._store_outcomes()
            return
        target = self._target
        try:
            rows = self._store.read_pushes(target.topic_id, target.subscription_id, seqs)
        except StorageError as error:
            log.error("subscription %s: %s", target.subscription_arn, error)
            rows = [None] * len(seqs)
        for seq, row in zip(seqs, rows):
            if row is None:  # gone from the store (unsubscribed, or dropped by salvage)
                self._schedule.drop(seq)
                self._message_ids.pop(seq, None)
                continue
            self._due_send.send_nowait((seq, push_request(target, row)))


def push_request(target: PushTarget, row: PushQueued) -> PushRequest:
    return PushRequest(
        target.protocol, target.endpoint, "Notification", row.message_id, target.topic_arn, target.subscription_arn,
        row.body, target.raw, row.subject, target.policy.content_type,
    )


async def send_notice(sender: Sender, request: PushRequest, policy: EffectivePolicy) -> None:
    """A SubscriptionConfirmation or UnsubscribeConfirmation: tried as the delivery policy says,
    but not stored (AWS does not resend them after a restart either)."""
    async with sender.connection() as connection:
        for delay in [0.0, *retry_delays(policy.retry)]:
            await trio.sleep(delay)
            outcome = await connection.send(request)
            if not outcome:
                return
            log.info("%s to %s failed: %s", request.message_type, request.endpoint, outcome)
