"""The topic actor: the Trio task that owns one TopicCore, and the delivery actors of its HTTP/S and
email subscriptions.

Theory of operation
-------------------
Like a queue actor it loops in cycles: it takes every request in its mailbox, hands them in order
to the core, lets the core tick (housekeeping, replay batches), and gives the cycle's records to
the writer: configuration changes in one entry, publishes (each a `Published` record and its
`MessageSent` and `PushQueued` records) in another that storage may refuse when the disk is full.
Unlike a queue it waits for that commit before the next cycle (requests arriving meanwhile make
the next cycle bigger, so the writer still commits many publishes at once). Then it answers, posts
each queue's new messages to that queue through the directory (`Adopt`: the queue serves them from
then on, and has them in the store already if it restarts), and each delivery actor's new pushes.
Envelopes are signed in a worker thread before the commit when the broker is served.

If a commit of configuration changes fails, memory may be ahead of disk: the actor fails that
cycle's answers and raises RestartFromStorage, and its supervisor rebuilds the topic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import trio

from dovecote.storage import crash_points
from dovecote.storage.records import Published
from dovecote.storage.store import StorageError, Store
from dovecote.storage.writer import AppendEntry, LogWriter

from .clock import Clock
from .delivery import DeliveryActor, send_notice
from .directory import Directory
from .errors import access_denied, failure, storage_failed
from .limits import MAX_REQUESTS_PER_CYCLE
from .mailbox import Mailbox
from .messages import ActorMessage, Adopt, NewPushes, Reconfigured, Reply, Request, RestartFromStorage, StopPushing
from .ops import DeleteTopic, Done, Result
from .push_types import PushTarget, Sender
from .signing import sign_all
from .sns_messages import with_signatures
from .topic_core import TopicCore, TopicCycle

log = logging.getLogger("dovecote.topic")


class TopicStatistics(NamedTuple):
    cycles: int
    subscriptions: int
    delivery_actors: int
    pending_pushes: int
    publishes: int  # since the broker started
    deliveries: tuple[tuple[str, str, int], ...]  # (protocol, outcome, count), since the broker started


def _answer(answers: Sequence[tuple[Reply, Result]]) -> None:
    for reply, result in answers:
        reply(result)


class TopicActor:
    def __init__(
        self,
        core: TopicCore,
        mailbox: Mailbox,
        writer: LogWriter,
        store: Store,
        clock: Clock,
        directory: Directory,
        sender: Sender | None,
        max_pending_pushes: int,
    ) -> None:
        """sender: how delivery actors push (None: this broker has no push gateway, and its topics
        refuse HTTP/S and email subscriptions)."""
        self.core = core
        self._mailbox = mailbox
        self._writer = writer
        self._store = store
        self._clock = clock
        self._directory = directory
        self._sender = sender
        self._max_pending_pushes = max_pending_pushes
        # By subscription id: the delivery actors, and the target each was last given.
        self._pushers: dict[int, tuple[DeliveryActor, PushTarget]] = {}
        self._stopping: list[DeliveryActor] = []  # told to stop; their outcomes are added to the core's once they end
        self._nursery: trio.Nursery | None = None  # the delivery actors'
        self._notices: trio.Nursery | None = None  # confirmation messages being sent
        self._cycles = 0

    def statistics(self) -> TopicStatistics:
        """A snapshot, read without waiting from any task."""
        counters = self.core.counters
        deliveries = dict(counters.deliveries)
        for pusher in [pusher for pusher, _ in self._pushers.values()] + self._stopping:
            for outcome, count in pusher.outcomes.items():
                key = (pusher.protocol, outcome)
                deliveries[key] = deliveries.get(key, 0) + count
        return TopicStatistics(
            self._cycles, len(self.core.subscriptions), len(self._pushers),
            sum(pusher.pending() for pusher, _ in self._pushers.values()),
            counters.publishes, tuple((protocol, outcome, count) for (protocol, outcome), count in sorted(deliveries.items())),
        )

    def _retire_finished(self, every: bool = False) -> None:
        """Add the outcomes of delivery actors that have ended (or, when the topic's actor ends,
        of all of them: they have ended with its nursery) to the core's counters."""
        if every:
            self._stopping += [pusher for pusher, _ in self._pushers.values()]
            self._pushers.clear()
        still = []
        for pusher in self._stopping:
            if not (pusher.finished or every):
                still.append(pusher)
                continue
            for outcome, count in pusher.outcomes.items():
                self.core.counters.add(pusher.protocol, outcome, count)
        self._stopping = still

    def _read_archive(self, after_seq: int, limit: int) -> list[Published]:
        return self._store.read_archive(self.core.topic_id, after_seq, limit)

    async def run(self) -> bool:
        """Serve until stopped (False) or deleted (True). The delivery actors of the topic's
        HTTP/S and email subscriptions live in its nursery."""
        try:
            async with trio.open_nursery() as pushers:
                async with trio.open_nursery() as notices:
                    self._nursery, self._notices = pushers, notices
                    self._sync_pushers()
                    deleted = await self._serve()
                    notices.cancel_scope.cancel()
                # Pushes in flight stay pending in the store; at a shutdown the outcomes known are
                # stored first, so a restart repeats as few as it can.
                for pusher, _ in self._pushers.values():
                    pusher.post(StopPushing(flush=not deleted))
        finally:
            self._retire_finished(every=True)
        return deleted

    async def _serve(self) -> bool:
        core = self.core
        while True:
            requests: list[Request] = []
            with trio.move_on_at(core.wake_at()):
                try:
                    requests.append(await self._mailbox.receive())
                except trio.EndOfChannel:
                    return False
            self._mailbox.receive_waiting(requests, MAX_REQUESTS_PER_CYCLE)
            self._cycles += 1
            cycle = TopicCycle()
            now, wall_ms = self._clock.now(), self._clock.wall_ms()
            for request in requests:
                core.handle(request, cycle, self._directory, now, wall_ms)
            core.tick(cycle, self._read_archive, self._directory, now, wall_ms)
            await self._commit(cycle)
            if cycle.records:
                self._sync_pushers()
            if self._stopping:
                self._retire_finished()
            if self._sender is not None and self._notices is not None:
                for notice, policy in cycle.notices:
                    self._notices.start_soon(send_notice, self._sender, notice, policy)
            if cycle.ended_by is not None:
                cycle.ended_by.reply(Done())
                return isinstance(cycle.ended_by.op, DeleteTopic)

    # --- commit -------------------------------------------------------------------------------
    async def _commit(self, cycle: TopicCycle) -> None:
        core = self.core
        published_records, targets = core.publish_records(cycle)
        unsigned = core.messages.take_unsigned()
        if unsigned and core.options.signer is not None:
            core.options.signer.load()  # here, not in a thread: one key for every topic's threads
            # RSA signing releases the GIL: in a worker thread it runs beside the event loop.
            signatures = await trio.to_thread.run_sync(sign_all, core.options.signer, unsigned)
            published_records = with_signatures(published_records, signatures)
        others: AppendEntry | None = None
        sends: AppendEntry | None = None
        try:
            # Configuration first: a replay batch of this cycle moves on from the state a
            # subscription was given in it, and must be stored after that state.
            others = self._writer.submit(cycle.records, needs_space=False) if cycle.records else None
            sends = self._writer.submit(published_records, needs_space=True, sealed_for=core.topic_id) if published_records else None
        except StorageError as error:
            _answer(cycle.failed(failure(storage_failed(error))))
            if others is not None:  # let what was handed over settle before the topic is rebuilt
                with trio.CancelScope(shield=True):
                    await others.done.wait()
            raise RestartFromStorage(str(error)) from error
        with trio.CancelScope(shield=True):  # the writer never abandons a commit; neither do we
            for entry in (sends, others):
                if entry is not None:
                    await entry.done.wait()
        sends_error = sends.error if sends is not None else None
        settled = core.settle(cycle, list(sends.records) if sends is not None else [], targets, sends_error)
        _answer(settled.answers)
        for target, messages in settled.adopted:
            self._directory.deliver(target, Adopt(messages))
            crash_points.reached("fan-out")
        for subscription_id, pushes in settled.pushed.items():
            if subscription_id in self._pushers:
                self._pushers[subscription_id][0].post(NewPushes(pushes))
        if cycle.replayed and sends_error is not None:
            raise RestartFromStorage(f"a replay batch was not stored: {sends_error}")
        if cycle.replayed:
            crash_points.reached("replayed")
        if others is not None and others.error is not None:
            _answer(cycle.failed(failure(storage_failed(others.error))))
            raise RestartFromStorage(str(others.error)) from others.error
        _answer(cycle.replies)

    # --- delivery actors ----------------------------------------------------------------------
    def _forward_dead_letter(self, queue_arn: str, message: ActorMessage, reply: Reply) -> None:
        """A delivery actor's exhausted push, to its subscription's dead-letter queue: only if that
        queue's policy lets this topic send to it (authentication on), as for SQS deliveries;
        refused, the push is dropped and recorded so (delivery.py)."""
        target = self._directory.get(queue_arn)
        if target is not None and not self.core.may_deliver(target):
            reply(failure(access_denied("sns.amazonaws.com", "sqs:SendMessage", queue_arn, explicitly=False)))
            return
        self._directory.forward(queue_arn, message, reply)

    def _sync_pushers(self) -> None:
        """Start, reconfigure or stop delivery actors to match the confirmed push subscriptions."""
        if self._sender is None or self._nursery is None:
            return
        wanted = self.core.push_targets()
        for subscription_id in [s for s in self._pushers if s not in wanted]:
            stopped = self._pushers.pop(subscription_id)[0]
            stopped.post(StopPushing())
            self._stopping.append(stopped)
        for subscription_id, target in wanted.items():
            running = self._pushers.get(subscription_id)
            if running is None:
                pending = self.core.restored_pushes.pop(subscription_id, [])
                pusher = DeliveryActor(
                    target, pending, self._sender, self._writer, self._store, self._clock, self._forward_dead_letter,
                    max_pending=self._max_pending_pushes,
                )
                self._nursery.start_soon(pusher.run, name=f"push:{target.subscription_arn}")
            elif running[1] != target:
                pusher = running[0]
                pusher.post(Reconfigured(target))
            else:
                continue
            self._pushers[subscription_id] = (pusher, target)
