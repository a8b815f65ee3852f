"""Encryption at rest through the broker, on the autojump clock: queues with KmsMasterKeyId or
SqsManagedSseEnabled and topics with KmsMasterKeyId keep no message content in clear in the store,
answer as any queue does, rotate data keys by KmsDataKeyReusePeriodSeconds, and read it all back
after a restart."""

from __future__ import annotations

import json

import pytest
import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import (
    CreateQueue,
    CreateTopic,
    GetQueueAttributes,
    MessageAttributeValue,
    PeekMessages,
    Publish,
    ReceiveMessage,
    SendMessage,
    SendMessageBatch,
    SendEntry,
    SetQueueAttributes,
    Subscribe,
)
from dovecote.actors.sse_policy import key_policy
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import DataKeyCreated, MessageSent, Published
from dovecote.storage.sse import KeyFile, Sealer

from ..conftest import running_broker

MARKER = "MARKER-9d41"
ARN = "arn:aws:sqs:us-east-1:000000000000:"
CLEAR = {"SqsManagedSseEnabled": "false"}  # new queues encrypt by default, as on AWS


def sealed_store(tmp_path, store: MemoryStore | None = None) -> MemoryStore:
    """A store (a new one, or the one given, as a restarted broker finds it) with a sealer."""
    store = store or MemoryStore()
    store.attach_sealer(Sealer(KeyFile(tmp_path / "master.key"), key_policy))
    return store


def raw(store: MemoryStore) -> bytes:
    return b"".join(value for table in store._tables.values() for value in table.values())


def attribute(value: str) -> dict[str, MessageAttributeValue]:
    return {"tag": MessageAttributeValue("String", value)}


async def receive_all(h, queue: str) -> list:
    received = await h.ok(
        ReceiveMessage(queue, max_number_of_messages=10, visibility_timeout=0, wait_time_seconds=1, message_attribute_names=["All"])
    )
    return received.messages


async def test_an_encrypted_queue_keeps_nothing_in_clear_and_answers_as_any_queue(tmp_path, autojump_clock):
    store = sealed_store(tmp_path)
    async with running_broker(store) as h:
        await h.ok(CreateQueue("kms", {"KmsMasterKeyId": "alias/aws/sqs", "KmsDataKeyReusePeriodSeconds": "60"}))
        await h.ok(CreateQueue("managed", {"SqsManagedSseEnabled": "true"}))
        await h.ok(CreateQueue("plain", CLEAR))
        for queue in ("kms", "managed"):
            sent = await h.ok(SendMessage(queue, f"{queue} {MARKER}", message_attributes=attribute(MARKER)))
            (received,) = await receive_all(h, queue)
            assert (received.body, received.message_attributes["tag"].string_value) == (f"{queue} {MARKER}", MARKER)
            assert received.md5_of_body == sent.md5_of_message_body
            assert received.md5_of_message_attributes == sent.md5_of_message_attributes
        await h.ok(SendMessageBatch("kms", [SendEntry(str(i), f"batch {i} {MARKER}") for i in range(10)]))
        peeked = await h.ok(PeekMessages("kms", max_messages=20))
        assert [m.body for m in peeked.messages][1:] == [f"batch {i} {MARKER}" for i in range(10)]
        await h.ok(SendMessage("plain", "PLAIN-BODY", message_attributes=attribute("PLAIN-ATTRIBUTE")))
        attributes = (await h.ok(GetQueueAttributes("kms", ["All"]))).attributes
        assert attributes["KmsMasterKeyId"] == "alias/aws/sqs" and attributes["KmsDataKeyReusePeriodSeconds"] == "60"
        for period in ("59", "86401", "five"):
            with pytest.raises(BrokerError) as refused:
                await h.ok(SetQueueAttributes("kms", {"KmsDataKeyReusePeriodSeconds": period}))
            assert refused.value.code == "InvalidAttributeValue"
    data = raw(store)
    assert MARKER.encode() not in data
    assert b"PLAIN-BODY" in data and b"PLAIN-ATTRIBUTE" in data


async def test_data_keys_rotate_by_the_reuse_period_and_everything_reads_after_a_restart(tmp_path, autojump_clock):
    store = sealed_store(tmp_path)
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q", {"KmsMasterKeyId": "alias/orders", "KmsDataKeyReusePeriodSeconds": "60"}))
        for number in range(6):
            await h.ok(SendMessage("q", f"message {number} {MARKER}"))
            await trio.sleep(35)  # sent at 0, 35 | 70, 105 | 140, 175 s: a new data key every 60 s and more
    sent = [record for _, record in store.read_log() if isinstance(record, MessageSent)]
    key_ids = [record.sealed.key_id for record in sent]
    assert len(set(key_ids)) == 3 and key_ids == sorted(key_ids)
    assert [record.key_id for _, record in store.read_log() if isinstance(record, DataKeyCreated)] == sorted(set(key_ids))
    assert MARKER.encode() not in raw(store)
    # a restarted broker: a new sealer, reading the stored keys with the master key file
    async with running_broker(sealed_store(tmp_path, store)) as h:
        assert [m.body for m in await receive_all(h, "q")] == [f"message {n} {MARKER}" for n in range(6)]


async def test_turning_encryption_on_encrypts_new_messages_and_leaves_old_ones(tmp_path, autojump_clock):
    store = sealed_store(tmp_path)
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q", CLEAR))
        await h.ok(SendMessage("q", "sent before PLAIN-BEFORE"))
        await h.ok(SetQueueAttributes("q", {"SqsManagedSseEnabled": "true"}))
        await h.ok(SendMessage("q", f"sent after {MARKER}"))
        assert [m.body for m in await receive_all(h, "q")] == ["sent before PLAIN-BEFORE", f"sent after {MARKER}"]
    data = raw(store)
    assert b"PLAIN-BEFORE" in data and MARKER.encode() not in data


async def test_a_topic_with_a_kms_key_keeps_its_publishes_and_deliveries_sealed(tmp_path, autojump_clock):
    store = sealed_store(tmp_path)
    async with running_broker(store) as h:
        await h.ok(CreateQueue("plain", CLEAR))
        await h.ok(CreateQueue("raw", CLEAR))
        await h.ok(CreateTopic("news", {"KmsMasterKeyId": "alias/aws/sns"}))
        await h.ok(Subscribe("news", "sqs", ARN + "plain"))
        await h.ok(Subscribe("news", "sqs", ARN + "raw", {"RawMessageDelivery": "true"}))
        await h.ok(Publish("news", f"news {MARKER}", subject=f"subject {MARKER}", message_attributes=attribute(MARKER)))
        (enveloped,) = await receive_all(h, "plain")
        assert json.loads(enveloped.body)["Message"] == f"news {MARKER}"
        (raw_delivery,) = await receive_all(h, "raw")
        assert raw_delivery.body == f"news {MARKER}" and raw_delivery.message_attributes["tag"].string_value == MARKER
    assert MARKER.encode() not in raw(store)
    published = [record for _, record in store.read_log() if isinstance(record, Published)]
    assert published[0].sealed is not None and published[0].message == ""
    async with running_broker(sealed_store(tmp_path, store)) as h:
        await trio.sleep(60)  # the deliveries' visibility timeouts pass
        assert [m.body for m in await receive_all(h, "raw")] == [f"news {MARKER}"]


async def test_a_dead_lettered_message_is_sealed_by_its_dead_letter_queue(tmp_path, autojump_clock):
    store = sealed_store(tmp_path)
    async with running_broker(store) as h:
        await h.ok(CreateQueue("dlq", {"SqsManagedSseEnabled": "true"}))
        redrive = json.dumps({"deadLetterTargetArn": ARN + "dlq", "maxReceiveCount": 1})
        await h.ok(CreateQueue("q", {"KmsMasterKeyId": "alias/q", "RedrivePolicy": redrive}))
        await h.ok(SendMessage("q", f"poison {MARKER}"))
        assert len(await receive_all(h, "q")) == 1
        assert await receive_all(h, "q") == []  # this attempt moves it
        await trio.sleep(1)
        (moved,) = await receive_all(h, "dlq")
        assert moved.body == f"poison {MARKER}"
    assert MARKER.encode() not in raw(store)
