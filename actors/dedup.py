"""The 5-minute deduplication window of a FIFO queue or topic. Pure: times are passed in.

A key (a MessageDeduplicationId, prefixed by its group when deduplication is scoped to groups) is
remembered from the moment a send is prepared, so a duplicate arriving before the original is
committed is caught too; the original's seq is filled in once stored. Windows that have passed are
dropped in order, and the highest seq among them is reported so the store can drop its rows too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import msgspec

from dovecote.storage.records import DedupEntry

from .limits import DEDUP_WINDOW_S



class Seen(msgspec.Struct, gc=False):
    expires_at: float
    message_id: str
    seq: int  # 0 until the original is stored


class DedupWindow:
    def __init__(self, per_group: bool) -> None:
        self.per_group = per_group
        self._seen: dict[str, Seen] = {}
        self._order: deque[str] = deque()  # keys in the order they were remembered
        self.closed_seq = 0  # the highest seq whose window has passed
        self.recorded_seq = 0  # ... of which the store has been told

    def key(self, dedup_id: str, group_id: str) -> str:
        return f"{group_id}\x00{dedup_id}" if self.per_group else dedup_id

    def seen(self, key: str, now: float) -> Seen | None:
        seen = self._seen.get(key)
        return seen if seen is not None and seen.expires_at > now else None

    def remember(self, key: str, message_id: str, now: float, seq: int = 0) -> None:
        self._seen[key] = Seen(now + DEDUP_WINDOW_S, message_id, seq)
        self._order.append(key)

    def stored(self, key: str, message_id: str, seq: int) -> None:
        seen = self._seen.get(key)
        if seen is not None and seen.message_id == message_id:
            seen.seq = seq

    def forget(self, key: str, message_id: str) -> None:
        """The original was refused by storage: its key is free again."""
        seen = self._seen.get(key)
        if seen is not None and seen.message_id == message_id:
            del self._seen[key]

    def stored_seq(self, key: str, message_id: str) -> int:
        """The seq of the original a duplicate repeats; 0 if storage refused it."""
        seen = self._seen.get(key)
        return seen.seq if seen is not None and seen.message_id == message_id else 0

    def restore(self, entries: Iterable[tuple[int, DedupEntry]], now: float, elapsed_ms: Callable[[int], int]) -> None:
        """Entries from the store (oldest first); those whose window has passed are only counted.
        Their ages are worked out by `elapsed_ms` (stored_time.elapsed_since)."""
        for seq, entry in entries:
            age_s = elapsed_ms(entry.at_ms) / 1000
            if age_s >= DEDUP_WINDOW_S:
                self.closed_seq = seq
                continue
            key = self.key(entry.dedup_id, entry.group_id)
            self._seen[key] = Seen(now + DEDUP_WINDOW_S - age_s, entry.message_id, seq)
            self._order.append(key)

    def clear(self) -> None:
        self._seen.clear()
        self._order.clear()

    def expire(self, now: float) -> int | None:
        """Drop keys whose window has passed; the seq through which the store may drop its rows,
        when that has moved on since last told."""
        order, seen_by_key = self._order, self._seen
        while order:
            seen = seen_by_key.get(order[0])
            if seen is not None and seen.expires_at > now:
                break
            key = order.popleft()
            if seen is not None:
                del seen_by_key[key]
                self.closed_seq = max(self.closed_seq, seen.seq)
        if self.closed_seq > self.recorded_seq:
            self.recorded_seq = self.closed_seq
            return self.closed_seq
        return None

    def __bool__(self) -> bool:
        return bool(self._order)
