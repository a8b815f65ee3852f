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
PUSH_UNREACHABLE_HOLD_S: they fail as it did, without a connection and without reading their
bodies, so a long outage does not page every stored push in.

The mailbox (mailbox.py) never grows past its capacities: new pushes that find it full are not
lost, as they are in the store already; the actor then reloads its pending pushes from there.
"""

from __future__ import annotations

import logging
import math

import trio

from dovecote.storage import crash_points
from dovecote.storage.records import MessageSent, PushAttempted, PushDone, PushQueued, Record
from dovecote.storage.store import PendingPush, StorageError, Store
from dovecote.storage.writer import AppendEntry, LogWriter

from .clock import Clock
from .delivery_policy import EffectivePolicy, retry_delays
from .limits import PUSH_MAX_IN_FLIGHT_PER_SUBSCRIPTION, PUSH_MAX_PENDING_PER_SUBSCRIPTION, PUSH_UNREACHABLE_HOLD_S
from .mailbox import Mailbox
from .messages import ActorMessage, Forward, MoveIn, NewPushes, Reconfigured, StopPushing, move_error
from .ops import Result
from .push_schedule import PushSchedule
from .push_types import DEAD_LETTERED, DELIVERED, DROPPED, NOT_RETRIED, RETRIED, UNREACHABLE, PushRequest, PushTarget, Sender

log = logging.getLogger("dovecote.delivery")

INFERRED = " (not sent: the endpoint refused a connection just before)"


class _Stored(ActorMessage):
    """The writer committed this actor's last outcomes."""


class _Attempted(ActorMessage):
    seq: int
    message_id: str
    outcome: str  # "": delivered


class _DeadLettered(ActorMessage):
    seq: int
    message_id: str
    attempts: int
    error: str  # "": the dead-letter queue stored it


class DeliveryActor:
    def __init__(
        self,
        target: PushTarget,
        pending: list[PendingPush],
        sender: Sender,
        writer: LogWriter,
        store: Store,
        clock: Clock,
        forward: Forward,
        max_in_flight: int = PUSH_MAX_IN_FLIGHT_PER_SUBSCRIPTION,
        max_pending: int = PUSH_MAX_PENDING_PER_SUBSCRIPTION,
        stop_when_idle: bool = False,
    ) -> None:
        """stop_when_idle: end once nothing is pending, waiting or unstored (the platform's actors,
        one per endpoint or phone number published to, are many and mostly idle); its poster, seeing
        `finished`, starts another for what comes next."""
        self._target = target
        self._stop_when_idle = stop_when_idle
        self._max_pending = max_pending
        self._sender = sender
        self._writer = writer
        self._store = store
        self._clock = clock
        self._forward = forward
        self._mailbox = Mailbox()
        self._unstored: list[Record] = []  # outcomes not yet handed to the writer
        self._storing: AppendEntry | None = None  # the outcomes the writer has, until committed
        # To the sending tasks: (seq, request); never more than max_in_flight are in it or sending.
        self._due_send, self._due_receive = trio.open_memory_channel[tuple[int, PushRequest]](math.inf)
        now, wall_ms = clock.now(), clock.wall_ms()
        self._schedule = PushSchedule(target.policy, max_in_flight, now)
        self._message_ids: dict[int, str] = {}  # seq -> MessageId of every pending push, for the log
        self._take_up(pending, now, wall_ms)
        # While an endpoint refuses connections, one attempt stands for all that fall due with it.
        self._unreachable_until = -math.inf
        self._unreachable = ""
        # Outcome -> count (push_types.DELIVERY_OUTCOMES), for /metrics: changed by this actor's
        # task alone; its topic reads them, and adds them to its own once this actor has ended.
        self.outcomes: dict[str, int] = {}
        self.finished = False

    @property
    def protocol(self) -> str:
        return self._target.protocol

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def post(self, message: ActorMessage) -> None:
        """From the topic actor: never blocks; ignored once this actor ended. New pushes that find
        the mailbox full are not lost: the actor then reloads its pending pushes from the store."""
        if isinstance(message, NewPushes):
            self._mailbox.post(message, must_arrive=True)
        else:  # a Reconfigured or StopPushing: a few per change of the subscription
            self._mailbox.post_answer(message)

    def pending(self) -> int:
        """Pushes waiting to be delivered (in flight included)."""
        return len(self._schedule)

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
            self._mailbox.close()
            self.finished = True

    async def _send_pushes(self, due: trio.MemoryReceiveChannel[tuple[int, PushRequest]]) -> None:
        async with self._sender.connection() as connection:
            async for seq, request in due:
                outcome = await connection.send(request)
                crash_points.reached("push-sent")
                self._mailbox.post_answer(_Attempted(seq, request.message_id, outcome))

    async def _cycle(self) -> StopPushing | None:
        """One round: take the messages that arrived, store what they changed, start what is due.
        The StopPushing when told to stop."""
        if self._mailbox.missed:
            await self._reload()
        if self._stop_when_idle and self._idle():
            self.finished = True  # now, not once run() returns: from here on, new pushes go to another
            return StopPushing()
        requests = []
        with trio.move_on_at(self._schedule.wake_at(self._clock.now())):
            requests.append(await self._mailbox.receive())
        self._mailbox.receive_waiting(requests)
        for request in requests:
            if isinstance(request.op, StopPushing):
                return request.op
            self._handle(request.op, self._unstored)
        self._store_outcomes()
        self._start_due()
        return None

    def _idle(self) -> bool:
        """Nothing pending, in the mailbox or to be stored."""
        return (
            not len(self._schedule) and not self._unstored and (self._storing is None or self._storing.done.is_set())
            and self._mailbox.statistics().carried == 0
        )

    async def _reload(self) -> None:
        """New pushes were refused while the mailbox was full: take up every pending push the store
        has that this actor does not, once the outcomes it knows are stored (so none it has
        finished comes back)."""
        self._mailbox.missed = False
        while self._unstored or (self._storing is not None and not self._storing.done.is_set()):
            if self._storing is not None:
                await self._storing.done.wait()
            self._store_outcomes()
        target = self._target
        now, wall_ms = self._clock.now(), self._clock.wall_ms()
        reloaded = self._store.pending_pushes(target.topic_id, target.subscription_id)
        log.warning(
            "subscription %s: its mailbox was full; %d pending pushes reloaded from the log", target.subscription_arn, len(reloaded),
            extra=_about(target),
        )
        self._take_up(reloaded, now, wall_ms)

    def _take_up(self, pending: list[PendingPush], now: float, wall_ms: int) -> None:
        for push in pending:
            self._message_ids.setdefault(push.seq, push.message_id)
            due = now + max(0, push.retry_at_ms - wall_ms) / 1000 if push.retry_at_ms else -math.inf
            self._schedule.add(push.seq, push.attempts, due)

    def _store_outcomes(self) -> None:
        """Hand the outcomes gathered so far to the writer, one commit at a time. Attempts do not
        wait for them: what they record only spares a restarted broker some repeats."""
        if not self._unstored or (self._storing is not None and not self._storing.done.is_set()):
            return
        records, self._unstored = self._unstored, []
        try:
            self._storing = self._writer.submit(records, needs_space=False, on_done=lambda: self._mailbox.post_answer(_Stored()))
        except (StorageError, trio.ClosedResourceError) as error:
            log.warning("subscription %s: push outcomes not stored: %s", self._target.subscription_arn, error, extra=_about(self._target))
            self._storing = None

    def _handle(self, message: object, records: list[Record]) -> None:
        target, schedule = self._target, self._schedule
        now, wall_ms = self._clock.now(), self._clock.wall_ms()
        match message:
            case _Stored():  # the next outcomes may go to the writer now
                if self._storing is not None and self._storing.error is not None:
                    log.warning(
                        "subscription %s: storing push outcomes failed: %s", target.subscription_arn, self._storing.error, extra=_about(target)
                    )
            case NewPushes(pushes=pushes):
                for seq, message_id in pushes:
                    if len(schedule) >= self._max_pending:
                        # Memory stays bounded however long the endpoint is away; the publisher
                        # and the other subscriptions go on.
                        outcome = f"dropped: the subscription already has {self._max_pending} pending pushes"
                        records.append(PushDone(wall_ms, target.topic_id, target.topic, target.subscription_id, seq, message_id, 0, outcome))
                        self._count(DROPPED)
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
                self._count(DELIVERED)
                records.append(
                    PushDone(wall_ms, target.topic_id, target.topic, target.subscription_id, seq, message_id, attempts, "delivered")
                )
            case _Attempted(seq=seq, message_id=message_id, outcome=outcome):
                if outcome.startswith(UNREACHABLE) and not outcome.endswith(INFERRED):
                    self._unreachable_until, self._unreachable = now + PUSH_UNREACHABLE_HOLD_S, outcome
                elif not outcome.startswith(UNREACHABLE):
                    self._unreachable_until = -math.inf
                attempt, retry_at = schedule.give_up(seq) if outcome.startswith(NOT_RETRIED) else schedule.failed(seq, now)
                if retry_at is not None:
                    self._count(RETRIED)
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
                    self._count(DROPPED)
                    log.info(
                        "subscription %s: push %d dropped after %d attempts (%s)", target.subscription_arn, seq, attempt, outcome,
                        extra=_about(target),
                    )
                    records.append(
                        PushDone(wall_ms, target.topic_id, target.topic, target.subscription_id, seq, message_id, attempt, "dropped")
                    )
            case _DeadLettered(seq=seq, message_id=message_id, attempts=attempts, error=error):
                schedule.drop(seq)
                self._message_ids.pop(seq, None)
                if message_id:  # "": the push was gone from the store (unsubscribed meanwhile)
                    self._count(DROPPED if error else DEAD_LETTERED)
                if error:
                    log.warning(
                        "subscription %s: push %d dropped: its dead-letter queue refused it (%s)", target.subscription_arn, seq, error,
                        extra=_about(target),
                    )
                    outcome = f"dropped: {error}"[:200]
                    records.append(PushDone(wall_ms, target.topic_id, target.topic, target.subscription_id, seq, message_id, attempts, outcome))

    def _dead_letter(self, seq: int, attempts: int) -> None:
        """Hand an exhausted push to the dead-letter queue, which stores it with its PushDone."""
        target = self._target
        (row,) = self._store.read_pushes(target.topic_id, target.subscription_id, [seq])
        if row is None:
            self._mailbox.post_answer(_DeadLettered(seq, "", attempts, ""))
            return
        message = MessageSent(
            at_ms=row.at_ms, queue_id=0, queue="", seq=0, delay_seconds=0, message_id=row.message_id, sender_id="",
            body=row.body, attributes=row.attributes if target.raw else {},
        )
        done = PushDone(self._clock.wall_ms(), target.topic_id, target.topic, target.subscription_id, seq, row.message_id, attempts, "dead-lettered")

        def answered(result: Result) -> None:
            self._mailbox.post_answer(_DeadLettered(seq, row.message_id, attempts, move_error(result)))

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
            log.error("subscription %s: %s", target.subscription_arn, error, extra=_about(target))
            rows = [None] * len(seqs)
        for seq, row in zip(seqs, rows):
            if row is None:  # gone from the store (unsubscribed, or dropped by salvage)
                self._schedule.drop(seq)
                self._message_ids.pop(seq, None)
                continue
            self._due_send.send_nowait((seq, push_request(target, row)))


def _about(target: PushTarget) -> dict[str, str]:
    """The fields a log line about this subscription carries, for structured logs."""
    return {"topic": target.topic, "subscription": target.subscription_arn}


def _about_request(request: PushRequest) -> dict[str, str]:
    about = {"topic": request.topic_arn.rpartition(":")[2]}
    if request.subscription_arn:  # a SubscriptionConfirmation names none
        about["subscription"] = request.subscription_arn
    return about


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
            log.info("%s to %s failed: %s", request.message_type, request.endpoint, outcome, extra=_about_request(request))
