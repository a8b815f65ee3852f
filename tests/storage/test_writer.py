"""The log writer: group commit, failure reporting, history trimming (memory store, autojump)."""

import threading

import pytest
import trio

from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import MessageSent
from dovecote.storage.store import StorageError
from dovecote.storage.framing import frame
from dovecote.storage.records import encode_record
from dovecote.storage.writer import COMMIT_RECORDS_BUCKETS, FULL_DISK, Histogram, LogWriter, WriterOverloaded

WALL = 1_700_000_000_000


def sent(seq, at_ms=WALL):
    return MessageSent(at_ms, 1, "q", seq, 0, f"id-{seq}", "s", "body", {})


class ThreadedMemoryStore(MemoryStore):
    """Commits in a worker thread, as the LMDB store does, so appends pile up meanwhile."""

    commits_in_thread = True


async def test_concurrent_appends_share_commits():
    appends = 200
    store = ThreadedMemoryStore()
    writer = LogWriter(store, wall_ms=lambda: WALL)
    lsns = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as appenders:
            for seq in range(1, appends + 1):
                appenders.start_soon(lambda seq=seq: _append(writer, seq, lsns))
        writer.close()
    assert sorted(lsns) == list(range(1, appends + 1))
    # Every append is queued before the first commit ends, so group commit needs one or two commits;
    # the bound leaves room for any scheduling order and still fails if appends mostly commit alone.
    assert store.commit_count <= appends // 10, f"{store.commit_count} commits for {appends} concurrent appends"
    assert writer.statistics().commits == store.commit_count
    assert writer.statistics().records == appends


async def _append(writer, seq, lsns):
    await writer.append([sent(seq)])
    lsns.append(seq)


async def test_a_failed_commit_fails_every_entry_in_it_and_consumes_no_lsn(autojump_clock):
    store = MemoryStore()
    writer = LogWriter(store, wall_ms=lambda: WALL)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        store.fail_next_commits.append(StorageError("boom"))
        first = writer.submit([sent(1)], needs_space=True)
        second = writer.submit([sent(2)], needs_space=False)
        for entry in (first, second):
            with pytest.raises(StorageError, match="boom"):
                await entry.wait()
        assert await writer.append([sent(3)]) == 1
        writer.close()


async def test_a_full_inbox_is_an_overload_error(autojump_clock):
    writer = LogWriter(MemoryStore(), wall_ms=lambda: WALL, inbox_capacity=2)
    writer.submit([sent(1)], needs_space=False)
    writer.submit([sent(2)], needs_space=False)
    with pytest.raises(WriterOverloaded):
        writer.submit([sent(3)], needs_space=False)


async def test_history_older_than_the_window_is_trimmed(autojump_clock):
    store = MemoryStore()
    now = [WALL]
    writer = LogWriter(store, wall_ms=lambda: now[0], history_ms=60_000, trim_interval_s=1.0, trim_chunk_records=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.append([sent(i, at_ms=WALL) for i in range(10)])
        await writer.append([sent(10, at_ms=WALL + 50_000)])
        now[0] = WALL + 70_000
        await trio.sleep(5)
        assert [lsn for lsn, _ in store.read_log()] == [11]
        stats = writer.statistics()
        assert stats.trimmed == 10
        # two commits and the trims' write transactions (4 + 4 + 2 records); the memory store does not sync
        assert (stats.commits, stats.write_transactions, stats.fsyncs) == (2, 5, 0)
        writer.close()


async def test_statistics_count_what_was_stored(autojump_clock):
    """Records and commits as stored (a batch of refused sends stores nothing), the records-per-
    commit and latency histograms, and the log bytes appended."""
    store = MemoryStore()
    writer = LogWriter(store, wall_ms=lambda: WALL)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.append([sent(1), sent(2), sent(3)])
        await writer.append([sent(4)])
        writer._storage_full = FULL_DISK  # as after a full disk
        with pytest.raises(StorageError):
            await writer.append([sent(5)], needs_space=True)
        writer.close()
    stats = writer.statistics()
    assert (stats.commits, stats.records, stats.write_transactions) == (2, 4, 2)
    assert stats.commit_records.counts[:3] == (1, 0, 1) and sum(stats.commit_records.counts) == 2  # 1 and 3 (<= 4)
    assert stats.commit_records.sum == 4 and stats.commit_records.bounds == COMMIT_RECORDS_BUCKETS
    assert sum(stats.commit_seconds.counts) == 2 and stats.commit_seconds.sum >= 0
    stored = [frame(encode_record(record)) for _, record in store.read_log()]
    assert stats.written_bytes == sum(8 + len(value) for value in stored)


def test_a_histogram_counts_each_value_in_the_first_bucket_that_holds_it():
    histogram = Histogram((1, 2, 5))
    for value in (0, 1, 1.5, 2, 5, 6, 100):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.counts == (2, 2, 1, 2) and snapshot.sum == 115.5
    histogram.observe(3)
    assert snapshot.counts == (2, 2, 1, 2)  # a snapshot does not change


def test_clock_frames_move_times_onto_the_clock_as_it_is_set_now():
    from dovecote.storage.records import TRUSTED_SINCE_MS
    from dovecote.storage.writer import ClockFrames

    year = 365 * 86_400_000
    frames = ClockFrames(start_lsn=10, start_wall_ms=WALL, steps_ms=0)
    assert frames.shift(11, WALL) == 0
    frames.note(next_lsn=20, steps_ms=10 * year)  # stepped ten years ahead before LSN 20 was written
    assert frames.shift(19, WALL) == 10 * year  # written before the step: moved with the clock
    assert frames.shift(20, WALL + 10 * year) == 0
    frames.note(next_lsn=30, steps_ms=-10 * year)  # then twenty years back
    assert (frames.shift(19, WALL), frames.shift(25, WALL), frames.shift(30, WALL)) == (-10 * year, -20 * year, 0)
    # Written before this start: a clock set since (from 1970) makes the age unknown, counted from
    # the start; a clock that ran on, or went back, leaves the times as they are.
    assert frames.shift(5, 5_000) == WALL - 5_000
    assert frames.shift(5, WALL - year) == 0
    booted_in_1970 = ClockFrames(start_lsn=10, start_wall_ms=5_000, steps_ms=0)
    assert booted_in_1970.shift(5, TRUSTED_SINCE_MS + year) == 5_000 - (TRUSTED_SINCE_MS + year)


async def test_a_wall_clock_step_does_not_trim_the_archive(autojump_clock):
    """Archived publishes run out by time that passed: a step of ten years ahead trims none."""
    from dovecote.storage.records import Published

    year, day = 365 * 86_400_000, 86_400_000
    steps = [0]

    def wall_ms():
        return WALL + steps[0] + int(trio.current_time() * 1000)

    store = MemoryStore()
    writer = LogWriter(store, wall_ms=wall_ms, wall_steps_ms=lambda: steps[0], trim_interval_s=3600)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.append([Published(wall_ms(), 1, "t.fifo", 0, f"id{i}", "m", "", {}, archive_until_ms=wall_ms() + day) for i in range(3)])
        steps[0] = 10 * year
        await trio.sleep(3 * 3600)  # several trims
        assert len(store.read_archive(1, 0, 10)) == 3
        await writer.append([Published(wall_ms(), 1, "t.fifo", 0, "new", "m", "", {}, archive_until_ms=wall_ms() + 2 * day)])
        await trio.sleep(day / 1000)  # the first three run out, the one archived after the step does not
        writer.close()
    assert [p.message_id for p in store.read_archive(1, 0, 10)] == ["new"]


class ThreadNotingStore(ThreadedMemoryStore):
    """Notes the thread each commit and trim runs on."""

    def __init__(self):
        super().__init__()
        self.threads = []

    def commit(self, batches, fallback_owners=()):
        self.threads.append(threading.current_thread())
        return super().commit(batches, fallback_owners)

    def trim_history(self, *args):
        self.threads.append(threading.current_thread())
        return super().trim_history(*args)


async def test_every_commit_and_trim_runs_on_one_writer_thread_that_ends_with_the_writer():
    """One persistent thread, not one from trio's cache per commit: LMDB's transactions stay on
    the thread that began them, and a commit costs one wake-up each way."""
    store = ThreadNotingStore()
    writer = LogWriter(store, wall_ms=lambda: WALL, trim_interval_s=0.001)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for seq in range(1, 21):
            await writer.append([sent(seq)])
            await trio.sleep(0.002)  # trims run between commits
        writer.close()
    kinds = {thread.name for thread in store.threads}
    assert kinds == {"dovecote-writer"}, kinds
    assert len({id(thread) for thread in store.threads}) == 1
    assert store.commit_count == 20 and len(store.threads) > 20  # trims too
    store.threads[0].join(timeout=5)
    assert not store.threads[0].is_alive()


async def test_a_commit_in_the_writer_thread_is_not_abandoned_when_the_writer_is_cancelled():
    release = threading.Event()

    class SlowStore(ThreadedMemoryStore):
        def commit(self, batches, fallback_owners=()):
            release.wait(5)
            return super().commit(batches, fallback_owners)

    store = SlowStore()
    writer = LogWriter(store, wall_ms=lambda: WALL)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        entry = writer.submit([sent(1)], needs_space=True)
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
        trio.lowlevel.current_trio_token().run_sync_soon(release.set)
    assert entry.done.is_set() and entry.error is None
    assert store.last_lsn == 1


@pytest.mark.parametrize("delay_s, commits", [(0.0, 5), (0.010, 1)])
async def test_the_commit_window_gathers_what_arrives_within_it_into_one_commit(autojump_clock, delay_s, commits):
    """Five appends 1 ms apart: without a window each commits alone; a 10 ms window takes them
    all into one commit, and no one is answered before it."""
    store = MemoryStore()
    writer = LogWriter(store, wall_ms=lambda: WALL, commit_delay_s=delay_s)
    answered = []
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        started = trio.current_time()
        entries = []
        for seq in range(1, 6):
            entries.append(writer.submit([sent(seq)], needs_space=True))
            await trio.sleep(0.001)
        for entry in entries:
            await entry.wait()
            answered.append(trio.current_time() - started)
        writer.close()
    assert store.commit_count == commits
    assert writer.statistics().commits == commits and writer.statistics().records == 5
    if delay_s:
        assert min(answered) >= delay_s  # the first waited out the window
        assert max(answered) <= delay_s + 0.001
