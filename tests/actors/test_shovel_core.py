"""The shovels' pure rules: addresses, what a shovel may link, back-off, the rate cap, and how a
message is carried each way."""

from __future__ import annotations

import base64

import pytest

from dovecote.actors.ops import MessageAttributeValue, ReceivedMessage
from dovecote.actors.shovel_core import (
    LocalQueue,
    RateCap,
    RemoteConfig,
    RemoteQueue,
    RemoteTopic,
    ShovelConfig,
    ShovelConfigError,
    backoff_s,
    check_shovels,
    in_sequence,
    local_send_entry,
    parse_address,
    retryable,
    sns_publish_pairs,
    sqs_send_entry,
)

REMOTES = {"cloud": RemoteConfig("cloud", "https://sqs.eu-west-1.amazonaws.com", "eu-west-1", "AKID", "secret")}
QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/telemetry"
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:events.fifo"


def test_addresses_are_local_queues_remote_queue_urls_and_remote_topic_arns():
    assert parse_address("telemetry", REMOTES) == LocalQueue("telemetry")
    assert parse_address("cloud:" + QUEUE_URL, REMOTES) == RemoteQueue("cloud", QUEUE_URL, "telemetry")
    topic = parse_address("cloud:" + TOPIC_ARN, REMOTES)
    assert topic == RemoteTopic("cloud", TOPIC_ARN, "events.fifo") and topic.fifo


@pytest.mark.parametrize("address, says", [
    ("nowhere:" + QUEUE_URL, "names the remote 'nowhere', which is not a [remote.NAME] table (cloud)"),
    ("cloud:https://sqs.eu-west-1.amazonaws.com/telemetry", "is not an SQS queue URL"),
    ("cloud:ftp://host/123456789012/q", "is not an SQS queue URL"),
    ("cloud:arn:aws:sqs:eu-west-1:123456789012:q", "is not an SNS topic ARN"),
    ("bad name!", "is not a local queue's name"),
])
def test_an_address_that_cannot_be_used_says_why(address, says):
    with pytest.raises(ShovelConfigError, match=says.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        parse_address(address, REMOTES)


@pytest.mark.parametrize("source, destination, says", [
    ("a", "b", "one end must be a local queue"),
    ("cloud:" + QUEUE_URL, "cloud:" + QUEUE_URL, "one end must be a local queue"),
    ("cloud:" + TOPIC_ARN, "a", "a topic cannot be shoveled from"),
    ("cloud:" + QUEUE_URL, "local.fifo", "a remote FIFO queue is shoveled into a local FIFO queue"),
])
def test_a_shovel_links_one_local_queue_with_one_remote(source, destination, says):
    with pytest.raises(ShovelConfigError, match=f"shovel 'x': {says}"):
        check_shovels([ShovelConfig("x", source, destination)], REMOTES)


def test_two_shovels_may_not_consume_one_local_queue_nor_share_a_name():
    up = ShovelConfig("up", "telemetry", "cloud:" + QUEUE_URL)
    with pytest.raises(ShovelConfigError, match="another shovel already consumes 'telemetry'"):
        check_shovels([up, ShovelConfig("up2", "telemetry", "cloud:" + TOPIC_ARN)], REMOTES)
    with pytest.raises(ShovelConfigError, match="unique"):
        check_shovels([up, ShovelConfig("up", "other", "cloud:" + QUEUE_URL)], REMOTES)
    with pytest.raises(ShovelConfigError, match="batch_size must be 1 to 10"):
        check_shovels([ShovelConfig("big", "other", "cloud:" + QUEUE_URL, batch_size=11)], REMOTES)


def test_backoff_doubles_to_its_cap_with_jitter_that_never_halves_it_away():
    assert [backoff_s(n, 0.5, 60, 0.0) for n in (1, 2, 3, 8, 9, 100)] == [0.25, 0.5, 1.0, 30.0, 30.0, 30.0]
    assert [backoff_s(n, 0.5, 60, 0.999999) for n in (1, 8, 100)] == pytest.approx([0.5, 60.0, 60.0], rel=1e-5)


def test_the_rate_cap_lets_one_second_through_then_keeps_to_the_rate():
    cap = RateCap(10, now_s=0.0)
    assert cap.wait_s(10, 0.0) == 0.0
    assert cap.wait_s(10, 0.0) == pytest.approx(1.0)
    assert cap.wait_s(5, 2.0) == 0.0
    assert RateCap(0, 0.0).wait_s(1_000_000, 0.0) == 0.0


def test_which_refusals_pass_by_themselves():
    assert retryable(500, "InternalError") and retryable(400, "ThrottlingException") and retryable(429, "")
    assert not retryable(400, "AWS.SimpleQueueService.NonExistentQueue") and not retryable(403, "InvalidClientTokenId")


def received(message_id="m-1", body="hello", group=None, **attributes):
    system = {"SentTimestamp": "1"} | ({"MessageGroupId": group} if group else {})
    return ReceivedMessage(message_id, "handle", body, "md5", attributes=system, message_attributes=attributes)


def test_up_an_sqs_entry_keeps_body_attributes_and_group_and_a_fifo_one_deduplicates_by_the_local_message_id():
    message = received(group="g", n=MessageAttributeValue("Number", "7"), b=MessageAttributeValue("Binary", binary_value=b"\x00\xff"))
    entry = sqs_send_entry(3, message, fifo=True, default_group="link")
    assert entry == {
        "Id": "3", "MessageBody": "hello", "MessageGroupId": "g", "MessageDeduplicationId": "m-1",
        "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "7"},
                              "b": {"DataType": "Binary", "BinaryValue": base64.b64encode(b"\x00\xff").decode()}},
    }
    assert sqs_send_entry(0, received(), fifo=True, default_group="link")["MessageGroupId"] == "link"
    assert "MessageDeduplicationId" not in sqs_send_entry(0, received(group="g"), fifo=False, default_group="link")


def test_up_a_publish_batch_carries_each_message_as_sns_query_parameters():
    pairs = dict(sns_publish_pairs(TOPIC_ARN, [received("a", "one", n=MessageAttributeValue("String", "x")), received("b", "two")],
                                   fifo=True, default_group="link"))
    assert pairs["Action"] == "PublishBatch" and pairs["TopicArn"] == TOPIC_ARN
    assert pairs["PublishBatchRequestEntries.member.1.Message"] == "one"
    assert pairs["PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Name"] == "n"
    assert pairs["PublishBatchRequestEntries.member.1.MessageAttributes.entry.1.Value.StringValue"] == "x"
    assert pairs["PublishBatchRequestEntries.member.2.MessageDeduplicationId"] == "b"
    assert pairs["PublishBatchRequestEntries.member.2.MessageGroupId"] == "link"


def test_down_a_received_message_becomes_a_local_entry_deduplicated_by_the_remote_message_id():
    message = {"MessageId": "r-9", "ReceiptHandle": "h", "Body": "cmd", "Attributes": {"MessageGroupId": "device-7"},
               "MessageAttributes": {"k": {"DataType": "Binary", "BinaryValue": base64.b64encode(b"\x01").decode()}}}
    entry = local_send_entry(4, message, fifo=True)
    assert (entry.id, entry.body, entry.message_group_id, entry.message_deduplication_id) == ("4", "cmd", "device-7", "r-9")
    assert entry.message_attributes["k"].binary_value == b"\x01"
    assert local_send_entry(0, message, fifo=False).message_deduplication_id is None
    with pytest.raises(ValueError):
        local_send_entry(0, {"Body": "no id"}, fifo=False)


def test_down_a_fifo_batch_is_stored_in_the_order_it_was_sent():
    messages = [{"MessageId": str(n), "Attributes": {"SequenceNumber": f"{n:020d}"}} for n in (3, 1, 2)]
    assert [m["MessageId"] for m in in_sequence(messages)] == ["1", "2", "3"]
    plain = [{"MessageId": "b"}, {"MessageId": "a"}]
    assert in_sequence(plain) == plain
