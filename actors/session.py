"""A session: a client connection's way into one region's namespace of the broker.

`submit` routes an operation without ever waiting: a queue's or topic's operation goes straight to
that actor's mailbox (found in the directory), a creation or deletion to the lifecycle task's,
and what the directory alone can answer (GetQueueUrl, the List* of queues and topics, the
dead-letter sources, the checks of StartMessageMoveTask) is answered here and now. Owned by the
connection's task.
"""

from __future__ import annotations

import trio

from . import paging
from .directory import Directory
from .errors import BrokerError, failure, no_such_queue, no_such_topic, overloaded, shutting_down
from .lifecycle import LIFECYCLE_OPS
from .mailbox import Mailbox, MailboxFull
from .messages import Reply, Request
from .principals import Principal
from .ops import (
    Arns,
    GetQueueUrl,
    ListDeadLetterSourceQueues,
    ListQueues,
    ListTopics,
    Op,
    QueueName,
    QueueOp,
    SetQueueAttributes,
    StartMessageMoveTask,
    TopicOp,
)


class Session:
    def __init__(self, directory: Directory, lifecycle: Mailbox, region: str, principal: Principal) -> None:
        self._directory = directory
        self._lifecycle = lifecycle
        self.region = region
        self.principal = principal  # whose requests these are

    def submit(self, op: Op, reply: Reply) -> None:
        """Route op to whoever serves it; reply is called exactly once, now or later, from that
        task. Never blocks."""
        try:
            self._route(op, reply)
        except BrokerError as error:
            reply(failure(error))

    def _route(self, op: Op, reply: Reply) -> None:
        directory, region = self._directory, self.region
        if isinstance(op, LIFECYCLE_OPS) or (isinstance(op, SetQueueAttributes) and "RedrivePolicy" in op.attributes):
            try:
                self._lifecycle.submit(Request(op, reply, region))
            except MailboxFull:
                raise overloaded("The broker's lifecycle task (creating and deleting)") from None
            except trio.ClosedResourceError:
                raise shutting_down() from None
            return
        match op:
            case GetQueueUrl():
                if directory.queue(region, op.queue) is None:
                    raise no_such_queue(op.queue)
                reply(QueueName(op.queue))
            case ListQueues():
                names = [name for name in directory.queue_names(region) if name.startswith(op.prefix)]
                reply(paging.queue_names_page(names, op.max_results, op.next_token))
            case ListDeadLetterSourceQueues():
                entry = directory.queue(region, op.queue)
                if entry is None:
                    raise no_such_queue(op.queue)
                names = [source.name for source in directory.dead_letter_sources(entry.arn) if source.region == region]
                reply(paging.queue_names_page(names, op.max_results, op.next_token))
            case ListTopics():
                arns, token = paging.sns_page(directory.topic_arns(region), op.next_token)
                reply(Arns(arns, token))
            case StartMessageMoveTask():
                self._start_move_task(op, reply)
            case QueueOp():
                entry = directory.queue(region, op.queue)
                if entry is None or not self._delivered(entry.mailbox, Request(op, reply), "Queue", op.queue):
                    raise no_such_queue(op.queue)
            case TopicOp():
                entry = directory.topic(region, op.topic)
                if entry is None or not self._delivered(entry.mailbox, Request(op, reply), "Topic", op.topic):
                    raise no_such_topic()
            case _:
                raise BrokerError("InvalidAction", f"{type(op).__name__} is not an operation of this broker.")

    @staticmethod
    def _delivered(mailbox: Mailbox, request: Request, kind: str, name: str) -> bool:
        """Into the actor's mailbox; False when the actor has ended for good (deleted)."""
        try:
            mailbox.submit(request)
        except MailboxFull:
            raise overloaded(f"{kind} {name}") from None
        except trio.ClosedResourceError:
            return False
        return True

    def _start_move_task(self, op: StartMessageMoveTask, reply: Reply) -> None:
        """The task's source must be some queue's dead-letter queue, and its destination (if one is
        named) another queue of the same type; the source queue's actor does the rest."""
        entry = self._directory.queue(self.region, op.queue)
        missing = BrokerError("ResourceNotFoundException", f"The source queue {op.queue} does not exist.")
        if entry is None:
            raise missing
        if not self._directory.dead_letter_sources(entry.arn):
            raise _invalid_move("The source queue must be configured as a dead-letter queue of another queue.")
        if op.destination_arn:
            destination = self._directory.queue_by_arn(op.destination_arn)
            if destination is None:
                raise BrokerError("ResourceNotFoundException", f"The destination queue {op.destination_arn} does not exist.")
            if destination.fifo != entry.fifo or destination is entry:
                raise _invalid_move("The destination must be another queue of the same type as the source.")
        if not self._delivered(entry.mailbox, Request(op, reply), "Queue", op.queue):
            raise missing


def _invalid_move(reason: str) -> BrokerError:
    return BrokerError("UnsupportedOperation", reason)
