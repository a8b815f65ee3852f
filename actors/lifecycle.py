"""The lifecycle task: the one task that makes and deletes queues and topics, and so the one that
changes the directory.

Theory of operation
-------------------
CreateQueue, DeleteQueue, CreateTopic, DeleteTopic and SetQueueAttributes with a RedrivePolicy come
here, through a bounded mailbox, and are served one at a time: a creation is checked (an equal one
already there is answered as it is; a RedrivePolicy's target must exist, be of the same type and
allow the source), stored, and its actor started under a supervisor and added to the directory; a
deletion asks the actor to store it and end, then takes the entry out. This task awaits the writer
and actors, but nothing waits for it but these requests: lookups are the directory's, which never
waits. ListSubscriptions, which asks topic after topic, runs in a task of its own, a few at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from dovecote.storage.records import QueueCreated, TopicCreated
from dovecote.storage.store import StorageError, Store
from dovecote.storage.writer import LogWriter

from . import paging, policy, sns_validation, validation
from .clock import Clock
from .config import BrokerConfig, queue_arn, topic_arn
from .directory import ActorEntry, Directory
from .errors import (
    BrokerError,
    actor_failed,
    failure,
    invalid_parameter,
    no_such_queue,
    no_such_topic,
    not_an_operation,
    storage_failed,
)
from .limits import MAX_LISTINGS_AT_ONCE, SNS_PAGE_SIZE
from .mailbox import Mailbox, ReplySlot
from .messages import ActorMessage, Reply, Request, Stop
from .ops import (
    Arn,
    Attributes,
    CreateQueue,
    CreateTopic,
    DeleteQueue,
    DeleteTopic,
    Done,
    GetQueueAttributes,
    GetTopicAttributes,
    ListSubscriptions,
    ListSubscriptionsByTopic,
    ListTopicTags,
    Op,
    QueueName,
    Result,
    SetQueueAttributes,
    SubscriptionInfo,
    SubscriptionList,
    Tags,
)
from .queue_core import QueueCore
from .supervisor import Supervisor
from .topic_core import TopicCore, TopicOptions

log = logging.getLogger("dovecote.lifecycle")

LIFECYCLE_OPS = (CreateQueue, DeleteQueue, CreateTopic, DeleteTopic, ListSubscriptions)


class ActorEnded(ActorMessage):
    """Supervisor to lifecycle: this entry's actor ended for good (its queue or topic is gone)."""

    entry: ActorEntry


class Lifecycle:
    def __init__(
        self,
        config: BrokerConfig,
        store: Store,
        writer: LogWriter,
        clock: Clock,
        directory: Directory,
        supervisor: Supervisor,
        options: TopicOptions,
    ) -> None:
        self._config = config
        self._store = store
        self._writer = writer
        self._clock = clock
        self._directory = directory
        self._options = options
        self.mailbox = Mailbox(config.lifecycle_capacity)
        self._supervisor = supervisor
        self._next_id = store.next_queue_id()
        self._listings = trio.CapacityLimiter(MAX_LISTINGS_AT_ONCE)
        self._nursery: trio.Nursery | None = None

    def _ended(self, entry: ActorEntry) -> None:
        self.mailbox.post_answer(ActorEnded(entry))

    async def run(self, cores: Sequence[QueueCore | TopicCore], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the recovered queues' and topics' actors, then serve until the mailbox is closed
        for mail (the broker stopping); then tell every actor to stop. Actors run in this task's
        nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for core in cores:
                self._start(core)
            task_status.started()
            while True:
                try:
                    request = await self.mailbox.receive()
                except trio.EndOfChannel:
                    break
                await self._serve(request)
            for entry in list(self._directory.entries()):
                # Never refused for a full mailbox: the actor must hear it (one per actor this task started).
                entry.mailbox.post_answer(Stop())

    # --- requests -------------------------------------------------------------------------------
    async def _serve(self, request: Request) -> None:
        op, reply = request.op, request.reply
        region = request.region or self._config.region
        try:
            match op:
                case ActorEnded(entry=entry):
                    self._directory.remove(entry)
                case CreateQueue():
                    reply(await self._create_queue(op, region))
                case DeleteQueue():
                    reply(await self._delete(self._directory.queue(region, op.queue), op, no_such_queue()))
                case SetQueueAttributes():
                    reply(await self._set_redrive_policy(op, region))
                case CreateTopic():
                    reply(await self._create_topic(op, region))
                case DeleteTopic():
                    # Deleting a topic that does not exist succeeds, as on AWS.
                    result = await self._delete(self._directory.topic(region, op.topic), op, None)
                    reply(result)
                case ListSubscriptions():
                    assert self._nursery is not None
                    self._nursery.start_soon(self._list_subscriptions, region, op.next_token, reply)
                case _:
                    raise not_an_operation("lifecycle", op)
        except BrokerError as error:
            reply(failure(error))
        except StorageError as error:
            reply(failure(storage_failed(error)))
        except Exception:
            log.exception("the lifecycle task failed on %s", type(op).__name__)
            reply(failure(actor_failed("The broker")))

    async def _ask(self, entry: ActorEntry, op: Op) -> Result:
        slot: ReplySlot[Result] = ReplySlot()
        if not entry.mailbox.post(op, slot):
            return failure(no_such_queue() if entry.kind == "queue" else no_such_topic())
        return await slot.wait()

    async def _delete(self, entry: ActorEntry | None, op: Op, missing: BrokerError | None) -> Result:
        if entry is None:
            if missing is not None:
                raise missing
            return Done()
        result = await self._ask(entry, op)
        if isinstance(result, Done):
            self._directory.remove(entry)
        return result

    def _start(self, core: QueueCore | TopicCore) -> None:
        """Start a queue's or topic's actor under its supervisor and put it in the directory."""
        assert self._nursery is not None
        if isinstance(core, QueueCore):
            entry = ActorEntry("queue", core.queue_id, core.region, core.name, core.arn, core.config.fifo, self._mailbox())
            self._directory.add(entry, core.attributes.get("RedrivePolicy", ""))
        else:
            entry = ActorEntry("topic", core.topic_id, core.region, core.name, core.arn, core.fifo, self._mailbox())
            self._directory.add(entry)
        core.share_policy(entry.policy)  # before anyone can route to it (its supervisor starts later)
        self._nursery.start_soon(self._supervisor.run, entry, core, self._ended, name=f"{entry.kind}:{core.name}")

    def _mailbox(self) -> Mailbox:
        return Mailbox(self._config.mailbox_capacity, self._config.actor_mail_capacity)

    def _allocate_id(self) -> int:
        allocated = self._next_id
        self._next_id += 1
        return allocated

    # --- queues ---------------------------------------------------------------------------------
    async def _create_queue(self, op: CreateQueue, region: str) -> Result:
        fifo = validation.is_fifo_request(op.attributes)
        validation.validate_queue_name(op.queue, fifo)
        given = validation.validate_queue_attributes(op.attributes, fifo=fifo, creating=True)
        validation.check_fifo_throughput(given)
        tags = policy.tagged({}, op.tags)
        existing = self._directory.queue(region, op.queue)
        if existing is not None:
            current = await self._ask(existing, GetQueueAttributes(op.queue, ["All"]))
            if not isinstance(current, Attributes):
                return current
            if any(current.attributes.get(name) != value for name, value in given.items()):
                raise BrokerError(
                    "QueueNameExists", "A queue already exists with the same name and a different value for attribute(s)."
                )
            return QueueName(op.queue)
        if self._directory.queue_count() >= self._config.max_queues:
            raise BrokerError("OverLimit", f"This broker holds at most {self._config.max_queues} queues.")
        arn = queue_arn(self._config, region, op.queue)
        if given.get("RedrivePolicy"):
            await self._check_redrive(arn, fifo, given["RedrivePolicy"])
        wall_ms = self._clock.wall_ms()
        seconds = str(wall_ms // 1000)
        attributes = {
            **validation.default_queue_attributes(fifo, kms=bool(given.get("KmsMasterKeyId"))),
            **{name: value for name, value in given.items() if value != ""},
            "CreatedTimestamp": seconds,
            "LastModifiedTimestamp": seconds,
        }
        record = QueueCreated(wall_ms, self._next_id, op.queue, attributes, region, tags)
        await self._writer.append([record], needs_space=True)  # only adds data: refused while storage is full
        self._start(QueueCore(self._allocate_id(), op.queue, attributes, arn, tags=tags))
        return QueueName(op.queue)

    async def _check_redrive(self, source_arn: str, source_fifo: bool, redrive_policy: str) -> None:
        """A RedrivePolicy's target must exist, be of the source's type and allow the source."""
        target_arn = validation.queue_config({"RedrivePolicy": redrive_policy}).dead_letter_arn

        def refuse(reason: str) -> BrokerError:
            return validation.invalid(f"Value {redrive_policy} for parameter RedrivePolicy is invalid. Reason: {reason}")

        target = self._directory.queue_by_arn(target_arn)
        if target is None:
            raise refuse("Dead letter target does not exist.")
        if target.fifo != source_fifo:
            raise refuse("Dead-letter queue must be of the same type as the source queue (FIFO or standard).")
        if target.arn == source_arn:
            raise refuse("A queue cannot be its own dead-letter queue.")
        current = await self._ask(target, GetQueueAttributes("", ["RedriveAllowPolicy"]))
        if isinstance(current, Attributes) and not validation.redrive_allows(current.attributes.get("RedriveAllowPolicy"), source_arn):
            raise refuse(f"The RedriveAllowPolicy of {target_arn} does not allow this queue to use it as a dead-letter queue.")

    async def _set_redrive_policy(self, op: SetQueueAttributes, region: str) -> Result:
        """SetQueueAttributes with a RedrivePolicy comes here to be checked against its target."""
        entry = self._directory.queue(region, op.queue)
        if entry is None:
            raise no_such_queue()
        redrive = validation.validate_queue_attributes({"RedrivePolicy": op.attributes["RedrivePolicy"]}, fifo=entry.fifo)
        if redrive["RedrivePolicy"]:
            await self._check_redrive(entry.arn, entry.fifo, redrive["RedrivePolicy"])
        result = await self._ask(entry, op)
        if isinstance(result, Done):
            self._directory.note_dead_letter_target(entry, redrive["RedrivePolicy"])
        return result

    # --- topics ---------------------------------------------------------------------------------
    async def _create_topic(self, op: CreateTopic, region: str) -> Result:
        fifo = op.attributes.get("FifoTopic", "").lower() == "true"
        sns_validation.validate_topic_name(op.topic, fifo)
        given = sns_validation.validate_topic_attributes(op.attributes, fifo=fifo, creating=True)
        tags = policy.tagged({}, op.tags)
        arn = topic_arn(self._config, region, op.topic)
        existing = self._directory.topic(region, op.topic)
        if existing is not None:
            current = await self._ask(existing, GetTopicAttributes(op.topic))
            if isinstance(current, Attributes) and any(current.attributes.get(k) != v for k, v in given.items()):
                raise invalid_parameter("Attributes Reason: Topic already exists with different attributes")
            if tags:
                # AWS: tags that the topic does not already have (with these values) are refused
                current_tags = await self._ask(existing, ListTopicTags(op.topic))
                if isinstance(current_tags, Tags) and any(current_tags.tags.get(k) != v for k, v in tags.items()):
                    raise invalid_parameter("Tags Reason: Topic already exists with different tags")
            return Arn(arn)
        if self._directory.topic_count() >= self._config.max_topics:
            raise BrokerError("TopicLimitExceeded", f"This broker holds at most {self._config.max_topics} topics.")
        record = TopicCreated(self._clock.wall_ms(), self._next_id, op.topic, given, region, tags)
        await self._writer.append([record], needs_space=True)
        core = TopicCore(
            self._allocate_id(), op.topic, given, arn, tags=tags, first_sequence=self._store.last_lsn, options=self._options
        )
        self._start(core)
        return Arn(arn)

    async def _list_subscriptions(self, region: str, next_token: str | None, reply: Reply) -> None:
        """ListSubscriptions: the region's topics asked in ARN order, from the page's first topic
        on, until a page is full; in a task of its own, so nothing else waits for the topics."""
        async with self._listings:
            try:
                reply(await self._subscriptions_page(region, next_token))
            except BrokerError as error:
                reply(failure(error))

    async def _subscriptions_page(self, region: str, next_token: str | None) -> SubscriptionList:
        # A subscription's key is its topic's ARN and its place in the topic; the token names the
        # last one listed, so a page asks only the topics from that one on, until it has a page.
        after = paging.token_key(next_token, paging.bad_sns_token()) if next_token else ""
        after_topic = after.split("\x00", 1)[0]
        listed: list[tuple[str, SubscriptionInfo]] = []
        for arn in self._directory.topic_arns(region):
            if arn < after_topic:
                continue
            entry = self._directory.topic(region, arn.rsplit(":", 1)[1])
            token: str | None = None
            position = 0
            while entry is not None:
                answer = await self._ask(entry, ListSubscriptionsByTopic(entry.name, token))
                if not isinstance(answer, SubscriptionList):
                    break
                for info in answer.subscriptions:
                    key = f"{arn}\x00{position:010d}"
                    position += 1
                    if key > after:
                        listed.append((key, info))
                token = answer.next_token
                if token is None:
                    break
            if len(listed) > SNS_PAGE_SIZE:
                break
        chosen, token = paging.sns_page(listed, None, _listing_key)
        return SubscriptionList([info for _, info in chosen], token)


def _listing_key(item: tuple[str, SubscriptionInfo]) -> str:
    return item[0]
