"""What recovery and a running writer keep in memory: the data file's pages they read are not
kept mapped (they would count in RSS, a whole data file's worth after a restart), and a queue's
messages are loaded as columns, not as objects per message."""

import tracemalloc

import trio

from dovecote.actors.clock import Clock
from dovecote.actors.config import BrokerConfig
from dovecote.actors.queue_core import QueueCore
from dovecote.actors.recovery import recover
from dovecote.actors.validation import default_queue_attributes
from dovecote.storage import lmdb_store
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.records import MessageSent, QueueCreated

WALL = 1_700_000_000_000
BODY = "b" * 1024
MIB = 1 << 20


def mapped_bytes(path) -> int:
    """How much of the file at `path` this process has mapped in (smaps' Rss of its mappings)."""
    target, total, inside = str(path.resolve()), 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                inside = line.rstrip("\n").endswith(" " + target)
            elif inside and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def filled_store(path, messages: int, at_ms=lambda i: WALL) -> LmdbStore:
    store = LmdbStore(path, sync_mode="os", reserve_bytes=0, initial_map_bytes=256 * MIB)
    store.commit([[QueueCreated(WALL, 1, "q", default_queue_attributes())]])
    for start in range(0, messages, 1000):
        store.commit([[MessageSent(at_ms(i), 1, "q", 0, 0, f"id-{i}", "", BODY, {}) for i in range(start, start + 1000)]])
    return store


def touch_every_message(store: LmdbStore) -> None:
    rows, _ = store.load_queue_rows()
    store.load_queue(rows[0])  # checksums, and so reads, every stored message


async def recovered(store):
    return recover(store, BrokerConfig(), Clock(wall_source=None), salvage=False)


def test_recovery_leaves_the_data_file_unmapped(tmp_path):
    store = filled_store(tmp_path / "data", 8000)  # about 10 MiB of messages
    data_file = tmp_path / "data" / "lmdb" / "data.mdb"
    try:
        touch_every_message(store)
        assert mapped_bytes(data_file) > 8 * MIB  # what reading them maps in
        cores, report = trio.run(recovered, store)
        assert report.messages == 8000 and len(cores[0].messages) == 8000
        assert mapped_bytes(data_file) < 1 * MIB
    finally:
        store.close()


def test_the_writer_releases_mapped_pages_every_so_many_commits(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdb_store, "RELEASE_MAPPED_EVERY_COMMITS", 5)
    store = filled_store(tmp_path / "data", 8000)
    data_file = tmp_path / "data" / "lmdb" / "data.mdb"
    store.release_mapped_pages()  # counting from here (filling it released on the way, by bytes appended)
    try:
        for _ in range(5):
            touch_every_message(store)
            assert mapped_bytes(data_file) > 8 * MIB
            store.commit([[MessageSent(WALL, 1, "q", 0, 0, "one-more", "", "x", {})]])
        assert mapped_bytes(data_file) < 1 * MIB  # the fifth commit since the last release
    finally:
        store.close()


def test_a_loaded_queue_takes_columns_not_objects_per_message(tmp_path):
    store = filled_store(tmp_path / "data", 20_000)
    try:
        rows, _ = store.load_queue_rows()
        tracemalloc.start()
        loaded, damages = store.load_queue(rows[0])
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert damages == [] and len(loaded.messages) == 20_000
        assert held / 20_000 <= 40  # three 8-byte columns (and their growth room); objects took ~250
    finally:
        store.close()


def test_messages_stored_in_one_commit_share_their_age(tmp_path):
    store = filled_store(tmp_path / "data", 3000, at_ms=lambda i: WALL + i // 1000)
    try:
        rows, _ = store.load_queue_rows()
        loaded, _ = store.load_queue(rows[0])
        core = QueueCore.restore(loaded, "arn:aws:sqs:us-east-1:000000000000:q", now=100.0, wall_ms=WALL + 5000, last_written_ms=WALL + 2)
        lives = list(core.messages.values())
        assert len({id(live.sent_at) for live in lives}) == 3  # one float per commit, not per message
        assert [round(100.0 - live.sent_at, 3) for live in lives[::1000]] == [5.0, 4.999, 4.998]
    finally:
        store.close()
