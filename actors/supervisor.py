"""Supervision: every queue's and topic's actor runs under a supervisor loop that restarts it
(the platform actor, platform.py, restarts itself by the same `Restarts` policy).

Theory of operation
-------------------
An actor that raises is logged with its name, the error and the log's last LSN, rebuilt from the
store and restarted after a pause that grows with repeated failures (`restart_backoff_s`), so one
sick queue never stops the broker. Failures count as in a row while each comes within
`restart_window_s` of the one before; after `max_restarts` in a row the actor is not restarted
again: it is stopped, and its mailbox answers every request with a clear, retryable error naming
how often it failed, until the queue or topic is deleted (which still works) or the broker is
restarted. An actor that missed mail it must not miss (`Resync`) is rebuilt at once; that is not a
failure.

When an actor ends for good (deleted, or its rows gone from the store) its supervisor closes the
mailbox, answers what was still in it, and tells the lifecycle task, which takes the entry out of
the directory. Each entry's `Health` says how its actor fares, for /metrics and the log.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import trio

from dovecote.storage.store import StorageError, Store
from dovecote.storage.writer import LogWriter

from .clock import Clock
from .config import BrokerConfig
from .directory import ActorEntry, Directory, Health
from .errors import actor_stopped, failure, no_such_queue, no_such_topic, shutting_down, storage_failed
from .messages import ActorMessage, MoveIn, RestartFromStorage, Resync, Stop
from .ops import DeleteQueue, DeleteTopic, Done
from .push_types import Sender
from .queue import QueueActor
from .queue_core import QueueCore
from .recovery import rebuild_queue, rebuild_topic
from .topic import TopicActor
from .topic_core import TopicCore

log = logging.getLogger("dovecote.supervisor")


class Restarts:
    """The restart policy of one supervised actor (a queue's, a topic's, the platform actor):
    counts its failures in a row, logs each, and says how long to pause before the restart, or
    that it failed too often and is not restarted again."""

    def __init__(self, config: BrokerConfig, health: Health, store: Store, what: str, extra: Mapping[str, str]) -> None:
        """what: the actor as the log names it ("queue orders"); extra: the log record's fields."""
        self._config = config
        self._health = health
        self._store = store
        self._what = what
        self._extra = extra
        self.failures = 0  # in a row
        self._last_failure = -math.inf

    def failed(self, exc: BaseException) -> float | None:
        """Count a failure: the seconds to pause before restarting, or None when the actor is
        stopped (marked so in its Health)."""
        now = trio.current_time()
        self.failures = self.failures + 1 if now - self._last_failure < self._config.restart_window_s else 1
        self._last_failure = now
        self._health.restarts += 1
        cause = exc
        while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
            cause = cause.exceptions[0]  # a failure in a task of the actor's nursery: named by what failed
        self._health.last_error = f"{type(cause).__name__}: {cause}"[:300]
        log.error(
            "%s failed (failure %d in a row, log at LSN %d): %r", self._what, self.failures, self._store.last_lsn, exc,
            exc_info=not isinstance(exc, RestartFromStorage), extra=self._extra,
        )
        if self.failures >= self._config.max_restarts:
            log.error("%s stopped: it failed %d times in a row; it is not restarted again", self._what, self.failures, extra=self._extra)
            self._health.stopped = True
            return None
        backoff = self._config.restart_backoff_s
        return backoff[min(self.failures - 1, len(backoff) - 1)]


class Supervisor:
    def __init__(
        self,
        config: BrokerConfig,
        store: Store,
        writer: LogWriter,
        clock: Clock,
        directory: Directory,
        sender: Sender | None,
    ) -> None:
        self._config = config
        self._store = store
        self._writer = writer
        self._clock = clock
        self._directory = directory
        self._sender = sender

    def _actor(self, entry: ActorEntry, core: QueueCore | TopicCore) -> QueueActor | TopicActor:
        core.share_policy(entry.policy)  # a rebuilt core publishes its policy as stored
        if isinstance(core, TopicCore):
            return TopicActor(
                core, entry.mailbox, self._writer, self._store, self._clock, self._directory, self._sender,
                self._config.max_pending_pushes,
            )
        return QueueActor(core, entry.mailbox, self._writer, self._store, self._clock, self._directory.forward)

    def _rebuilt(self, core: QueueCore | TopicCore) -> QueueCore | TopicCore | None:
        if isinstance(core, TopicCore):
            return rebuild_topic(self._store, core, self._clock)
        return rebuild_queue(self._store, core, self._clock)

    async def run(self, entry: ActorEntry, core: QueueCore | TopicCore, ended: Callable[[ActorEntry], None]) -> None:
        """Run one queue's or topic's actor until it ends for good (then tell `ended`) or the
        broker stops."""
        health = entry.health
        restarts = Restarts(self._config, health, self._store, f"{entry.kind} {entry.name}", {entry.kind: entry.name})
        deleted = False
        while True:
            actor = health.actor = self._actor(entry, core)
            try:
                deleted = await actor.run()
                break
            except Resync as resync:
                log.warning("%s %s: %s; rebuilding it from the log", entry.kind, entry.name, resync, extra={entry.kind: entry.name})
                entry.mailbox.missed = False  # cleared before the store is read, in the same step
            except (RestartFromStorage, Exception) as exc:  # noqa: BLE001 - supervision boundary
                pause = restarts.failed(exc)
                if pause is None:
                    health.actor = None
                    deleted = await self._stopped(entry, core, restarts.failures)
                    break
                await trio.sleep(pause)
            rebuilt = self._rebuilt(core)
            if rebuilt is None:
                deleted = True
                break
            core = rebuilt
        health.actor = None
        if not deleted:
            reason = failure(shutting_down())
        elif entry.kind == "topic":
            reason = failure(no_such_topic())
        else:
            reason = failure(no_such_queue())
        for request in entry.mailbox.close():
            request.reply(reason)
        if deleted:
            ended(entry)

    async def _stopped(self, entry: ActorEntry, core: QueueCore | TopicCore, failures: int) -> bool:
        """Answer for an actor that is not restarted again: every request gets the error, but a
        delete, which is stored and ends it. Returns True when deleted, False when stopped."""
        refusal = failure(actor_stopped(f"The {entry.kind} {entry.name}", failures))
        while True:
            try:
                request = await entry.mailbox.receive()
            except trio.EndOfChannel:
                return False
            op = request.op
            if isinstance(op, Stop):
                return False
            if isinstance(op, (DeleteQueue, DeleteTopic)):
                try:
                    await self._writer.append([core.deleted_record(self._clock.wall_ms())])
                except StorageError as error:
                    request.reply(failure(storage_failed(error)))
                    continue
                request.reply(Done())
                return True
            if isinstance(op, ActorMessage) and not isinstance(op, MoveIn):
                continue  # nothing to answer: what it carried is in the store, where a restart finds it
            request.reply(refusal)
