"""Which ready message a queue delivers next: one heap of seqs per message group, lowest first within
a group, groups taken in turn. Pure.

A standard queue rotates groups after every message (fair queues: one group's backlog cannot starve
the others; a queue without groups has the one group ""). A FIFO queue (`fifo=True`) takes a
group's messages in a row rather than rotating, and a locked group (one with messages in flight)
is out of the rotation until unlocked; locked groups leave the rotation lazily, when they reach
its front.
"""

from __future__ import annotations

import heapq
from collections import deque


class ReadySet:
    """Ready seqs per message group; see the module docstring."""

    __slots__ = ("_fifo", "_heaps", "_locks", "_rotating", "_rotation")

    def __init__(self, fifo: bool = False) -> None:
        self._heaps: dict[str, list[int]] = {}
        self._rotation: deque[str] = deque()
        self._rotating: set[str] = set()
        self._fifo = fifo
        self._locks: dict[str, int] = {}  # group -> messages in flight

    def push(self, seq: int, group: str) -> None:
        heap = self._heaps.get(group)
        if heap is None:
            self._heaps[group] = [seq]
            self._enter_rotation(group)
        else:
            heapq.heappush(heap, seq)

    def push_all(self, seqs: list[int], group: str) -> None:
        """push() of many seqs of one group at once (a restored queue's): one heapify."""
        if not seqs:
            return
        heap = self._heaps.get(group)
        if heap is None:
            self._heaps[group] = heap = []
            self._enter_rotation(group)
        heap.extend(seqs)
        heapq.heapify(heap)

    def pop(self) -> int:
        """The next group's lowest seq; on a standard queue that group then waits for every
        other group's turn. Only when the set is true."""
        group = self._rotation[0]
        heap = self._heaps[group]
        seq = heapq.heappop(heap)
        if not heap:
            self._rotation.popleft()
            self._rotating.discard(group)
            del self._heaps[group]
        elif not self._fifo:
            self._rotation.rotate(-1)
        return seq

    def lock(self, group: str) -> None:
        self._locks[group] = self._locks.get(group, 0) + 1

    def unlock(self, group: str) -> None:
        count = self._locks[group] - 1
        if count:
            self._locks[group] = count
        else:
            del self._locks[group]
            if group in self._heaps:
                self._enter_rotation(group)

    def _enter_rotation(self, group: str) -> None:
        if group not in self._locks and group not in self._rotating:
            self._rotation.append(group)
            self._rotating.add(group)

    def clear(self) -> None:
        self._heaps.clear()
        self._rotation.clear()
        self._rotating.clear()
        self._locks.clear()

    def __bool__(self) -> bool:
        rotation = self._rotation
        while rotation and rotation[0] in self._locks:
            self._rotating.discard(rotation.popleft())
        return bool(rotation)
