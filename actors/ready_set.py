"""Which ready message a queue delivers next: one heap of seqs per message group, lowest first within
a group. Pure.

A standard queue (`ReadySet`) rotates groups after every message (fair queues: one group's backlog
cannot starve the others; a queue without groups has the one group "").

A FIFO queue (`FifoReadySet`) follows what AWS is seen to do (the AWS-validated FIFO tests of
LocalStack's tests/aws/services/sqs/test_sqs.py, and its pull request 13386):

- a group delivers its ready messages older than its oldest message in flight: a message that
  became visible again (its visibility timeout ended or was shortened) is delivered although later
  messages of its group are still in flight, and nothing after an in-flight message is;
- a receive takes as many messages of one group as it can, in order, before the next group;
- groups are served in the order their next message became ready: when it was sent for a message
  never received, when it became visible again for one that was. So after a receive the groups it
  took from come after the others, and a group whose in-flight messages were deleted keeps its
  place by its next message's send.

Entries of the group order are dropped lazily: one whose group has a newer place, or may not
deliver, is skipped when it reaches the front (a group comes back when it may deliver again).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque


class ReadySet:
    """Ready seqs per message group of a standard queue; see the module docstring."""

    __slots__ = ("_heaps", "_rotating", "_rotation")

    def __init__(self) -> None:
        self._heaps: dict[str, list[int]] = {}
        self._rotation: deque[str] = deque()
        self._rotating: set[str] = set()

    def push(self, seq: int, group: str, returned: bool = False) -> None:
        """A message became ready (whether it `returned` after a receive does not change its turn here)."""
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

    def _enter_rotation(self, group: str) -> None:
        self._rotation.append(group)
        self._rotating.add(group)

    def pop(self) -> int:
        """The next group's lowest seq; that group then waits for every other group's turn. Only
        when the set is true."""
        group = self._rotation[0]
        heap = self._heaps[group]
        seq = heapq.heappop(heap)
        if not heap:
            self._rotation.popleft()
            self._rotating.discard(group)
            del self._heaps[group]
        else:
            self._rotation.rotate(-1)
        return seq

    def clear(self) -> None:
        self._heaps.clear()
        self._rotation.clear()
        self._rotating.clear()

    def __bool__(self) -> bool:
        return bool(self._rotation)


Stamp = tuple[int, int]  # when a message became ready: (seq, 0) for a send, (latest seq, n) for a return


class FifoReadySet:
    """Ready seqs per message group of a FIFO queue, and the seqs in flight that hold each group
    back; see the module docstring."""

    __slots__ = ("_heaps", "_in_flight", "_order", "_places", "_returned", "_returns", "_latest_seq", "_serving")

    def __init__(self) -> None:
        self._heaps: dict[str, list[int]] = {}  # group -> its ready seqs
        self._in_flight: dict[str, set[int]] = {}  # group -> its seqs in flight (or moving)
        self._order: list[tuple[Stamp, str]] = []  # groups by their next message's stamp
        self._places: dict[str, Stamp] = {}  # group -> the stamp of its current entry in _order
        # Stamps of ready messages that were received before (sends are stamped by their seq, so
        # only these need keeping): a return counts from the latest send ready by then.
        self._returned: dict[int, Stamp] = {}
        self._returns = itertools.count(1)
        self._latest_seq = 0
        self._serving: str | None = None  # the group the current receive takes from

    def push(self, seq: int, group: str, returned: bool = False) -> None:
        """A message became ready: sent (or its delay ended), or `returned` visible after a receive."""
        if returned:
            self._returned[seq] = (self._latest_seq, next(self._returns))
        elif seq > self._latest_seq:
            self._latest_seq = seq
        heap = self._heaps.get(group)
        if heap is None:
            self._heaps[group] = [seq]
        else:
            heapq.heappush(heap, seq)
        if self._heaps[group][0] == seq:  # the group's next message: its place follows it
            self._place(group)

    def start_receive(self) -> None:
        """The next pop chooses its group afresh (within a receive, pops stay with their group).
        The group the last receive took from last is placed by its new next message now: only it
        can have messages left that it may deliver (any group before it was emptied or held back)."""
        serving, self._serving = self._serving, None
        if serving is not None and serving in self._heaps:
            self._place(serving)

    def pop(self) -> int:
        """The lowest seq of the group this receive takes from, or of the group first in order.
        Only when the set is true."""
        group = self._serving
        if group is None or not self._may_deliver(group):
            group = self._front()
            assert group is not None
        heap = self._heaps[group]
        seq = heapq.heappop(heap)
        self._returned.pop(seq, None)
        self._serving = group
        if not heap:
            del self._heaps[group]
            self._places.pop(group, None)
        return seq

    def lock(self, group: str, seq: int) -> None:
        """`seq` of `group` went in flight (or is moving): the group's later messages wait."""
        in_flight = self._in_flight.get(group)
        if in_flight is None:
            self._in_flight[group] = {seq}
        else:
            in_flight.add(seq)

    def unlock(self, group: str, seq: int) -> None:
        in_flight = self._in_flight[group]
        in_flight.discard(seq)
        if not in_flight:
            del self._in_flight[group]
        heap = self._heaps.get(group)
        if heap and seq < heap[0]:  # (one after the group's next message held nothing back)
            self._place(group)

    def clear(self) -> None:
        for table in (self._heaps, self._in_flight, self._places, self._returned):
            table.clear()
        self._order.clear()
        self._serving = None

    def __bool__(self) -> bool:
        serving = self._serving
        return (serving is not None and self._may_deliver(serving)) or self._front() is not None

    def _may_deliver(self, group: str) -> bool:
        heap = self._heaps.get(group)
        if not heap:
            return False
        in_flight = self._in_flight.get(group)
        return in_flight is None or heap[0] < min(in_flight)

    def _place(self, group: str) -> None:
        """Give a group that may deliver its place by its next message's stamp."""
        if self._may_deliver(group):
            head = self._heaps[group][0]
            stamp = self._returned.get(head, (head, 0))
            if self._places.get(group) != stamp:
                self._places[group] = stamp
                heapq.heappush(self._order, (stamp, group))

    def _front(self) -> str | None:
        order, places = self._order, self._places
        while order:
            stamp, group = order[0]
            if places.get(group) == stamp:
                if self._may_deliver(group):
                    return group
                del places[group]  # held back: placed again when it may deliver
            heapq.heappop(order)
        return None
