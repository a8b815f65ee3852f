"""Dead-letter queues, redrive policies and message move tasks, on trio's autojump clock."""

import json

import pytest
import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import (
    MessageAttributeValue,
    CancelMessageMoveTask,
    CreateQueue,
    DeleteMessage,
    DeleteQueue,
    GetQueueAttributes,
    ListDeadLetterSourceQueues,
    ListMessageMoveTasks,
    ReceiveMessage,
    SendMessage,
    SetQueueAttributes,
    StartMessageMoveTask,
)
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import MessageDeleted, MessageSent

from ..conftest import running_broker

ARN = "arn:aws:sqs:us-east-1:000000000000:"


def redrive(target, count=2):
    return json.dumps({"deadLetterTargetArn": ARN + target, "maxReceiveCount": count})


async def receive(h, queue, **options):
    return (await h.ok(ReceiveMessage(queue, **options))).messages


async def counts(h, queue):
    attributes = (await h.ok(GetQueueAttributes(queue, ["All"]))).attributes
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


async def test_a_message_received_max_times_moves_to_the_dead_letter_queue(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("q", {"RedrivePolicy": redrive("dlq", "2"), "VisibilityTimeout": "10"}))
        assert json.loads((await h.ok(GetQueueAttributes("q", ["RedrivePolicy"]))).attributes["RedrivePolicy"]) == {
            "deadLetterTargetArn": ARN + "dlq",
            "maxReceiveCount": 2,
        }
        sent = await h.ok(SendMessage("q", "poison", message_attributes={"k": MessageAttributeValue("String", "v")}))
        for _ in range(2):
            (message,) = await receive(h, "q")
            await trio.sleep(11)
        assert await receive(h, "q") == []  # the third attempt moves it instead
        await trio.sleep(0.1)
        (dead,) = await receive(h, "dlq", attribute_names=["All"], message_attribute_names=["All"])
        assert (dead.message_id, dead.body, dead.message_attributes) == (sent.message_id, "poison", {"k": MessageAttributeValue("String", "v")})
        assert dead.attributes["DeadLetterQueueSourceArn"] == ARN + "q"
        assert dead.attributes["ApproximateReceiveCount"] == "1"
        assert await counts(h, "q") == (0, 0)
        # the old receipt handle of the source queue no longer deletes anything there
        await h.ok(DeleteMessage("q", message.receipt_handle))
        # one transaction stored it in the dead-letter queue and deleted it from the source
        log = h.store.read_log()
        moved_lsn = next(lsn for lsn, r in log if isinstance(r, MessageSent) and r.queue == "dlq")
        deleted_lsn = next(lsn for lsn, r in log if isinstance(r, MessageDeleted) and r.reason == "moved")
        assert deleted_lsn == moved_lsn + 1


async def test_dead_lettering_keeps_the_original_sent_timestamp(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("q", {"RedrivePolicy": redrive("dlq", 1), "VisibilityTimeout": "5"}))
        await h.ok(SendMessage("q", "m"))
        (first,) = await receive(h, "q", attribute_names=["SentTimestamp"])
        await trio.sleep(100)
        assert await receive(h, "q") == []
        await trio.sleep(0.1)
        (dead,) = await receive(h, "dlq", attribute_names=["SentTimestamp"])
        assert dead.attributes["SentTimestamp"] == first.attributes["SentTimestamp"]


async def test_redrive_policies_are_checked_against_their_target(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("dlq.fifo", {"FifoQueue": "true"}))
        await h.ok(CreateQueue("closed", {"RedriveAllowPolicy": json.dumps({"redrivePermission": "denyAll"})}))
        only_a = json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [ARN + "a"]})
        await h.ok(CreateQueue("picky", {"RedriveAllowPolicy": only_a}))
        await h.ok(CreateQueue("b"))
        bad = [
            redrive("missing"),
            redrive("dlq.fifo"),  # standard source, FIFO target
            redrive("closed"),
            redrive("picky"),  # allows only a
            redrive("dlq", 0),
            redrive("dlq", 1001),
            json.dumps({"deadLetterTargetArn": "not-an-arn", "maxReceiveCount": 1}),
            "{not json",
        ]
        for policy in bad:
            with pytest.raises(BrokerError) as error:
                await h.ok(SetQueueAttributes("b", {"RedrivePolicy": policy}))
            assert error.value.code in ("InvalidParameterValue", "InvalidAttributeValue"), policy
        await h.ok(CreateQueue("a", {"RedrivePolicy": redrive("picky")}))
        with pytest.raises(BrokerError):
            await h.ok(CreateQueue("c", {"RedrivePolicy": redrive("closed")}))
        with pytest.raises(BrokerError):
            await h.ok(SetQueueAttributes("dlq", {"RedriveAllowPolicy": json.dumps({"redrivePermission": "byQueue"})}))


async def test_list_dead_letter_source_queues_follows_policies_and_deletes(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("dlq"))
        for name in ("s1", "s2", "s3"):
            await h.ok(CreateQueue(name, {"RedrivePolicy": redrive("dlq")}))
        page = await h.ok(ListDeadLetterSourceQueues("dlq", max_results=2))
        assert page.queues == ["s1", "s2"] and page.next_token
        rest = await h.ok(ListDeadLetterSourceQueues("dlq", max_results=2, next_token=page.next_token))
        assert rest.queues == ["s3"] and rest.next_token is None
        await h.ok(SetQueueAttributes("s1", {"RedrivePolicy": ""}))
        await h.ok(DeleteQueue("s2"))
        assert (await h.ok(ListDeadLetterSourceQueues("dlq"))).queues == ["s3"]
        assert "RedrivePolicy" not in (await h.ok(GetQueueAttributes("s1", ["All"]))).attributes


async def test_fifo_dead_letter_queue_keeps_group_order(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("dlq.fifo", {"FifoQueue": "true"}))
        await h.ok(
            CreateQueue("q.fifo", {"FifoQueue": "true", "RedrivePolicy": redrive("dlq.fifo", 1), "VisibilityTimeout": "5"})
        )
        for i in range(3):
            await h.ok(SendMessage("q.fifo", f"m{i}", message_group_id="g", message_deduplication_id=f"d{i}"))
        assert [m.body for m in await receive(h, "q.fifo", max_number_of_messages=10)] == ["m0", "m1", "m2"]
        await trio.sleep(6)
        for _ in range(3):  # each attempt moves the group's head; the group waits for it
            assert await receive(h, "q.fifo", max_number_of_messages=10) == []
            await trio.sleep(0.1)
        dead = await receive(h, "dlq.fifo", max_number_of_messages=10, attribute_names=["MessageGroupId"])
        assert [(m.body, m.attributes["MessageGroupId"]) for m in dead] == [("m0", "g"), ("m1", "g"), ("m2", "g")]


async def test_a_missing_dead_letter_queue_keeps_the_message_in_its_source(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("q", {"RedrivePolicy": redrive("dlq", 1), "VisibilityTimeout": "5"}))
        await h.ok(SendMessage("q", "m"))
        await receive(h, "q")
        await h.ok(DeleteQueue("dlq"))
        await trio.sleep(6)
        assert await receive(h, "q") == []  # the move fails: the message stays, hidden briefly
        await trio.sleep(0.1)
        assert await counts(h, "q") == (0, 1)
        await h.ok(CreateQueue("dlq"))
        await trio.sleep(2)
        assert await receive(h, "q") == []  # moved on the next attempt
        await trio.sleep(0.1)
        assert [m.body for m in await receive(h, "dlq")] == ["m"]


async def test_dead_lettered_messages_survive_a_restart_and_are_in_exactly_one_queue(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("q", {"RedrivePolicy": redrive("dlq", 1), "VisibilityTimeout": "5"}))
        for i in range(20):
            await h.ok(SendMessage("q", f"m{i}"))
        for _ in range(2):
            await receive(h, "q", max_number_of_messages=10)
        await trio.sleep(6)
        await receive(h, "q", max_number_of_messages=10)
        await trio.sleep(0.1)
    async with running_broker(store) as h:
        source, dead = await counts(h, "q"), await counts(h, "dlq")
        assert sum(source) + sum(dead) == 20
        assert dead[0] >= 10


async def move_all_back(h, **options):
    handle = (await h.ok(StartMessageMoveTask("dlq", **options))).task_handle
    for _ in range(100):
        (task,) = (await h.ok(ListMessageMoveTasks("dlq"))).tasks
        if task.status != "RUNNING":
            return handle, task
        await trio.sleep(1)
    raise AssertionError("the move task never finished")


async def dead_letter(h, queue, bodies):
    for body in bodies:
        await h.ok(SendMessage(queue, body))
    for _ in range(len(bodies)):
        await receive(h, queue, max_number_of_messages=10, visibility_timeout=0)
    await receive(h, queue, max_number_of_messages=10)  # every one is past maxReceiveCount now
    await trio.sleep(0.1)


async def test_a_move_task_returns_messages_to_their_sources(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("a", {"RedrivePolicy": redrive("dlq", 1)}))
        await h.ok(CreateQueue("b", {"RedrivePolicy": redrive("dlq", 1)}))
        await dead_letter(h, "a", ["a1", "a2"])
        await dead_letter(h, "b", ["b1"])
        assert await counts(h, "dlq") == (3, 0)
        handle, task = await move_all_back(h)
        assert (task.status, task.approximate_number_of_messages_moved, task.approximate_number_of_messages_to_move) == ("COMPLETED", 3, 3)
        assert task.task_handle == handle and task.source_arn == ARN + "dlq"
        assert sorted(m.body for m in await receive(h, "a", max_number_of_messages=10)) == ["a1", "a2"]
        assert [m.body for m in await receive(h, "b", max_number_of_messages=10)] == ["b1"]
        assert await counts(h, "dlq") == (0, 0)


async def test_a_move_task_to_a_destination_is_throttled_and_can_be_cancelled(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("a", {"RedrivePolicy": redrive("dlq", 1)}))
        await h.ok(CreateQueue("elsewhere"))
        await dead_letter(h, "a", [f"m{i}" for i in range(10)])
        handle = (
            await h.ok(StartMessageMoveTask("dlq", destination_arn=ARN + "elsewhere", max_number_of_messages_per_second=2))
        ).task_handle
        with pytest.raises(BrokerError) as error:
            await h.ok(StartMessageMoveTask("dlq"))
        assert error.value.code == "UnsupportedOperation"
        await trio.sleep(2.5)
        moved = (await h.ok(CancelMessageMoveTask("dlq", handle))).moved
        assert 2 <= moved <= 6  # about 2 per second
        await trio.sleep(1)
        (task,) = (await h.ok(ListMessageMoveTasks("dlq"))).tasks
        assert task.status == "CANCELLED"
        assert task.approximate_number_of_messages_moved + (await counts(h, "dlq"))[0] == 10
        assert len(await receive(h, "elsewhere", max_number_of_messages=10)) == task.approximate_number_of_messages_moved
        with pytest.raises(BrokerError) as error:
            await h.ok(CancelMessageMoveTask("dlq", handle))
        assert error.value.code == "ResourceNotFoundException"


async def test_move_tasks_are_refused_on_queues_that_are_not_dead_letter_queues(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("plain"))
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("a", {"RedrivePolicy": redrive("dlq", 1)}))
        for op, code in [
            (StartMessageMoveTask("plain"), "UnsupportedOperation"),
            (StartMessageMoveTask("nope"), "ResourceNotFoundException"),
            (StartMessageMoveTask("dlq", destination_arn=ARN + "nope"), "ResourceNotFoundException"),
            (StartMessageMoveTask("dlq", max_number_of_messages_per_second=501), "InvalidParameterValue"),
            (CancelMessageMoveTask("dlq", "garbage!"), "ResourceNotFoundException"),
        ]:
            with pytest.raises(BrokerError) as error:
                await h.ok(op)
            assert error.value.code == code, op


async def test_a_running_move_task_resumes_after_a_restart(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("a", {"RedrivePolicy": redrive("dlq", 1)}))
        await dead_letter(h, "a", [f"m{i}" for i in range(6)])
        await h.ok(StartMessageMoveTask("dlq", max_number_of_messages_per_second=1))
        await trio.sleep(2.5)
    async with running_broker(store) as h:
        (task,) = (await h.ok(ListMessageMoveTasks("dlq"))).tasks
        assert task.status == "RUNNING"
        for _ in range(30):
            await trio.sleep(1)
            (task,) = (await h.ok(ListMessageMoveTasks("dlq"))).tasks
            if task.status != "RUNNING":
                break
        assert task.status == "COMPLETED"
        assert sorted(m.body for m in await receive(h, "a", max_number_of_messages=10)) == [f"m{i}" for i in range(6)]
