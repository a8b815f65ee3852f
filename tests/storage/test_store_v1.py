"""A data directory of format 1 (tests/vectors/store_v1.tar.gz, written by the dovecote of format 1)
is served by this one: every message, topic and subscription as format 1 stored them. Opened for
writing it becomes the current format (3), and from then on encrypts where its queues and topics ask for it; what
format 1 stored in clear stays so, and is still read."""

from __future__ import annotations

import tarfile

import pytest

from dovecote.actors import ops
from dovecote.actors.sse_policy import key_policy
from dovecote.storage.lmdb_store import LmdbStore
from dovecote.storage.records import MessageSent
from dovecote.storage.sse import KeyFile, Sealer
from dovecote.storage.store import FORMAT_VERSION

from ..conftest import running_broker
from ..vectors.make_store_v1 import ARCHIVE, EXPECTED


@pytest.fixture
def v1_dir(tmp_path):
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(tmp_path / "data", filter="data")
    return tmp_path / "data"


def test_a_format_1_directory_reads_as_it_was_written(v1_dir):
    store = LmdbStore(v1_dir, readonly=True)
    try:
        assert store.format_version == 1  # a reader changes nothing
        assert store.verify_all() == []
        sent = [record for _, record in store.read_log() if isinstance(record, MessageSent)]
        assert sorted(record.body for record in sent) == sorted(body for bodies in EXPECTED.values() for body in bodies)
        assert all(record.sealed is None for record in sent)
        assert store.load_data_keys() == []
    finally:
        store.close()


async def test_a_format_1_directory_is_served_and_becomes_the_current_format(v1_dir, tmp_path):  # real clock: LMDB commits in a thread
    store = LmdbStore(v1_dir, reserve_bytes=0)
    try:
        assert store.format_version == FORMAT_VERSION == 4
        store.attach_sealer(Sealer(KeyFile(tmp_path / "master.key"), key_policy))
        async with running_broker(store) as h:
            listed = await h.ok(ops.ListQueues())
            assert sorted(listed.queues) == sorted(EXPECTED)
            for queue, bodies in EXPECTED.items():
                received = await h.ok(ops.ReceiveMessage(queue, max_number_of_messages=10, visibility_timeout=0, message_attribute_names=["All"]))
                assert [message.body for message in received.messages] == bodies, queue
            received = await h.ok(ops.ReceiveMessage("plain", max_number_of_messages=10, attribute_names=["All"], message_attribute_names=["All"]))
            first = received.messages[0]
            assert first.attributes["ApproximateReceiveCount"] == "3"  # format 1's receive, and two here
            assert first.message_attributes["kind"].string_value == "a"
            # the queue that asked for encryption under format 1 encrypts from now on
            await h.ok(ops.SendMessage("sse", "sealed under format 2"))
            await h.ok(ops.Publish("news", "published under format 2"))
            received = await h.ok(ops.ReceiveMessage("sse", max_number_of_messages=10, visibility_timeout=0))
            assert [m.body for m in received.messages] == EXPECTED["sse"] + ["sealed under format 2"]
            received = await h.ok(ops.ReceiveMessage("from-topic", max_number_of_messages=10, visibility_timeout=0))
            assert [m.body for m in received.messages] == EXPECTED["from-topic"] + ["published under format 2"]
        log = [record for _, record in store.read_log() if isinstance(record, MessageSent)]
        clear = sorted(record.body for record in log if record.sealed is None)
        assert clear == sorted(body for bodies in EXPECTED.values() for body in bodies)  # format 1's, in clear as they were
        assert sum(1 for record in log if record.sealed is not None) == 2  # the two sent here
        data = (v1_dir / "lmdb" / "data.mdb").read_bytes()
        assert b"sealed under format 2" not in data and b"published under format 2" not in data
        assert EXPECTED["sse"][0].encode() in data
    finally:
        store.close()
