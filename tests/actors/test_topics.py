"""SNS topics through the registry, the writer and a memory store, on trio's autojump clock."""

import json

import pytest
import trio

from dovecote.actors.errors import BrokerError
from dovecote.actors.ops import (
    MessageAttributeValue,
    CreateQueue,
    DeleteEntry,
    DeleteMessageBatch,
    CreateTopic,
    DeleteQueue,
    DeleteTopic,
    ExplainDelivery,
    GetSubscriptionAttributes,
    GetTopicAttributes,
    ListSubscriptions,
    ListSubscriptionsByTopic,
    ListTopics,
    Publish,
    PublishBatch,
    PublishEntry,
    PurgeQueue,
    ReceiveMessage,
    SetSubscriptionAttributes,
    SetTopicAttributes,
    Subscribe,
    Unsubscribe,
)
from dovecote.actors.push_types import DEAD_LETTERED
from dovecote.storage.memory_store import MemoryStore
from dovecote.storage.records import MessageSent, Published

from ..conftest import running_broker

QUEUE = "arn:aws:sqs:us-east-1:000000000000:"
TOPIC = "arn:aws:sns:us-east-1:000000000000:"


async def bodies(h, queue, **options):
    await trio.sleep(0.01)  # the queue adopts the fan-out after the topic's commit
    messages = (await h.ok(ReceiveMessage(queue, max_number_of_messages=10, **options))).messages
    return messages


async def subscribe(h, topic, queue, **attributes):
    return (await h.ok(Subscribe(topic, "sqs", QUEUE + queue, attributes))).arn


async def test_topic_lifecycle_and_attributes(autojump_clock):
    async with running_broker() as h:
        arn = (await h.ok(CreateTopic("news", {"DisplayName": "News"}))).arn
        assert arn == TOPIC + "news"
        assert (await h.ok(CreateTopic("news", {"DisplayName": "News"}))).arn == arn
        with pytest.raises(BrokerError) as error:
            await h.ok(CreateTopic("news", {"DisplayName": "Other"}))
        assert error.value.code == "InvalidParameter"
        attributes = (await h.ok(GetTopicAttributes("news"))).attributes
        assert attributes["TopicArn"] == arn and attributes["DisplayName"] == "News"
        assert attributes["SubscriptionsConfirmed"] == "0" and "Policy" in attributes
        await h.ok(SetTopicAttributes("news", "SignatureVersion", "2"))
        with pytest.raises(BrokerError):
            await h.ok(SetTopicAttributes("news", "SignatureVersion", "3"))
        with pytest.raises(BrokerError):
            await h.ok(SetTopicAttributes("news", "Colour", "x"))
        assert (await h.ok(ListTopics())).arns == [arn]
        await h.ok(DeleteTopic("news"))
        await h.ok(DeleteTopic("news"))  # deleting a missing topic succeeds, as on AWS
        assert (await h.ok(ListTopics())).arns == []
        with pytest.raises(BrokerError) as error:
            await h.ok(Publish("news", "x"))
        assert error.value.code == "NotFound"


async def test_fan_out_with_filter_policies_raw_and_enveloped(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("orders"))
        for queue in ("all", "red", "raw", "none"):
            await h.ok(CreateQueue(queue))
        await subscribe(h, "orders", "all")
        await subscribe(h, "orders", "red", FilterPolicy=json.dumps({"colour": ["red"]}))
        await subscribe(h, "orders", "raw", RawMessageDelivery="true")
        await subscribe(h, "orders", "none", FilterPolicy=json.dumps({"colour": ["green"]}))
        colour = {"colour": MessageAttributeValue("String", "red")}
        published = await h.ok(Publish("orders", "hello", subject="greeting", message_attributes=colour))
        (enveloped,) = await bodies(h, "all")
        envelope = json.loads(enveloped.body)
        assert envelope["Type"] == "Notification" and envelope["MessageId"] == published.message_id
        assert envelope["TopicArn"] == TOPIC + "orders" and envelope["Message"] == "hello"
        assert envelope["Subject"] == "greeting" and envelope["Timestamp"].endswith("Z")
        assert envelope["MessageAttributes"] == {"colour": {"Type": "String", "Value": "red"}}
        assert envelope["UnsubscribeURL"].startswith("http://")
        assert len(await bodies(h, "red")) == 1
        (raw,) = await bodies(h, "raw", message_attribute_names=["All"])
        assert raw.body == "hello" and raw.message_attributes == colour
        assert await bodies(h, "none") == []
        # the publish and its deliveries are one commit: consecutive records in the log
        log = h.store.read_log()
        lsn = next(lsn for lsn, r in log if isinstance(r, Published))
        following = [r for l, r in log if lsn < l <= lsn + 3]
        assert all(isinstance(r, MessageSent) for r in following) and len(following) == 3


async def test_message_structure_json_gives_each_protocol_its_payload(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("q"))
        await subscribe(h, "t", "q", RawMessageDelivery="true")
        await h.ok(Publish("t", json.dumps({"default": "plain", "sqs": "for queues"}), message_structure="json"))
        assert [m.body for m in await bodies(h, "q")] == ["for queues"]
        for bad in ("not json", json.dumps({"sqs": "no default"})):
            with pytest.raises(BrokerError) as error:
                await h.ok(Publish("t", bad, message_structure="json"))
            assert error.value.code == "InvalidParameter"


async def test_publish_validation(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        cases = [
            (Publish("t", ""), "InvalidParameter"),
            (Publish("t", "x" * (256 * 1024 + 1)), "InvalidParameter"),
            (Publish("t", "x", subject="two\nlines"), "InvalidParameter"),
            (Publish("t", "x", subject="s" * 100), "InvalidParameter"),
            (Publish("t", "x", message_deduplication_id="d"), "InvalidParameter"),  # not a FIFO topic
            (Publish("t", "x", message_attributes={"a": MessageAttributeValue("String.Array", "not an array")}), "ParameterValueInvalid"),
            (Publish("t", "x", message_attributes={"a": MessageAttributeValue("Number", "NaN-ish")}), "ParameterValueInvalid"),
        ]
        for op, code in cases:
            with pytest.raises(BrokerError) as error:
                await h.ok(op)
            assert error.value.code == code, op


async def test_subscriptions_are_validated_idempotent_and_listed(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("q"))
        for protocol, endpoint in [("sms", "+15555550100"), ("lambda", "arn:aws:lambda:x"), ("http", "ftp://x"),
                                   ("https", "http://x"), ("http", "http://"), ("email", "ops@example.com"),
                                   ("sqs", "not-an-arn"), ("carrier-pigeon", "x")]:
            with pytest.raises(BrokerError) as error:
                await h.ok(Subscribe("t", protocol, endpoint))
            assert error.value.code == "InvalidParameter"
        with pytest.raises(BrokerError):
            await h.ok(Subscribe("t", "sqs", QUEUE + "q", {"FilterPolicy": "{bad"}))
        first = await subscribe(h, "t", "q")
        assert await subscribe(h, "t", "q") == first
        with pytest.raises(BrokerError):
            await subscribe(h, "t", "q", RawMessageDelivery="true")  # exists with other attributes
        listed = (await h.ok(ListSubscriptionsByTopic("t"))).subscriptions
        assert [(s.subscription_arn, s.protocol, s.endpoint) for s in listed] == [(first, "sqs", QUEUE + "q")]
        assert (await h.ok(ListSubscriptions())).subscriptions == listed
        attributes = (await h.ok(GetSubscriptionAttributes("t", first))).attributes
        assert attributes["PendingConfirmation"] == "false" and attributes["TopicArn"] == TOPIC + "t"
        await h.ok(SetSubscriptionAttributes("t", first, "FilterPolicyScope", "MessageBody"))
        await h.ok(SetSubscriptionAttributes("t", first, "FilterPolicy", json.dumps({"kind": {"name": ["a"]}})))
        with pytest.raises(BrokerError):
            await h.ok(SetSubscriptionAttributes("t", first, "FilterPolicyScope", "MessageAttributes"))
        await h.ok(Publish("t", json.dumps({"kind": {"name": "a"}})))
        await h.ok(Publish("t", json.dumps({"kind": {"name": "b"}})))
        assert len(await bodies(h, "q")) == 1
        await h.ok(Unsubscribe("t", first))
        await h.ok(Publish("t", json.dumps({"kind": {"name": "a"}})))
        assert await bodies(h, "q") == []
        assert (await h.ok(GetTopicAttributes("t"))).attributes["SubscriptionsDeleted"] == "1"


async def test_fifo_topic_to_fifo_queues_in_order_with_deduplication(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t.fifo", {"FifoTopic": "true"}))
        await h.ok(CreateQueue("q.fifo", {"FifoQueue": "true"}))
        await subscribe(h, "t.fifo", "q.fifo", RawMessageDelivery="true")
        with pytest.raises(BrokerError):
            await h.ok(Publish("t.fifo", "no group", message_deduplication_id="d"))
        numbers, published_ids = [], []
        for i in range(5):
            result = await h.ok(Publish("t.fifo", f"m{i}", message_group_id="g", message_deduplication_id=f"d{i}"))
            numbers.append(int(result.sequence_number))
            published_ids.append(result.message_id)
        duplicate = await h.ok(Publish("t.fifo", "again", message_group_id="g", message_deduplication_id="d0"))
        assert numbers == sorted(numbers) and len(set(numbers)) == 5
        received = await bodies(h, "q.fifo", attribute_names=["All"])
        assert [m.body for m in received] == [f"m{i}" for i in range(5)]
        assert received[0].attributes["MessageGroupId"] == "g"
        assert received[0].attributes["MessageDeduplicationId"] == "d0"
        # accepted with the original's MessageId, and not delivered
        assert duplicate.message_id == published_ids[0]
        assert "again" not in [m.body for m in received]


async def test_publish_batch_gives_per_entry_results(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("q"))
        await subscribe(h, "t", "q", RawMessageDelivery="true")
        result = await h.ok(
            PublishBatch("t", [PublishEntry("a", "one"), PublishEntry("b", ""), PublishEntry("c", "three")])
        )
        assert [e.id for e in result.successful] == ["a", "c"]
        assert [(f.id, f.code) for f in result.failed] == [("b", "InvalidParameter")]
        assert sorted(m.body for m in await bodies(h, "q")) == ["one", "three"]
        for entries, code in [
            ([], "EmptyBatchRequestException"),
            ([PublishEntry(str(i), "x") for i in range(11)], "TooManyEntriesInBatchRequestException"),
            ([PublishEntry("a", "x"), PublishEntry("a", "y")], "BatchEntryIdsNotDistinctException"),
        ]:
            with pytest.raises(BrokerError) as error:
                await h.ok(PublishBatch("t", entries))
            assert error.value.code == code


async def test_topics_and_subscriptions_survive_a_restart(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q"))
        await h.ok(CreateTopic("t", {"DisplayName": "kept"}))
        arn = await subscribe(h, "t", "q", FilterPolicy=json.dumps({"k": ["v"]}))
    async with running_broker(store) as h:
        assert (await h.ok(GetTopicAttributes("t"))).attributes["DisplayName"] == "kept"
        assert (await h.ok(GetSubscriptionAttributes("t", arn))).attributes["FilterPolicy"] == json.dumps({"k": ["v"]})
        await h.ok(Publish("t", "yes", message_attributes={"k": MessageAttributeValue("String", "v")}))
        await h.ok(Publish("t", "no"))
        assert len(await bodies(h, "q")) == 1


async def test_a_deleted_queue_is_skipped_and_a_recreated_one_served(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("q"))
        await subscribe(h, "t", "q")
        await h.ok(DeleteQueue("q"))
        await h.ok(Publish("t", "lost: no queue"))
        await h.ok(CreateQueue("q"))
        await trio.sleep(0.01)
        await h.ok(Publish("t", "kept"))
        (message,) = await bodies(h, "q")
        assert json.loads(message.body)["Message"] == "kept"


async def test_a_purge_drops_fanned_out_messages_committed_before_it(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("q"))
        await subscribe(h, "t", "q")
        await h.ok(Publish("t", "before"))
        await h.ok(PurgeQueue("q"))
        await h.ok(Publish("t", "after"))
        assert [json.loads(m.body)["Message"] for m in await bodies(h, "q")] == ["after"]


async def test_explain_says_which_subscriptions_a_message_reaches_and_why_not(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("q"))
        yes = await subscribe(h, "t", "q")
        await h.ok(CreateQueue("picky"))
        no = await subscribe(h, "t", "picky", FilterPolicy=json.dumps({"size": [{"numeric": [">", 10]}]}))
        verdicts = (await h.ok(ExplainDelivery("t", "m", {"size": MessageAttributeValue("Number", "3")}))).verdicts
        by_arn = {v.subscription_arn: v for v in verdicts}
        assert by_arn[yes].delivered and not by_arn[no].delivered
        assert "size" in by_arn[no].reason
        await h.ok(DeleteQueue("picky"))
        await trio.sleep(0.01)
        verdicts = (await h.ok(ExplainDelivery("t", "m", {"size": MessageAttributeValue("Number", "30")}))).verdicts
        assert "does not exist" in {v.subscription_arn: v for v in verdicts}[no].reason


async def test_a_fifo_topic_keeps_its_deduplication_window_and_numbering_across_a_restart(autojump_clock):
    store = MemoryStore()
    async with running_broker(store) as h:
        await h.ok(CreateTopic("t.fifo", {"FifoTopic": "true"}))
        await h.ok(CreateQueue("q.fifo", {"FifoQueue": "true"}))
        await subscribe(h, "t.fifo", "q.fifo", RawMessageDelivery="true")
        first = await h.ok(Publish("t.fifo", "once", message_group_id="g", message_deduplication_id="d"))
        assert [m.body for m in await bodies(h, "q.fifo")] == ["once"]
    async with running_broker(store) as h:
        again = await h.ok(Publish("t.fifo", "once", message_group_id="g", message_deduplication_id="d"))
        assert again.message_id == first.message_id
        later = await h.ok(Publish("t.fifo", "next", message_group_id="g", message_deduplication_id="e"))
        assert int(later.sequence_number) > int(first.sequence_number)
        await trio.sleep(31)  # the first delivery's visibility timeout
        assert [m.body for m in await bodies(h, "q.fifo")] == ["once", "next"]  # "once" only redelivered
        await trio.sleep(301)
        await h.ok(Publish("t.fifo", "wake", message_group_id="h", message_deduplication_id="w"))
        fresh = await h.ok(Publish("t.fifo", "once", message_group_id="g", message_deduplication_id="d"))
        assert fresh.message_id != first.message_id


async def test_an_archived_fifo_topic_replays_to_a_new_subscription(autojump_clock):
    from dovecote.actors.ops import PublishEntry as Entry
    from dovecote.history import format_time

    store = MemoryStore()
    async with running_broker(store) as h:
        with pytest.raises(BrokerError):  # archiving is for FIFO topics, as on AWS
            await h.ok(CreateTopic("plain", {"ArchivePolicy": json.dumps({"MessageRetentionPeriod": "7"})}))
        await h.ok(CreateTopic("t.fifo", {"FifoTopic": "true", "ArchivePolicy": json.dumps({"MessageRetentionPeriod": "7"})}))
        start = format_time(h.clock.wall_ms())
        published = []
        for i in range(0, 1200, 10):
            result = await h.ok(
                PublishBatch("t.fifo", [
                    Entry(str(j), f"m{i + j}", message_group_id="g", message_deduplication_id=f"d{i + j}",
                          message_attributes={"even": MessageAttributeValue("String", str((i + j) % 2 == 0).lower())})
                    for j in range(10)
                ])
            )
            published.extend(e.message_id for e in result.successful)
        await trio.sleep(60)
        await h.ok(CreateQueue("late.fifo", {"FifoQueue": "true"}))
        await h.ok(CreateQueue("evens.fifo", {"FifoQueue": "true"}))
        replay = json.dumps({"PointType": "Timestamp", "StartingPoint": start})
        arn = await subscribe(h, "t.fifo", "late.fifo", ReplayPolicy=replay)
        await subscribe(h, "t.fifo", "evens.fifo", ReplayPolicy=replay, RawMessageDelivery="true",
                        FilterPolicy=json.dumps({"even": ["true"]}))
        with pytest.raises(BrokerError):
            await subscribe(h, "t.fifo", "late.fifo", ReplayPolicy=json.dumps({"PointType": "Other"}))
        await trio.sleep(1)
        assert (await h.ok(GetSubscriptionAttributes("t.fifo", arn))).attributes["ReplayStatus"] == "Completed"
        await h.ok(Publish("t.fifo", "live", message_group_id="g", message_deduplication_id="live"))
    async with running_broker(store) as h:  # the replayed messages are stored

        async def drain(queue):
            bodies = []
            while messages := (await h.ok(ReceiveMessage(queue, max_number_of_messages=10))).messages:
                bodies.extend(m.body for m in messages)
                await h.ok(DeleteMessageBatch(queue, [DeleteEntry(str(i), m.receipt_handle) for i, m in enumerate(messages)]))
            return bodies

        envelopes = [json.loads(body) for body in await drain("late.fifo")]
        assert [e["Message"] for e in envelopes] == [f"m{i}" for i in range(1200)] + ["live"]
        assert [e["MessageId"] for e in envelopes[:-1]] == published
        assert all(e.get("Replayed") is True for e in envelopes[:-1]) and "Replayed" not in envelopes[-1]
        evens = await drain("evens.fifo")
        assert evens == [f"m{i}" for i in range(0, 1200, 2)]


def test_archived_publishes_are_trimmed_after_their_retention():
    from dovecote.storage.records import Published as P

    store = MemoryStore()
    day = 86_400_000
    store.commit([[P(1_000, 1, "t.fifo", 0, f"id{i}", "m", "", {}, archive_until_ms=1_000 + day) for i in range(3)],
                  [P(1_000, 2, "u.fifo", 0, "other", "m", "", {}, archive_until_ms=1_000 + 7 * day)]])
    assert len(store.read_archive(1, 0, 10)) == 3
    assert store.trim_history(0, 2_000 + day, 100) == 3
    assert store.read_archive(1, 0, 10) == [] and len(store.read_archive(2, 0, 10)) == 1


async def test_delivery_policies_are_validated_and_merged(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("q"))
        arn = await subscribe(h, "t", "q")
        with pytest.raises(BrokerError) as error:
            await h.ok(SetTopicAttributes("t", "DeliveryPolicy", json.dumps({"http": {"defaultHealthyRetryPolicy": {"numRetries": 500}}})))
        assert "numRetries" in error.value.message
        await h.ok(SetTopicAttributes("t", "DeliveryPolicy", json.dumps({"http": {"defaultHealthyRetryPolicy": {"numRetries": 7}}})))
        # AWS shows an EffectiveDeliveryPolicy for the protocols a delivery policy governs, not sqs
        assert "EffectiveDeliveryPolicy" not in (await h.ok(GetSubscriptionAttributes("t", arn))).attributes
        arn = (await h.ok(Subscribe("t", "http", "http://127.0.0.1:9/", {}, True))).arn
        await h.ok(SetSubscriptionAttributes("t", arn, "DeliveryPolicy", json.dumps({"throttlePolicy": {"maxReceivesPerSecond": 5}})))
        effective = json.loads((await h.ok(GetSubscriptionAttributes("t", arn))).attributes["EffectiveDeliveryPolicy"])["http"]
        assert effective["defaultHealthyRetryPolicy"]["numRetries"] == 7
        assert effective["defaultThrottlePolicy"] == {"maxReceivesPerSecond": 5}


async def test_topic_permissions_and_tags_live_in_its_attributes(autojump_clock):
    from dovecote.actors.ops import AddTopicPermission, ListTopicTags, RemoveTopicPermission, TagTopic, UntagTopic

    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        await h.ok(AddTopicPermission("t", "share", ["111122223333"], ["Publish"]))
        statements = json.loads((await h.ok(GetTopicAttributes("t"))).attributes["Policy"])["Statement"]
        shared = next(s for s in statements if s.get("Sid") == "share")
        assert shared["Action"] == ["SNS:Publish"] and shared["Resource"] == TOPIC + "t"
        with pytest.raises(BrokerError):
            await h.ok(AddTopicPermission("t", "share", ["111122223333"], ["Publish"]))  # the label exists
        with pytest.raises(BrokerError):
            await h.ok(AddTopicPermission("t", "other", ["111122223333"], ["CreateTopic"]))
        await h.ok(RemoveTopicPermission("t", "share"))
        statements = json.loads((await h.ok(GetTopicAttributes("t"))).attributes["Policy"])["Statement"]
        assert all(s.get("Sid") != "share" for s in statements)
        with pytest.raises(BrokerError):
            await h.ok(RemoveTopicPermission("t", "share"))
        await h.ok(TagTopic("t", {"team": "a", "tier": "1"}))
        await h.ok(UntagTopic("t", ["tier"]))
        assert (await h.ok(ListTopicTags("t"))).tags == {"team": "a"}


# --- AWS parity (issue 15) ------------------------------------------------------------------------------
def deliveries(h, topic):
    """The topic's delivery counters, as /metrics reads them."""
    return h.broker.directory.topic("us-east-1", topic).health.actor.core.counters.deliveries


async def test_a_delivery_to_a_deleted_queue_goes_to_the_subscriptions_dead_letter_queue(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("q"))
        await h.ok(CreateQueue("dlq"))
        await subscribe(h, "t", "q", RedrivePolicy=json.dumps({"deadLetterTargetArn": QUEUE + "dlq"}))
        await h.ok(DeleteQueue("q"))
        await h.ok(Publish("t", "its queue is gone"))
        (message,) = await bodies(h, "dlq")
        assert json.loads(message.body)["Message"] == "its queue is gone"
        assert deliveries(h, "t") == {("sqs", DEAD_LETTERED): 1}


async def test_a_standard_queue_subscribes_to_a_fifo_topic_with_a_standard_dead_letter_queue(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t.fifo", {"FifoTopic": "true"}))
        await h.ok(CreateQueue("standard"))
        await h.ok(CreateQueue("dlq.fifo", {"FifoQueue": "true"}))
        with pytest.raises(BrokerError) as error:
            await subscribe(h, "t.fifo", "standard", RedrivePolicy=json.dumps({"deadLetterTargetArn": QUEUE + "dlq.fifo"}))
        assert error.value.message == (
            "Invalid parameter: Attributes Reason: RedrivePolicy: must use a standard queue as DLQ for this subscription."
        )
        await subscribe(h, "t.fifo", "standard", RawMessageDelivery="true")
        await h.ok(Publish("t.fifo", "ordered elsewhere", message_group_id="g", message_deduplication_id="d"))
        received = await bodies(h, "standard", attribute_names=["All"])
        assert [(m.body, m.attributes["MessageGroupId"]) for m in received] == [("ordered elsewhere", "g")]


async def test_a_publish_trace_header_becomes_the_aws_trace_header_of_its_sqs_deliveries(autojump_clock):
    from dovecote.actors.mailbox import ReplySlot

    async with running_broker() as h:
        await h.ok(CreateTopic("t"))
        await h.ok(CreateQueue("q"))
        await subscribe(h, "t", "q")
        for op in (Publish("t", "one"), PublishBatch("t", [PublishEntry("a", "two")])):
            slot = ReplySlot()
            h.session.submit(op, slot, "Root=1-abc")
            await slot.wait()
        received = await bodies(h, "q", attribute_names=["AWSTraceHeader"])
        assert [m.attributes["AWSTraceHeader"] for m in received] == ["Root=1-abc", "Root=1-abc"]


async def test_publish_batch_faults_that_fail_the_whole_request_as_on_aws(autojump_clock):
    async with running_broker() as h:
        await h.ok(CreateTopic("t.fifo", {"FifoTopic": "true"}))
        await h.ok(CreateTopic("t"))
        empty = {"a": MessageAttributeValue("String", "")}
        for topic, entries, code in [
            ("t.fifo", [PublishEntry("a", "x", message_group_id="g", message_deduplication_id="d"), PublishEntry("b", "y")],
             "InvalidParameter"),
            ("t.fifo", [PublishEntry("a", "x", message_group_id="g")], "InvalidParameter"),  # no deduplication id
            ("t", [PublishEntry("a", "x"), PublishEntry("b", "y", message_attributes=empty)], "ParameterValueInvalid"),
            ("t", [PublishEntry("a", "x" * 200_000), PublishEntry("b", "y", message_attributes={"a": MessageAttributeValue("String", "v" * 70_000)})],
             "BatchRequestTooLongException"),
        ]:
            with pytest.raises(BrokerError) as error:
                await h.ok(PublishBatch(topic, entries))
            assert error.value.code == code, entries
