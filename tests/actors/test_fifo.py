"""FIFO queues through the registry, the writer and a memory store, on trio's autojump clock."""

import pytest
import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import (
    MessageAttributeValue,
    ChangeMessageVisibility,
    CreateQueue,
    DeleteMessage,
    GetQueueAttributes,
    PurgeQueue,
    ReceiveMessage,
    SendEntry,
    SendMessage,
    SendMessageBatch,
    SetQueueAttributes,
)
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import DedupWindowClosed

from ..conftest import running_broker

FIFO = {"FifoQueue": "true"}


async def receive(h, queue="q.fifo", **options):
    return (await h.ok(ReceiveMessage(queue, **options))).messages


async def send(h, body, group="g", dedup=None, queue="q.fifo"):
    return await h.ok(SendMessage(queue, body, message_group_id=group, message_deduplication_id=dedup or body))


@pytest.mark.parametrize(
    "name, attributes, code",
    [
        ("q.fifo", {}, "InvalidParameterValue"),  # .fifo without FifoQueue
        ("q", FIFO, "InvalidParameterValue"),  # FifoQueue without .fifo
        ("q", {"ContentBasedDeduplication": "true"}, "InvalidAttributeName"),  # FIFO-only attribute
        ("q.fifo", {**FIFO, "DeduplicationScope": "group"}, "InvalidAttributeValue"),
        ("q.fifo", {**FIFO, "FifoThroughputLimit": "perMessageGroupId"}, "InvalidAttributeValue"),
        ("q", {"FifoQueue": "maybe"}, "InvalidAttributeValue"),
        ("x" * 76 + ".fifo", FIFO, "InvalidParameterValue"),
    ],
)
async def test_fifo_creation_is_validated(autojump_clock, name, attributes, code):
    async with running_broker() as h:
        with pytest.raises(BrokerError) as error:
            await h.ok(CreateQueue(name, attributes))
        assert error.value.code == code


async def test_fifo_attributes_and_queue_type_is_fixed_at_creation(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        attributes = (await h.ok(GetQueueAttributes("q.fifo", ["All"]))).attributes
        assert attributes["FifoQueue"] == "true"
        assert attributes["ContentBasedDeduplication"] == "false"
        assert attributes["DeduplicationScope"] == "queue"
        assert attributes["FifoThroughputLimit"] == "perQueue"
        with pytest.raises(BrokerError, match="Modifying queue type"):
            await h.ok(SetQueueAttributes("q.fifo", {"FifoQueue": "false"}))
        await h.ok(SetQueueAttributes("q.fifo", {"DeduplicationScope": "messageGroup", "FifoThroughputLimit": "perMessageGroupId"}))
        # idempotent create with the same attributes, refused with different ones
        await h.ok(CreateQueue("q.fifo", {**FIFO, "DeduplicationScope": "messageGroup"}))
        with pytest.raises(BrokerError) as error:
            await h.ok(CreateQueue("q.fifo", {**FIFO, "ContentBasedDeduplication": "true"}))
        assert error.value.code == "QueueNameExists"


async def test_fifo_send_parameters_are_checked(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        await h.ok(CreateQueue("std"))
        cases = [
            (SendMessage("q.fifo", "m", message_deduplication_id="d"), "MissingParameter"),  # no group
            (SendMessage("q.fifo", "m", message_group_id="g"), "InvalidParameterValue"),  # no dedup id
            (SendMessage("q.fifo", "m", 5, message_group_id="g", message_deduplication_id="d"), "InvalidParameterValue"),
            (SendMessage("q.fifo", "m", message_group_id="g", message_deduplication_id="x" * 129), "InvalidParameterValue"),
            (SendMessage("std", "m", message_deduplication_id="d"), "InvalidParameterValue"),
        ]
        for op, code in cases:
            with pytest.raises(BrokerError) as error:
                await h.ok(op)
            assert error.value.code == code, op
        assert await receive(h) == []


async def test_order_within_a_group_and_the_group_is_locked_while_in_flight(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", {**FIFO, "VisibilityTimeout": "30"}))
        for i in range(4):
            await send(h, f"a{i}", group="a")
        await send(h, "b0", group="b")
        first = await receive(h, max_number_of_messages=2)
        assert [m.body for m in first] == ["a0", "a1"]  # as many of one group as fit, in order
        second = await receive(h, max_number_of_messages=10)
        assert [m.body for m in second] == ["b0"]  # group a is locked while a0, a1 are in flight
        await h.ok(DeleteMessage("q.fifo", first[0].receipt_handle))
        await h.ok(DeleteMessage("q.fifo", second[0].receipt_handle))
        assert await receive(h) == []  # a1 still in flight: a stays locked
        await trio.sleep(31)  # a1's visibility runs out: it comes back first, before a2
        again = await receive(h, max_number_of_messages=10, attribute_names=["All"])
        assert [m.body for m in again] == ["a1", "a2", "a3"]
        assert again[0].attributes["ApproximateReceiveCount"] == "2"
        assert again[0].attributes["MessageGroupId"] == "a"
        numbers = [int(m.attributes["SequenceNumber"]) for m in again]
        assert numbers == sorted(numbers) and len(again[0].attributes["SequenceNumber"]) == 20


async def test_visibility_change_to_zero_unlocks_the_group_with_the_same_message_first(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        await send(h, "m0")
        await send(h, "m1")
        (m0,) = await receive(h)
        await h.ok(ChangeMessageVisibility("q.fifo", m0.receipt_handle, 0))
        assert [m.body for m in await receive(h, max_number_of_messages=10)] == ["m0", "m1"]


async def test_a_long_poll_is_served_when_the_group_unlocks(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        await send(h, "m0")
        await send(h, "m1")
        (m0,) = await receive(h)
        got = []

        async def poll():
            got.extend(await receive(h, wait_time_seconds=20))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(3)
            assert got == []
            await h.ok(DeleteMessage("q.fifo", m0.receipt_handle))
        assert [m.body for m in got] == ["m1"]


async def test_duplicates_are_accepted_with_the_original_id_and_not_delivered_for_5_minutes(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        original = await send(h, "m", dedup="d1")
        duplicate = await h.ok(SendMessage("q.fifo", "other body", message_group_id="g", message_deduplication_id="d1"))
        assert duplicate.message_id == original.message_id
        assert duplicate.sequence_number == original.sequence_number
        (message,) = await receive(h, max_number_of_messages=10, attribute_names=["MessageDeduplicationId"])
        assert message.attributes == {"MessageDeduplicationId": "d1"}
        await h.ok(DeleteMessage("q.fifo", message.receipt_handle))
        await trio.sleep(200)
        await send(h, "m", dedup="d1")  # deleted, but still inside the window
        assert await receive(h) == []
        await trio.sleep(101)
        fresh = await send(h, "m", dedup="d1")
        assert fresh.message_id != original.message_id
        assert [m.body for m in await receive(h)] == ["m"]


async def test_duplicates_within_one_batch_and_content_based_deduplication(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", {**FIFO, "ContentBasedDeduplication": "true"}))
        result = await h.ok(
            SendMessageBatch(
                "q.fifo",
                [
                    SendEntry("a", "same", message_group_id="g"),
                    SendEntry("b", "same", message_group_id="g"),
                    SendEntry("c", "same", message_group_id="g", message_deduplication_id="explicit"),
                ],
            )
        )
        ids = {entry.id: entry.message_id for entry in result.successful}
        assert ids["a"] == ids["b"] != ids["c"]
        assert [m.body for m in await receive(h, max_number_of_messages=10)] == ["same", "same"]


async def test_deduplication_scope_message_group(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", {**FIFO, "DeduplicationScope": "messageGroup"}))
        first = await send(h, "m", group="a", dedup="d")
        other_group = await send(h, "m", group="b", dedup="d")
        same_group = await send(h, "m", group="a", dedup="d")
        assert other_group.message_id != first.message_id == same_group.message_id


async def test_the_deduplication_window_survives_a_restart_and_is_pruned_in_the_store(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        original = await send(h, "m", dedup="d1")
        (message,) = await receive(h)
        await h.ok(DeleteMessage("q.fifo", message.receipt_handle))
    async with running_broker(store) as h:
        again = await send(h, "m", dedup="d1")
        assert again.message_id == original.message_id
        assert await receive(h) == []
        await trio.sleep(301)
        await send(h, "later", dedup="d2")  # wakes the queue: the expired window is recorded
        closed = [r for _, r in store.read_log() if isinstance(r, DedupWindowClosed)]
        assert closed and closed[-1].through_seq >= int(original.sequence_number)
    async with running_broker(store) as h:
        fresh = await send(h, "m", dedup="d1")
        assert fresh.message_id != original.message_id


async def test_groups_and_locks_survive_a_restart(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q.fifo", {**FIFO, "VisibilityTimeout": "60"}))
        for body in ("a0", "a1"):
            await send(h, body, group="a")
        await send(h, "b0", group="b")
        (a0,) = await receive(h)
        assert a0.body == "a0"
    async with running_broker(store) as h:
        assert [m.body for m in await receive(h, max_number_of_messages=10)] == ["b0"]
        await h.ok(DeleteMessage("q.fifo", a0.receipt_handle))
        assert [m.body for m in await receive(h, max_number_of_messages=10)] == ["a1"]


async def test_a_retried_receive_attempt_returns_the_same_messages(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        for i in range(3):
            await send(h, f"m{i}", group=f"g{i}")
        first = await receive(h, max_number_of_messages=2, receive_request_attempt_id="attempt-1")
        retried = await receive(h, max_number_of_messages=2, receive_request_attempt_id="attempt-1")
        assert [(m.body, m.receipt_handle) for m in retried] == [(m.body, m.receipt_handle) for m in first]
        other = await receive(h, max_number_of_messages=2, receive_request_attempt_id="attempt-2")
        assert [m.body for m in other] == ["m2"]
        await h.ok(DeleteMessage("q.fifo", first[0].receipt_handle))
        # a delete ends the attempt: the same id now makes a fresh receive
        assert await receive(h, receive_request_attempt_id="attempt-1") == []


async def test_purge_empties_a_fifo_queue_and_unlocks_its_groups(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        await send(h, "m0")
        await receive(h)
        await h.ok(PurgeQueue("q.fifo"))
        await send(h, "m1")
        assert [m.body for m in await receive(h)] == ["m1"]


async def test_purge_queue_clears_the_deduplication_cache_also_across_a_restart(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        original = await send(h, "m", dedup="d1")
        await h.ok(PurgeQueue("q.fifo"))
        again = await send(h, "m", dedup="d1")
        assert again.message_id != original.message_id
        assert [m.body for m in await receive(h)] == ["m"]
        await trio.sleep(61)
        await h.ok(PurgeQueue("q.fifo"))
    async with running_broker(store) as h:
        fresh = await send(h, "m", dedup="d1")
        assert fresh.message_id not in (original.message_id, again.message_id)


async def test_fifo_queue_attribute_as_aws_answers_it(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        await h.ok(SetQueueAttributes("q.fifo", {"FifoQueue": "true"}))  # a no-op
        assert (await h.ok(GetQueueAttributes("q.fifo", ["FifoQueue"]))).attributes == {"FifoQueue": "true"}
        await h.ok(CreateQueue("std", {"FifoQueue": "false"}))
        assert "FifoQueue" not in (await h.ok(GetQueueAttributes("std", ["All"]))).attributes
        with pytest.raises(BrokerError) as error:
            await h.ok(SetQueueAttributes("std", {"FifoQueue": "true"}))
        assert error.value.code == "InvalidAttributeName"
        with pytest.raises(BrokerError) as error:
            await h.ok(SetQueueAttributes("std", {"FifoQueue": "false"}))
        assert error.value.code == "InvalidAttributeName"


async def test_fifo_send_accepts_delay_seconds_zero(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", {**FIFO, "DelaySeconds": "2"}))
        await h.ok(SendMessage("q.fifo", "m", 0, message_group_id="g", message_deduplication_id="d"))
        batch = await h.ok(SendMessageBatch("q.fifo", [
            SendEntry("a", "n", 0, message_group_id="g", message_deduplication_id="e"),
            SendEntry("b", "o", 3, message_group_id="g", message_deduplication_id="f"),
        ]))
        assert [entry.id for entry in batch.successful] == ["a"] and batch.failed[0].code == "InvalidParameterValue"
        assert await receive(h) == []  # the queue's delay still holds
        await trio.sleep(2)
        assert [m.body for m in await receive(h, max_number_of_messages=10)] == ["m", "n"]


async def test_fifo_send_batch_without_group_or_deduplication_id_fails_the_whole_request(autojump_clock):
    """As AWS answers (LocalStack's AWS-validated test_send_batch_missing_*_for_fifo_queue): the
    request fails and nothing of it is stored, not 200 with the entry under Failed."""
    async with running_broker() as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        valid = SendEntry("a", "m", message_group_id="g", message_deduplication_id="d")
        for entry, code in [
            (SendEntry("b", "n", message_deduplication_id="e"), "MissingParameter"),
            (SendEntry("b", "n", message_group_id="g"), "InvalidParameterValue"),
        ]:
            with pytest.raises(BrokerError) as error:
                await h.ok(SendMessageBatch("q.fifo", [valid, entry]))
            assert error.value.code == code
        assert await receive(h) == []
        await h.ok(CreateQueue("content.fifo", {**FIFO, "ContentBasedDeduplication": "true"}))
        batch = await h.ok(SendMessageBatch("content.fifo", [valid, SendEntry("b", "n", message_group_id="g")]))
        assert [entry.id for entry in batch.successful] == ["a", "b"]


async def test_send_batch_total_size_counts_attribute_bytes(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q"))
        # the bodies alone fit in a batch (1 MiB); with their attributes they do not
        big = {"k": MessageAttributeValue("String", "v" * 200_000)}
        entries = [SendEntry(str(i), "x" * 400_000, message_attributes=big) for i in range(2)]
        with pytest.raises(BrokerError) as error:
            await h.ok(SendMessageBatch("q", entries))
        assert error.value.code == "BatchRequestTooLong"


async def test_deduplication_scope_changed_after_creation_keeps_the_created_scope(autojump_clock):
    """AWS returns the new DeduplicationScope but deduplicates as the queue was created (LocalStack
    pull requests 10324 and 10887, from what AWS was seen to do); across a restart too."""
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q.fifo", FIFO))
        await h.ok(SetQueueAttributes("q.fifo", {"DeduplicationScope": "messageGroup", "FifoThroughputLimit": "perMessageGroupId"}))
        attributes = (await h.ok(GetQueueAttributes("q.fifo", ["All"]))).attributes
        assert attributes["DeduplicationScope"] == "messageGroup" and not any(":" in name for name in attributes)
        first = await send(h, "m", group="a", dedup="d")
        assert (await send(h, "m", group="b", dedup="d")).message_id == first.message_id  # still queue-wide
    async with running_broker(store) as h:
        assert (await send(h, "m", group="c", dedup="d")).message_id == first.message_id
        await h.ok(SetQueueAttributes("q.fifo", {"DeduplicationScope": "queue", "FifoThroughputLimit": "perQueue"}))
        await h.ok(SetQueueAttributes("q.fifo", {"DeduplicationScope": "messageGroup", "FifoThroughputLimit": "perMessageGroupId"}))
        assert (await send(h, "m", group="e", dedup="d")).message_id == first.message_id
