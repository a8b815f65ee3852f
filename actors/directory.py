"""The broker's directory: which queues and topics exist, and how to reach each one's actor.

Theory of operation
-------------------
A plain object whose methods never await: on Trio's one thread every call sees the directory as it
stands, and no lookup ever waits for a commit, a listing or another actor. One task changes it, the
lifecycle task (a queue or topic made or deleted, an actor ended for good); sessions and actors only
read it. Each entry keeps its mailbox as long as its queue or topic exists, across restarts of its
actor; once the entry is removed its mailbox is closed, so mail to it is refused at once.

Cross-actor messages take one route: an actor names a queue by ARN and the directory puts the
message in that queue's mailbox (`forward`, `deliver`), or says at once that there is no such queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from . import validation
from .authorization import PolicySlot
from .errors import failure, no_such_queue, overloaded
from .mailbox import Mailbox
from .messages import ActorMessage, QueueTarget, Reply


class ActorStatus(Protocol):
    """What an actor reports of itself (queue.py, topic.py)."""

    def statistics(self) -> tuple: ...


class Health:
    """What an entry's supervisor reports: restarts, the last error, whether it gave up."""

    __slots__ = ("restarts", "last_error", "stopped", "actor")

    def __init__(self) -> None:
        self.restarts = 0
        self.last_error = ""
        self.stopped = False  # failed too often in a row: not restarted again
        self.actor: ActorStatus | None = None  # the running actor


class ActorEntry:
    """A queue's or a topic's place in the directory."""

    __slots__ = ("kind", "actor_id", "region", "name", "arn", "fifo", "mailbox", "health", "policy", "target")

    def __init__(self, kind: str, actor_id: int, region: str, name: str, arn: str, fifo: bool, mailbox: Mailbox) -> None:
        self.kind = kind  # "queue" or "topic"
        self.actor_id = actor_id
        self.region = region
        self.name = name
        self.arn = arn
        self.fifo = fifo
        self.mailbox = mailbox
        self.health = Health()
        # The queue's or topic's parsed Policy, published by its actor (whichever runs), for
        # sessions and topics that decide about it without asking the actor.
        self.policy = PolicySlot()
        self.target = QueueTarget(actor_id, name, arn, fifo, self.policy)  # what a topic delivering to this queue needs


class Directory:
    def __init__(self) -> None:
        self._queues: dict[tuple[str, str], ActorEntry] = {}  # (region, name)
        self._topics: dict[tuple[str, str], ActorEntry] = {}
        self._queues_by_arn: dict[str, ActorEntry] = {}
        self._dead_letter_targets: dict[str, str] = {}  # queue ARN -> its dead-letter queue's ARN
        self._sorted: dict[tuple[str, str], list] = {}  # ("queues"|"topics", region) -> sorted names or ARNs

    # --- reads, by anyone -----------------------------------------------------------------------
    def queue(self, region: str, name: str) -> ActorEntry | None:
        return self._queues.get((region, name))

    def topic(self, region: str, name: str) -> ActorEntry | None:
        return self._topics.get((region, name))

    def queue_by_arn(self, arn: str) -> ActorEntry | None:
        return self._queues_by_arn.get(arn)

    def get(self, queue_arn: str) -> QueueTarget | None:
        """What a topic needs of a queue it delivers to (topic_core.QueueTargets)."""
        entry = self._queues_by_arn.get(queue_arn)
        return entry.target if entry is not None else None

    def queue_count(self) -> int:
        return len(self._queues)

    def topic_count(self) -> int:
        return len(self._topics)

    def queue_names(self, region: str) -> list[str]:
        """The region's queue names, sorted."""
        return self._sorted_names("queues", region, self._queues)

    def topic_arns(self, region: str) -> list[str]:
        """The region's topic ARNs, sorted."""
        return self._sorted_names("topics", region, self._topics, arns=True)

    def _sorted_names(self, kind: str, region: str, entries: dict[tuple[str, str], ActorEntry], arns: bool = False) -> list[str]:
        cached = self._sorted.get((kind, region))
        if cached is None:
            cached = self._sorted[(kind, region)] = sorted(
                entry.arn if arns else name for (entry_region, name), entry in entries.items() if entry_region == region
            )
        return cached

    def dead_letter_sources(self, target_arn: str) -> list[ActorEntry]:
        """The queues whose RedrivePolicy names this one, by name."""
        sources = [self._queues_by_arn[arn] for arn, target in self._dead_letter_targets.items() if target == target_arn]
        return sorted(sources, key=lambda entry: (entry.region, entry.name))

    def entries(self) -> Iterator[ActorEntry]:
        yield from self._topics.values()
        yield from self._queues.values()

    # --- the one route between actors -----------------------------------------------------------
    def forward(self, queue_arn: str, message: ActorMessage, reply: Reply) -> None:
        """Put an actor's message in the mailbox of the queue with that ARN; `reply` gets its answer,
        or at once an error when there is no such queue or its mailbox is full."""
        entry = self._queues_by_arn.get(queue_arn)
        if entry is None:
            reply(failure(no_such_queue()))
        elif not entry.mailbox.post(message, reply):
            reply(failure(overloaded(f"Queue {entry.name}")))

    def deliver(self, target: QueueTarget, message: ActorMessage) -> None:
        """Mail that must arrive (messages already stored in that queue): if the queue's mailbox is
        full it is marked missed and the queue rebuilds itself from the store. A queue deleted
        (or deleted and made again) since the target was looked up gets nothing."""
        entry = self._queues_by_arn.get(target.arn)
        if entry is not None and entry.actor_id == target.queue_id:
            entry.mailbox.post(message, must_arrive=True)

    # --- changes, by the lifecycle task only ------------------------------------------------------
    def add(self, entry: ActorEntry, redrive_policy: str = "") -> None:
        if entry.kind == "queue":
            self._queues[(entry.region, entry.name)] = entry
            self._queues_by_arn[entry.arn] = entry
            self.note_dead_letter_target(entry, redrive_policy)
        else:
            self._topics[(entry.region, entry.name)] = entry
        self._sorted.clear()

    def remove(self, entry: ActorEntry) -> None:
        """The queue or topic is gone: mail to it is refused from now on (its actor has answered
        what was in its mailbox)."""
        entries = self._queues if entry.kind == "queue" else self._topics
        if entries.get((entry.region, entry.name)) is not entry:
            return
        del entries[(entry.region, entry.name)]
        if entry.kind == "queue":
            del self._queues_by_arn[entry.arn]
            self._dead_letter_targets.pop(entry.arn, None)
        self._sorted.clear()

    def note_dead_letter_target(self, entry: ActorEntry, redrive_policy: str) -> None:
        if redrive_policy:
            self._dead_letter_targets[entry.arn] = validation.queue_config({"RedrivePolicy": redrive_policy}).dead_letter_arn
        else:
            self._dead_letter_targets.pop(entry.arn, None)
