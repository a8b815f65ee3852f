"""The log writer: the one task that owns every write transaction.

Theory of operation
-------------------
Callers `submit` a list of records and await the returned entry. The writer takes every entry that
is pending (group commit: while one commit is running in a worker thread, the next batch queues up),
commits them in one transaction, and only then wakes each caller. A commit is never abandoned on
cancel: the worker thread runs to completion, so a caller that got a success reply knows its records
are on disk. The worker is one thread for the writer's life (CommitThread), which runs every
commit and trim of a store that commits in a thread: handing it a job and being woken with the
result costs a wake-up each way and nothing else, where a thread from trio's cache per commit costs
a limiter, a context copy and two more task switches (about 60 µs of the 0.7 ms a lone request took).
With a commit window (commit_delay_s, the operator's `--commit-delay-ms`) the writer, having taken
an entry, waits up to that long for more before it commits: fewer, fuller commits, each request
answered up to that much later, never before its commit.

Space: when the disk fills or the map reaches its limit, the writer refuses entries that
`need_space` (sends) from then on, the batch's own included, and retries the rest (receives,
deletes); for a full disk it gives up the store's reserve first, so they go on into it. It alone
knows whether storage is full and why (a snapshot shows it), and logs one line when that starts and
one when it ends. Every few seconds it asks the store for its room; once `resume_free_bytes` is free
and the reserve is taken back, sends are accepted again. The margin is the hysteresis that keeps a
store at its limit from flipping between accepting and refusing as each send fills what the last
delete freed. Between batches it trims log history older than the retention window, a bounded chunk
at a time.

For /metrics it counts, as it goes, the commits and records stored (a batch whose sends were all
refused stores nothing and is not a commit), each commit's latency in real time (perf_counter,
from handing the batch to the store to its return, the worker thread's wait and the fsync
included) and its records; the store counts its write transactions and the log bytes it appended.
"""

from __future__ import annotations

import bisect
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import trio

from . import crash_points
from .records import TRUSTED_SINCE_MS, Record
from .store import MapFull, Store, StorageError, StorageFull

log = logging.getLogger("dovecote.storage")

T = TypeVar("T")


class WriterOverloaded(StorageError):
    """The writer's inbox is full; the caller should retry shortly."""


class SendsRefused(StorageFull):
    """Storage is out of space; sends are refused until space returns."""


class AppendEntry:
    """One caller's records and the one-shot slot its outcome arrives in."""

    __slots__ = ("records", "needs_space", "done", "error", "last_lsn", "on_done", "sealed_for")

    def __init__(
        self, records: Sequence[Record], needs_space: bool, on_done: Callable[[], None] | None = None, sealed_for: int = 0
    ) -> None:
        self.records = records
        self.needs_space = needs_space
        self.sealed_for = sealed_for
        self.done = trio.Event()
        self.error: Exception | None = None
        self.last_lsn = 0
        self.on_done = on_done

    def settle(self, error: Exception | None = None, last_lsn: int = 0) -> None:
        """Writer only: record the outcome, wake the waiter, call on_done (which must not block)."""
        self.error = error
        self.last_lsn = last_lsn
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    async def wait(self) -> int:
        """Block until committed; return the log's last LSN after the commit, or raise the
        commit's StorageError. `records` then holds the records as stored."""
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.last_lsn


# Commit latency on a small device's flash and records per group commit, as /metrics shows them.
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
COMMIT_RECORDS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class HistogramSnapshot(NamedTuple):
    bounds: tuple[float, ...]  # each bucket's upper bound (inclusive), ascending; one more bucket above the last
    counts: tuple[int, ...]  # observations per bucket (not cumulative): len(bounds) + 1 of them
    sum: float


class Histogram:
    """Observations counted into fixed buckets, with their sum: what a Prometheus histogram shows.
    Changed by one task; readers take a snapshot."""

    __slots__ = ("bounds", "_counts", "_sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self.bounds, tuple(self._counts), self._sum)


# Why storage is full, as /health and /metrics name it.
FULL_DISK = "disk"
FULL_MAP = "map"  # the map at max_data_bytes


class WriterStatistics(NamedTuple):
    last_lsn: int
    commits: int
    records: int  # committed
    storage_full: str  # "" while sends are accepted, else FULL_DISK or FULL_MAP
    trimmed: int
    write_transactions: int  # commits and trims
    fsyncs: int  # write transactions made durable with fsync (0 unless the store syncs each one)
    written_bytes: int  # log records appended, framed, with their keys
    commit_seconds: HistogramSnapshot  # from handing a batch to the store to its commit returning
    commit_records: HistogramSnapshot  # records per commit

    @property
    def accepting_sends(self) -> bool:
        return not self.storage_full


class ClockFrames:
    """Which setting of the wall clock each record's times were read off, so that log history and
    topic archives are trimmed by time that passed, not by a clock that was stepped (promise 11).

    While the broker runs, the clock's steps are noted against the next LSN to be written; a record
    written before a step has its times moved by the steps since. A record written before this
    start on a clock that has been set since (one side of TRUSTED_SINCE_MS, the start the other:
    a device that booted in 1970) has an unknown age, counted from the start, as stored_time.py
    counts it; otherwise its times stand, and a clock set back while stopped only keeps it longer.
    Exact to within the commit in flight when a step is first seen. Pure; the writer's task only.
    """

    def __init__(self, start_lsn: int, start_wall_ms: int, steps_ms: int) -> None:
        self._start_lsn = start_lsn
        self._start_wall_ms = start_wall_ms
        self._first_lsns = [start_lsn + 1]
        self._steps_ms = [steps_ms]

    def note(self, next_lsn: int, steps_ms: int) -> None:
        """The clock's steps so far, before LSNs from next_lsn on are written."""
        if steps_ms == self._steps_ms[-1]:
            return
        if next_lsn == self._first_lsns[-1]:  # nothing written since the last step
            self._steps_ms[-1] = steps_ms
        else:
            self._first_lsns.append(next_lsn)
            self._steps_ms.append(steps_ms)

    def shift(self, lsn: int, at_ms: int) -> int:
        """What to add to a record's times to read them on the clock as it is set now."""
        if lsn <= self._start_lsn:
            if (at_ms >= TRUSTED_SINCE_MS) is not (self._start_wall_ms >= TRUSTED_SINCE_MS):
                return self._start_wall_ms - at_ms
            return 0
        return self._steps_ms[-1] - self._steps_ms[bisect.bisect_right(self._first_lsns, lsn) - 1]


class CommitThread:
    """One thread that runs the writer's store jobs in turn, for as long as the writer runs; a
    write transaction then always begins, commits and ends on the same thread, as LMDB requires.
    `run` is awaited by one task at a time (the writer's) and cannot be cancelled while its job
    runs: a commit is never abandoned."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="dovecote-writer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    async def run(self, function: Callable[..., T], *args: object) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        token, done = trio.lowlevel.current_trio_token(), trio.Event()
        outcome: list = []  # [value] or [None, exception], from the thread

        def job() -> None:
            try:
                outcome.append(function(*args))
            except BaseException as error:
                outcome.extend((None, error))
            token.run_sync_soon(done.set)

        self._jobs.put(job)
        with trio.CancelScope(shield=True):
            await done.wait()
        if len(outcome) == 2:
            raise outcome[1]
        return outcome[0]

    def stop(self) -> None:
        """The thread ends once the job it runs, if any, is done."""
        self._jobs.put(None)


class LogWriter:
    def __init__(
        self,
        store: Store,
        *,
        wall_ms: Callable[[], int],
        wall_steps_ms: Callable[[], int] = lambda: 0,
        inbox_capacity: int = 8192,
        max_batch_records: int = 4096,
        history_ms: int | None = 24 * 3600 * 1000,
        commit_delay_s: float = 0.0,
        trim_interval_s: float = 1.0,
        trim_chunk_records: int = 2000,
        space_check_interval_s: float = 2.0,
        resume_free_bytes: int = 16 << 20,
    ) -> None:
        self._store = store
        self._wall_ms = wall_ms
        self._wall_steps_ms = wall_steps_ms
        self._frames = ClockFrames(store.last_lsn, wall_ms(), wall_steps_ms())
        self._send, self._receive = trio.open_memory_channel[AppendEntry](inbox_capacity)
        self._max_batch_records = max_batch_records
        self._commit_delay_s = commit_delay_s
        self._history_ms = history_ms
        self._trim_interval_s = trim_interval_s
        self._trim_chunk_records = trim_chunk_records
        self._space_check_interval_s = space_check_interval_s
        self._resume_free_bytes = resume_free_bytes
        self._storage_full = ""
        self._commits = 0
        self._records = 0
        self._trimmed = 0
        self._commit_seconds = Histogram(COMMIT_SECONDS_BUCKETS)
        self._commit_records = Histogram(COMMIT_RECORDS_BUCKETS)
        self._thread: CommitThread | None = None  # while run() runs, for a store that commits in a thread

    def submit(
        self, records: Sequence[Record], *, needs_space: bool, on_done: Callable[[], None] | None = None, sealed_for: int = 0
    ) -> AppendEntry:
        """Queue records for the next commit without blocking. sealed_for: the topic whose
        encryption at rest applies to the messages among them whose queue does not encrypt (0:
        none). Raises WriterOverloaded when the inbox is full, trio.ClosedResourceError after close()."""
        entry = AppendEntry(records, needs_space, on_done, sealed_for)
        try:
            self._send.send_nowait(entry)
        except trio.WouldBlock:
            raise WriterOverloaded("the log writer is overloaded; retry") from None
        return entry

    async def append(self, records: Sequence[Record], *, needs_space: bool = False) -> int:
        return await self.submit(records, needs_space=needs_space).wait()

    def close(self) -> None:
        """No more entries; run() commits what is queued and returns."""
        self._send.close()

    def statistics(self) -> WriterStatistics:
        """A snapshot, read without waiting from any task."""
        store = self._store
        transactions = store.write_transactions
        return WriterStatistics(
            store.last_lsn, self._commits, self._records, self._storage_full, self._trimmed, transactions,
            transactions if store.syncs_each_commit else 0, store.written_bytes,
            self._commit_seconds.snapshot(), self._commit_records.snapshot(),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._thread = CommitThread() if self._store.commits_in_thread else None
        try:
            await self._serve(task_status)
        finally:
            if self._thread is not None:
                self._thread.stop()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        next_trim = trio.current_time() + self._trim_interval_s
        next_space_check = math.inf
        while True:
            entry = None
            with trio.move_on_at(min(next_trim, next_space_check)):
                try:
                    entry = await self._receive.receive()
                except trio.EndOfChannel:
                    return
            if entry is not None:
                await self._commit_pending(entry)
            now = trio.current_time()
            if not self._storage_full:
                next_space_check = math.inf
            elif now >= next_space_check:
                self._resume_if_room()
                next_space_check = now + self._space_check_interval_s
            else:
                next_space_check = min(next_space_check, now + self._space_check_interval_s)
            if now >= next_trim:
                trimmed = await self._trim()
                more_waiting = trimmed >= self._trim_chunk_records
                next_trim = now + (0 if more_waiting else self._trim_interval_s)

    async def _gather(self, first: AppendEntry) -> list[AppendEntry]:
        """The entries for one commit: first, what is pending, and what arrives within the commit
        window (commit_delay_s after first), up to max_batch_records."""
        batch = [first]
        count = len(first.records)
        window_ends = trio.current_time() + self._commit_delay_s
        while count < self._max_batch_records:
            try:
                entry = self._receive.receive_nowait()
            except trio.EndOfChannel:
                break
            except trio.WouldBlock:
                if trio.current_time() >= window_ends:
                    break
                entry = None
                with trio.move_on_at(window_ends):
                    try:
                        entry = await self._receive.receive()
                    except trio.EndOfChannel:
                        break
                if entry is None:
                    break
            batch.append(entry)
            count += len(entry.records)
        return batch

    async def _commit_pending(self, first: AppendEntry) -> None:
        batch = await self._gather(first)
        if self._storage_full:
            batch = self._refuse_sends(batch)
        self._frames.note(self._store.last_lsn + 1, self._wall_steps_ms())
        started = time.perf_counter()
        try:
            batch, stored_batches = await self._commit_with_space_handling(batch)
        except StorageError as exc:
            for entry in batch:
                if not entry.done.is_set():
                    entry.settle(error=exc)
            return
        stored_count = sum(len(stored) for stored in stored_batches)
        if stored_count:
            self._commits += 1
            self._records += stored_count
            self._commit_seconds.observe(time.perf_counter() - started)
            self._commit_records.observe(stored_count)
        crash_points.reached("before-reply")
        for entry, stored in zip(batch, stored_batches):
            entry.records = stored  # as stored: seqs stamped with their LSNs
            entry.settle(last_lsn=self._store.last_lsn)

    def _refuse_sends(self, batch: list[AppendEntry]) -> list[AppendEntry]:
        kept = []
        for entry in batch:
            if entry.needs_space:
                entry.settle(error=SendsRefused("storage is full: sends are refused until space returns"))
            else:
                kept.append(entry)
        return kept

    async def _commit_with_space_handling(self, batch: list[AppendEntry]) -> tuple[list[AppendEntry], list[list[Record]]]:
        """Commit the batch; when storage is full, refuse its sends and retry the rest while that
        changes something (sends dropped, the reserve given up). Returns the entries committed and
        their records as stored; raises with the entries not settled yet still to be told."""
        released_reserve = False
        while batch:
            try:
                fallback_owners = [entry.sealed_for for entry in batch] if any(entry.sealed_for for entry in batch) else []
                return batch, await self._commit([entry.records for entry in batch], fallback_owners)
            except MapFull:
                if self._store.grow_map():
                    continue
                cause, error = FULL_MAP, StorageFull("the store reached its configured size limit (max_data_bytes)")
            except StorageFull as exc:
                cause, error = FULL_DISK, exc
            if not self._storage_full:
                log.error("%s: refusing sends until %d bytes are free again", error, self._resume_free_bytes)
            self._storage_full = cause
            kept = self._refuse_sends(batch)
            changed = len(kept) < len(batch)
            # The reserve is disk: it makes room on a full disk, none in a full map.
            if cause == FULL_DISK and not released_reserve:
                released_reserve = self._store.release_reserve()
                changed = changed or released_reserve
            if not changed:
                raise error
            batch = kept
        return [], []

    def _resume_if_room(self) -> None:
        try:
            room = self._store.room_bytes()
        except OSError as exc:
            log.warning("cannot measure the storage's room: %s", exc)
            return
        if room >= self._resume_free_bytes and self._store.restore_reserve():
            self._storage_full = ""
            log.warning("storage has room again (%d bytes free); sends are accepted", room)

    async def _commit(self, batches: list[Sequence[Record]], fallback_owners: list[int]) -> list[list[Record]]:
        crash_points.reached("before-write")
        if self._thread is None:
            return self._store.commit(batches, fallback_owners)
        return await self._thread.run(self._store.commit, batches, fallback_owners)

    async def _trim(self) -> int:
        if self._history_ms is None:
            return 0
        now_ms = self._wall_ms()  # (which notices a step of the clock)
        self._frames.note(self._store.last_lsn + 1, self._wall_steps_ms())
        before_ms = now_ms - self._history_ms
        trim = self._store.trim_history
        try:
            if self._thread is not None:
                trimmed = await self._thread.run(trim, before_ms, now_ms, self._trim_chunk_records, self._frames.shift)
            else:
                trimmed = trim(before_ms, now_ms, self._trim_chunk_records, self._frames.shift)
        except StorageError as exc:
            log.warning("trimming log history failed: %s", exc)
            return 0
        self._trimmed += trimmed
        return trimmed
