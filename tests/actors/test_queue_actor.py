"""Queue actors through the registry, the writer and a memory store, on trio's autojump clock."""

import pytest
import trio

from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import (
    MessageAttributeValue,
    ChangeMessageVisibility,
    ChangeMessageVisibilityBatch,
    CreateQueue,
    DeleteEntry,
    DeleteMessage,
    DeleteMessageBatch,
    DeleteQueue,
    Failure,
    GetQueueAttributes,
    GetQueueUrl,
    ListQueues,
    PurgeQueue,
    ReceiveMessage,
    SendEntry,
    SendMessage,
    SendMessageBatch,
    SetQueueAttributes,
    VisibilityEntry,
)
from dovecote.actors.config import BrokerConfig
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import MessageReceived
from dovecote.storage.store import StorageError

from ..conftest import running_broker


async def receive(h, queue="q", **options):
    return (await h.ok(ReceiveMessage(queue, **options))).messages


async def test_send_receive_delete_round_trip(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q"))
        attrs = {"colour": MessageAttributeValue("String", "blue"), "n": MessageAttributeValue("Number", "3")}
        sent = await h.ok(SendMessage("q", "hello", message_attributes=attrs))
        (message,) = await receive(h, attribute_names=["All"], message_attribute_names=["colour"])
        assert message.message_id == sent.message_id
        assert message.body == "hello"
        assert message.md5_of_body == sent.md5_of_message_body
        assert set(message.message_attributes) == {"colour"}
        assert message.attributes["ApproximateReceiveCount"] == "1"
        assert message.attributes["SenderId"] == "000000000000"
        assert int(message.attributes["SentTimestamp"]) <= int(message.attributes["ApproximateFirstReceiveTimestamp"])
        await h.ok(DeleteMessage("q", message.receipt_handle))
        assert await receive(h) == []
        attributes = (await h.ok(GetQueueAttributes("q", ["All"]))).attributes
        assert attributes["ApproximateNumberOfMessages"] == "0"
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


async def test_long_poll_returns_as_soon_as_a_message_arrives(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q"))
        got = []

        async def poll():
            started = trio.current_time()
            got.append((await receive(h, wait_time_seconds=20), trio.current_time() - started))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(5)
            await h.ok(SendMessage("q", "late"))
        messages, waited = got[0]
        assert [m.body for m in messages] == ["late"]
        assert 5 <= waited < 5.5


async def test_long_poll_gives_up_after_its_wait_time_and_queue_default_applies(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q", {"ReceiveMessageWaitTimeSeconds": "7"}))
        started = trio.current_time()
        assert await receive(h, wait_time_seconds=3) == []
        assert trio.current_time() - started == pytest.approx(3, abs=0.01)
        started = trio.current_time()
        assert await receive(h) == []
        assert trio.current_time() - started == pytest.approx(7, abs=0.01)


async def test_visibility_timeout_and_receive_counts(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q", {"VisibilityTimeout": "30"}))
        await h.ok(SendMessage("q", "m"))
        (first,) = await receive(h, attribute_names=["ApproximateReceiveCount"])
        await trio.sleep(29)
        assert await receive(h) == []
        await trio.sleep(1.5)
        (second,) = await receive(h, attribute_names=["ApproximateReceiveCount"])
        assert second.attributes["ApproximateReceiveCount"] == "2"
        await h.ok(ChangeMessageVisibility("q", first.receipt_handle, 3600))  # an earlier receive's handle works
        await trio.sleep(3000)
        assert await receive(h) == []
        await trio.sleep(700)
        (third,) = await receive(h, attribute_names=["ApproximateReceiveCount"])
        assert third.attributes["ApproximateReceiveCount"] == "3"
        await h.ok(ChangeMessageVisibility("q", second.receipt_handle, 3600))
        await trio.sleep(3000)
        assert await receive(h) == []
        await trio.sleep(700)
        assert len(await receive(h)) == 1


async def test_delays(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q", {"DelaySeconds": "60"}))
        await h.ok(SendMessage("q", "queue delay"))
        await h.ok(SendMessage("q", "no delay", delay_seconds=0))
        await h.ok(SendMessage("q", "own delay", delay_seconds=900))
        assert [m.body for m in await receive(h, max_number_of_messages=10, visibility_timeout=3600)] == ["no delay"]
        await trio.sleep(60)
        assert [m.body for m in await receive(h, max_number_of_messages=10, visibility_timeout=3600)] == ["queue delay"]
        assert await receive(h, wait_time_seconds=20) == []
        await trio.sleep(900)
        assert [m.body for m in await receive(h, max_number_of_messages=10)] == ["own delay"]
        bad = await h.call(SendMessage("q", "x", delay_seconds=901))
        assert isinstance(bad, Failure) and bad.code == "InvalidParameterValue"


async def test_retention_period_expires_messages(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q", {"MessageRetentionPeriod": "60"}))
        await h.ok(SendMessage("q", "old"))
        await trio.sleep(59)
        await h.ok(SendMessage("q", "new"))
        await trio.sleep(1.5)
        assert [m.body for m in await receive(h, max_number_of_messages=10)] == ["new"]
    expired = [r for _, r in store.read_log() if getattr(r, "reason", None) == "expired"]
    assert len(expired) == 1


async def test_a_wall_clock_step_neither_expires_nor_reveals_messages(autojump_clock):
    wall = [1_700_000_000_000]

    def wall_source():
        return wall[0] + int(trio.current_time() * 1000)

    async with running_broker(wall_source=wall_source, start_wall_ms=wall[0]) as h:
        await h.ok(CreateQueue("q", {"MessageRetentionPeriod": "60", "VisibilityTimeout": "30"}))
        await h.ok(SendMessage("q", "in flight"))
        await h.ok(SendMessage("q", "waiting"))
        (taken,) = await receive(h)
        wall[0] += 10 * 365 * 24 * 3600 * 1000  # NTP jumps ten years ahead
        await trio.sleep(1)
        (left,) = await receive(h)
        assert {taken.body, left.body} == {"in flight", "waiting"}
        wall[0] -= 20 * 365 * 24 * 3600 * 1000  # and then far back
        await trio.sleep(1)
        attributes = (await h.ok(GetQueueAttributes("q", ["All"]))).attributes
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "2"


async def test_batches_report_each_entry(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q", {"MaximumMessageSize": "1024"}))
        result = await h.ok(
            SendMessageBatch("q", [SendEntry("a", "fine"), SendEntry("b", "x" * 2000), SendEntry("c", "\x00")])
        )
        assert [e.id for e in result.successful] == ["a"]
        assert {f.id: f.code for f in result.failed} == {"b": "InvalidParameterValue", "c": "InvalidParameterValue"}
        for entries, code in [
            ([], "EmptyBatchRequest"),
            ([SendEntry(str(i), "x") for i in range(11)], "TooManyEntriesInBatchRequest"),
            ([SendEntry("same", "x"), SendEntry("same", "y")], "BatchEntryIdsNotDistinct"),
            ([SendEntry("a", "x" * 600_000), SendEntry("b", "y" * 600_000)], "BatchRequestTooLong"),
        ]:
            failure = await h.call(SendMessageBatch("q", entries))
            assert isinstance(failure, Failure) and failure.code == code
        (message,) = await receive(h)
        deleted = await h.ok(
            DeleteMessageBatch("q", [DeleteEntry("ok", message.receipt_handle), DeleteEntry("bad", "junk")])
        )
        assert deleted.successful == ["ok"]
        assert [(f.id, f.code) for f in deleted.failed] == [("bad", "ReceiptHandleIsInvalid")]
        changed = await h.ok(ChangeMessageVisibilityBatch("q", [VisibilityEntry("x", "junk", 5)]))
        assert changed.successful == [] and changed.failed[0].code == "ReceiptHandleIsInvalid"


async def test_queue_lifecycle(autojump_clock):
    async with running_broker() as h:
        assert (await h.ok(CreateQueue("q", {"VisibilityTimeout": "40"}))).queue == "q"
        assert (await h.ok(CreateQueue("q", {"VisibilityTimeout": "40"}))).queue == "q"
        clash = await h.call(CreateQueue("q", {"VisibilityTimeout": "41"}))
        assert isinstance(clash, Failure) and clash.code == "QueueNameExists"
        for name in ("alpha", "alps", "beta"):
            await h.ok(CreateQueue(name))
        assert (await h.ok(ListQueues("al"))).queues == ["alpha", "alps"]
        page = await h.ok(ListQueues(max_results=2))
        assert page.queues == ["alpha", "alps"] and page.next_token
        rest = await h.ok(ListQueues(max_results=2, next_token=page.next_token))
        assert rest.queues == ["beta", "q"] and rest.next_token is None
        await h.ok(SendMessage("q", "before delete"))
        await h.ok(DeleteQueue("q"))
        for op in (GetQueueUrl("q"), SendMessage("q", "x"), ReceiveMessage("q"), DeleteQueue("q")):
            gone = await h.call(op)
            assert isinstance(gone, Failure) and gone.code == "QueueDoesNotExist", op
        await h.ok(CreateQueue("q"))
        assert await receive(h) == []
        attributes = (await h.ok(GetQueueAttributes("q", ["VisibilityTimeout"]))).attributes
        assert attributes == {"VisibilityTimeout": "30"}
        await h.ok(SetQueueAttributes("q", {"VisibilityTimeout": "5"}))
        bad = await h.call(SetQueueAttributes("q", {"Nope": "1"}))
        assert isinstance(bad, Failure) and bad.code == "InvalidAttributeName"


async def test_delete_queue_answers_waiting_long_polls(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q"))
        results = []

        async def poll():
            results.append(await h.call(ReceiveMessage("q", wait_time_seconds=20)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(1)
            await h.ok(DeleteQueue("q"))
        assert isinstance(results[0], Failure) and results[0].code == "QueueDoesNotExist"


async def test_purge(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateQueue("q"))
        for i in range(5):
            await h.ok(SendMessage("q", f"m{i}"))
        await h.ok(PurgeQueue("q"))
        assert await receive(h) == []
        await h.ok(SendMessage("q", "after"))
        assert [m.body for m in await receive(h)] == ["after"]


async def test_state_survives_a_restart_from_the_store(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q", {"VisibilityTimeout": "100"}))
        for body in ("a", "b", "c"):
            await h.ok(SendMessage("q", body))
        first = await receive(h, max_number_of_messages=2)
        await h.ok(DeleteMessage("q", first[0].receipt_handle))
    async with running_broker(store) as h:
        attributes = (await h.ok(GetQueueAttributes("q", ["All"]))).attributes
        assert attributes["VisibilityTimeout"] == "100"
        assert attributes["ApproximateNumberOfMessages"] == "1"
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
        # the handle issued before the restart still works
        await h.ok(ChangeMessageVisibility("q", first[1].receipt_handle, 0))
        again = await receive(h, max_number_of_messages=10, attribute_names=["All"])
        assert sorted(m.body for m in again) == sorted(["b", "c"])
        counts = {m.body: m.attributes["ApproximateReceiveCount"] for m in again}
        assert counts[first[1].body] == "2"


async def test_a_failed_commit_rebuilds_the_queue_from_the_store(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q"))
        await h.ok(SendMessage("q", "m"))
        store.fail_next_commits.append(StorageError("injected I/O error"))
        failed = await h.call(ReceiveMessage("q"))
        assert isinstance(failed, Failure) and failed.code == "ServiceUnavailable"
        # the failed receive was never stored, so it did not count
        (message,) = await receive(h, attribute_names=["ApproximateReceiveCount"])
        assert message.attributes["ApproximateReceiveCount"] == "1"
        assert [r.receive_count for _, r in store.read_log() if isinstance(r, MessageReceived)] == [1]


async def test_a_crashing_actor_is_restarted_and_the_broker_stays_up(autojump_clock, monkeypatch):
    from dovecote.actors.queue_core import QueueCore

    async with running_broker() as h:
        await h.ok(CreateQueue("sick"))
        await h.ok(CreateQueue("healthy"))
        await h.ok(SendMessage("sick", "kept"))
        original = QueueCore.get_attributes
        crashes = []

        def crash_once(self, names, now):
            if self.name == "sick" and not crashes:
                crashes.append(1)
                raise RuntimeError("a bug")
            return original(self, names, now)

        monkeypatch.setattr(QueueCore, "get_attributes", crash_once)
        failed = await h.call(GetQueueAttributes("sick", ["All"]))
        assert isinstance(failed, Failure) and failed.code == "InternalError"
        await h.ok(SendMessage("healthy", "unaffected"))
        (message,) = await receive(h, "sick")
        assert message.body == "kept"


async def test_a_full_mailbox_is_a_retryable_overload(autojump_clock):
    async with running_broker(config=BrokerConfig(mailbox_capacity=2)) as h:
        await h.ok(CreateQueue("q"))
        await h.ok(SendMessage("q", "warms the session's lookup cache"))
        slots = [ReplySlot() for _ in range(20)]
        for i, slot in enumerate(slots):  # no checkpoint in between: the actor cannot drain its mailbox
            h.session.submit(SendMessage("q", f"m{i}"), slot)
        outcomes = [await slot.wait() for slot in slots]
        throttled = [o for o in outcomes if isinstance(o, Failure)]
        # two fit in the mailbox and one more may go straight to the actor waiting on it
        assert len(throttled) in (17, 18) and all(o.code == "RequestThrottled" for o in throttled)


async def test_disk_full_refuses_sends_keeps_deletes_and_resumes(autojump_clock):
    store = MemoryStore(space_bytes=8000, reserve_bytes=4000)
    async with running_broker(store, space_check_interval_s=1.0, resume_free_bytes=4000) as h:
        await h.ok(CreateQueue("q"))
        accepted = 0
        while True:
            result = await h.call(SendMessage("q", "x" * 200))
            if isinstance(result, Failure):
                assert result.code == "ServiceUnavailable" and "full" in result.message
                break
            accepted += 1
        assert accepted >= 5  # the send that met the full disk is refused, not taken into the reserve
        refused = await h.call(SendMessage("q", "y"))
        assert isinstance(refused, Failure)
        messages = await receive(h, max_number_of_messages=3)
        assert len(messages) == 3
        for message in messages:
            await h.ok(DeleteMessage("q", message.receipt_handle))
        store.space_bytes = 100_000  # space returns
        await trio.sleep(2)
        await h.ok(SendMessage("q", "after"))
        remaining = accepted - len(messages) + 1
        total = 0
        while batch := await receive(h, max_number_of_messages=10):
            total += len(batch)
            for message in batch:
                await h.ok(DeleteMessage("q", message.receipt_handle))
        assert total == remaining


async def test_each_region_is_its_own_namespace_across_restarts(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        ireland = h.broker.session("eu-west-1")

        async def in_ireland(op):
            slot = ReplySlot()
            ireland.submit(op, slot)
            return await slot.wait()

        await h.ok(CreateQueue("orders", {"VisibilityTimeout": "10"}))
        assert (await in_ireland(CreateQueue("orders", {"VisibilityTimeout": "20"}))).queue == "orders"
        await in_ireland(SendMessage("orders", "in Ireland"))
        assert await receive(h, "orders") == []
        assert (await in_ireland(ListQueues())).queues == ["orders"]
        await in_ireland(CreateQueue("only-in-ireland"))
        assert (await h.ok(ListQueues())).queues == ["orders"]
    async with running_broker(store) as h:
        ireland = h.broker.session("eu-west-1")
        slot = ReplySlot()
        ireland.submit(GetQueueAttributes("orders", ["All"]), slot)
        attributes = (await slot.wait()).attributes
        assert attributes["QueueArn"] == "arn:aws:sqs:eu-west-1:000000000000:orders"
        assert attributes["VisibilityTimeout"] == "20"
        assert attributes["ApproximateNumberOfMessages"] == "1"
        home = (await h.ok(GetQueueAttributes("orders", ["All"]))).attributes
        assert home["QueueArn"] == "arn:aws:sqs:us-east-1:000000000000:orders"
        assert home["VisibilityTimeout"] == "10"
        missing = await h.call(GetQueueUrl("only-in-ireland"))
        assert isinstance(missing, Failure) and missing.code == "QueueDoesNotExist"


async def test_tags_and_policy_survive_a_restart(autojump_clock):
    from dovecote.actors.ops import AddPermission, ListQueueTags, TagQueue

    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q", tags={"a": "1"}))
        await h.ok(TagQueue("q", {"b": "2"}))
        await h.ok(AddPermission("q", "share", ["111122223333"], ["*"]))
    async with running_broker(store) as h:
        assert (await h.ok(ListQueueTags("q"))).tags == {"a": "1", "b": "2"}
        assert '"Sid":"share"' in (await h.ok(GetQueueAttributes("q", ["Policy"]))).attributes["Policy"]


async def test_peek_browses_without_consuming(autojump_clock):
    from dovecote.actors.ops import PeekMessages

    async with running_broker() as h:
        await h.ok(CreateQueue("q", {"VisibilityTimeout": "60"}))
        for i in range(5):
            await h.ok(SendMessage("q", f"m{i}", delay_seconds=100 if i == 4 else None))
        (taken,) = await receive(h)
        page = await h.ok(PeekMessages("q", max_messages=2))
        assert [(m.body, m.state, m.receive_count) for m in page.messages] == [("m0", "in_flight", 1), ("m1", "visible", 0)]
        rest = await h.ok(PeekMessages("q", max_messages=10, after_seq=page.next_after_seq))
        assert [(m.body, m.state) for m in rest.messages] == [("m2", "visible"), ("m3", "visible"), ("m4", "delayed")]
        assert rest.next_after_seq is None
        delayed = await h.ok(PeekMessages("q", state="delayed"))
        assert [m.body for m in delayed.messages] == ["m4"]
        assert page.messages[0].visible_at_ms - h.clock.wall_ms() == pytest.approx(60_000, abs=50)
        attributes = (await h.ok(GetQueueAttributes("q", ["All"]))).attributes
        assert attributes["ApproximateNumberOfMessages"] == "3"  # untouched by peeking
        again = await receive(h, max_number_of_messages=10, attribute_names=["ApproximateReceiveCount"])
        assert sorted(m.body for m in again) == ["m1", "m2", "m3"]
        assert all(m.attributes["ApproximateReceiveCount"] == "1" for m in again)
        bad = await h.call(PeekMessages("q", state="sideways"))
        assert isinstance(bad, Failure) and bad.code == "InvalidParameterValue"


async def test_a_bug_in_the_registry_fails_one_request_not_the_broker(autojump_clock, monkeypatch):
    from dovecote.actors import validation

    async with running_broker() as h:
        original = validation.validate_queue_name
        monkeypatch.setattr(validation, "validate_queue_name", lambda name, fifo=False: 1 / 0 if name == "boom" else original(name, fifo))
        failed = await h.call(CreateQueue("boom"))
        assert isinstance(failed, Failure) and failed.code == "InternalError"
        await h.ok(CreateQueue("fine"))
        assert (await h.ok(ListQueues())).queues == ["fine"]
