"""One contract, two stores: the memory store and the LMDB store pass the same tests."""

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


def sent(seq, queue_id=1, at_ms=WALL, body="body"):
    return MessageSent(at_ms, queue_id, "q", seq, 0, f"id-{seq}", "sender", body, {"a": MessageAttribute("String", "v")})


def created(queue_id=1, name="q"):
    return QueueCreated(WALL, queue_id, name, {"VisibilityTimeout": "30"})


def test_commit_assigns_consecutive_lsns_and_reads_back_in_order(store):
    assert store.commit([[created()], [sent(1), sent(2)]]) == 3
    assert store.commit([[sent(3)]]) == 4
    log = store.read_log()
    assert [lsn for lsn, _ in log] == [1, 2, 3, 4]
    assert log[2][1] == sent(2)
    assert [lsn for lsn, _ in store.read_log(after_lsn=2, limit=1)] == [3]


def test_state_tables_follow_the_records(store):
    store.commit([[created(1), created(2, "r")]])
    store.commit([[sent(1), sent(2), sent(3), sent(1, queue_id=2)]])
    store.commit([[MessageReceived(WALL, 1, "q", 2, "id-2", 1, WALL + 30_000, WALL)]])
    store.commit([[VisibilityChanged(WALL, 1, "q", 2, "id-2", 1, WALL + 90_000, WALL)]])
    store.commit([[MessageDeleted(WALL, 1, "q", 1, "id-1", "deleted")]])
    rows, damages = store.load_queue_rows()
    assert damages == [] and [r.queue_id for r in rows] == [1, 2]
    loaded, damages = store.load_queue(rows[0])
    assert damages == []
    assert [(m.sent.seq, m.delivery) for m in loaded.messages] == [
        (2, VisibilityChanged(WALL, 1, "q", 2, "id-2", 1, WALL + 90_000, WALL)),
        (3, None),
    ]
    assert store.read_messages(1, [1, 3]) == [None, sent(3)]
    store.commit([[QueuePurged(WALL, 1, "q", 2)]])
    assert [m.sent.seq for m in store.load_queue(rows[0])[0].messages] == [3]
    store.commit([[QueueAttributesChanged(WALL, 1, "q", {"VisibilityTimeout": "5"})]])
    assert store.load_queue_rows()[0][0].attributes == {"VisibilityTimeout": "5"}
    store.commit([[QueueDeleted(WALL, 1, "q")]])
    rows, _ = store.load_queue_rows()
    assert [r.queue_id for r in rows] == [2]
    assert store.read_messages(1, [3]) == [None]
    assert [m.sent.seq for m in store.load_queue(rows[0])[0].messages] == [1]


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
    assert store.commit([[sent(11)]]) == 11


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
    store.commit([[created()], [sent(seq) for seq in range(1, 7)]])
    for seq in (2, 3, 5):
        corrupt(store, MESSAGES, keys.message_key(1, seq))
    corrupt(store, "log", keys.lsn_key(7))
    loaded, damages = store.load_queue(created())
    assert [m.sent.seq for m in loaded.messages] == [1, 4, 6]
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
    assert [m.sent.seq for m in store.load_queue(created())[0].messages] == [1, 4, 6]


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
