"""Encryption at rest in the store (storage/sse.py): what is sealed and what stays clear, data keys
made and replaced by time, a failed commit, damaged and foreign ciphertexts, master key rotation,
and data keys retired once nothing they sealed is stored."""

from __future__ import annotations

import itertools
import os

import msgspec
import pytest

from dovecote.actors.sse_policy import SSE_SQS_ALIAS, key_policy
from dovecote.storage import keys
from dovecote.storage.framing import frame, unframe
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import (
    DataKeyCreated,
    DataKeyRetired,
    DataKeyRewrapped,
    MessageAttribute,
    MessageDeleted,
    MessageSent,
    Published,
    PushQueued,
    QueueAttributesChanged,
    QueueCreated,
    TopicCreated,
    decode_record,
    encode_record,
)
from dovecote.storage.sse import KeyFile, KeyUnavailable, Sealer, add_master_key, keep_only_current, read_key_file
from dovecote.storage.store import StorageDamaged, StorageError
from dovecote.storage.tables import DATA_KEYS, MESSAGES

WALL = 1_700_000_000_000
SSE = {"SqsManagedSseEnabled": "true"}
KMS = {"KmsMasterKeyId": "alias/orders", "KmsDataKeyReusePeriodSeconds": "60"}
MARKER = "MARKER-5f0c"  # in every body: the raw data must not hold it where encryption is on


_ids = itertools.count(1)


def sent(queue_id, body, at_ms=WALL, **attributes):
    stored = {name: MessageAttribute("String", value) for name, value in attributes.items()}
    return MessageSent(at_ms, queue_id, f"q{queue_id}", 0, 0, f"id-{next(_ids)}", "", body, stored)


def sealer_for(path, create=True) -> Sealer:
    return Sealer(KeyFile(path, create=create), key_policy)


def sealed_store(tmp_path) -> MemoryStore:
    store = MemoryStore()
    store.attach_sealer(sealer_for(tmp_path / "master.key"))
    return store


def raw(store: MemoryStore) -> bytes:
    return b"".join(value for table in store._tables.values() for value in table.values())


def stored_as(store, lsn):
    """The record as the log holds it (sealed or not)."""
    (record,) = [record for at, record in store.read_log(lsn - 1, limit=1)]
    return record


def test_sealed_where_encryption_is_on_and_clear_elsewhere(tmp_path):
    store = sealed_store(tmp_path)
    store.commit([[
        QueueCreated(WALL, 1, "sse", SSE), QueueCreated(WALL, 2, "kms", KMS), QueueCreated(WALL, 3, "plain", {}),
        TopicCreated(WALL, 4, "news", {"KmsMasterKeyId": "alias/aws/sns"}),
    ]])
    (batch,) = store.commit([[
        sent(1, f"sse {MARKER}", k=f"attr {MARKER}"),
        sent(2, f"kms {MARKER}"),
        sent(3, "plain PLAIN-MARKER", k="PLAIN-ATTRIBUTE"),
        Published(WALL, 4, "news", 0, "pub-1", f"published {MARKER}", f"subject {MARKER}", {"k": MessageAttribute("String", MARKER)}),
        PushQueued(WALL, 4, "news", 1, 0, "pub-1", f"envelope {MARKER}", f"subject {MARKER}"),
    ]])
    # what the commit gives back is in clear, stamped
    assert batch[0].body == f"sse {MARKER}" and batch[0].seq > 0 and batch[0].sealed is None
    data = raw(store)
    assert MARKER.encode() not in data
    assert b"PLAIN-MARKER" in data and b"PLAIN-ATTRIBUTE" in data  # the grep is not blind
    kinds = [type(record).__name__ for _, record in store.read_log(4)]
    # one data key per alias, each logged before the first record it seals
    assert kinds == [
        "DataKeyCreated", "MessageSent", "DataKeyCreated", "MessageSent", "MessageSent", "DataKeyCreated", "Published", "PushQueued",
    ]
    aliases = [record.alias for _, record in store.read_log(4) if isinstance(record, DataKeyCreated)]
    assert aliases == [SSE_SQS_ALIAS, "alias/orders", "alias/aws/sns"]
    sse_row = stored_as(store, batch[0].seq)
    assert sse_row.body == "" and sse_row.attributes == {} and sse_row.sealed.key_id == batch[0].seq - 1
    assert sse_row.message_id == batch[0].message_id and sse_row.queue == "q1"  # ids, names, seqs stay clear
    # reads give them back
    assert store.read_messages(1, [batch[0].seq])[0] == batch[0]
    assert store.read_messages(2, [batch[1].seq])[0].body == f"kms {MARKER}"
    assert store.read_pushes(4, 1, [batch[4].seq])[0] == batch[4]


def test_a_topic_seals_its_deliveries_to_a_queue_that_does_not_encrypt(tmp_path):
    store = sealed_store(tmp_path)
    store.commit([[QueueCreated(WALL, 1, "plain", {}), QueueCreated(WALL, 2, "sse", SSE), TopicCreated(WALL, 3, "news", KMS)]])
    publish = [
        Published(WALL, 3, "news", 0, "pub", f"hello {MARKER}", "", {}, archive_until_ms=WALL + 86_400_000),
        sent(1, f"delivery {MARKER}"), sent(2, f"delivery to sse {MARKER}"),
    ]
    (stored,) = store.commit([publish], fallback_owners=[3])
    assert MARKER.encode() not in raw(store)
    topic_key = stored_as(store, stored[0].seq).sealed.key_id
    assert stored_as(store, stored[1].seq).sealed.key_id == topic_key  # the topic's key
    assert stored_as(store, stored[2].seq).sealed.key_id != topic_key  # the queue's own
    assert store.read_archive(3, 0, 10)[0].message == f"hello {MARKER}"
    # without the topic, the plain queue stores in clear
    (clear,) = store.commit([[sent(1, "direct")]])
    assert stored_as(store, clear[0].seq).sealed is None


def test_turning_encryption_on_and_off_changes_only_what_comes_after(tmp_path):
    store = sealed_store(tmp_path)
    (before,) = store.commit([[QueueCreated(WALL, 1, "q", {}), sent(1, "before")]])
    (during,) = store.commit([[QueueAttributesChanged(WALL, 1, "q", SSE), sent(1, "during")]])
    (after,) = store.commit([[QueueAttributesChanged(WALL, 1, "q", {"SqsManagedSseEnabled": "false"}), sent(1, "after")]])
    assert [stored_as(store, r[-1].seq).sealed is not None for r in (before, during, after)] == [False, True, False]
    seqs = [before[-1].seq, during[-1].seq, after[-1].seq]
    assert [row.body for row in store.read_messages(1, seqs)] == ["before", "during", "after"]


def test_a_data_key_serves_for_the_reuse_period_then_a_new_one_is_made(tmp_path):
    store = sealed_store(tmp_path)
    store.commit([[QueueCreated(WALL, 1, "q", KMS)]])  # 60 s
    at = [WALL, WALL + 59_999, WALL + 60_000, WALL + 61_000, WALL + 200_000]
    stored = [store.commit([[sent(1, f"m{i}", at_ms=ms)]])[0][0] for i, ms in enumerate(at)]
    key_ids = [stored_as(store, record.seq).sealed.key_id for record in stored]
    assert key_ids[0] == key_ids[1] != key_ids[2] == key_ids[3] != key_ids[4]
    assert len(store.load_data_keys()) == 3
    # a wall clock set back makes a key at once, and only once
    back = [store.commit([[sent(1, f"b{i}", at_ms=WALL - 1_000_000 + i)]])[0][0] for i in range(2)]
    back_ids = [stored_as(store, record.seq).sealed.key_id for record in back]
    assert back_ids[0] == back_ids[1] not in key_ids
    # every one still opens, also with the sealer of a restarted broker
    reopened = MemoryStore()
    reopened._tables = store._tables
    reopened.last_lsn = store.last_lsn
    reopened.attach_sealer(sealer_for(tmp_path / "master.key", create=False))
    assert [row.body for row in reopened.read_messages(1, [r.seq for r in stored + back])] == [f"m{i}" for i in range(5)] + ["b0", "b1"]


def test_a_failed_commit_keeps_no_data_key_and_no_policy(tmp_path):
    store = sealed_store(tmp_path)
    store.fail_next_commits.append(StorageError("disk on fire"))
    with pytest.raises(StorageError):
        store.commit([[QueueCreated(WALL, 1, "q", SSE), sent(1, "lost")]])
    assert store.sealer._keys == {} and store.sealer._owners == {}
    (stored,) = store.commit([[QueueCreated(WALL, 1, "q", SSE), sent(1, "kept")]])
    row = stored_as(store, stored[1].seq)
    assert row.sealed.key_id == stored[1].seq - 1 and [k.key_id for k in store.load_data_keys()] == [row.sealed.key_id]
    store.fail_next_commits.append(StorageError("again"))
    with pytest.raises(StorageError):
        store.commit([[sent(1, "lost too", at_ms=WALL + 10**9)]])  # would make a new key
    assert list(store.sealer._keys) == [row.sealed.key_id]
    assert store.read_messages(1, [stored[1].seq])[0].body == "kept"


def _resealed(record: MessageSent, **changes) -> bytes:
    return frame(encode_record(msgspec.structs.replace(record, **changes)))


def test_a_damaged_or_foreign_ciphertext_is_refused_as_damage(tmp_path):
    store = sealed_store(tmp_path)
    (stored,) = store.commit([[QueueCreated(WALL, 1, "q", SSE), sent(1, "one"), sent(1, "two")]])
    one, two = stored[1], stored[2]
    messages = store._tables[MESSAGES]
    two_row = decode_record(unframe(messages[keys.message_key(1, two.seq)]))
    one_row = decode_record(unframe(messages[keys.message_key(1, one.seq)]))
    good = messages[keys.message_key(1, two.seq)]

    # another record's ciphertext, checksummed anew so that only the encryption can tell
    messages[keys.message_key(1, two.seq)] = _resealed(two_row, sealed=one_row.sealed)
    with pytest.raises(StorageDamaged, match=f"seq {two.seq}.*not this record's \\(sealed for LSN {one.seq}\\)"):
        store.read_messages(1, [two.seq])
    # a changed byte of the ciphertext
    flipped = bytearray(two_row.sealed.ciphertext)
    flipped[3] ^= 1
    messages[keys.message_key(1, two.seq)] = _resealed(two_row, sealed=msgspec.structs.replace(two_row.sealed, ciphertext=bytes(flipped)))
    with pytest.raises(StorageDamaged, match="does not open"):
        store.read_messages(1, [two.seq])
    # a clear field changed under an intact ciphertext (the MessageId it is bound to)
    messages[keys.message_key(1, two.seq)] = _resealed(two_row, message_id=one_row.message_id)
    with pytest.raises(StorageDamaged, match="does not open"):
        store.read_messages(1, [two.seq])
    # a key this store does not hold (copied from another data directory)
    messages[keys.message_key(1, two.seq)] = _resealed(two_row, sealed=msgspec.structs.replace(two_row.sealed, key_id=999))
    with pytest.raises(StorageDamaged, match="data key 999, which the store does not hold"):
        store.read_messages(1, [two.seq])
    # `dovecote check` with the key file finds it too (the checksum alone is fine)
    (damage,) = store.verify_all()
    assert (damage.table, damage.first_key) == (MESSAGES, keys.message_key(1, two.seq))
    messages[keys.message_key(1, two.seq)] = good
    assert store.read_messages(1, [one.seq, two.seq])[1].body == "two"
    assert store.verify_all() == []


def test_the_store_keeps_no_master_key_and_refuses_to_open_without_it(tmp_path):
    path = tmp_path / "master.key"
    store = LmdbStore(tmp_path / "data", reserve_bytes=0)
    try:
        store.attach_sealer(sealer_for(path))
        store.commit([[QueueCreated(WALL, 1, "q", SSE), sent(1, "sealed")]])
    finally:
        store.close()
    assert os.stat(path).st_mode & 0o777 == 0o600
    master = read_key_file(path)
    key_bytes = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    data = (tmp_path / "data" / "lmdb" / "data.mdb").read_bytes()
    assert key_bytes and all(line.encode() not in data for line in key_bytes)
    assert master.current.encode() in data  # only its fingerprint
    os.rename(path, tmp_path / "elsewhere.key")
    store = LmdbStore(tmp_path / "data", reserve_bytes=0)
    try:
        with pytest.raises(KeyUnavailable, match="cannot read the master key file"):
            store.attach_sealer(sealer_for(path))  # never made anew while data keys need the old one
        assert not path.exists()
        add_master_key(path)  # another key entirely
        with pytest.raises(KeyUnavailable, match="which the master key file .* does not hold"):
            store.attach_sealer(sealer_for(path))
    finally:
        store.close()


def test_master_key_rotation_rewraps_every_data_key(tmp_path):
    path = tmp_path / "master.key"
    store = sealed_store(tmp_path)
    (first,) = store.commit([[QueueCreated(WALL, 1, "q", KMS), sent(1, "old", at_ms=WALL)]])
    old_master = read_key_file(path).current
    new_master = add_master_key(path)
    assert read_key_file(path).fingerprints == [new_master, old_master]
    assert store.sealer.reload_master_keys().current == new_master
    (second,) = store.commit([[sent(1, "new", at_ms=WALL + 120_000)]])  # a new data key, wrapped by the new master key
    assert [k.master_key for k in store.load_data_keys()] == [old_master, new_master]
    rewrapped = store.sealer.rewrap_records(WALL + 130_000)
    assert [type(r) for r in rewrapped] == [DataKeyRewrapped] and rewrapped[0].key_id == first[1].seq - 1
    store.commit([rewrapped])
    assert store.sealer.rewrap_records(WALL) == []
    assert {k.master_key for k in store.load_data_keys()} == {new_master}
    assert keep_only_current(path) == [old_master]
    # a restarted broker has only the new master key, and reads both
    reopened = MemoryStore()
    reopened._tables = store._tables
    reopened.last_lsn = store.last_lsn
    reopened.attach_sealer(sealer_for(path, create=False))
    assert [r.body for r in reopened.read_messages(1, [first[1].seq, second[0].seq])] == ["old", "new"]


def test_a_reload_that_drops_a_master_key_still_in_use_is_refused(tmp_path):
    path = tmp_path / "master.key"
    store = sealed_store(tmp_path)
    store.commit([[QueueCreated(WALL, 1, "q", SSE), sent(1, "x")]])
    in_use = read_key_file(path).current
    add_master_key(path)
    keep_only_current(path)  # too early: the old key still wraps a data key
    with pytest.raises(KeyUnavailable, match=in_use):
        store.sealer.reload_master_keys()
    assert store.sealer.master_keys().current == in_use  # the keys read before stay in use
    (more,) = store.commit([[sent(1, "still")]])
    assert store.read_messages(1, [more[0].seq])[0].body == "still"


def test_a_reload_before_encryption_was_ever_used_has_nothing_to_read(tmp_path):
    """SIGHUP also reloads TLS files: a broker that never encrypted (no key file made) is not told
    of a missing key file; once the file exists, a reload reads it."""
    path = tmp_path / "master.key"
    store = sealed_store(tmp_path)
    store.commit([[QueueCreated(WALL, 1, "q", {}), sent(1, "clear")]])
    assert not path.exists()
    assert store.sealer.reload_master_keys() is None
    new_master = add_master_key(path)
    assert store.sealer.reload_master_keys().current == new_master


def test_old_data_keys_are_retired_once_nothing_they_sealed_is_stored(tmp_path):
    store = sealed_store(tmp_path)
    (first,) = store.commit([[QueueCreated(WALL, 1, "q", KMS), sent(1, "a", at_ms=WALL)]])
    (second,) = store.commit([[sent(1, "b", at_ms=WALL + 61_000)]])
    (third,) = store.commit([[sent(1, "c", at_ms=WALL + 122_000)]])
    key_ids = [k.key_id for k in store.load_data_keys()]
    assert len(key_ids) == 3
    now = WALL + 200_000
    assert store.trim_history(WALL - 1, now, 100) == 0  # history kept, message "a" alive: nothing retired
    assert len(store.load_data_keys()) == 3
    store.commit([[MessageDeleted(now, 1, "q", first[1].seq, first[1].message_id, "deleted")]])
    store.trim_history(WALL - 1, now + 60_000, 100)  # "a" gone, but the log still holds its MessageSent
    assert len(store.load_data_keys()) == 3
    store.trim_history(WALL + 1, now + 120_000, 100)  # the log's records of WALL are trimmed
    assert [k.key_id for k in store.load_data_keys()] == key_ids[1:]
    assert [type(r).__name__ for _, r in store.read_log(store.last_lsn - 1)] == ["DataKeyRetired"]
    assert store.read_messages(1, [second[0].seq, third[0].seq])[1].body == "c"
    # the newest key of an alias is never retired, however old
    store.commit([[MessageDeleted(now, 1, "q", s.seq, s.message_id, "deleted") for s in (second[0], third[0])]])
    store.trim_history(WALL + 10**9, WALL + 10**9, 1000)
    assert [k.key_id for k in store.load_data_keys()] == key_ids[2:]
    assert keys.queue_key(key_ids[2]) in store._tables[DATA_KEYS]
    assert not any(isinstance(r, DataKeyRetired) and r.key_id == key_ids[2] for _, r in store.read_log())
