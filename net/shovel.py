"""A shovel's actor: one task owning one link between a local queue and a remote queue or topic
(the rules are actors/shovel_core.py's).

Up, it consumes the local queue through the queue actor's own ReceiveMessage and DeleteMessageBatch,
so visibility, receive counts and the queue's redrive policy apply to what it forwards: a message
the remote refuses for good (its sender fault) is let go at once and comes back with a higher
receive count, to end in the dead-letter queue if the queue has one. A batch the remote cannot take
now (unreachable, slow, 5xx, throttled) is held and resent, with growing back-off, until the remote
takes it; meanwhile its messages' visibility is extended, so an outage never counts as a receive,
and a FIFO group stays locked, so its order holds. Local senders are never slowed: the shovel is one
more consumer.

Down, it long-polls the remote queue, stores what it received locally (the local SendMessageBatch
answers after its commit), and only then deletes it remotely.

Each forward is a MessageForwarded record in the log, committed before the side the message came
from is told to forget it. So after a crash a message may be forwarded again (at least once), and
the log shows both forwards.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from dovecote.actors.clock import Clock
from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import (
    ChangeMessageVisibilityBatch,
    DeleteEntry,
    DeleteMessageBatch,
    ReceiveMessage,
    Received,
    ReceivedMessage,
    Result,
    SendBatchResult,
    SendMessageBatch,
    VisibilityEntry,
)
from dovecote.actors.session import Session, ask
from dovecote.actors.shovel_core import (
    DOWN,
    UP,
    RateCap,
    RemoteConfig,
    RemoteQueue,
    RemoteTopic,
    Route,
    ShovelConfig,
    ShovelStatistics,
    backoff_s,
    in_sequence,
    local_send_entry,
    sns_publish_pairs,
    sqs_send_entry,
)
from dovecote.storage.records import MessageForwarded
from dovecote.storage.store import StorageError
from dovecote.storage.writer import AppendEntry, LogWriter, WriterOverloaded

from .remote_api import BatchOutcome, EntryFailure, RemoteApi, RemoteError

log = logging.getLogger("dovecote.shovel")



class LocalFailure(Exception):
    """The local queue refused a request as a whole (it does not exist, the disk is full, ...)."""


class Shovel:
    def __init__(
        self, config: ShovelConfig, route: Route, open_remote: Callable[[], AbstractAsyncContextManager[RemoteApi]],
        session: Session, writer: LogWriter, clock: Clock, draw: random.Random | None = None,
    ) -> None:
        """open_remote: a connection to the remote, one for each worker."""
        self.config = config
        self._route = route
        self._open_remote = open_remote
        self._session = session
        self._writer = writer
        self._clock = clock
        self._draw = draw or random.Random()
        self._cap = RateCap(config.max_rate, clock.now())
        self._link_up = False
        self._forwarded = self._rejected = self._failures = 0
        self._held: dict[int, tuple[int, int]] = {}  # worker -> (messages in hand, the oldest's SentTimestamp)
        self._last_error = ""
        self._last_error_ms = 0
        self._failures_in_a_row = 0

    def statistics(self) -> ShovelStatistics:
        """A snapshot, read without waiting from any task."""
        return ShovelStatistics(
            self.config.name, UP if self._route.up else DOWN, self.config.source, self.config.destination, self._link_up,
            self._forwarded, self._rejected, self._failures, sum(count for count, _ in self._held.values()),
            min((oldest for count, oldest in self._held.values() if count), default=0),
            self._last_error, self._last_error_ms,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """`concurrency` workers, each with a batch of its own in hand. From a FIFO queue, batches
        in hand at once hold different groups (a group with a message in flight is not handed out),
        so each group's order holds."""
        async with trio.open_nursery() as nursery:
            for worker in range(self.config.concurrency):
                nursery.start_soon(self._work, worker)
            task_status.started()

    async def _work(self, worker: int) -> None:
        step = self._up_step if self._route.up else self._down_step
        async with self._open_remote() as remote:
            while True:
                try:
                    await step(worker, remote)
                except LocalFailure as error:
                    await self._failed(f"local queue {self._route.local.name}: {error}")
                except Exception as error:  # noqa: BLE001 - a remote's answer of a shape no rule foresaw: the link's failure, not the broker's
                    log.exception("shovel %s failed", self.config.name)
                    await trio.sleep(self._backoff(f"{type(error).__name__}: {error}"))

    # --- up ------------------------------------------------------------------------------------------

    async def _up_step(self, worker: int, remote: RemoteApi) -> None:
        config = self.config
        received = await self._local(ReceiveMessage(
            self._route.local.name, config.batch_size, config.visibility_timeout_s, config.wait_time_s,
            attribute_names=["All"], message_attribute_names=["All"],
        ))
        assert isinstance(received, Received)
        if not received.messages:
            return
        await trio.sleep(self._cap.wait_s(len(received.messages), self._clock.now()))
        self._hold(worker, [int(m.attributes.get("SentTimestamp", 0)) for m in received.messages])
        pending = list(received.messages)
        extended_at = self._clock.now()
        while pending:
            try:
                outcome = await self._send_up(remote, pending)
            except RemoteError as error:
                extended_at = await self._wait_out(error, pending, extended_at)
                continue
            self._link_ok()
            by_id = {str(index): message for index, message in enumerate(pending)}
            done = [(by_id[entry_id], remote_id) for entry_id, remote_id in outcome.successful.items() if entry_id in by_id]
            refused = [by_id[f.id] for f in outcome.failed if f.sender_fault and f.id in by_id]
            await self._forwarded_up(done)
            if refused:
                await self._let_go(refused, outcome.failed)
            settled = {id(message) for message, _ in done} | {id(message) for message in refused}
            pending = [message for message in pending if id(message) not in settled]
            if pending:  # refused for now (not the sender's fault), or not answered for: as an unreachable remote
                first = outcome.failed[0] if outcome.failed else EntryFailure("", "InvalidResponse", "no answer for some entries", False)
                extended_at = await self._wait_out(RemoteError(200, first.code, first.message), pending, extended_at)
        self._hold(worker, ())

    async def _send_up(self, remote: RemoteApi, messages: list[ReceivedMessage]) -> BatchOutcome:
        destination, default_group = self._route.destination, self.config.group_id or self.config.name
        if isinstance(destination, RemoteTopic):
            return await remote.publish_batch(sns_publish_pairs(destination.arn, messages, destination.fifo, default_group))
        assert isinstance(destination, RemoteQueue)
        entries = [sqs_send_entry(index, message, destination.fifo, default_group) for index, message in enumerate(messages)]
        return await remote.send_batch(destination.url, entries)

    async def _forwarded_up(self, done: list[tuple[ReceivedMessage, str]]) -> None:
        if not done:
            return
        remote, queue = self._remote_address(), self._route.local.name
        # Submitted before the delete, the records are committed with it or before it (the writer
        # commits in order), never after; one commit, where awaiting them first would take two.
        logged = self._submit_log([
            MessageForwarded(self._clock.wall_ms(), self.config.name, queue, message.message_id, remote, remote_id, UP)
            for message, remote_id in done
        ])
        result = await self._local(DeleteMessageBatch(queue, [
            DeleteEntry(str(index), message.receipt_handle) for index, (message, _) in enumerate(done)
        ]))
        await self._logged(logged)
        self._forwarded += len(done)
        for failed in getattr(result, "failed", ()):  # the message will be forwarded again: at least once
            log.warning("shovel %s: a forwarded message could not be deleted from %s: %s", self.config.name, queue, failed.message)

    async def _let_go(self, refused: list[ReceivedMessage], failures: list[EntryFailure]) -> None:
        """Messages the remote will never take: visible again at once, so the next receive counts
        and the queue's redrive policy decides (a dead-letter queue, or another try)."""
        reasons = "; ".join(sorted({f"{f.code}: {f.message}" for f in failures if f.sender_fault}))
        log.warning("shovel %s: %s refused %d message(s): %s", self.config.name, self._remote_address(), len(refused), reasons)
        self._rejected += len(refused)
        self._note_error(f"refused: {reasons}")
        await self._local(ChangeMessageVisibilityBatch(self._route.local.name, [
            VisibilityEntry(str(index), message.receipt_handle, 0) for index, message in enumerate(refused)
        ]))

    async def _wait_out(self, error: RemoteError, pending: list[ReceivedMessage], extended_at: float) -> float:
        """Back off after a failure, keeping the messages in hand hidden meanwhile; returns when
        their visibility was last extended."""
        delay = self._backoff(f"{self._remote_address()}: {error}")
        wake = self._clock.now() + delay
        visibility = self.config.visibility_timeout_s
        while True:
            now = self._clock.now()
            if now - extended_at >= visibility / 2:
                await self._local(ChangeMessageVisibilityBatch(self._route.local.name, [
                    VisibilityEntry(str(index), message.receipt_handle, visibility) for index, message in enumerate(pending)
                ]))
                extended_at = now
            if now >= wake:
                return extended_at
            await trio.sleep(min(wake, extended_at + visibility / 2) - now)

    # --- down ----------------------------------------------------------------------------------------

    async def _down_step(self, worker: int, remote: RemoteApi) -> None:
        config, source = self.config, self._route.source
        assert isinstance(source, RemoteQueue)
        try:
            messages = await remote.receive(source.url, config.batch_size, config.wait_time_s, config.visibility_timeout_s)
        except RemoteError as error:
            await trio.sleep(self._backoff(f"{source.url}: {error}"))
            return
        self._link_ok()
        if not messages:
            return
        await trio.sleep(self._cap.wait_s(len(messages), self._clock.now()))
        entries, carried = [], []
        for message in in_sequence(messages):
            try:
                entries.append(local_send_entry(len(entries), message, self._route.local.fifo))
                carried.append(message)
            except ValueError as error:  # left remotely: it comes back, and ends in the remote's dead-letter queue
                log.warning("shovel %s: a message from %s cannot be stored: %s", config.name, source.url, error)
        if not entries:
            return
        self._hold(worker, [int((m.get("Attributes") or {}).get("SentTimestamp", 0)) for m in carried])
        queue = self._route.local.name
        try:
            result = await self._local(SendMessageBatch(queue, entries))
        except LocalFailure:
            await self._release_remotely(remote, carried)
            raise
        finally:
            self._hold(worker, ())
        assert isinstance(result, SendBatchResult)
        stored = [(carried[int(entry.id)], entry.message_id) for entry in result.successful]
        for failed in result.failed:  # left remotely, as above
            log.warning("shovel %s: %s refused a message: %s", config.name, queue, failed.message)
        if not stored:
            return
        await self._logged(self._submit_log([
            MessageForwarded(self._clock.wall_ms(), config.name, queue, local_id, source.url, str(message["MessageId"]), DOWN)
            for message, local_id in stored
        ]))
        self._forwarded += len(stored)
        try:
            failures = await remote.delete_batch(source.url, [str(message["ReceiptHandle"]) for message, _ in stored])
        except RemoteError as error:  # it will be received and stored again: at least once
            self._note_error(f"{source.url}: deleting: {error}")
            return
        for failed in failures:
            log.warning("shovel %s: a stored message could not be deleted from %s: %s", config.name, source.url, failed.message)

    async def _release_remotely(self, remote: RemoteApi, messages: list[dict[str, Any]]) -> None:
        """Give back what could not be stored, at once rather than at the end of its visibility
        timeout; if the remote cannot be told, that timeout gives it back."""
        source = self._route.source
        assert isinstance(source, RemoteQueue)
        with contextlib.suppress(RemoteError):
            await remote.release_batch(source.url, [str(message["ReceiptHandle"]) for message in messages])

    # --- both ----------------------------------------------------------------------------------------

    async def _local(self, op: Any) -> Result:
        try:
            return await ask(self._session, op)
        except BrokerError as error:
            raise LocalFailure(f"{error.code}: {error.message}") from None

    def _submit_log(self, records: list[MessageForwarded]) -> AppendEntry:
        try:
            return self._writer.submit(records, needs_space=False)
        except (WriterOverloaded, trio.ClosedResourceError) as error:  # the forward is repeated after the back-off
            raise LocalFailure(f"the log: {error}") from None

    @staticmethod
    async def _logged(entry: AppendEntry) -> None:
        try:
            await entry.wait()
        except StorageError as error:
            raise LocalFailure(f"the log: {error}") from None

    async def _failed(self, reason: str) -> None:
        await trio.sleep(self._backoff(reason, remote=False))

    def _backoff(self, reason: str, *, remote: bool = True) -> float:
        """The wait after a failure of the remote (the link is down) or of the local side."""
        self._failures += 1
        self._failures_in_a_row += 1
        if remote:
            self._link_up = False
        changed = reason != self._last_error
        self._note_error(reason)
        delay = backoff_s(self._failures_in_a_row, self.config.backoff_initial_s, self.config.backoff_max_s, self._draw.random())
        if changed or self._failures_in_a_row % 10 == 0:  # a line for each new error, not one per retry
            log.warning("shovel %s: %s; retrying in %.1f s (failure %d in a row)", self.config.name, reason, delay, self._failures_in_a_row)
        return delay

    def _note_error(self, reason: str) -> None:
        self._last_error = reason
        self._last_error_ms = self._clock.wall_ms()

    def _link_ok(self) -> None:
        if not self._link_up and self._failures_in_a_row:
            log.info("shovel %s: %s answers again", self.config.name, self._remote_address())
        self._failures_in_a_row = 0
        self._link_up = True

    def _hold(self, worker: int, sent_ms: Sequence[int]) -> None:
        self._held[worker] = (len(sent_ms), min(sent_ms, default=0))

    def _remote_address(self) -> str:
        remote = self._route.remote
        return remote.arn if isinstance(remote, RemoteTopic) else remote.url


class Shovels:
    """Every configured shovel, each a task of its own, with the remotes' clients they share."""

    def __init__(self, shovels: Sequence[ShovelConfig], routes: Sequence[Route], remotes: Sequence[RemoteConfig]) -> None:
        self._configs = list(zip(shovels, routes))
        self._remotes = {remote.name: remote for remote in remotes}
        self._running: list[Shovel] = []

    def statistics(self) -> list[ShovelStatistics]:
        return [shovel.statistics() for shovel in self._running]

    async def run(
        self, session: Session, writer: LogWriter, clock: Clock, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled. A message in hand then comes back where it was received after its
        visibility timeout, and is forwarded again (at least once)."""
        async with trio.open_nursery() as nursery:
            for config, route in self._configs:
                remote = self._remotes[route.remote.remote]
                shovel = Shovel(config, route, functools.partial(RemoteApi, remote), session, writer, clock)
                self._running.append(shovel)
                await nursery.start(shovel.run)
                log.info("shovel %s: %s -> %s", config.name, config.source, config.destination)
            task_status.started()
