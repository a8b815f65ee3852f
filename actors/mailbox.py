"""Mailboxes: how requests and messages reach an actor, and how whoever asked waits for the answer.

Theory of operation
-------------------
An actor's mailbox is one channel, read by the actor's task alone, with three doors in:

- `submit`, for clients' requests (through a session): at most `request_capacity` of them wait at
  once; past that the client is told to retry (RequestThrottled), so a flood never grows memory.
- `post`, for other actors' mail (a topic's fan-out, a dead-letter hand-over) and the broker's own
  asks: on top of the clients' requests, the messages such mail carries (a hand-over of 100
  messages weighs 100) may add up to `actor_capacity`. Mail that finds the mailbox full is refused:
  a hand-over is answered with an overload error and tried again by its sender; mail that must
  arrive (a fan-out's `Adopt`: the messages are committed already) marks the mailbox `missed`, and
  the actor then rebuilds itself from the store, which holds what the lost mail was about.
- `post_answer`, for answers to the actor's own work (its commits settling, the answer to a
  hand-over it started) and the one Stop its starter sends it: never refused, as there are never
  more of them than work the actor started itself, which its own limits bound (cycles in flight,
  moves in transit, attempts).

So a mailbox holds at most `request_capacity` requests and `actor_capacity` carried messages (or one
piece of mail heavier than that, alone), plus the answers its owner is owed.
"""

from __future__ import annotations

import math
from typing import Generic, NamedTuple, TypeVar

import trio

from .limits import ACTOR_MAILBOX_MESSAGES_FROM_ACTORS, ACTOR_MAILBOX_REQUESTS
from .messages import ActorMessage, Adopt, MoveIn, NewPushes, Reply, Request, ignore
from .ops import Op

T = TypeVar("T")


class ReplySlot(Generic[T]):
    """Called once (synchronously, by whoever answers); awaited by whoever asked."""

    __slots__ = ("_event", "_value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: T | None = None

    def __call__(self, value: T) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    async def wait(self) -> T:
        await self._event.wait()
        return self._value  # type: ignore[return-value]


class MailboxFull(Exception):
    """A client's request found the mailbox at its capacity; the client should retry shortly."""


class MailboxStatistics(NamedTuple):
    requests: int  # clients' requests waiting
    carried: int  # messages carried by other actors' mail waiting, and answers owed
    missed: bool


def _weight(op: Op | ActorMessage) -> int:
    """How many messages a piece of mail carries, for the actor door's capacity."""
    if isinstance(op, Adopt):
        return len(op.messages)
    if isinstance(op, MoveIn):
        return len(op.rows)
    if isinstance(op, NewPushes):
        return len(op.pushes)
    return 1


class Mailbox:
    def __init__(
        self,
        request_capacity: int = ACTOR_MAILBOX_REQUESTS,
        actor_capacity: int = ACTOR_MAILBOX_MESSAGES_FROM_ACTORS,
    ) -> None:
        self.request_capacity = request_capacity
        self.actor_capacity = actor_capacity
        self._send, self._receive = trio.open_memory_channel[Request](math.inf)
        self._requests = 0
        self._carried = 0
        self.missed = False  # mail that had to arrive was refused: the owner must resync

    # --- the doors in -----------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        """A client's request. Raises MailboxFull past the request capacity, and
        trio.ClosedResourceError once the mailbox is closed (its actor ended for good)."""
        if self._requests >= self.request_capacity:
            raise MailboxFull
        self._put(request)

    def post(self, op: Op | ActorMessage, reply: Reply = ignore, *, must_arrive: bool = False) -> bool:
        """Mail from another actor or the broker: False when the mailbox is full or closed. Mail
        that must_arrive and finds it full marks the mailbox missed."""
        # Mail heavier than the whole capacity still gets into a mailbox that carries nothing else,
        # so it is delayed, never refused for good.
        if isinstance(op, ActorMessage) and self._carried and self._carried + _weight(op) > self.actor_capacity:
            if must_arrive:
                self.missed = True
            return False
        try:
            self._put(Request(op, reply))
        except trio.ClosedResourceError:
            return False
        return True

    def post_answer(self, message: ActorMessage) -> None:
        """An answer to the owner's own work (bounded by that work); dropped once it is closed."""
        try:
            self._put(Request(message, ignore))
        except trio.ClosedResourceError:
            pass

    def _put(self, request: Request) -> None:
        try:
            self._send.send_nowait(request)
        except trio.BrokenResourceError:
            raise trio.ClosedResourceError from None
        if isinstance(request.op, ActorMessage):
            self._carried += _weight(request.op)
        else:
            self._requests += 1

    # --- the owner's side -------------------------------------------------------------------------
    async def receive(self) -> Request:
        """The next request or message; raises trio.EndOfChannel once closed and empty."""
        return self._taken(await self._receive.receive())

    def receive_waiting(self, into: list[Request], limit: float = math.inf) -> None:
        """Append what is already in the mailbox, without waiting, until `into` holds `limit`."""
        while len(into) < limit:
            try:
                into.append(self._taken(self._receive.receive_nowait()))
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    def _taken(self, request: Request) -> Request:
        if isinstance(request.op, ActorMessage):
            self._carried -= _weight(request.op)
        else:
            self._requests -= 1
        return request

    def close_for_mail(self) -> None:
        """No more mail comes in (the broker is stopping); what is in can still be received."""
        self._send.close()

    def close(self) -> list[Request]:
        """The owner ended for good: every later submit or post is refused. Returns what was still
        waiting, for the owner to answer."""
        left: list[Request] = []
        self.receive_waiting(left)
        self._receive.close()
        return left

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(self._requests, self._carried, self.missed)
