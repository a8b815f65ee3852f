"""One contract, two stores: the memory store and the LMDB store pass the same tests."""

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from dovecote.storage import keys
from dovecote.storage.framing import DamagedValue, frame, unframe
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import (
    MessageAttribute,
    MessageDeleted,
    MessageReceived,
    MessageSent,
    QueueAttributesChanged,
    QueueCreated,
    QueueDeleted,
    QueuePurged,
    VisibilityChanged,
    decode_record,
    encode_record,
)
from dovecote.storage.store import StorageDamaged
from dovecote.storage.tables import MESSAGES

WALL = 1_700_000_000_000


@pytest.fixture(params=["memory", "lmdb"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
    else:
        lmdb_store = LmdbStore(tmp_path / "data", reserve_bytes=0)
        yield lmdb_store
        lmdb_store.close()


_message_ids = itertools.count()


def sent(seq, queue_id=1, at_ms=WALL, body="body"):
    """A MessageSent as an actor prepares it (the store stamps its seq)."""
    message_id = f"id-{next(_message_ids)}"
    return MessageSent(at_ms, queue_id, "q", seq, 0, message_id, "sender", body, {"a": MessageAttribute("String", "v")})


def created(queue_id=1, name="q"):
    return QueueCreated(WALL, queue_id, name, {"VisibilityTimeout": "30"})


def test_commit_assigns_consecutive_lsns_and_reads_back_in_order(store):
    stored = store.commit([[created()], [sent(0), sent(0)]])
    assert [r.seq for r in stored[1]] == [2, 3]  # a MessageSent's seq is its own LSN
    assert store.last_lsn == 3
    assert store.commit([[sent(0)]])[0][0].seq == 4
    log = store.read_log()
    assert [lsn for lsn, _ in log] == [1, 2, 3, 4]
    assert log[2][1] == stored[1][1]
    assert [lsn for lsn, _ in store.read_log(after_lsn=2, limit=1)] == [3]


def test_state_tables_follow_the_records(store):
    store.commit([[created(1), created(2, "r")]])
    ((a, b, c, other),) = store.commit([[sent(0), sent(0), sent(0), sent(0, queue_id=2)]])
    store.commit([[MessageReceived(WALL, 1, "q", b.seq, b.message_id, 1, WALL + 30_000, WALL)]])
    changed = VisibilityChanged(WALL, 1, "q", b.seq, b.message_id, 1, WALL + 90_000, WALL)
    store.commit([[changed]])
    store.commit([[MessageDeleted(WALL, 1, "q", a.seq, a.message_id, "deleted")]])
    rows, damages = store.load_queue_rows()
    assert damages == [] and [r.queue_id for r in rows] == [1, 2]
    loaded, damages = store.load_queue(rows[0])
    assert damages == []
    assert [(seq, delivery) for seq, _, _, delivery, _ in loaded.messages] == [(b.seq, changed), (c.seq, None)]
    assert store.read_messages(1, [a.seq, c.seq]) == [None, c]
    ((purged,),) = store.commit([[QueuePurged(WALL, 1, "q", 0)]])
    assert purged.through_seq == store.last_lsn  # a purge removes everything sent before it
    assert len(store.load_queue(rows[0])[0].messages) == 0
    after = store.commit([[sent(0)]])[0][0]
    assert list(store.load_queue(rows[0])[0].messages.seqs) == [after.seq]
    store.commit([[QueueAttributesChanged(WALL, 1, "q", {"VisibilityTimeout": "5"})]])
    assert store.load_queue_rows()[0][0].attributes == {"VisibilityTimeout": "5"}
    store.commit([[QueueDeleted(WALL, 1, "q")]])
    rows, _ = store.load_queue_rows()
    assert [r.queue_id for r in rows] == [2]
    assert store.read_messages(1, [after.seq]) == [None]
    assert list(store.load_queue(rows[0])[0].messages.seqs) == [other.seq]


def test_queue_ids_are_never_reused(store):
    assert store.next_queue_id() == 1
    store.commit([[created(1), created(2, "r")]])
    store.commit([[QueueDeleted(WALL, 2, "r")]])
    assert store.next_queue_id() == 3


def test_trim_removes_old_history_in_bounded_steps(store):
    store.commit([[sent(i, at_ms=WALL + i) for i in range(1, 11)]])
    assert store.trim_log(WALL + 8, max_records=3) == 3
    assert store.trim_log(WALL + 8, max_records=3) == 3
    assert store.trim_log(WALL + 8, max_records=3) == 1
    assert store.trim_log(WALL + 8, max_records=3) == 0
    assert [lsn for lsn, _ in store.read_log()] == [8, 9, 10]
    # state rows are live data, never trimmed
    assert len(store.load_queue(created())[0].messages) == 10
    assert store.commit([[sent(0)]])[0][0].seq == 11


def corrupt(store, table, key):
    """Flip one byte of a stored value behind the store's back."""
    if isinstance(store, MemoryStore):
        value = bytearray(store._tables[table][key])
        value[-1] ^= 0x01
        store._tables[table][key] = bytes(value)
    else:
        with store._env.begin(write=True, db=store._dbs[table]) as txn:
            value = bytearray(txn.get(key))
            value[-1] ^= 0x01
            txn.put(key, bytes(value))


def test_damage_is_found_named_and_salvageable(store):
    store.commit([[created()], [sent(0) for _ in range(6)]])  # seqs 2..7
    for seq in (2, 3, 5):
        corrupt(store, MESSAGES, keys.message_key(1, seq))
    corrupt(store, "log", keys.lsn_key(7))
    loaded, damages = store.load_queue(created())
    assert list(loaded.messages.seqs) == [4, 6, 7]
    assert [(d.count, d.describe()) for d in damages] == [
        (2, "messages rows queue 1 seq 2..queue 1 seq 3 (2 damaged values)"),
        (1, "messages rows queue 1 seq 5..queue 1 seq 5 (1 damaged value)"),
    ]
    assert [d.describe() for d in store.verify_log_tail(100)] == ["log records LSN 7..7 (1 damaged value)"]
    assert len(store.verify_all()) == 3
    with pytest.raises(StorageDamaged, match="seq 5"):
        store.read_messages(1, [5])
    with pytest.raises(StorageDamaged, match="LSN 7"):
        store.read_log()
    store.drop_damaged(damages + store.verify_log_tail(100))
    assert store.verify_all() == []
    assert list(store.load_queue(created())[0].messages.seqs) == [4, 6, 7]


def test_framing_detects_any_flipped_bit():
    framed = frame(b"payload")
    assert bytes(unframe(framed)) == b"payload"
    for position in range(len(framed)):
        for bit in range(8):
            damaged = bytearray(framed)
            damaged[position] ^= 1 << bit
            with pytest.raises(DamagedValue):
                unframe(bytes(damaged))
    with pytest.raises(DamagedValue):
        unframe(b"\x00")


names = st.text(min_size=1, max_size=20)
attributes = st.dictionaries(
    names,
    st.one_of(
        st.builds(MessageAttribute, st.just("String"), st.text(min_size=1)),
        st.builds(MessageAttribute, st.just("Binary"), st.none(), st.binary(min_size=1)),
    ),
    max_size=10,
)
records = st.one_of(
    st.builds(MessageSent, st.integers(0, 2**62), st.integers(1, 2**62), names, st.integers(1, 2**62),
              st.integers(0, 900), names, names, st.text(min_size=1), attributes),
    st.builds(MessageReceived, st.integers(0, 2**62), st.integers(1, 2**62), names, st.integers(1, 2**62),
              names, st.integers(1, 2**31), st.integers(0, 2**62), st.integers(0, 2**62)),
    st.builds(QueueCreated, st.integers(0, 2**62), st.integers(1, 2**62), names, st.dictionaries(names, names)),
)


@settings(max_examples=200)
@given(records)
def test_records_round_trip(record):
    assert decode_record(unframe(frame(encode_record(record)))) == record
