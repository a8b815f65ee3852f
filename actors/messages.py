"""The actor message protocol, in one place: the envelope every mailbox carries, and the messages
actors send one another. Pure values, no I/O: cores build and read them, shells carry them.

Clients' operations (`ops.py`) and these messages travel in the same envelope, a `Request`: the
operation and the reply callable its answer goes to. Whoever takes a Request from a mailbox calls
its reply exactly once, synchronously, and never awaits the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import msgspec

from dovecote.storage.records import MessageSent, Record

from .authorization import PolicySlot
from .ops import Done, Op, Result
from .push_types import PushTarget

Reply = Callable[[Result], None]


class ActorMessage(msgspec.Struct, frozen=True):
    """A message between actors; never on the wire."""


class Request(NamedTuple):
    op: Op | ActorMessage
    reply: Reply
    region: str = ""  # the namespace a client's operation acts in ("": the broker's default)
    trace_header: str = ""  # the request's X-Amzn-Trace-Id (AWS's tracing): a publish's SQS deliveries carry it


def ignore(result: Result) -> None:
    """The reply of a message whose answer nobody waits for."""


class Stop(ActorMessage):
    """Broker to actor: answer long polls with nothing, finish what is in the mailbox, and end."""


class AdoptedMessage(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """What a queue needs of a message another actor stored in it: no body (the queue reads that
    from the store when it delivers the message)."""

    seq: int
    message_id: str
    delay_seconds: int
    group_id: str
    dedup_id: str


def adopted(record: MessageSent) -> AdoptedMessage:
    return AdoptedMessage(record.seq, record.message_id, record.delay_seconds, record.group_id, record.dedup_id)


class Adopt(ActorMessage):
    """Topic to queue: messages the topic stored in this queue (its fan-out), posted after the
    commit. The queue serves them from then on."""

    messages: list[AdoptedMessage]


class MoveIn(ActorMessage):
    """To a queue: store these messages here and, in the same commit, the records that remove them
    from where they come from (a queue's MessageDeleted, a subscription's PushDone). Answered with
    Done once committed."""

    source_arn: str
    rows: list[MessageSent]
    dead_letter: bool  # True: redrive to a dead-letter queue; False: a message move task
    removals: list[Record]


class MovedOut(ActorMessage):
    """The answer to a MoveIn, posted back into the source queue's mailbox."""

    seqs: list[int]
    error: str  # "" when the destination stored them
    task_started_ms: int = 0  # the move task that sent them (0: dead-letter redrive)


def move_error(result: Result) -> str:
    """The answer to a MoveIn in words: "" when the destination stored the messages."""
    return "" if isinstance(result, Done) else f"{getattr(result, 'code', '')}: {getattr(result, 'message', result)}"


class NewPushes(ActorMessage):
    """Topic to delivery actor: pushes stored for this subscription, as (seq, MessageId)."""

    pushes: list[tuple[int, str]]


class Reconfigured(ActorMessage):
    """Topic to delivery actor: the subscription's endpoint, policy or dead-letter queue changed."""

    target: PushTarget


class StopPushing(ActorMessage):
    flush: bool = False  # store the outcomes not yet stored first (a shutdown, not an unsubscribe)


class QueueTarget(NamedTuple):
    """What a topic knows of a queue it may deliver to, from the directory at publish time."""

    queue_id: int
    name: str
    arn: str
    fifo: bool
    policy: PolicySlot = PolicySlot()  # the queue's Policy, as its actor last published it


Forward = Callable[[str, ActorMessage, Reply], None]  # (queue ARN, message, reply): to that queue's actor


class RestartFromStorage(Exception):
    """The actor's memory may differ from the store; its supervisor must rebuild it."""


class Resync(RestartFromStorage):
    """The actor missed mail it must not miss (its mailbox was full): rebuilding it from the store,
    which holds everything that mail was about, brings it up to date. Not a failure."""
