"""One-shot reply slots: how a task that sent a request waits for its answer."""

from __future__ import annotations

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
