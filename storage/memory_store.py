"""The memory store: the same contract as the LMDB store, kept in dicts, with fault hooks.

It commits inline (no worker thread), so tests on trio's autojump clock see no time pass during a
commit. `space_bytes` simulates a disk of that size (the reserve counts against it), and
`fail_next_commits` makes the next commits raise a given error.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from .store import Store, StorageFull
from .tables import TABLES, Change, Delete, DeleteRange, Put


class MemoryStore(Store):
    commits_in_thread = False

    def __init__(self, *, space_bytes: int | None = None, reserve_bytes: int = 0) -> None:
        self._tables: dict[str, dict[bytes, bytes]] = {name: {} for name in TABLES}
        self.space_bytes = space_bytes
        self.reserve_bytes = reserve_bytes
        self._reserve_held = reserve_bytes > 0
        self.fail_next_commits: list[Exception] = []
        self.commit_count = 0
        self.format_version = self.check_format(writable=True)
        self.commit_count = 0  # the writer's commits: recording the format above is not one

    def _sorted_keys(self, table: str) -> list[bytes]:
        return sorted(self._tables[table])

    def _scan(
        self, table: str, first: bytes | None = None, last: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        ordered = self._sorted_keys(table)
        lo = 0 if first is None else bisect.bisect_left(ordered, first)
        hi = len(ordered) if last is None else bisect.bisect_right(ordered, last)
        selected = ordered[lo:hi]
        data = self._tables[table]
        for key in reversed(selected) if reverse else selected:
            if key in data:
                yield key, data[key]

    def _get_many(self, table: str, keys_: Sequence[bytes]) -> list[bytes | None]:
        data = self._tables[table]
        return [data.get(key) for key in keys_]

    def used_bytes(self, tables: dict[str, dict[bytes, bytes]] | None = None) -> int:
        held = self.reserve_bytes if self._reserve_held else 0
        tables = self._tables if tables is None else tables
        return held + sum(len(k) + len(v) for t in tables.values() for k, v in t.items())

    def _apply(self, log_puts: list[tuple[bytes, bytes]], changes: list[Change]) -> None:
        if self.fail_next_commits:
            raise self.fail_next_commits.pop(0)
        staged = {name: dict(table) for name, table in self._tables.items()}
        for key, value in log_puts:
            staged["log"][key] = value
        for change in changes:
            table = staged[change.table]
            if type(change) is Put:
                table[change.key] = change.value
            elif type(change) is Delete:
                table.pop(change.key, None)
            elif type(change) is DeleteRange:
                for key in [k for k in table if change.first_key <= k <= change.last_key]:
                    del table[key]
        if self.space_bytes is not None and self.used_bytes(staged) > self.space_bytes:
            raise StorageFull("the simulated disk is full")
        self._tables = staged
        self.commit_count += 1

    def close(self) -> None:
        pass

    def release_reserve(self) -> bool:
        held, self._reserve_held = self._reserve_held, False
        return held

    def restore_reserve(self) -> bool:
        if self._reserve_held or self.reserve_bytes == 0:
            return True
        if self.space_bytes is not None and self.used_bytes() + self.reserve_bytes > self.space_bytes:
            return False
        self._reserve_held = True
        return True

    def room_bytes(self) -> int:
        if self.space_bytes is None:
            return super().room_bytes()
        reserve_missing = 0 if self._reserve_held else self.reserve_bytes
        return self.space_bytes - self.used_bytes() - reserve_missing
