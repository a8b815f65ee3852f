"""The topic actor: the Trio task that owns one TopicCore.

Theory of operation
-------------------
Like a queue actor it loops in cycles: it takes every request in its mailbox, handles them in
order against the core, and hands the cycle's records to the writer: publishes (each a `Published`
record and the `MessageSent` records of its SQS deliveries) in one entry that storage may refuse
when the disk is full, everything else in another. Unlike a queue it waits for that commit before
the next cycle (requests arriving meanwhile make the next cycle bigger, so the writer still commits
many publishes at once). Then it replies, and posts each queue's new messages to that queue's actor
(`Adopt`): the queue serves them from then on, and has them in the store already if it restarts.

If a commit of subscription or attribute changes fails, memory may be ahead of disk: the actor fails
that cycle's replies and raises RestartFromStorage, and the registry rebuilds the topic.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence

import msgspec
import trio

from dovecote.storage.records import DedupWindowClosed, MessageSent, Published, PushQueued, Record
from dovecote.storage.store import StorageError, Store
from dovecote.storage.writer import AppendEntry, LogWriter

from .clock import Clock
from .mailbox import take_waiting
from .errors import BrokerError
from .ops import (
    AddTopicPermission,
    Arn,
    Attributes,
    BatchFailure,
    ConfirmSubscription,
    DeleteTopic,
    Done,
    ExplainDelivery,
    Explanation,
    Failure,
    GetSubscriptionAttributes,
    GetTopicAttributes,
    ListSubscriptionsByTopic,
    ListTopicTags,
    Op,
    Publish,
    PublishBatch,
    PublishBatchResult,
    PublishedEntry,
    PublishedMessage,
    RemoveTopicPermission,
    Result,
    SetSubscriptionAttributes,
    SetTopicAttributes,
    Subscribe,
    SubscriptionList,
    TagTopic,
    Tags,
    Unsubscribe,
    UntagTopic,
)
from .delivery_policy import EffectivePolicy
from .push import (
    MAX_PENDING,
    PUSH_PROTOCOLS,
    NewPushes,
    PushActor,
    PushRequest,
    PushTarget,
    Reconfigured,
    Sender,
    StopPushing,
    send_notice,
)
from .queue import Adopt, Forward, Reply, Request, RestartFromStorage, Stop, failure, storage_failure
from .signing import sign_all
from .topic_core import Duplicate, PreparedPublish, QueueTarget, TopicCore, invalid_parameter, with_signatures

log = logging.getLogger("dovecote.topic")

MAX_REQUESTS_PER_CYCLE = 256
PAGE = 100  # ListSubscriptionsByTopic page size, as AWS pages
HOUSEKEEPING_INTERVAL_S = 60
MAX_BATCH_ENTRIES = 10
REPLAY_BATCH = 500  # archived publishes replayed per cycle


class QueueDirectoryChanged(Op):
    """Registry to topic: a queue appeared (target) or went away (None)."""

    queue_arn: str
    target: QueueTarget | None


class _PublishOutcome(msgspec.Struct):
    """One publish (or duplicate) of a cycle, and how its answer is made once stored."""

    prepared: PreparedPublish | Duplicate
    answer: Callable[[PublishedMessage | Failure], None]


class TopicActor:
    def __init__(
        self,
        core: TopicCore,
        mailbox: trio.MemoryReceiveChannel[Request],
        writer: LogWriter,
        store: Store,
        clock: Clock,
        targets: dict[str, QueueTarget],
        sender: Sender | None = None,
        forward: Forward | None = None,
        max_pending_pushes: int = MAX_PENDING,
    ) -> None:
        """sender and forward: how delivery actors push, and reach dead-letter queues (None: this
        broker has no push gateway, and its topics refuse HTTP/S and email subscriptions)."""
        self.core = core
        self._mailbox = mailbox
        self._writer = writer
        self._store = store
        self._clock = clock
        self._targets = targets  # queue ARN -> target; kept current by the registry's messages
        self._housekeeping_at = -math.inf
        self._sender = sender
        self._forward = forward
        self._max_pending_pushes = max_pending_pushes
        # By subscription id: the delivery actors, and the target each was last given.
        self._pushers: dict[int, tuple[PushActor, PushTarget]] = {}
        self._nursery: trio.Nursery | None = None  # the delivery actors'
        self._notices: trio.Nursery | None = None  # confirmation messages being sent

    async def run(self) -> bool:
        """Serve until stopped (False) or deleted (True). The delivery actors of the topic's
        HTTP/S and email subscriptions live in its nursery."""
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
        return deleted

    async def _serve(self) -> bool:
        while True:
            requests: list[Request] = []
            # A FIFO topic wakes about once a minute to drop deduplication ids that have expired,
            # and at once while it replays its archive to a subscription.
            wake_at = self._housekeeping_at if self.core.fifo else math.inf
            with trio.move_on_at(-math.inf if self.core.active_replays() else wake_at):
                try:
                    requests.append(await self._mailbox.receive())
                except trio.EndOfChannel:
                    return False
            take_waiting(self._mailbox, requests, MAX_REQUESTS_PER_CYCLE)
            records: list[Record] = []
            replies: list[tuple[Reply, Result]] = []
            publishes: list[_PublishOutcome] = []
            notices: list[tuple[PushRequest, EffectivePolicy]] = []
            ended_by: Request | None = None
            for request in requests:
                if ended_by is not None:
                    request.reply(Failure("NotFound", "Topic does not exist"))
                    continue
                if isinstance(request.op, (DeleteTopic, Stop)):
                    ended_by = request
                    continue
                try:
                    self._handle(request, records, replies, publishes, notices)
                except BrokerError as error:
                    request.reply(failure(error))
            now = self._clock.now()
            if now >= self._housekeeping_at:
                self._housekeeping_at = now + HOUSEKEEPING_INTERVAL_S
                closed = self.core.expire_dedup(now)
                if closed is not None:
                    records.append(DedupWindowClosed(self._clock.wall_ms(), self.core.topic_id, self.core.name, closed))
            if ended_by is not None and isinstance(ended_by.op, DeleteTopic):
                records.append(self.core.deleted_record(self._clock.wall_ms()))
            replayed = self._replay() if ended_by is None else []
            await self._commit(records, replies, publishes, replayed)
            if records:
                self._sync_pushers()
            if self._sender is not None and self._notices is not None:
                for notice, policy in notices:
                    self._notices.start_soon(send_notice, self._sender, notice, policy)
            if ended_by is not None:
                ended_by.reply(Done())
                return isinstance(ended_by.op, DeleteTopic)

    # --- requests -----------------------------------------------------------------------------
    def _handle(
        self,
        request: Request,
        records: list[Record],
        replies: list[tuple[Reply, Result]],
        publishes: list[_PublishOutcome],
        notices: list[tuple[PushRequest, EffectivePolicy]],
    ) -> None:
        op, reply = request.op, request.reply
        core, wall_ms = self.core, self._clock.wall_ms()
        match op:
            case Publish():
                prepared = self._prepare(op.message, op.subject, op.message_structure, op.message_attributes,
                                         op.message_group_id, op.message_deduplication_id)
                publishes.append(_PublishOutcome(prepared, reply))
            case PublishBatch():
                self._publish_batch(op, reply, publishes)
            case Subscribe():
                self._check_dead_letter_queue(op.attributes.get("RedrivePolicy"))
                arn, record = core.subscribe(op.protocol, op.endpoint, op.attributes, wall_ms)
                if record is not None:
                    records.append(record)
                if core.subscription(arn).confirmed:
                    replies.append((reply, Arn(arn)))
                else:  # the confirmation goes out (again); AWS answers so until the endpoint confirms
                    self._notice(arn, "SubscriptionConfirmation", notices)
                    replies.append((reply, Arn(arn if op.return_subscription_arn else "pending confirmation")))
            case ConfirmSubscription():
                arn, record = core.confirm(op.token, wall_ms)
                if record is not None:
                    records.append(record)
                replies.append((reply, Arn(arn)))
            case SetSubscriptionAttributes():
                if op.name == "RedrivePolicy":
                    self._check_dead_letter_queue(op.value)
                records.append(core.set_subscription_attribute(op.subscription_arn, op.name, op.value, wall_ms))
                replies.append((reply, Done()))
            case GetSubscriptionAttributes():
                reply(Attributes(core.subscription_attributes(op.subscription_arn)))
            case ListSubscriptionsByTopic():
                reply(_page(core.list_subscriptions(), op.next_token))
            case GetTopicAttributes():
                reply(Attributes(core.get_attributes()))
            case SetTopicAttributes():
                records.append(core.set_attribute(op.name, op.value, wall_ms))
                replies.append((reply, Done()))
            case TagTopic():
                records.append(core.tag(op.tags, wall_ms))
                replies.append((reply, Done()))
            case UntagTopic():
                records.append(core.untag(op.tag_keys, wall_ms))
                replies.append((reply, Done()))
            case ListTopicTags():
                reply(Tags(dict(core.tags)))
            case AddTopicPermission():
                records.append(core.add_permission(op.label, op.account_ids, op.actions, wall_ms))
                replies.append((reply, Done()))
            case RemoveTopicPermission():
                records.append(core.remove_permission(op.label, wall_ms))
                replies.append((reply, Done()))
            case ExplainDelivery():
                reply(Explanation(core.explain(op.message, op.message_attributes, self._targets)))
            case QueueDirectoryChanged():
                if op.target is None:
                    self._targets.pop(op.queue_arn, None)
                else:
                    self._targets[op.queue_arn] = op.target
            case Unsubscribe():
                subscription = core.subscriptions.get(op.subscription_arn)
                if subscription is not None and subscription.protocol in PUSH_PROTOCOLS:
                    self._notice(subscription.arn, "UnsubscribeConfirmation", notices)
                record = core.unsubscribe(op.subscription_arn, wall_ms)
                if record is not None:
                    records.append(record)
                replies.append((reply, Done()))
            case _:
                reply(Failure("InvalidAction", f"{type(op).__name__} is not a topic operation."))

    def _check_dead_letter_queue(self, redrive_policy: str | None) -> None:
        """A subscription's dead-letter queue, when this broker has it, is of the topic's kind:
        standard for a standard topic, FIFO for a FIFO topic."""
        if not redrive_policy:
            return
        try:
            arn = json.loads(redrive_policy).get("deadLetterTargetArn")
        except (ValueError, AttributeError):
            return  # the core refuses it, saying why
        target = self._targets.get(arn) if isinstance(arn, str) else None
        if target is not None and target.fifo != self.core.fifo:
            kind = "a FIFO" if self.core.fifo else "a standard"
            raise invalid_parameter(f"RedrivePolicy: the dead-letter queue of {kind} topic's subscription must be {kind} queue")

    def _prepare(self, message, subject, structure, attributes, group_id, dedup_id) -> PreparedPublish | Duplicate:
        return self.core.prepare_publish(
            message, subject, structure, attributes, group_id, dedup_id, self._targets, self._clock.now(), self._clock.wall_ms()
        )

    def _publish_batch(self, op: PublishBatch, reply: Reply, publishes: list[_PublishOutcome]) -> None:
        entries = op.entries
        if not entries:
            raise BrokerError("EmptyBatchRequestException", "The batch request doesn't contain any entries")
        if len(entries) > MAX_BATCH_ENTRIES:
            raise BrokerError("TooManyEntriesInBatchRequestException", "The batch request contains more entries than permissible")
        ids = [entry.id for entry in entries]
        if len(set(ids)) != len(ids):
            raise BrokerError("BatchEntryIdsNotDistinctException", "Two or more batch entries in the request have the same Id")
        if any(not (1 <= len(i) <= 80 and all(c.isascii() and (c.isalnum() or c in "-_") for c in i)) for i in ids):
            raise BrokerError("InvalidBatchEntryIdException", "A batch entry id can only contain alphanumeric characters, hyphens and underscores")
        if sum(len(entry.message.encode()) for entry in entries) > 256 * 1024:
            raise BrokerError("BatchRequestTooLongException", "The length of all the messages put together is more than the limit")
        successful: list[PublishedEntry] = []
        failed: list[BatchFailure] = []
        remaining = [len(entries)]

        def settle_one() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                order = {entry_id: i for i, entry_id in enumerate(ids)}
                reply(PublishBatchResult(sorted(successful, key=lambda e: order[e.id]), failed))

        for entry in entries:
            try:
                prepared = self._prepare(entry.message, entry.subject, entry.message_structure, entry.message_attributes,
                                         entry.message_group_id, entry.message_deduplication_id)
            except BrokerError as error:
                failed.append(BatchFailure(entry.id, error.code, error.message, error.kind.sender_fault))
                settle_one()
                continue

            def answer(result: PublishedMessage | Failure, entry_id: str = entry.id) -> None:
                if isinstance(result, PublishedMessage):
                    successful.append(PublishedEntry(entry_id, result.message_id, result.sequence_number))
                else:
                    failed.append(BatchFailure(entry_id, result.code, result.message, False))
                settle_one()

            publishes.append(_PublishOutcome(prepared, answer))

    def _replay(self) -> list[tuple[QueueTarget | None, Record]]:
        """The next batch of each running replay: deliveries, and each subscription's new state,
        to be stored together."""
        batch: list[tuple[QueueTarget | None, Record]] = []
        for arn, cursor in self.core.active_replays():
            archived = self._store.read_archive(self.core.topic_id, cursor, REPLAY_BATCH)
            deliveries, state = self.core.replay_batch(
                arn, archived, len(archived) < REPLAY_BATCH, self._targets, self._clock.wall_ms()
            )
            batch.extend(deliveries)
            batch.append((None, state))
        return batch

    # --- commit -------------------------------------------------------------------------------
    async def _commit(
        self,
        records: list[Record],
        replies: list[tuple[Reply, Result]],
        publishes: list[_PublishOutcome],
        replayed: list[tuple[QueueTarget | None, Record]],
    ) -> None:
        published_records: list[Record] = []
        targets: list[QueueTarget | None] = []
        for target, record in replayed:
            published_records.append(record)
            targets.append(target)
        for outcome in publishes:
            if isinstance(outcome.prepared, PreparedPublish):
                published_records.append(outcome.prepared.published)
                targets.append(None)
                for target, record in outcome.prepared.deliveries:
                    published_records.append(record)
                    targets.append(target)
                for push in outcome.prepared.pushes:
                    published_records.append(push)
                    targets.append(None)
        unsigned = self.core.take_unsigned()
        if unsigned and self.core.signer is not None:
            # RSA signing releases the GIL: in a worker thread it runs beside the event loop.
            signatures = await trio.to_thread.run_sync(sign_all, self.core.signer, unsigned)
            published_records = with_signatures(published_records, signatures)
        others = sends = None
        try:
            # Configuration first: a replay batch of this cycle moves on from the state a
            # subscription was given in it, and must be stored after that state.
            others = self._writer.submit(records, needs_space=False) if records else None
            sends = self._writer.submit(published_records, needs_space=True) if published_records else None
        except StorageError as error:
            self._fail(publishes, replies, storage_failure(error))
            if others is not None:  # let what was handed over settle before the topic is rebuilt
                with trio.CancelScope(shield=True):
                    await others.done.wait()
            raise RestartFromStorage(str(error)) from error
        entries = [entry for entry in (sends, others) if entry is not None]
        with trio.CancelScope(shield=True):  # the writer never abandons a commit; neither do we
            for entry in entries:
                await entry.done.wait()
        self._settle_publishes(publishes, sends, targets)
        if replayed and sends is not None and sends.error is not None:
            raise RestartFromStorage(f"a replay batch was not stored: {sends.error}")
        if others is not None and others.error is not None:
            for reply, _ in replies:
                reply(storage_failure(others.error))
            raise RestartFromStorage(str(others.error)) from others.error
        for reply, result in replies:
            reply(result)

    def _settle_publishes(
        self, publishes: list[_PublishOutcome], sends: AppendEntry | None, targets: Sequence[QueueTarget | None]
    ) -> None:
        error = sends.error if sends is not None else None
        stored = list(sends.records) if sends is not None and error is None else []
        adopted: dict[int, tuple[QueueTarget, list[MessageSent]]] = {}
        pushed: dict[int, list[tuple[int, str]]] = {}  # subscription id -> (seq, MessageId) of its new pushes
        for record, target in zip(stored, targets):
            if type(record) is Published:
                self.core.stored(record)
            elif target is not None and type(record) is MessageSent:
                adopted.setdefault(target.queue_id, (target, []))[1].append(record)
            elif type(record) is PushQueued:
                pushed.setdefault(record.subscription_id, []).append((record.seq, record.message_id))
        published = iter(record for record in stored if type(record) is Published)
        for outcome in publishes:
            prepared = outcome.prepared
            if isinstance(prepared, Duplicate):
                if self.core.stored_seq_of(prepared):
                    outcome.answer(PublishedMessage(prepared.message_id))
                else:
                    outcome.answer(Failure("InternalError", "The message this one duplicates was not stored; publish it again."))
            elif error is not None:
                self.core.forget(prepared.published)
                outcome.answer(storage_failure(error))
            else:
                record = next(published)
                outcome.answer(PublishedMessage(record.message_id, prepared.sequence_number))
        for target, messages in adopted.values():
            target.post(Adopt(messages))
        for subscription_id, pushes in pushed.items():
            if subscription_id in self._pushers:
                self._pushers[subscription_id][0].post(NewPushes(pushes))

    # --- delivery actors ----------------------------------------------------------------------
    def _sync_pushers(self) -> None:
        """Start, reconfigure or stop delivery actors to match the confirmed push subscriptions."""
        if self._sender is None or self._forward is None or self._nursery is None:
            return
        wanted = self.core.push_targets()
        for subscription_id in [s for s in self._pushers if s not in wanted]:
            self._pushers.pop(subscription_id)[0].post(StopPushing())
        for subscription_id, target in wanted.items():
            running = self._pushers.get(subscription_id)
            if running is None:
                pending = self.core.restored_pushes.pop(subscription_id, [])
                pusher = PushActor(
                    target, pending, self._sender, self._writer, self._store, self._clock, self._forward,
                    max_pending=self._max_pending_pushes,
                )
                self._nursery.start_soon(pusher.run, name=f"push:{target.subscription_arn}")
            elif running[1] != target:
                pusher = running[0]
                pusher.post(Reconfigured(target))
            else:
                continue
            self._pushers[subscription_id] = (pusher, target)

    def _notice(self, arn: str, message_type: str, notices: list[tuple[PushRequest, EffectivePolicy]]) -> None:
        """A confirmation message to send once this cycle is stored."""
        core = self.core
        notices.append((core.notice(arn, message_type, self._clock.wall_ms()), core.delivery_policy(core.subscription(arn))))

    def _fail(self, publishes: list[_PublishOutcome], replies: list[tuple[Reply, Result]], result: Failure) -> None:
        for outcome in publishes:
            if isinstance(outcome.prepared, PreparedPublish):
                self.core.forget(outcome.prepared.published)
            outcome.answer(result)
        for reply, _ in replies:
            reply(result)


def _page(subscriptions: list, next_token: str | None) -> SubscriptionList:
    start = 0
    if next_token:
        if not next_token.isdigit():
            raise invalid_parameter("NextToken")
        start = int(next_token)
    page = subscriptions[start : start + PAGE]
    more = start + PAGE < len(subscriptions)
    return SubscriptionList(page, str(start + PAGE) if more else None)
