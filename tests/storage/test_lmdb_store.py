"""What only the LMDB store has: its open flags, the directory lock, map growth, a real full disk."""

import errno
import os
import subprocess
import uuid

import pytest
import trio

from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.records import MessageDeleted, MessageSent, QueueCreated
from dovecote.storage.store import DataDirectoryInUse, StorageError, StorageFull
from dovecote.storage.writer import LogWriter, SendsRefused

WALL = 1_700_000_000_000


def sent(seq, body):
    return MessageSent(WALL, 1, "q", seq, 0, f"id-{seq}", "s", body, {})


def test_open_flags_are_safe_and_a_second_open_is_refused(tmp_path):
    store = LmdbStore(tmp_path, reserve_bytes=0)
    try:
        flags = store._env.flags()
        assert flags["writemap"] is False and flags["sync"] is True and flags["metasync"] is True
        with pytest.raises(DataDirectoryInUse, match=str(os.getpid())):
            LmdbStore(tmp_path, reserve_bytes=0)
    finally:
        store.close()
    LmdbStore(tmp_path, reserve_bytes=0).close()  # the lock goes with the store


def test_os_sync_mode_turns_off_fsync(tmp_path):
    store = LmdbStore(tmp_path, sync_mode="os", reserve_bytes=0)
    try:
        assert store._env.flags()["sync"] is False and not store.syncs_each_commit
    finally:
        store.close()
    store = LmdbStore(tmp_path, reserve_bytes=0)
    try:
        assert store.syncs_each_commit  # /metrics counts its transactions as fsyncs
    finally:
        store.close()
    with pytest.raises(ValueError):
        LmdbStore(tmp_path, sync_mode="never")


async def test_the_map_grows_up_to_its_limit(tmp_path, autojump_clock):
    store = LmdbStore(tmp_path, initial_map_bytes=1 << 20, max_map_bytes=4 << 20, reserve_bytes=0)
    writer = LogWriter(store, wall_ms=lambda: WALL)
    body = "x" * 20_000
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            await writer.append([QueueCreated(WALL, 1, "q", {})])
            seq = 0
            with pytest.raises(StorageFull):
                while True:
                    seq += 1
                    await writer.append([sent(seq, body)], needs_space=True)
            assert store.map_size_bytes() == 4 << 20
            assert seq > 60  # ~1.2 MiB per 60 messages: it grew past the initial 1 MiB
            writer.close()
    finally:
        store.close()


@pytest.fixture
def tiny_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()}); "
                    "the memory store's disk-full tests still run")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_a_real_full_disk_refuses_sends_keeps_deletes_and_recovers(tiny_disk):
    store = LmdbStore(tiny_disk / "data", reserve_bytes=512 << 10)
    writer = LogWriter(store, wall_ms=lambda: WALL, space_check_interval_s=0.05, resume_free_bytes=512 << 10)
    filler = tiny_disk / "filler"
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            await writer.append([QueueCreated(WALL, 1, "q", {})])
            first_seq = None
            seq = 0
            with pytest.raises(StorageFull):
                while True:
                    seq += 1
                    lsn = await writer.append([sent(seq, uuid.uuid4().hex * 64)], needs_space=True)
                    first_seq = first_seq or lsn
                    try:  # something else on the disk fills it too
                        with open(filler, "ab") as f:
                            f.write(b"\0" * 16384)
                    except OSError:
                        pass
            assert not writer.statistics().accepting_sends
            with pytest.raises(SendsRefused):
                await writer.append([sent(seq + 1, "refused")], needs_space=True)
            # deletes still commit, from the reserve
            await writer.append([MessageDeleted(WALL, 1, "q", first_seq, "id-1", "deleted")])
            filler.unlink()
            with trio.fail_after(10):
                while not writer.statistics().accepting_sends:
                    await trio.sleep(0.05)
            last = await writer.append([sent(seq + 2, "accepted again")], needs_space=True)
            writer.close()
        assert store.read_messages(1, [last])[0].body == "accepted again"  # its seq is its LSN
        assert store.read_messages(1, [first_seq]) == [None]
    finally:
        store.close()


def test_a_full_disk_reported_as_eio_is_a_full_disk(tiny_disk):
    """LMDB reports a short write as EIO: values of many pages fill the disk mid-write. Before, that
    was a plain StorageError ("commit failed: ... Input/output error"), so no full-disk mode."""
    store = LmdbStore(tiny_disk / "data", reserve_bytes=0)
    try:
        store.commit([[QueueCreated(WALL, 1, "q", {})]])
        with pytest.raises(StorageFull) as raised:
            for seq in range(1, 1000):
                store.commit([[sent(seq, uuid.uuid4().hex * 4000)]])  # 128 KB each
        assert getattr(raised.value.__cause__, "code", None) == errno.EIO  # what LMDB said
        assert store.room_bytes() < 512 << 10  # of a 3 MiB disk
    finally:
        store.close()


def test_an_eio_with_room_on_the_disk_is_a_fault_not_a_full_disk(tmp_path, monkeypatch):
    import lmdb

    store = LmdbStore(tmp_path, reserve_bytes=0)

    def failing_device(*args, **kwargs):
        error = lmdb.Error("mdb_txn_commit: Input/output error")
        error.code = errno.EIO
        raise error

    try:
        monkeypatch.setattr(store, "_env", type("Env", (), {"begin": staticmethod(failing_device)})())
        with pytest.raises(StorageError) as raised:
            store.commit([[QueueCreated(WALL, 1, "q", {})]])
        assert not isinstance(raised.value, StorageFull) and "Input/output error" in str(raised.value)
    finally:
        monkeypatch.undo()
        store.close()


def test_room_counts_what_deletes_freed_inside_the_file_and_the_map_limit(tmp_path):
    store = LmdbStore(tmp_path, initial_map_bytes=4 << 20, max_map_bytes=4 << 20, reserve_bytes=0)
    try:
        store.commit([[QueueCreated(WALL, 1, "q", {})]])
        empty = store.room_bytes()
        assert (4 << 20) - 100_000 < empty <= 4 << 20
        stored = store.commit([[sent(seq, "b" * 20_000) for seq in range(40)]])[0]
        full = store.room_bytes()
        assert empty - full > 2 * 40 * 20_000  # each body twice: the log and the messages table
        store.commit([[MessageDeleted(WALL, 1, "q", m.seq, m.message_id, "deleted") for m in stored]])
        assert store.room_bytes() - full > 40 * 20_000  # the rows' pages are free again; the log keeps its copies
    finally:
        store.close()


def test_a_reader_opens_data_written_before_some_tables_existed(tmp_path):
    """`dovecote log` beside data an older version wrote: tables it does not have read as empty."""
    import lmdb

    store = LmdbStore(tmp_path, reserve_bytes=0)
    store.commit([[QueueCreated(WALL, 1, "q", {}), sent(0, "kept")]])
    store.close()
    env = lmdb.open(str(next(tmp_path.rglob("data.mdb")).parent), max_dbs=20)
    with env.begin(write=True) as txn:  # what an older version had: no archive, no topics
        for name in (b"archive", b"topics", b"subscriptions"):
            txn.drop(env.open_db(name, txn=txn), delete=True)
    env.close()
    reader = LmdbStore(tmp_path, readonly=True)
    try:
        assert [type(r).__name__ for _, r in reader.read_log()] == ["QueueCreated", "MessageSent"]
        assert reader.load_topics() == ([], []) and reader.archive_counts() == {}
        assert reader.read_archive(1, 0, 10) == []
    finally:
        reader.close()


def resident_file_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the process's RssFile from /proc (Linux)")
def test_appending_does_not_leave_the_file_mapped_in(tmp_path):
    """Commits read the pages they change through LMDB's map; without the store dropping them,
    about a third of what was written stayed resident (64 MiB appended: ~20 MiB)."""
    store = LmdbStore(tmp_path, sync_mode="os", reserve_bytes=0, initial_map_bytes=256 << 20)
    body = "x" * 1000
    try:
        before = resident_file_mib()
        for commit in range(640):  # 64,000 records of about 1 KB, in the log and the messages table
            store.commit([[sent(commit * 100 + i + 1, body) for i in range(100)]])
        grown = resident_file_mib() - before
    finally:
        store.close()
    assert grown < 10, f"{grown:.1f} MiB of the file stayed mapped in"
