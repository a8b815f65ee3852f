"""Event source mappings: the one task owning every mapping (SQS queue -> function), and a poller
task for each enabled one (the rules are actors/esm_core.py's).

The mappings actor serves the Lambda API's Create/Get/List/Update/DeleteEventSourceMapping from its
mailbox, one at a time: it validates, stores the mapping's whole state (EventSourceMappingChanged,
EventSourceMappingDeleted), applies it, then answers; at start it restores them from the store. A
change stops the mapping's poller and starts one with the new configuration.

A poller consumes the queue through the queue actor's own ReceiveMessage and DeleteMessageBatch, as
any consumer does, so visibility, receive counts and the queue's redrive policy apply: a batch the
function failed is left in flight, returns after the queue's visibility timeout and, after
maxReceiveCount receives, goes to the dead-letter queue. It runs `concurrency` workers, each
with one batch in hand; from a FIFO queue the queue hands a group to one consumer at a time, so a
group's next batch waits until the previous one is deleted or returns. The function registry
records each invocation with the message ids it carried (FunctionInvoked), so `dovecote log
--message-id X` shows which function got X, when and how it ended, and then X's deletion. A crash
between the invocation and the deletion leaves the batch in flight: it returns and is handed over
again (at least once, as on AWS).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec
import trio

from dovecote.storage.records import EventSourceMappingChanged, EventSourceMappingDeleted, FunctionChanged, Record
from dovecote.storage.store import StorageError
from dovecote.storage.writer import LogWriter, WriterOverloaded

from . import esm_core
from .clock import Clock
from .directory import Directory, Health
from .errors import BrokerError, actor_failed, from_failure, overloaded, shutting_down, storage_failed
from .esm_core import EventSourceMapping
from .mailbox import Mailbox, ReplySlot
from .messages import ActorMessage
from .ops import (
    Attributes,
    ChangeMessageVisibilityBatch,
    DeleteEntry,
    DeleteMessageBatch,
    Failure,
    GetQueueAttributes,
    ReceiveMessage,
    Received,
    ReceivedMessage,
    Result,
    VisibilityEntry,
)
from .session import Session, ask

log = logging.getLogger("dovecote.esm")

LONG_POLL_S = 20  # a poller's wait for a first message (SQS's longest)
RETRY_PAUSE_S = 1.0  # after the queue or the function could not be asked (it is gone, overloaded, ...)


def _missing_queue(queue_arn: str) -> BrokerError:
    """Lambda's answer when a mapping's queue does not exist."""
    return esm_core.invalid_value(
        "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. "
        f"SQS Error Message: The specified queue does not exist: {queue_arn}"
    )


def _ignored(result: Result) -> None:
    """The answer to making messages visible again, which nothing waits for."""


class Invocation(Protocol):
    payload: bytes
    function_error: str | None  # "Unhandled" or None
    request_id: str


class Functions(Protocol):
    """The function registry (actors/functions.py), as event source mappings and SNS need it."""

    def resolve(self, reference: str, region: str = "") -> Any:
        """A function's name from its name or ARN (a name alone: of `region`). Raises BrokerError."""

    def get(self, function: Any) -> FunctionChanged:
        """The function's configuration; raises BrokerError(ResourceNotFoundException). Never waits."""

    def arn(self, function: FunctionChanged) -> str: ...

    async def invoke(
        self, function: str, payload: bytes, *, asynchronous: bool = False, message_ids: Sequence[str] = ()
    ) -> Invocation:
        """Raises BrokerError (ResourceNotFoundException when the function is gone). message_ids:
        the messages the event carries, recorded with the invocation."""


class MappingRequest(ActorMessage):
    """The Lambda API's request of a mapping: action Create, Get, List, Update or Delete."""

    action: str
    region: str
    uuid: str = ""
    params: dict[str, Any] = {}


Answer = dict[str, Any] | BrokerError


class EventSourceMappings:
    def __init__(
        self, mappings: Sequence[EventSourceMappingChanged], writer: LogWriter, clock: Clock, directory: Directory,
        session: Callable[[str], Session], functions: Functions, mailbox_capacity: int,
    ) -> None:
        """mappings: as stored. session: a way into a region's queues, for the pollers."""
        self._mappings = {record.uuid: from_record(record) for record in mappings}
        self._writer = writer
        self._clock = clock
        self._directory = directory
        self._session = session
        self._functions = functions
        self._pollers: dict[str, Poller] = {}
        self._nursery: trio.Nursery | None = None
        self.mailbox = Mailbox(actor_capacity=mailbox_capacity)

    async def ask(self, request: MappingRequest) -> Answer:
        """A request from the API's door, answered by the actor (never raises). Past the
        mailbox's capacity, or once the actor has stopped, the answer is a retryable refusal."""
        slot: ReplySlot[Answer] = ReplySlot()
        if not self.mailbox.post(request, slot):  # type: ignore[arg-type]
            return overloaded("The event source mappings")
        return await slot.wait()

    def stop(self) -> None:
        """Answer what is in the mailbox, stop the pollers and end."""
        self.mailbox.close_for_mail()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for mapping in self._mappings.values():
                self._start(mapping)
            task_status.started()
            while True:
                try:
                    request = await self.mailbox.receive()
                except trio.EndOfChannel:
                    break
                try:
                    answer: Answer = await self._serve(request.op)  # type: ignore[arg-type]
                except BrokerError as error:
                    answer = error
                except Exception:  # noqa: BLE001 - a bug here fails this request, never the broker
                    log.exception("event source mappings: %s failed", request.op)
                    answer = actor_failed("The event source mappings")
                request.reply(answer)  # type: ignore[arg-type]
            nursery.cancel_scope.cancel()

    # --- the API --------------------------------------------------------------------------------------
    async def _serve(self, request: MappingRequest) -> dict[str, Any]:
        params = request.params
        if request.action == "List":
            return self._list(params, request.region)
        if request.action == "Create":
            return await self._create(params, request.region)
        mapping = self._mappings.get(request.uuid)
        if mapping is None:
            raise esm_core.not_found(request.uuid)
        if request.action == "Get":
            return esm_core.output(mapping)
        if request.action == "Delete":
            await self._store([EventSourceMappingDeleted(self._clock.wall_ms(), mapping.uuid, mapping.function_arn, mapping.queue_arn)], needs_space=False)
            del self._mappings[mapping.uuid]
            self._stop(mapping.uuid)
            return esm_core.output(mapping, esm_core.DELETING)
        assert request.action == "Update"
        esm_core.check_parameters(params, creating=False)
        base = mapping
        if "FunctionName" in params:
            function = self._function(_text(params, "FunctionName"), request.region)
            function_arn = self._functions.arn(function)
            self._refuse_duplicate(mapping.queue_arn, function_arn, but=mapping.uuid)
            await self._check_visibility(mapping.queue_arn, function)
            base = msgspec.structs.replace(mapping, function_arn=function_arn)
        updated = esm_core.configure(base, params, self._clock.wall_ms())
        await self._store([to_record(updated, self._clock.wall_ms())])
        self._mappings[updated.uuid] = updated
        self._stop(updated.uuid)
        self._start(updated)
        state = esm_core.UPDATING
        if updated.enabled != mapping.enabled:
            state = esm_core.ENABLING if updated.enabled else esm_core.DISABLING
        return esm_core.output(updated, state)

    async def _create(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        esm_core.check_parameters(params, creating=True)
        queue_arn = _text(params, "EventSourceArn")
        esm_core.queue_arn_parts(queue_arn)
        if self._directory.queue_by_arn(queue_arn) is None:
            raise _missing_queue(queue_arn)
        function = self._function(_text(params, "FunctionName"), region)
        function_arn = self._functions.arn(function)
        self._refuse_duplicate(queue_arn, function_arn)
        await self._check_visibility(queue_arn, function)
        base = EventSourceMapping(uuid=esm_core.new_uuid(), function_arn=function_arn, queue_arn=queue_arn)
        mapping = esm_core.configure(base, params, self._clock.wall_ms())
        await self._store([to_record(mapping, self._clock.wall_ms())])
        self._mappings[mapping.uuid] = mapping
        self._start(mapping)
        return esm_core.output(mapping, esm_core.CREATING)

    def _list(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        mappings = list(self._mappings.values())
        if params.get("EventSourceArn"):
            mappings = [m for m in mappings if m.queue_arn == params["EventSourceArn"]]
        if params.get("FunctionName"):
            function_arn = self._functions.arn(self._function(_text(params, "FunctionName"), region))
            mappings = [m for m in mappings if m.function_arn == function_arn]
        mappings.sort(key=lambda m: (m.last_modified_ms, m.uuid))
        start = _page_number(params.get("Marker"))
        size = min(_page_number(params.get("MaxItems")) or 100, 100)
        page = mappings[start : start + size]
        answer: dict[str, Any] = {"EventSourceMappings": [esm_core.output(m) for m in page]}
        if start + size < len(mappings):
            answer["NextMarker"] = str(start + size)
        return answer

    def _function(self, reference: str, region: str) -> FunctionChanged:
        return self._functions.get(self._functions.resolve(reference, region))

    async def _check_visibility(self, queue_arn: str, function: FunctionChanged) -> None:
        """As Lambda refuses it: a queue whose messages would return while the function may still
        be handling them."""
        region, queue = esm_core.queue_arn_parts(queue_arn)
        try:
            answer = await ask(self._session(region), GetQueueAttributes(queue, ["VisibilityTimeout"]))
        except BrokerError as error:
            raise _missing_queue(queue_arn) if error.code == "QueueDoesNotExist" else error from None
        assert isinstance(answer, Attributes)
        visibility = int(answer.attributes["VisibilityTimeout"])
        if visibility < function.timeout_s:
            raise esm_core.invalid_value(
                f"Queue visibility timeout: {visibility} seconds is less than Function timeout: {function.timeout_s} seconds"
            )

    def _refuse_duplicate(self, queue_arn: str, function_arn: str, *, but: str = "") -> None:
        for existing in self._mappings.values():
            if existing.uuid != but and (existing.queue_arn, existing.function_arn) == (queue_arn, function_arn):
                raise esm_core.duplicate(existing)

    async def _store(self, records: list[Record], *, needs_space: bool = True) -> None:
        """needs_space: refused while storage is full (a deletion is not: it frees)."""
        try:
            await self._writer.submit(records, needs_space=needs_space).wait()
        except WriterOverloaded:
            raise overloaded("The log") from None
        except trio.ClosedResourceError:
            raise shutting_down() from None
        except StorageError as error:
            raise storage_failed(error) from None

    # --- the pollers ----------------------------------------------------------------------------------
    def _start(self, mapping: EventSourceMapping) -> None:
        if not mapping.enabled or self._nursery is None:
            return
        poller = Poller(mapping, self._session(mapping.region), self._clock, self._functions, self._nursery.start_soon)
        self._pollers[mapping.uuid] = poller
        self._nursery.start_soon(poller.run)

    def _stop(self, mapping_uuid: str) -> None:
        poller = self._pollers.pop(mapping_uuid, None)
        if poller is not None:
            poller.scope.cancel()

    def reports(self) -> list[tuple[EventSourceMapping, Health, esm_core.PollerStatistics]]:
        """Each mapping, its poller's last error and counters (a disabled one's are zero). Read
        without waiting, from any task."""
        reports = []
        for mapping in self._mappings.values():
            poller = self._pollers.get(mapping.uuid)
            if poller is not None:
                reports.append((mapping, poller.health, poller.statistics()))
            else:
                idle = esm_core.PollerStatistics(mapping.queue_arn, mapping.function_arn, esm_core.DISABLED, 0, 0, 0, 0, 0, 0)
                reports.append((mapping, Health(), idle))
        return reports


class Poller:
    """One mapping's consumer: `concurrency` workers, each receiving a batch, handing it to the
    function and deleting what the outcome lets it delete."""

    def __init__(
        self, mapping: EventSourceMapping, session: Session, clock: Clock, functions: Functions,
        start_soon: Callable[..., object],
    ) -> None:
        """start_soon: of a nursery that outlives the poller (its messages' release, after a stop)."""
        self._mapping = mapping
        self._queue = esm_core.queue_arn_parts(mapping.queue_arn)[1]
        self._session = session
        self._clock = clock
        self._functions = functions
        self._start_soon = start_soon
        self.scope = trio.CancelScope()
        self.health = Health()  # its last error
        self.invocations = self.messages = self.function_errors = self.kept = self.filtered = self.failures = 0
        self._filters = [esm_core.compile_filter(pattern) for pattern in mapping.filter_patterns]

    def statistics(self) -> esm_core.PollerStatistics:
        mapping = self._mapping
        return esm_core.PollerStatistics(
            mapping.queue_arn, mapping.function_arn, esm_core.ENABLED, self.invocations, self.messages, self.function_errors,
            self.kept, self.filtered, self.failures,
        )

    async def run(self) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                for _ in range(self._mapping.concurrency):
                    nursery.start_soon(self._work)

    async def _work(self) -> None:
        failures_in_a_row = 0
        while True:
            try:
                await self._step()
                failures_in_a_row = 0
            except Exception as error:  # noqa: BLE001 - the queue's or the function's trouble, or a bug: the mapping's, never the broker's
                failures_in_a_row += 1
                self.failures += 1
                reason = f"{error.code}: {error.message}" if isinstance(error, BrokerError) else f"{type(error).__name__}: {error}"
                self.health.last_error = reason
                if failures_in_a_row == 1 or failures_in_a_row % 60 == 0:  # a line for a new trouble, not each retry
                    log.warning("event source mapping %s (%s): %s", self._mapping.uuid, self._queue, reason,
                                exc_info=not isinstance(error, BrokerError))
                await trio.sleep(RETRY_PAUSE_S)

    async def _step(self) -> None:
        mapping = self._mapping
        messages = await self._gather()
        if not messages:
            return
        region = mapping.region
        records = [esm_core.sqs_record(message, mapping.queue_arn, region, mapping.fifo) for message in messages]
        kept = [esm_core.kept_by_filters(self._filters, record) for record in records]
        # As Lambda does: a message no filter matches is deleted unseen.
        self._delete([message for message, keep in zip(messages, kept) if not keep])
        batch = [message for message, keep in zip(messages, kept) if keep]
        self.filtered += len(messages) - len(batch)
        if not batch:
            return
        records = [record for record, keep in zip(records, kept) if keep]
        fit = esm_core.records_that_fit(records)
        self._make_visible(batch[fit:])  # past Lambda's payload limit: for a later batch
        batch, records = batch[:fit], records[:fit]
        payload = esm_core.event_payload(records)
        # A failure to invoke (the function is gone, ...) leaves the batch to return after its visibility timeout.
        invocation = await self._functions.invoke(mapping.function_arn, payload, message_ids=[m.message_id for m in batch])
        failed = invocation.function_error is not None
        deleted = esm_core.to_delete(
            batch, function_failed=failed, answer=invocation.payload, report_item_failures=mapping.report_item_failures, fifo=mapping.fifo,
        )
        self._delete(deleted)
        self.invocations += 1
        self.messages += len(batch)
        self.function_errors += failed
        self.kept += len(batch) - len(deleted)

    async def _gather(self) -> list[ReceivedMessage]:
        """Up to BatchSize messages: what one long poll brings, or, with a batching window, what
        arrives until the window (from the first message) closes or the batch is full."""
        mapping = self._mapping
        batch = await self._receive(min(esm_core.RECEIVE_MAX, mapping.batch_size), LONG_POLL_S)
        if not batch or not mapping.batching_window_s:
            return batch
        closes = self._clock.now() + mapping.batching_window_s
        while len(batch) < mapping.batch_size:
            left = closes - self._clock.now()
            if left <= 0:
                break
            wait = math.floor(left)
            more = await self._receive(min(esm_core.RECEIVE_MAX, mapping.batch_size - len(batch)), wait)
            batch += more
            if not more and not wait:
                await trio.sleep(left)
        return batch

    async def _receive(self, count: int, wait_s: int) -> list[ReceivedMessage]:
        """A long poll. Stopped while it waits (the mapping changed or was deleted), what it
        brings later is made visible again at once, not left hidden for a visibility timeout."""
        slot: ReplySlot[Result] = ReplySlot()
        self._session.submit(ReceiveMessage(
            self._queue, count, None, wait_s, attribute_names=["All"], message_attribute_names=["All"],
        ), slot)
        try:
            received = await slot.wait()
        except trio.Cancelled:
            self._start_soon(self._release, slot)
            raise
        if isinstance(received, Failure):
            raise from_failure(received)
        assert isinstance(received, Received)
        return received.messages

    async def _release(self, slot: ReplySlot[Result]) -> None:
        received = await slot.wait()
        if isinstance(received, Received):
            self._make_visible(received.messages)

    def _make_visible(self, messages: list[ReceivedMessage]) -> None:
        """Ask the queue to make them visible again at once, without waiting (should it fail, the
        queue gone or the broker stopping, their visibility timeout returns them)."""
        for start in range(0, len(messages), esm_core.RECEIVE_MAX):
            chunk = messages[start : start + esm_core.RECEIVE_MAX]
            self._session.submit(ChangeMessageVisibilityBatch(
                self._queue, [VisibilityEntry(str(index), message.receipt_handle, 0) for index, message in enumerate(chunk)],
            ), _ignored)

    def _delete(self, messages: list[ReceivedMessage]) -> None:
        """Ask the queue to delete them, without waiting: the worker's next receive, behind the
        deletion in the queue's mailbox, is committed with it (one commit, not two, per batch).
        A deletion that fails leaves its message to come back: it is handed over again (at least
        once, as on AWS)."""
        for start in range(0, len(messages), esm_core.RECEIVE_MAX):
            chunk = messages[start : start + esm_core.RECEIVE_MAX]
            self._session.submit(DeleteMessageBatch(
                self._queue, [DeleteEntry(str(index), message.receipt_handle) for index, message in enumerate(chunk)],
            ), self._deleted)

    def _deleted(self, result: Result) -> None:
        failures = [result.message] if isinstance(result, Failure) else [failed.message for failed in getattr(result, "failed", ())]
        for failure in failures:
            log.warning("event source mapping %s: could not delete from %s: %s", self._mapping.uuid, self._queue, failure)


def to_record(mapping: EventSourceMapping, at_ms: int) -> EventSourceMappingChanged:
    return EventSourceMappingChanged(
        at_ms, mapping.uuid, mapping.function_arn, mapping.queue_arn, mapping.batch_size, mapping.batching_window_s,
        mapping.enabled, mapping.report_item_failures, mapping.maximum_concurrency, list(mapping.filter_patterns),
    )


def from_record(record: EventSourceMappingChanged) -> EventSourceMapping:
    return EventSourceMapping(
        uuid=record.uuid, function_arn=record.function_arn, queue_arn=record.queue_arn, batch_size=record.batch_size,
        batching_window_s=record.batching_window_s, enabled=record.enabled, report_item_failures=record.report_item_failures,
        maximum_concurrency=record.maximum_concurrency, filter_patterns=tuple(record.filter_patterns),
        last_modified_ms=record.at_ms,
    )


def _text(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise esm_core.invalid_value(f"{name} is required.")
    return value


def _page_number(value: Any) -> int:
    if value is None or value == "":
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise esm_core.invalid_value(f"Invalid paging value: {value!r}") from None
    if number < 0:
        raise esm_core.invalid_value(f"Invalid paging value: {value!r}")
    return number
