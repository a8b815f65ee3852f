"""Authorisation inside the broker: sessions of restricted principals are refused what their
statements and the resources' policies do not allow, before anything reaches an actor; queue and
topic policies are checked when set, published by their actors, and kept across restarts; a topic
delivers into a queue only if the queue's policy lets it (authentication on), and what is refused
goes to the subscription's dead-letter queue or is dropped. On trio's autojump clock, a memory store."""

from __future__ import annotations

import json

import pytest
import trio

from dovecote.actors.authorization import parse_statements
from dovecote.actors.config import BrokerConfig
from dovecote.actors.errors import BrokerError
from dovecote.actors.mailbox import ReplySlot
from dovecote.actors.ops import (
    CreateQueue,
    CreateTopic,
    DeleteMessage,
    DeleteQueue,
    ExplainDelivery,
    Failure,
    GetQueueAttributes,
    GetQueueUrl,
    ListDeadLetterSourceQueues,
    ListQueues,
    ListSubscriptionsByTopic,
    PeekMessages,
    Publish,
    ReceiveMessage,
    SendMessage,
    SendMessageBatch,
    SendEntry,
    SetQueueAttributes,
    SetSubscriptionAttributes,
    SetTopicAttributes,
    StartMessageMoveTask,
    Subscribe,
)
from dovecote.actors.principals import Principal
from dovecote.storage.memory_store import MemoryStore

from ..conftest import running_broker

ACCOUNT = "000000000000"
QUEUE = f"arn:aws:sqs:us-east-1:{ACCOUNT}:"
TOPIC = f"arn:aws:sns:us-east-1:{ACCOUNT}:"
ENFORCING = BrokerConfig(restart_backoff_s=(0.0, 0.1), authentication=True)


def key(key_id: str, *statements: dict, account: str = "") -> Principal:
    return Principal(key_id, account, parse_statements(list(statements)))


def allow(action, resource="*") -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


async def call(h, principal: Principal, op):
    slot = ReplySlot()
    h.broker.session(principal=principal).submit(op, slot)
    return await slot.wait()


async def refused(h, principal: Principal, op) -> Failure:
    result = await call(h, principal, op)
    assert isinstance(result, Failure), result
    return result


def queue_policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def sns_may_send(queue: str, topic: str) -> str:
    """The seeds' queue policy: the SNS service may send to the queue for this one topic."""
    return queue_policy(
        {
            "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage",
            "Resource": QUEUE + queue, "Condition": {"ArnEquals": {"aws:SourceArn": TOPIC + topic}},
        }
    )


async def test_a_key_limited_to_one_queues_receive_and_delete(autojump_clock):
    """The seeds' consumer: it receives and deletes on its queue and nothing else; a refusal is
    SQS's AccessDenied (AccessDeniedException in the JSON protocol), SNS's AuthorizationError."""
    consumer = key("consumer", allow(["sqs:ReceiveMessage", "sqs:DeleteMessage"], QUEUE + "jobs"))
    async with running_broker() as h:
        for name in ("jobs", "other"):
            await h.ok(CreateQueue(name))
            await h.ok(SendMessage(name, f"for {name}"))
        await h.ok(CreateTopic("news"))
        (message,) = (await call(h, consumer, ReceiveMessage("jobs"))).messages
        assert message.body == "for jobs"
        assert not isinstance(await call(h, consumer, DeleteMessage("jobs", message.receipt_handle)), Failure)
        assert not isinstance(await call(h, consumer, PeekMessages("jobs")), Failure)  # it shows what a receive shows
        for op in (
            SendMessage("jobs", "no"), SendMessageBatch("jobs", [SendEntry("1", "no")]), GetQueueAttributes("jobs"),
            PeekMessages("other"), ReceiveMessage("other"), DeleteQueue("jobs"), CreateQueue("new"), ListQueues(),
            GetQueueUrl("jobs"), ListDeadLetterSourceQueues("jobs"), ReceiveMessage("no-such-queue"),
        ):
            failure = await refused(h, consumer, op)
            assert failure.code == "AccessDeniedException", (op, failure)
        failure = await refused(h, consumer, ReceiveMessage("other"))
        assert failure.message == (
            f"User: arn:aws:iam::{ACCOUNT}:user/consumer is not authorized to perform: sqs:ReceiveMessage on resource: "
            f"{QUEUE}other because no policy allows it"
        )
        assert (await refused(h, consumer, Publish("news", "no"))).code == "AuthorizationError"
        # nothing refused reached a queue: the other queue's message is still there, jobs is not deleted
        assert len((await h.ok(ReceiveMessage("other"))).messages) == 1
        assert (await h.ok(GetQueueUrl("jobs"))).queue == "jobs"


async def test_a_missing_queue_is_named_only_to_those_who_may_use_it(autojump_clock):
    async with running_broker() as h:
        reader = key("reader", allow("sqs:ReceiveMessage"))
        assert (await refused(h, reader, ReceiveMessage("nowhere"))).code == "QueueDoesNotExist"
        assert (await refused(h, key("nobody"), ReceiveMessage("nowhere"))).code == "AccessDeniedException"


async def test_a_queue_policy_grants_a_key_by_its_arn_and_changes_take_effect(autojump_clock):
    sensor = key("sensor-7")  # no statements of its own
    grant = queue_policy(
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/sensor-7"}, "Action": "sqs:SendMessage", "Resource": QUEUE + "readings"}
    )
    async with running_broker() as h:
        await h.ok(CreateQueue("readings"))
        assert (await refused(h, sensor, SendMessage("readings", "1"))).code == "AccessDeniedException"
        await h.ok(SetQueueAttributes("readings", {"Policy": grant}))
        assert not isinstance(await call(h, sensor, SendMessage("readings", "2")), Failure)
        assert (await refused(h, sensor, ReceiveMessage("readings"))).code == "AccessDeniedException"
        deny = json.loads(grant)
        deny["Statement"].append({"Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": "*"})
        await h.ok(SetQueueAttributes("readings", {"Policy": json.dumps(deny)}))
        failure = await refused(h, sensor, SendMessage("readings", "3"))
        assert failure.message.endswith("with an explicit deny")
        await h.ok(SetQueueAttributes("readings", {"Policy": ""}))
        assert (await refused(h, sensor, SendMessage("readings", "4"))).code == "AccessDeniedException"
        assert [m.body for m in (await h.ok(ReceiveMessage("readings", max_number_of_messages=10))).messages] == ["2"]


async def test_policies_given_at_creation_and_kept_across_a_restart(autojump_clock):
    store = MemoryStore()
    sensor = key("sensor-7")
    grant = queue_policy({"Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage", "Resource": QUEUE + "q"})
    topic_grant = queue_policy({"Effect": "Allow", "Principal": "*", "Action": "sns:Publish", "Resource": TOPIC + "t"})
    async with running_broker(store) as h:
        await h.ok(CreateQueue("q", {"Policy": grant}))
        await h.ok(CreateTopic("t", {"Policy": topic_grant}))
        # at once: the new queue's policy is in its directory entry before its actor runs
        assert not isinstance(await call(h, sensor, SendMessage("q", "at once")), Failure)
    async with running_broker(store) as h:
        assert not isinstance(await call(h, sensor, SendMessage("q", "after a restart")), Failure)
        assert not isinstance(await call(h, sensor, Publish("t", "after a restart")), Failure)
        assert (await refused(h, sensor, ReceiveMessage("q"))).code == "AccessDeniedException"


@pytest.mark.parametrize(
    "op, code",
    [
        (SetQueueAttributes("q", {"Policy": '{"Statement": [{"Effect": "Allow"}]}'}), "InvalidAttributeValue"),
        (CreateQueue("q2", {"Policy": "not json"}), "InvalidAttributeValue"),
        (SetTopicAttributes("t", "Policy", '{"Statement": {"Effect": "Allow", "Action": "sns:*"}}'), "InvalidParameter"),
        (CreateTopic("t2", {"Policy": "[]"}), "InvalidParameter"),
    ],
)
async def test_a_malformed_policy_is_refused_when_set(autojump_clock, op, code):
    async with running_broker() as h:
        await h.ok(CreateQueue("q"))
        await h.ok(CreateTopic("t"))
        with pytest.raises(BrokerError) as error:
            await h.ok(op)
        assert error.value.code == code and "Policy" in error.value.message


async def test_a_move_task_needs_leave_to_send_into_its_destination(autojump_clock):
    mover = key("mover", allow("sqs:StartMessageMoveTask", QUEUE + "dlq"))
    async with running_broker() as h:
        await h.ok(CreateQueue("dlq"))
        await h.ok(CreateQueue("source", {"RedrivePolicy": json.dumps({"deadLetterTargetArn": QUEUE + "dlq", "maxReceiveCount": 1})}))
        await h.ok(CreateQueue("elsewhere"))
        failure = await refused(h, mover, StartMessageMoveTask("dlq", destination_arn=QUEUE + "elsewhere"))
        assert "sqs:SendMessage" in failure.message and failure.code == "AccessDeniedException"
        assert not isinstance(await call(h, mover, StartMessageMoveTask("dlq")), Failure)


# --- SNS to SQS ----------------------------------------------------------------------------------
async def bodies(h, queue: str) -> list[str]:
    await trio.sleep(0.01)  # the queue adopts the fan-out after the topic's commit
    messages = (await h.ok(ReceiveMessage(queue, max_number_of_messages=10, attribute_names=["All"]))).messages
    return [json.loads(m.body)["Message"] for m in messages]


def deliveries(h, topic: str) -> dict[tuple[str, str], int]:
    """The topic's delivery counters, as /metrics reads them."""
    return h.broker.directory.topic("us-east-1", topic).health.actor.core.counters.deliveries


async def fan_out(h) -> None:
    """Topics `allowed` and `other` both subscribe `inbox`, whose policy lets only `allowed` in."""
    await h.ok(CreateQueue("inbox", {"Policy": sns_may_send("inbox", "allowed")}))
    for topic in ("allowed", "other"):
        await h.ok(CreateTopic(topic))
        await h.ok(Subscribe(topic, "sqs", QUEUE + "inbox"))


async def test_a_queue_policy_lets_one_topic_deliver_and_refuses_another(autojump_clock):
    async with running_broker(config=ENFORCING) as h:
        await fan_out(h)
        await h.ok(Publish("allowed", "from the allowed topic"))
        assert (await h.ok(Publish("other", "from another topic"))).message_id  # the publish itself succeeds, as on AWS
        assert await bodies(h, "inbox") == ["from the allowed topic"]
        (verdict,) = (await h.ok(ExplainDelivery("other", "x"))).verdicts
        assert not verdict.delivered and "policy of the queue" in verdict.reason
        # the queue's owner lets the other topic in too: its next publish is delivered
        await h.ok(SetQueueAttributes("inbox", {"Policy": queue_policy(
            {"Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage",
             "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}}},
        )}))
        await h.ok(Publish("other", "let in"))
        assert await bodies(h, "inbox") == ["let in"]
        assert deliveries(h, "other") == {("sqs", "dropped"): 1, ("sqs", "delivered"): 1}


async def test_a_refused_delivery_goes_to_the_subscriptions_dead_letter_queue(autojump_clock):
    async with running_broker(config=ENFORCING) as h:
        await fan_out(h)
        await h.ok(CreateQueue("dead-letters", {"Policy": sns_may_send("dead-letters", "other")}))
        (subscription,) = (await h.ok(ListSubscriptionsByTopic("other"))).subscriptions
        redrive = json.dumps({"deadLetterTargetArn": QUEUE + "dead-letters"})
        await h.ok(SetSubscriptionAttributes("other", subscription.subscription_arn, "RedrivePolicy", redrive))
        await h.ok(Publish("other", "refused by inbox"))
        await trio.sleep(0.01)
        (dead,) = (await h.ok(ReceiveMessage("dead-letters", attribute_names=["All"]))).messages
        assert json.loads(dead.body)["Message"] == "refused by inbox"
        assert dead.attributes["DeadLetterQueueSourceArn"] == subscription.subscription_arn
        assert await bodies(h, "inbox") == []
        assert deliveries(h, "other") == {("sqs", "dead_lettered"): 1}


async def test_a_refused_delivery_without_a_dead_letter_queue_is_dropped_and_counted(autojump_clock):
    async with running_broker(config=ENFORCING) as h:
        await fan_out(h)
        await h.ok(Publish("other", "dropped"))
        await trio.sleep(0.01)
        assert deliveries(h, "other") == {("sqs", "dropped"): 1}


async def test_without_authentication_every_delivery_goes_through(autojump_clock):
    """Authentication off: nothing changes, whatever the queue's policy says."""
    async with running_broker() as h:
        await fan_out(h)
        await h.ok(Publish("other", "delivered as before"))
        assert await bodies(h, "inbox") == ["delivered as before"]


async def test_an_exhausted_push_reaches_a_dead_letter_queue_only_if_its_policy_lets_the_topic_in(autojump_clock):
    from dovecote.storage.records import PushDone

    from ..push_endpoint import trio_endpoint
    from .test_push import confirmed, log_of

    async with trio_endpoint(lambda pushed: 500 if "Notification" in pushed.body else 200) as endpoint:
        async with running_broker(config=ENFORCING) as h:
            await h.ok(CreateTopic("t"))
            await h.ok(CreateQueue("dlq"))
            retries = {"healthyRetryPolicy": {"minDelayTarget": 1, "maxDelayTarget": 1, "numRetries": 1}}
            arn = await confirmed(h, endpoint, DeliveryPolicy=json.dumps(retries))
            await h.ok(SetSubscriptionAttributes("t", arn, "RedrivePolicy", json.dumps({"deadLetterTargetArn": QUEUE + "dlq"})))
            await h.ok(Publish("t", "the dead-letter queue refuses this topic"))
            await trio.sleep(30)
            assert (await h.ok(ReceiveMessage("dlq"))).messages == []
            (done,) = log_of(h, PushDone)
            assert done.outcome.startswith("dropped: AccessDeniedException")
            await h.ok(SetQueueAttributes("dlq", {"Policy": sns_may_send("dlq", "t")}))
            await h.ok(Publish("t", "let in"))
            await trio.sleep(30)
            (message,) = (await h.ok(ReceiveMessage("dlq", attribute_names=["All"]))).messages
            assert json.loads(message.body)["Message"] == "let in" and message.attributes["DeadLetterQueueSourceArn"] == arn
