"""The broker: the registry of queues and the supervisor of their actors.

Theory of operation
-------------------
The registry task owns the map of queue names to queue actors. It serves CreateQueue, DeleteQueue,
GetQueueUrl and ListQueues, and answers lookups: a `Session` (one per client connection, owned by
that connection's task) asks once for a queue's mailbox, caches it, and from then on sends that
queue's requests straight to its actor. A queue's mailbox lives as long as the queue, across actor
restarts; when the queue is deleted the mailbox is drained (every queued request is answered) and
closed, so a cached mailbox fails fast and the session asks again.

The registry also holds what crosses queues: it forwards a queue's messages to another queue (a
dead-letter redrive, a message move task) by ARN, checks a RedrivePolicy against its target (which
must exist, be of the same type and allow the source in its RedriveAllowPolicy), and knows which
queues use which dead-letter queue (ListDeadLetterSourceQueues, StartMessageMoveTask).

Mailboxes are unbounded channels, bounded at the door: a session refuses a request when the
mailbox already holds `mailbox_capacity` of them, while messages between actors (answers to
hand-overs, commit wake-ups) always get in, so one queue never loses another's answer.

Topics live here too: the registry serves CreateTopic, DeleteTopic, ListTopics and
ListSubscriptions, routes topic operations to each topic's actor, and tells topic actors which queues
exist (QueueDirectoryChanged), so a publish can store its SQS deliveries in the same commit.

Each queue and topic actor runs under a supervisor loop in the broker's nursery. An actor that raises
is logged with its name and the log's last LSN, rebuilt from the store, and restarted after a pause
that grows with repeated failures, so one sick queue never stops the broker.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Sequence

import msgspec
import trio

from dovecote.storage.records import QueueCreated, TopicCreated
from dovecote.storage.store import Damage, StorageDamaged, StorageError, Store
from dovecote.storage.writer import LogWriter

from . import policy, validation
from .clock import Clock
from .errors import BrokerError, no_such_queue, overloaded
from .mailbox import ReplySlot
from .ops import (
    REGISTRY_OPS,
    Arn,
    Arns,
    Attributes,
    CreateQueue,
    CreateTopic,
    DeleteQueue,
    DeleteTopic,
    Done,
    Failure,
    GetQueueAttributes,
    GetQueueUrl,
    GetTopicAttributes,
    ListDeadLetterSourceQueues,
    ListQueues,
    ListSubscriptions,
    ListSubscriptionsByTopic,
    ListTopics,
    Op,
    QueueName,
    QueueNames,
    QueueOp,
    Result,
    SetQueueAttributes,
    StartMessageMoveTask,
    SubscriptionInfo,
    SubscriptionList,
    TopicOp,
)
from .queue import QueueActor, Reply, Request, RestartFromStorage, Stop, failure, storage_failure
from .queue_core import QueueCore
from .push import MAX_PENDING, Sender
from .topic import QueueDirectoryChanged, TopicActor
from .signing import Signer
from .topic_core import QueueTarget, TopicCore, invalid_parameter, validate_topic_attributes, validate_topic_name

log = logging.getLogger("dovecote.registry")


class BrokerConfig(msgspec.Struct, frozen=True):
    region: str = "us-east-1"
    account_id: str = "000000000000"
    mailbox_capacity: int = 1024
    registry_capacity: int = 1024
    max_queues: int = 10_000
    restart_backoff_s: tuple[float, ...] = (0.0, 0.5, 2.0, 10.0, 30.0)
    max_topics: int = 100_000
    http_url: str = "http://127.0.0.1:7481"  # the broker's HTTP port as clients reach it (UnsubscribeURL)
    sign_sqs_envelopes: bool = True  # False: envelopes delivered to queues go without a signature
    # Sign in a worker thread, beside the event loop (not in tests on the autojump clock, whose
    # time would jump while a thread works).
    sign_in_thread: bool = False
    max_pending_pushes: int = MAX_PENDING  # per HTTP/S or email subscription


def _topic_options(config: BrokerConfig, signer: Signer | None, push_protocols: frozenset[str]) -> dict:
    """What every topic of this broker is made with."""
    return {
        "http_url": config.http_url, "signer": signer, "sign_sqs": config.sign_sqs_envelopes,
        "push_protocols": push_protocols, "sign_later": config.sign_in_thread,
    }


def queue_arn(config: BrokerConfig, region: str, name: str) -> str:
    return f"arn:aws:sqs:{region or config.region}:{config.account_id}:{name}"


def topic_arn(config: BrokerConfig, region: str, name: str) -> str:
    return f"arn:aws:sns:{region or config.region}:{config.account_id}:{name}"


class RecoveryReport(msgspec.Struct, frozen=True):
    queues: int
    messages: int
    dropped: list[str]  # descriptions of damaged values dropped by salvage


def recover(
    store: Store,
    config: BrokerConfig,
    clock: Clock,
    *,
    salvage: bool,
    log_tail_records: int = 10_000,
    signer: Signer | None = None,
    push_protocols: frozenset[str] = frozenset(),
) -> tuple[list[QueueCore | TopicCore], RecoveryReport]:
    """Rebuild every queue and topic from the store's state tables. Runs before the writer starts.
    Raises StorageDamaged naming what is damaged, unless salvage drops the damaged values."""
    damages: list[Damage] = list(store.verify_log_tail(log_tail_records))
    rows, row_damages = store.load_queue_rows()
    damages += row_damages
    loaded = []
    for row in rows:
        queue, queue_damages = store.load_queue(row, with_groups=validation.queue_config(row.attributes).fifo)
        damages += queue_damages
        loaded.append(queue)
    topics, topic_damages = store.load_topics()
    damages += topic_damages
    if damages:
        if not salvage:
            raise StorageDamaged(damages)
        store.drop_damaged(damages)
        for damage in damages:
            log.error("salvage dropped %s", damage.describe())
    now, wall_ms = clock.now(), clock.wall_ms()
    cores: list[QueueCore | TopicCore] = [
        QueueCore.restore(
            queue, queue_arn(config, queue.row.region, queue.row.queue), now=now, wall_ms=wall_ms, restored_lsn=store.last_lsn
        )
        for queue in loaded
    ]
    cores += [
        TopicCore.restore(
            topic, topic_arn(config, topic.row.region, topic.row.topic), now=now, wall_ms=wall_ms, last_lsn=store.last_lsn,
            **_topic_options(config, signer, push_protocols),
        )
        for topic in topics
    ]
    report = RecoveryReport(len(loaded), sum(len(q.messages) for q in loaded), [d.describe() for d in damages])
    return cores, report


class _Lookup(Op):
    queue: str
    topic: bool = False  # a topic's name rather than a queue's



class _Forward(Op):
    """An actor's op for another queue, addressed by ARN (see Broker.forward)."""

    queue_arn: str
    op: Op


class _ActorEnded(Op):
    name: str
    actor_id: int
    region: str
    topic: bool


class _ActorEntry:
    """A queue's or a topic's mailbox, as the registry keeps it."""

    __slots__ = ("actor_id", "arn", "fifo", "mailbox", "inbox")

    def __init__(self, actor_id: int, arn: str, fifo: bool) -> None:
        self.actor_id = actor_id
        self.arn = arn
        self.fifo = fifo
        self.mailbox, self.inbox = trio.open_memory_channel[Request](math.inf)

    def post(self, op: Op, reply: Reply | None = None) -> bool:
        """Put a message into the actor's mailbox from any task, past the capacity that bounds
        client requests; False if the queue is gone."""
        try:
            self.mailbox.send_nowait(Request(op, reply or _ignore))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True


class Broker:
    def __init__(
        self,
        store: Store,
        writer: LogWriter,
        clock: Clock,
        config: BrokerConfig,
        cores: Sequence[QueueCore | TopicCore],
        signer: Signer | None = None,
        sender: Sender | None = None,
    ) -> None:
        """signer: signs the SNS messages topics deliver (None: they go unsigned). sender: pushes
        to HTTP/S and email subscriptions (None: topics refuse those)."""
        self._sender = sender
        self._topic_options = _topic_options(config, signer, sender.protocols if sender is not None else frozenset())
        self._store = store
        self._writer = writer
        self._clock = clock
        self.config = config
        self._initial_cores = list(cores)
        self._queues: dict[tuple[str, str], _ActorEntry] = {}  # (region, name)
        self._dead_letter_targets: dict[tuple[str, str], str] = {}  # (region, name) -> its DLQ's ARN
        self._topics: dict[tuple[str, str], _ActorEntry] = {}  # (region, name)
        self._next_queue_id = store.next_queue_id()
        self._registry_send, self._registry_receive = trio.open_memory_channel[Request](config.registry_capacity)
        self._nursery: trio.Nursery | None = None

    def session(self, region: str | None = None) -> Session:
        """A session acting in one region's namespace (by default the broker's region)."""
        return Session(self, region or self.config.region)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until stop(); actors' nursery lives here."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for core in self._initial_cores:  # queues first: topics start knowing them all
                if isinstance(core, QueueCore):
                    self._start_actor(core)
            for core in self._initial_cores:
                if isinstance(core, TopicCore):
                    self._start_topic(core)
            self._initial_cores.clear()
            task_status.started()
            async for request in self._registry_receive:
                await self._serve(request)
            for entry in [*self._topics.values(), *self._queues.values()]:
                entry.post(Stop())  # an actor that has already ended needs none

    def stop(self) -> None:
        """Stop the registry; every actor then answers its long polls and ends."""
        self._registry_send.close()

    # --- called by sessions -------------------------------------------------------------------
    def send_to_registry(self, request: Request) -> None:
        try:
            self._registry_send.send_nowait(request)
        except trio.WouldBlock:
            request.reply(failure(overloaded("The queue registry")))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            request.reply(Failure("ServiceUnavailable", "The broker is shutting down."))

    def forward(self, queue_arn: str, op: Op, reply: Reply) -> None:
        """Deliver an actor's op to the queue with that ARN (called from any task)."""
        self.send_to_registry(Request(_Forward(queue_arn, op), reply))

    async def lookup(self, name: str, region: str, topic: bool = False) -> trio.MemorySendChannel | Failure:
        slot: ReplySlot = ReplySlot()
        self.send_to_registry(Request(_Lookup(name, topic), slot, region))
        return await slot.wait()

    # --- the registry task --------------------------------------------------------------------
    async def _serve(self, request: Request) -> None:
        op, reply, region = request
        region = region or self.config.region
        try:
            match op:
                case _Lookup(topic=False):
                    entry = self._queues.get((region, op.queue))
                    reply(entry.mailbox if entry is not None else failure(no_such_queue(op.queue)))
                case _Lookup(topic=True):
                    entry = self._topics.get((region, op.queue))
                    reply(entry.mailbox if entry is not None else Failure("NotFound", "Topic does not exist"))
                case CreateTopic():
                    reply(await self._create_topic(op, region))
                case DeleteTopic():
                    entry = self._topics.get((region, op.topic))
                    result = Done() if entry is None else await self._ask_actor(entry, op)
                    if isinstance(result, Done) and entry is not None and self._topics.get((region, op.topic)) is entry:
                        del self._topics[(region, op.topic)]
                    reply(result if not isinstance(result, Failure) or result.code != "NotFound" else Done())
                case ListTopics():
                    arns = sorted(entry.arn for (topic_region, _), entry in self._topics.items() if topic_region == region)
                    reply(_arn_page(arns, op.next_token))
                case ListSubscriptions():
                    reply(await self._list_subscriptions(region, op.next_token))
                case CreateQueue():
                    reply(await self._create(op, region))
                case DeleteQueue():
                    reply(await self._delete(op, region))
                case GetQueueUrl():
                    if (region, op.queue) not in self._queues:
                        raise no_such_queue(op.queue)
                    reply(QueueName(op.queue))
                case ListQueues():
                    reply(self._list(op, region))
                case _Forward():
                    entry = self._by_arn(op.queue_arn)
                    if entry is None or not entry.post(op.op, reply):
                        reply(Failure("QueueDoesNotExist", f"The queue {op.queue_arn} does not exist."))
                case SetQueueAttributes():
                    reply(await self._set_attributes(op, region))
                case ListDeadLetterSourceQueues():
                    reply(self._dead_letter_sources(op, region))
                case StartMessageMoveTask():
                    await self._start_move_task(op, region, reply)
                case _ActorEnded():
                    key = (op.region, op.name)
                    actors = self._topics if op.topic else self._queues
                    entry = actors.get(key)
                    if entry is not None and entry.actor_id == op.actor_id:
                        del actors[key]
                        if not op.topic:
                            self._queue_gone(key, entry)
                case _:
                    reply(Failure("InvalidAction", f"{type(op).__name__} is not a registry operation."))
        except BrokerError as error:
            reply(failure(error))
        except StorageError as error:
            reply(storage_failure(error))
        except Exception:
            log.exception("the registry failed on %s", type(op).__name__)
            reply(Failure("InternalError", "The broker failed while handling this request; retry."))

    async def _create(self, op: CreateQueue, region: str) -> Result:
        fifo = validation.is_fifo_request(op.attributes)
        validation.validate_queue_name(op.queue, fifo)
        given = validation.validate_queue_attributes(op.attributes, fifo=fifo, creating=True)
        validation.check_fifo_throughput(given)
        tags = policy.tagged({}, op.tags)
        existing = self._queues.get((region, op.queue))
        if existing is not None:
            current = await self._ask_actor(existing, GetQueueAttributes(op.queue, ["All"]))
            if not isinstance(current, Attributes):
                return current
            if any(current.attributes.get(name) != value for name, value in given.items()):
                raise BrokerError(
                    "QueueNameExists", "A queue already exists with the same name and a different value for attribute(s)."
                )
            return QueueName(op.queue)
        if len(self._queues) >= self.config.max_queues:
            raise BrokerError("OverLimit", f"This broker holds at most {self.config.max_queues} queues.")
        arn = queue_arn(self.config, region, op.queue)
        if given.get("RedrivePolicy"):
            await self._check_redrive(arn, fifo, given["RedrivePolicy"])
        wall_ms = self._clock.wall_ms()
        seconds = str(wall_ms // 1000)
        attributes = {
            **validation.default_queue_attributes(fifo),
            **{name: value for name, value in given.items() if value != ""},
            "CreatedTimestamp": seconds,
            "LastModifiedTimestamp": seconds,
        }
        record = QueueCreated(wall_ms, self._next_queue_id, op.queue, attributes, region, tags)
        await self._writer.append([record])
        self._next_queue_id += 1
        core = QueueCore(record.queue_id, op.queue, attributes, arn, tags=tags)
        self._start_actor(core)
        return QueueName(op.queue)

    async def _create_topic(self, op: CreateTopic, region: str) -> Result:
        fifo = op.attributes.get("FifoTopic", "").lower() == "true"
        validate_topic_name(op.topic, fifo)
        given = validate_topic_attributes(op.attributes, fifo=fifo, creating=True)
        tags = policy.tagged({}, op.tags)
        arn = topic_arn(self.config, region, op.topic)
        existing = self._topics.get((region, op.topic))
        if existing is not None:
            current = await self._ask_actor(existing, GetTopicAttributes(op.topic))
            if isinstance(current, Attributes) and any(current.attributes.get(k) != v for k, v in given.items()):
                raise invalid_parameter("Attributes Reason: Topic already exists with different attributes")
            return Arn(arn)
        if len(self._topics) >= self.config.max_topics:
            raise BrokerError("TopicLimitExceeded", f"This broker holds at most {self.config.max_topics} topics.")
        wall_ms = self._clock.wall_ms()
        record = TopicCreated(wall_ms, self._next_queue_id, op.topic, given, region, tags)
        await self._writer.append([record])
        self._next_queue_id += 1
        self._start_topic(
            TopicCore(record.topic_id, op.topic, given, arn, tags=tags, first_sequence=self._store.last_lsn, **self._topic_options)
        )
        return Arn(arn)

    async def _list_subscriptions(self, region: str, next_token: str | None) -> Result:
        """Every subscription of the region's topics, asked of each topic in turn."""
        everything: list[SubscriptionInfo] = []
        for (topic_region, name), entry in sorted(self._topics.items()):
            if topic_region != region:
                continue
            token: str | None = None
            while True:
                page = await self._ask_actor(entry, ListSubscriptionsByTopic(name, token))
                if not isinstance(page, SubscriptionList):
                    break
                everything.extend(page.subscriptions)
                token = page.next_token
                if token is None:
                    break
        start = int(next_token) if next_token and next_token.isdigit() else 0
        if next_token and not next_token.isdigit():
            raise invalid_parameter("NextToken")
        more = start + 100 < len(everything)
        return SubscriptionList(everything[start : start + 100], str(start + 100) if more else None)

    # --- what crosses queues --------------------------------------------------------------------
    def _by_arn(self, arn: str) -> _ActorEntry | None:
        try:
            region, account, name = validation.parse_queue_arn(arn)
        except BrokerError:
            return None
        entry = self._queues.get((region, name))
        return entry if entry is not None and account == self.config.account_id else None

    async def _check_redrive(self, source_arn: str, source_fifo: bool, redrive_policy: str) -> None:
        """A RedrivePolicy's target must exist, be of the source's type and allow the source."""
        target_arn = validation.queue_config({"RedrivePolicy": redrive_policy}).dead_letter_arn

        def refuse(reason: str) -> BrokerError:
            return validation.invalid(f"Value {redrive_policy} for parameter RedrivePolicy is invalid. Reason: {reason}")

        target = self._by_arn(target_arn)
        if target is None:
            raise refuse("Dead letter target does not exist.")
        if target.fifo != source_fifo:
            raise refuse("Dead-letter queue must be of the same type as the source queue (FIFO or standard).")
        if target.arn == source_arn:
            raise refuse("A queue cannot be its own dead-letter queue.")
        current = await self._ask_actor(target, GetQueueAttributes("", ["RedriveAllowPolicy"]))
        if isinstance(current, Attributes) and not validation.redrive_allows(current.attributes.get("RedriveAllowPolicy"), source_arn):
            raise refuse(f"The RedriveAllowPolicy of {target_arn} does not allow this queue to use it as a dead-letter queue.")

    async def _set_attributes(self, op: SetQueueAttributes, region: str) -> Result:
        """SetQueueAttributes with a RedrivePolicy comes here to be checked against its target."""
        entry = self._queues.get((region, op.queue))
        if entry is None:
            raise no_such_queue(op.queue)
        redrive = validation.validate_queue_attributes({"RedrivePolicy": op.attributes["RedrivePolicy"]}, fifo=entry.fifo)
        if redrive["RedrivePolicy"]:
            await self._check_redrive(entry.arn, entry.fifo, redrive["RedrivePolicy"])
        result = await self._ask_actor(entry, op)
        if isinstance(result, Done):
            self._note_dead_letter_target((region, op.queue), redrive["RedrivePolicy"])
        return result

    def _note_dead_letter_target(self, key: tuple[str, str], redrive_policy: str) -> None:
        if redrive_policy:
            self._dead_letter_targets[key] = validation.queue_config({"RedrivePolicy": redrive_policy}).dead_letter_arn
        else:
            self._dead_letter_targets.pop(key, None)

    def _sources_of(self, target_arn: str) -> list[tuple[str, str]]:
        return sorted(key for key, target in self._dead_letter_targets.items() if target == target_arn)

    def _dead_letter_sources(self, op: ListDeadLetterSourceQueues, region: str) -> Result:
        entry = self._queues.get((region, op.queue))
        if entry is None:
            raise no_such_queue(op.queue)
        names = [name for source_region, name in self._sources_of(entry.arn) if source_region == region]
        return self._page(names, op.max_results, op.next_token)

    async def _start_move_task(self, op: StartMessageMoveTask, region: str, reply: Reply) -> None:
        entry = self._queues.get((region, op.queue))
        if entry is None:
            raise BrokerError("ResourceNotFoundException", f"The source queue {op.queue} does not exist.")
        if not self._sources_of(entry.arn):
            raise invalid_move("The source queue must be configured as a dead-letter queue of another queue.")
        if op.destination_arn:
            destination = self._by_arn(op.destination_arn)
            if destination is None:
                raise BrokerError("ResourceNotFoundException", f"The destination queue {op.destination_arn} does not exist.")
            if destination.fifo != entry.fifo or destination is entry:
                raise invalid_move("The destination must be another queue of the same type as the source.")
        if not entry.post(op, reply):
            raise BrokerError("ResourceNotFoundException", f"The source queue {op.queue} does not exist.")

    async def _ask_actor(self, entry: _ActorEntry, op: Op) -> Result:
        slot: ReplySlot[Result] = ReplySlot()
        try:
            await entry.mailbox.send(Request(op, slot))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return Failure("QueueDoesNotExist", "The specified queue does not exist.")
        return await slot.wait()

    async def _delete(self, op: DeleteQueue, region: str) -> Result:
        entry = self._queues.get((region, op.queue))
        if entry is None:
            raise no_such_queue(op.queue)
        result = await self._ask_actor(entry, op)
        if isinstance(result, Done) and self._queues.get((region, op.queue)) is entry:
            del self._queues[(region, op.queue)]
            self._queue_gone((region, op.queue), entry)
        return result

    def _list(self, op: ListQueues, region: str) -> Result:
        names = sorted(name for queue_region, name in self._queues if queue_region == region and name.startswith(op.prefix))
        return self._page(names, op.max_results, op.next_token)

    @staticmethod
    def _page(names: list[str], max_results: int | None, next_token: str | None) -> QueueNames:
        """One page of sorted queue names, as ListQueues and ListDeadLetterSourceQueues page."""
        if max_results is not None and not 1 <= max_results <= 1000:
            raise validation.invalid("Value for parameter MaxResults is invalid. Reason: must be between 1 and 1000.")
        if next_token:
            try:
                after = base64.urlsafe_b64decode(next_token.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise validation.invalid("Invalid NextToken value.") from None
            names = [name for name in names if name > after]
        limit = max_results or 1000
        page = names[:limit]
        more = max_results is not None and len(names) > limit
        token = base64.urlsafe_b64encode(page[-1].encode()).decode() if more else None
        return QueueNames(page, token)

    # --- supervision --------------------------------------------------------------------------
    def _start_actor(self, core: QueueCore) -> None:
        assert self._nursery is not None
        entry = _ActorEntry(core.queue_id, core.arn, core.config.fifo)
        self._queues[(core.region, core.name)] = entry
        self._note_dead_letter_target((core.region, core.name), core.attributes.get("RedrivePolicy", ""))
        target = QueueTarget(core.queue_id, core.name, core.config.fifo, entry.post)
        for topic in self._topics.values():
            topic.post(QueueDirectoryChanged(core.arn, target))
        self._nursery.start_soon(self._supervise, core, entry, name=f"queue:{core.name}")

    def _queue_gone(self, key: tuple[str, str], entry: _ActorEntry) -> None:
        self._dead_letter_targets.pop(key, None)
        for topic in self._topics.values():
            topic.post(QueueDirectoryChanged(entry.arn, None))

    def _start_topic(self, core: TopicCore) -> None:
        assert self._nursery is not None
        entry = _ActorEntry(core.topic_id, core.arn, core.fifo)
        self._topics[(core.region, core.name)] = entry
        # The queues it may deliver to, as now; QueueDirectoryChanged messages keep it current.
        self._nursery.start_soon(self._supervise, core, entry, self._queue_targets(), name=f"topic:{core.name}")

    def _queue_targets(self) -> dict[str, QueueTarget]:
        return {
            entry.arn: QueueTarget(entry.actor_id, name, entry.fifo, entry.post) for (_, name), entry in self._queues.items()
        }

    async def _supervise(
        self, core: QueueCore | TopicCore, entry: _ActorEntry, targets: dict[str, QueueTarget] | None = None
    ) -> None:
        """Run a queue's or a topic's actor; rebuild it from the store and restart it when it fails.
        A topic's `targets` pass from each of its actors to the next (never two at once)."""
        is_topic = isinstance(core, TopicCore)
        kind = "topic" if is_topic else "queue"
        failures = 0
        last_failure = -math.inf
        deleted = False
        while True:
            if isinstance(core, TopicCore):
                assert targets is not None
                actor: QueueActor | TopicActor = TopicActor(
                    core, entry.inbox, self._writer, self._store, self._clock, targets, self._sender, self.forward,
                    self.config.max_pending_pushes,
                )
            else:
                actor = QueueActor(core, entry.inbox, self._writer, self._store, self._clock, entry.post, self.forward)
            try:
                deleted = await actor.run()
                break
            except (RestartFromStorage, Exception) as exc:  # noqa: BLE001 - supervision boundary
                now = trio.current_time()
                failures = failures + 1 if now - last_failure < 60 else 1
                last_failure = now
                log.error(
                    "%s %s failed (failure %d, log at LSN %d): %r; rebuilding it from the log",
                    kind,
                    core.name,
                    failures,
                    self._store.last_lsn,
                    exc,
                    exc_info=not isinstance(exc, RestartFromStorage),
                )
                backoff = self.config.restart_backoff_s
                await trio.sleep(backoff[min(failures - 1, len(backoff) - 1)])
                rebuilt = self._rebuild_topic(core) if isinstance(core, TopicCore) else self._rebuild(core)
                if rebuilt is None:
                    deleted = True
                    break
                core = rebuilt
        if not deleted:
            reason = Failure("ServiceUnavailable", "The broker is shutting down.")
        elif is_topic:
            reason = Failure("NotFound", "Topic does not exist")
        else:
            reason = Failure("QueueDoesNotExist", f"The specified queue {core.name} does not exist.")
        while True:
            try:
                entry.inbox.receive_nowait().reply(reason)
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        entry.inbox.close()
        self.send_to_registry(Request(_ActorEnded(core.name, entry.actor_id, core.region, is_topic), _ignore))

    def _rebuild(self, core: QueueCore) -> QueueCore | None:
        rows, _ = self._store.load_queue_rows()
        row = next((r for r in rows if r.queue_id == core.queue_id), None)
        if row is None:
            return None
        loaded, damages = self._store.load_queue(row, with_groups=core.config.fifo)
        if damages:
            log.error("queue %s: %s", core.name, StorageDamaged(damages))
        return QueueCore.restore(
            loaded, core.arn, now=self._clock.now(), wall_ms=self._clock.wall_ms(), restored_lsn=self._store.last_lsn
        )

    def _rebuild_topic(self, core: TopicCore) -> TopicCore | None:
        topics, damages = self._store.load_topics()
        if damages:
            log.error("topic %s: %s", core.name, StorageDamaged(damages))
        loaded = next((t for t in topics if t.row.topic_id == core.topic_id), None)
        if loaded is None:
            return None
        return TopicCore.restore(
            loaded, core.arn, now=self._clock.now(), wall_ms=self._clock.wall_ms(), last_lsn=self._store.last_lsn,
            **self._topic_options,
        )


def _ignore(result: object) -> None:
    pass


def _arn_page(arns: list[str], next_token: str | None) -> Arns:
    """100 ARNs a page, as ListTopics pages."""
    if next_token and not next_token.isdigit():
        raise invalid_parameter("NextToken")
    start = int(next_token) if next_token else 0
    more = start + 100 < len(arns)
    return Arns(arns[start : start + 100], str(start + 100) if more else None)


def invalid_move(reason: str) -> BrokerError:
    return BrokerError("UnsupportedOperation", reason)


class Session:
    """A client connection's way into one region's namespace of the broker; owned by that
    connection's task."""

    def __init__(self, broker: Broker, region: str) -> None:
        self._broker = broker
        self.region = region
        self._mailboxes: dict[str, trio.MemorySendChannel] = {}
        self._topic_mailboxes: dict[str, trio.MemorySendChannel] = {}

    async def submit(self, op: Op, reply: Reply) -> None:
        """Route op to its actor; reply is called exactly once, later, from the actor's task.
        Blocks only to look a queue or topic up the first time."""
        if (
            isinstance(op, REGISTRY_OPS)
            or not isinstance(op, (QueueOp, TopicOp))
            or (isinstance(op, SetQueueAttributes) and "RedrivePolicy" in op.attributes)
        ):
            self._broker.send_to_registry(Request(op, reply, self.region))
            return
        is_topic = isinstance(op, TopicOp)
        name = op.topic if isinstance(op, TopicOp) else op.queue
        cache = self._topic_mailboxes if is_topic else self._mailboxes
        for _ in range(2):
            mailbox = cache.get(name)
            if mailbox is None:
                found = await self._broker.lookup(name, self.region, is_topic)
                if isinstance(found, Failure):
                    reply(found)
                    return
                mailbox = cache[name] = found
            if mailbox.statistics().current_buffer_used >= self._broker.config.mailbox_capacity:
                reply(failure(overloaded(f"{'Topic' if is_topic else 'Queue'} {name}")))
                return
            try:
                mailbox.send_nowait(Request(op, reply))
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                del cache[name]
        reply(Failure("NotFound", "Topic does not exist") if is_topic else failure(no_such_queue(name)))
