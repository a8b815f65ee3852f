"""Mailboxes: one-shot reply slots (how a task that sent a request waits for its answer), and
taking what already waits in an actor's mailbox."""

from __future__ import annotations

import math
from typing import Generic, TypeVar

import trio

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


def take_waiting(mailbox: trio.MemoryReceiveChannel[T], into: list[T], limit: float = math.inf) -> None:
    """Append what is already in the mailbox, without waiting, until `into` holds `limit`."""
    while len(into) < limit:
        try:
            into.append(mailbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return
