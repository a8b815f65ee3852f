"""The broker: the directory, the lifecycle task and the supervisors of the queue and topic actors,
put together.

How the pieces share the work (each module's docstring says more):
- directory.py   which queues and topics exist and their mailboxes; answers lookups without waiting
- lifecycle.py   the one task that makes and deletes queues and topics (and so changes the directory)
- supervisor.py  runs each actor, restarts it from the store when it fails, stops it when it fails
                 too often
- recovery.py    rebuilds queues and topics from the store, at start and for a restart
- session.py     a connection's way in: routes each operation straight to its actor
- platform.py    the one task owning SNS's platform applications and endpoints (and their direct publishes)
- functions.py   Lambda functions: the registry task, one actor per function owning its processes
- esm.py         event source mappings (queue -> function): their task, and a poller per mapping
- queue.py, topic.py, delivery.py   the actors, around the pure cores
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import trio

from dovecote.storage.store import Store
from dovecote.storage.writer import LogWriter

from .clock import Clock
from .config import BrokerConfig
from .directory import ActorEntry, Directory, Health
from .esm import EventSourceMappings
from .functions import FunctionRegistry, FunctionSettings, InstanceRunner
from .lifecycle import Lifecycle
from .limits import STATISTICS_ACTORS_PER_STEP
from .mailbox import MailboxStatistics
from .platform import Platform
from .principals import ANYONE, Principal
from .push_types import Sender
from .queue_core import QueueCore
from .recovery import topic_options
from .session import Session
from .signing import Signer
from .supervisor import Supervisor
from .topic_core import TopicCore


class ActorReport(NamedTuple):
    """One queue's or topic's actor, as it reports itself (see `Broker.statistics`)."""

    kind: str  # "queue", "topic", "platform" (the one platform actor), "function" (a Lambda function's) or "event-source-mapping"
    region: str
    name: str
    mailbox: MailboxStatistics
    health: Health
    actor: tuple | None  # the running actor's statistics(); None while it restarts or is stopped (the platform's: always)


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
        runner: InstanceRunner | None = None,
        functions_dir: str | None = None,
        function_settings: FunctionSettings = FunctionSettings(),
    ) -> None:
        """cores: the recovered queues and topics. signer: signs the SNS messages topics deliver
        (None: unsigned). sender: pushes to HTTP/S and email subscriptions (None: topics refuse
        those). runner: runs Lambda functions' instances, whose code is unpacked in functions_dir
        (None: functions are kept but not run)."""
        self.config = config
        self.directory = Directory()
        supervisor = Supervisor(config, store, writer, clock, self.directory, sender)
        options = topic_options(config, signer, sender.protocols if sender is not None else frozenset())
        self._lifecycle = Lifecycle(config, store, writer, clock, self.directory, supervisor, options)
        self._platform = Platform(config, store, writer, clock, sender, self.directory.forward)
        self._initial_cores = list(cores)
        self.functions = FunctionRegistry(config, store, writer, clock, runner, functions_dir, function_settings)
        self.mappings = EventSourceMappings(
            store.load_event_source_mappings(), writer, clock, self.directory, self.session, self.functions, config.lifecycle_capacity,
        )

    def session(self, region: str | None = None, principal: Principal = ANYONE) -> Session:
        """A session of one principal, acting in one region's namespace (by default the broker's
        region)."""
        return Session(
            self.directory, self._lifecycle.mailbox, region or self.config.region, principal, self.config.account_id, self._platform
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until stop(); the actors live in here. Queues start first, so topics find them."""
        cores = sorted(self._initial_cores, key=lambda core: isinstance(core, TopicCore))
        self._initial_cores.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._platform.run)
            await nursery.start(self.functions.run)
            await nursery.start(self._lifecycle.run, cores)
            await nursery.start(self.mappings.run)  # once the queues they poll are there
            task_status.started()

    def stop(self) -> None:
        """Stop taking creations and deletions; every actor then answers its long polls, finishes
        what is in its mailbox and ends."""
        self.mappings.stop()
        self._lifecycle.mailbox.close_for_mail()
        self._platform.mailbox.close_for_mail()
        self.functions.stop()

    def statistics(self) -> list[ActorReport]:
        """How every queue's and topic's actor fares: its mailbox, its supervisor's record and its
        own counters, then the platform actor's. Read without waiting, from any task: one
        consistent snapshot."""
        return [_report(entry) for entry in self.directory.entries()] + [self.platform_report(), *self.function_reports(), *self.mapping_reports()]

    def platform_report(self) -> ActorReport:
        """The platform actor's mailbox, restarts and statistics."""
        platform = self._platform
        return ActorReport(
            "platform", self.config.region, "platform", platform.mailbox.statistics(), platform.health, platform.statistics()
        )

    def function_reports(self) -> list[ActorReport]:
        """Each Lambda function's actor: the invocations waiting for an instance as its mailbox's
        requests, its instances' start failures as its restarts, and its counters."""
        reports = []
        for actor in self.functions.actors():
            statistics = actor.statistics()
            function = actor.function
            mailbox = MailboxStatistics(statistics.waiting, 0, False)
            reports.append(ActorReport("function", function.region or self.config.region, function.name, mailbox, actor.health, statistics))
        return reports

    def mapping_reports(self) -> list[ActorReport]:
        """Each event source mapping's poller, by its UUID: its counters and last error (the
        mappings actor's mailbox is shared by them all)."""
        mailbox = self.mappings.mailbox.statistics()
        return [
            ActorReport("event-source-mapping", mapping.region, mapping.uuid, mailbox, health, statistics)
            for mapping, health, statistics in self.mappings.reports()
        ]

    async def gather_statistics(self, *, per_step: int = STATISTICS_ACTORS_PER_STEP) -> list[ActorReport]:
        """The same, letting other tasks run after every `per_step` actors, so that reading ten
        thousand queues (a few microseconds each) never holds the event loop for long. Each report
        is as of its own step; queues and topics made meanwhile are left out, and those deleted
        meanwhile report as ended (no actor statistics)."""
        entries = list(self.directory.entries())
        reports: list[ActorReport] = []
        for start in range(0, len(entries), per_step):
            if start:
                await trio.lowlevel.checkpoint()
            reports += [_report(entry) for entry in entries[start : start + per_step]]
        return reports + [self.platform_report(), *self.function_reports(), *self.mapping_reports()]


def _report(entry: ActorEntry) -> ActorReport:
    actor = entry.health.actor
    return ActorReport(
        entry.kind, entry.region, entry.name, entry.mailbox.statistics(), entry.health,
        actor.statistics() if actor is not None else None,
    )
