"""The broker: the registry of queues and the supervisor of their actors.

Theory of operation
-------------------
The registry task owns the map of queue names to queue actors. It serves CreateQueue, DeleteQueue,
GetQueueUrl and ListQueues, and answers lookups: a `Session` (one per client connection, owned by
that connection's task) asks once for a queue's mailbox, caches it, and from then on sends that
queue's requests straight to its actor. A queue's mailbox lives as long as the queue, across actor
restarts; when the queue is deleted the mailbox is drained (every queued request is answered) and
closed, so a cached mailbox fails fast and the session asks again.

Each queue actor runs under a supervisor loop in the broker's nursery. An actor that raises is
logged with its queue and the log's last LSN, rebuilt from the store, and restarted after a pause
that grows with repeated failures, so one sick queue never stops the broker.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Sequence

import msgspec
import trio

from dovecote.storage.records import QueueCreated
from dovecote.storage.store import Damage, Store, StorageDamaged, StorageError
from dovecote.storage.writer import LogWriter

from . import policy, validation
from .clock import Clock
from .errors import BrokerError, no_such_queue, overloaded
from .mailbox import ReplySlot
from .ops import (
    Attributes,
    CreateQueue,
    DeleteQueue,
    Done,
    Failure,
    GetQueueAttributes,
    GetQueueUrl,
    ListQueues,
    Op,
    QueueName,
    QueueNames,
    QueueOp,
    REGISTRY_OPS,
    Result,
)
from .queue import WAKE, QueueActor, Reply, Request, RestartFromStorage, Stop, failure, storage_failure
from .queue_core import QueueCore

log = logging.getLogger("dovecote.registry")


class BrokerConfig(msgspec.Struct, frozen=True):
    region: str = "us-east-1"
    account_id: str = "000000000000"
    mailbox_capacity: int = 1024
    registry_capacity: int = 1024
    max_queues: int = 10_000
    restart_backoff_s: tuple[float, ...] = (0.0, 0.5, 2.0, 10.0, 30.0)


def queue_arn(config: BrokerConfig, region: str, name: str) -> str:
    return f"arn:aws:sqs:{region or config.region}:{config.account_id}:{name}"


class RecoveryReport(msgspec.Struct, frozen=True):
    queues: int
    messages: int
    dropped: list[str]  # descriptions of damaged values dropped by salvage


def recover(
    store: Store, config: BrokerConfig, clock: Clock, *, salvage: bool, log_tail_records: int = 10_000
) -> tuple[list[QueueCore], RecoveryReport]:
    """Rebuild every queue from the store's state tables. Runs before the writer starts. Raises
    StorageDamaged naming what is damaged, unless salvage drops the damaged values."""
    damages: list[Damage] = list(store.verify_log_tail(log_tail_records))
    rows, row_damages = store.load_queue_rows()
    damages += row_damages
    loaded = []
    for row in rows:
        queue, queue_damages = store.load_queue(row)
        damages += queue_damages
        loaded.append(queue)
    if damages:
        if not salvage:
            raise StorageDamaged(damages)
        store.drop_damaged(damages)
        for damage in damages:
            log.error("salvage dropped %s", damage.describe())
    now, wall_ms = clock.now(), clock.wall_ms()
    cores = [
        QueueCore.restore(queue, queue_arn(config, queue.row.region, queue.row.queue), now=now, wall_ms=wall_ms)
        for queue in loaded
    ]
    report = RecoveryReport(len(cores), sum(len(q.messages) for q in loaded), [d.describe() for d in damages])
    return cores, report


class _Lookup(Op):
    queue: str


class _ActorEnded(Op):
    queue: str
    queue_id: int
    region: str


class _QueueEntry:
    __slots__ = ("queue_id", "mailbox", "inbox")

    def __init__(self, queue_id: int, mailbox: trio.MemorySendChannel, inbox: trio.MemoryReceiveChannel):
        self.queue_id = queue_id
        self.mailbox = mailbox
        self.inbox = inbox

    def wake(self) -> None:
        """Nudge the actor (a commit of its finished). A full mailbox needs no nudge: the actor
        is about to wake anyway."""
        try:
            self.mailbox.send_nowait(Request(WAKE, _ignore))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


class Broker:
    def __init__(
        self, store: Store, writer: LogWriter, clock: Clock, config: BrokerConfig, cores: Sequence[QueueCore]
    ) -> None:
        self._store = store
        self._writer = writer
        self._clock = clock
        self.config = config
        self._initial_cores = list(cores)
        self._queues: dict[tuple[str, str], _QueueEntry] = {}  # (region, name)
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
            for core in self._initial_cores:
                self._start_actor(core)
            self._initial_cores.clear()
            task_status.started()
            async for request in self._registry_receive:
                await self._serve(request)
            for entry in self._queues.values():
                try:
                    await entry.mailbox.send(Request(Stop(), _ignore))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # that actor has already ended

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

    async def lookup(self, queue: str, region: str) -> trio.MemorySendChannel | Failure:
        slot: ReplySlot = ReplySlot()
        self.send_to_registry(Request(_Lookup(queue), slot, region))
        return await slot.wait()

    # --- the registry task --------------------------------------------------------------------
    async def _serve(self, request: Request) -> None:
        op, reply, region = request
        region = region or self.config.region
        try:
            match op:
                case _Lookup():
                    entry = self._queues.get((region, op.queue))
                    reply(entry.mailbox if entry is not None else failure(no_such_queue(op.queue)))
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
                case _ActorEnded():
                    key = (op.region, op.queue)
                    entry = self._queues.get(key)
                    if entry is not None and entry.queue_id == op.queue_id:
                        del self._queues[key]
                case _:
                    reply(Failure("InvalidAction", f"{type(op).__name__} is not a registry operation."))
        except BrokerError as error:
            reply(failure(error))
        except StorageError as error:
            reply(storage_failure(error))
        except Exception:  # noqa: BLE001 - a bug in one request must not stop the broker
            log.exception("the registry failed on %s", type(op).__name__)
            reply(Failure("InternalError", "The broker failed while handling this request; retry."))

    async def _create(self, op: CreateQueue, region: str) -> Result:
        validation.validate_queue_name(op.queue)
        given = validation.validate_queue_attributes(op.attributes)
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
        wall_ms = self._clock.wall_ms()
        seconds = str(wall_ms // 1000)
        attributes = {
            **validation.default_queue_attributes(),
            **given,
            "CreatedTimestamp": seconds,
            "LastModifiedTimestamp": seconds,
        }
        record = QueueCreated(wall_ms, self._next_queue_id, op.queue, attributes, region, tags)
        await self._writer.append([record])
        self._next_queue_id += 1
        arn = queue_arn(self.config, region, op.queue)
        core = QueueCore(record.queue_id, op.queue, attributes, arn, tags=tags)
        self._start_actor(core)
        return QueueName(op.queue)

    async def _ask_actor(self, entry: _QueueEntry, op: Op) -> Result:
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
        return result

    def _list(self, op: ListQueues, region: str) -> Result:
        if op.max_results is not None and not 1 <= op.max_results <= 1000:
            raise validation.invalid("Value for parameter MaxResults is invalid. Reason: must be between 1 and 1000.")
        names = sorted(name for queue_region, name in self._queues if queue_region == region and name.startswith(op.prefix))
        if op.next_token:
            try:
                after = base64.urlsafe_b64decode(op.next_token.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise validation.invalid("Invalid NextToken value.") from None
            names = [name for name in names if name > after]
        limit = op.max_results or 1000
        page = names[:limit]
        more = op.max_results is not None and len(names) > limit
        token = base64.urlsafe_b64encode(page[-1].encode()).decode() if more else None
        return QueueNames(page, token)

    # --- supervision --------------------------------------------------------------------------
    def _start_actor(self, core: QueueCore) -> None:
        assert self._nursery is not None
        mailbox, inbox = trio.open_memory_channel[Request](self.config.mailbox_capacity)
        entry = _QueueEntry(core.queue_id, mailbox, inbox)
        self._queues[(core.region, core.name)] = entry
        self._nursery.start_soon(self._supervise, core, entry, name=f"queue:{core.name}")

    async def _supervise(self, core: QueueCore, entry: _QueueEntry) -> None:
        failures = 0
        last_failure = -math.inf
        deleted = False
        while True:
            actor = QueueActor(core, entry.inbox, self._writer, self._store, self._clock, entry.wake)
            try:
                deleted = await actor.run()
                break
            except (RestartFromStorage, Exception) as exc:  # noqa: BLE001 - supervision boundary
                now = trio.current_time()
                failures = failures + 1 if now - last_failure < 60 else 1
                last_failure = now
                log.error(
                    "queue %s failed (failure %d, log at LSN %d): %r; rebuilding it from the log",
                    core.name,
                    failures,
                    self._store.last_lsn,
                    exc,
                    exc_info=not isinstance(exc, RestartFromStorage),
                )
                backoff = self.config.restart_backoff_s
                await trio.sleep(backoff[min(failures - 1, len(backoff) - 1)])
                rebuilt = self._rebuild(core)
                if rebuilt is None:
                    deleted = True
                    break
                core = rebuilt
        reason = (
            Failure("QueueDoesNotExist", f"The specified queue {core.name} does not exist.")
            if deleted
            else Failure("ServiceUnavailable", "The broker is shutting down.")
        )
        while True:
            try:
                entry.inbox.receive_nowait().reply(reason)
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        entry.inbox.close()
        self.send_to_registry(Request(_ActorEnded(core.name, core.queue_id, core.region), _ignore))

    def _rebuild(self, core: QueueCore) -> QueueCore | None:
        rows, _ = self._store.load_queue_rows()
        row = next((r for r in rows if r.queue_id == core.queue_id), None)
        if row is None:
            return None
        loaded, damages = self._store.load_queue(row)
        if damages:
            log.error("queue %s: %s", core.name, StorageDamaged(damages))
        return QueueCore.restore(loaded, core.arn, now=self._clock.now(), wall_ms=self._clock.wall_ms())


def _ignore(result: object) -> None:
    pass


class Session:
    """A client connection's way into one region's namespace of the broker; owned by that
    connection's task."""

    def __init__(self, broker: Broker, region: str) -> None:
        self._broker = broker
        self.region = region
        self._mailboxes: dict[str, trio.MemorySendChannel] = {}

    async def submit(self, op: Op, reply: Reply) -> None:
        """Route op to its actor; reply is called exactly once, later, from the actor's task.
        Blocks only to look a queue up the first time."""
        if isinstance(op, REGISTRY_OPS) or not isinstance(op, QueueOp):
            self._broker.send_to_registry(Request(op, reply, self.region))
            return
        for _ in range(2):
            mailbox = self._mailboxes.get(op.queue)
            if mailbox is None:
                found = await self._broker.lookup(op.queue, self.region)
                if isinstance(found, Failure):
                    reply(found)
                    return
                mailbox = self._mailboxes[op.queue] = found
            try:
                mailbox.send_nowait(Request(op, reply))
                return
            except trio.WouldBlock:
                reply(failure(overloaded(f"Queue {op.queue}")))
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                del self._mailboxes[op.queue]
        reply(failure(no_such_queue(op.queue)))
