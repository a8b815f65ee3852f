"""SNS as AWS answers and behaves (issue 15), through unmodified boto3 against a real `dovecote
serve`. Each test is named after the AWS behaviour it holds; where the behaviour is AWS's observed
one rather than its documented one, the test says where it was observed."""

import json

import botocore.exceptions
import pytest

from ..faults.serve import ServeProcess
from .test_boto3_sns import client, queue_arn


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    broker = ServeProcess(tmp_path_factory.mktemp("sns-parity") / "data").start()
    yield f"http://127.0.0.1:{broker.http_port}"
    assert broker.terminate() == 0


@pytest.fixture
def sns(endpoint):
    return client(endpoint, "sns")


@pytest.fixture
def sqs(endpoint):
    return client(endpoint, "sqs")


def refusal(call, **parameters):
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(**parameters)
    error = caught.value.response["Error"]
    return caught.value.response["ResponseMetadata"]["HTTPStatusCode"], error["Code"], error["Message"]


def received(sqs, url, **options):
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, **options).get("Messages", [])


def subscribed_queue(sns, sqs, topic, name, **attributes):
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if name.endswith(".fifo") else {})["QueueUrl"]
    arn = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, url), Attributes=attributes)["SubscriptionArn"]
    return url, arn


# --- filter policies --------------------------------------------------------------------------------
def test_filter_policy_numbers_match_to_five_decimal_digits(sns, sqs):
    topic = sns.create_topic(Name="prices")["TopicArn"]
    url, _ = subscribed_queue(sns, sqs, topic, "prices-q", FilterPolicy='{"price": [100.1234567]}', RawMessageDelivery="true")
    sns.publish(TopicArn=topic, Message="close", MessageAttributes={"price": {"DataType": "Number", "StringValue": "100.123456789"}})
    sns.publish(TopicArn=topic, Message="far", MessageAttributes={"price": {"DataType": "Number", "StringValue": "100.1235"}})
    assert [m["Body"] for m in received(sqs, url)] == ["close"]


def test_message_body_filter_policy_dotted_key_matches_the_nested_path(sns, sqs):
    topic = sns.create_topic(Name="dotted")["TopicArn"]
    url, _ = subscribed_queue(
        sns, sqs, topic, "dotted-q", FilterPolicy='{"object.nested": ["x"]}', FilterPolicyScope="MessageBody", RawMessageDelivery="true"
    )
    for body in ({"object": {"nested": "x"}}, {"object": {"nested": "y"}}, {"object": [[{"nested": ["z", ["x"]]}]]}):
        sns.publish(TopicArn=topic, Message=json.dumps(body))
    assert sorted(m["Body"] for m in received(sqs, url)) == sorted(
        [json.dumps({"object": {"nested": "x"}}), json.dumps({"object": [[{"nested": ["z", ["x"]]}]]})]
    )


def test_nested_filter_policy_of_216_combinations_is_refused_as_too_complex(sns, sqs):
    topic = sns.create_topic(Name="complex")["TopicArn"]
    url = sqs.create_queue(QueueName="complex-q")["QueueUrl"]
    policy = json.dumps({k: {"inner": ["a", "b", "c"]} for k in ("x", "y", "z")})  # (3 x 2) ** 3 = 216
    assert refusal(
        sns.subscribe, TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, url),
        Attributes={"FilterPolicy": policy, "FilterPolicyScope": "MessageBody"},
    ) == (400, "InvalidParameter", "Invalid parameter: Attributes Reason: FilterPolicy: Filter policy is too complex")
    arn = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, url))["SubscriptionArn"]
    sns.set_subscription_attributes(SubscriptionArn=arn, AttributeName="FilterPolicyScope", AttributeValue="MessageBody")
    assert refusal(sns.set_subscription_attributes, SubscriptionArn=arn, AttributeName="FilterPolicy", AttributeValue=policy) == (
        400, "InvalidParameter", "Invalid parameter: FilterPolicy: Filter policy is too complex",
    )


def test_empty_filter_policy_is_accepted_and_delivers_everything(sns, sqs):
    topic = sns.create_topic(Name="open-filter")["TopicArn"]
    url, _ = subscribed_queue(sns, sqs, topic, "open-filter-q", FilterPolicy="{}", RawMessageDelivery="true")
    sns.publish(TopicArn=topic, Message="anything")
    assert [m["Body"] for m in received(sqs, url)] == ["anything"]


# --- SNS to SQS ---------------------------------------------------------------------------------------
def test_standard_queue_subscribes_to_fifo_topic(sns, sqs):
    topic = sns.create_topic(Name="mixed.fifo", Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "true"})["TopicArn"]
    url, _ = subscribed_queue(sns, sqs, topic, "mixed-standard", RawMessageDelivery="true")
    sns.publish(TopicArn=topic, Message="to a standard queue", MessageGroupId="g")
    assert [m["Body"] for m in received(sqs, url)] == ["to a standard queue"]


def test_standard_topic_passes_message_group_id_to_fair_queue(sns, sqs):
    topic = sns.create_topic(Name="fair")["TopicArn"]
    url, _ = subscribed_queue(sns, sqs, topic, "fair-q", RawMessageDelivery="true")
    sns.publish(TopicArn=topic, Message="tenant a", MessageGroupId="tenant-a")
    (message,) = received(sqs, url, MessageSystemAttributeNames=["MessageGroupId"])
    assert message["Attributes"]["MessageGroupId"] == "tenant-a"
    assert refusal(sns.publish, TopicArn=topic, Message="x", MessageDeduplicationId="d") == (
        400, "InvalidParameter",
        "Invalid parameter: MessageDeduplicationId Reason: The request includes MessageDeduplicationId parameter that is not valid for this topic type",
    )


def test_delivery_to_deleted_queue_goes_to_subscription_dead_letter_queue(sns, sqs):
    topic = sns.create_topic(Name="orphaned")["TopicArn"]
    dead = sqs.create_queue(QueueName="orphaned-dlq")["QueueUrl"]
    gone, _ = subscribed_queue(
        sns, sqs, topic, "orphaned-q", RedrivePolicy=json.dumps({"deadLetterTargetArn": queue_arn(sqs, dead)}), RawMessageDelivery="true"
    )
    sqs.delete_queue(QueueUrl=gone)
    sns.publish(TopicArn=topic, Message="its queue is gone")
    assert [m["Body"] for m in received(sqs, dead)] == ["its queue is gone"]


def test_publish_x_amzn_trace_id_becomes_aws_trace_header_of_the_sqs_message(sns, sqs):
    topic = sns.create_topic(Name="traced")["TopicArn"]
    url, _ = subscribed_queue(sns, sqs, topic, "traced-q")
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

    def add_trace(request, **_):
        request.headers["X-Amzn-Trace-Id"] = trace

    sns.meta.events.register("before-sign.sns.Publish", add_trace)
    sns.meta.events.register("before-sign.sns.PublishBatch", add_trace)
    sns.publish(TopicArn=topic, Message="traced")
    sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[{"Id": "1", "Message": "traced in a batch"}])
    messages = received(sqs, url, MessageSystemAttributeNames=["AWSTraceHeader"])
    assert sorted(json.loads(m["Body"])["Message"] for m in messages) == ["traced", "traced in a batch"]
    assert [m["Attributes"]["AWSTraceHeader"] for m in messages] == [trace, trace]


# --- PublishBatch ---------------------------------------------------------------------------------------
def test_publish_batch_faults_that_fail_the_whole_request(sns):
    fifo = sns.create_topic(Name="batch.fifo", Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "true"})["TopicArn"]
    assert refusal(
        sns.publish_batch, TopicArn=fifo,
        PublishBatchRequestEntries=[{"Id": "1", "Message": "a", "MessageGroupId": "g"}, {"Id": "2", "Message": "b"}],
    ) == (400, "InvalidParameter", "Invalid parameter: The MessageGroupId parameter is required for FIFO topics")
    topic = sns.create_topic(Name="batch")["TopicArn"]
    assert refusal(
        sns.publish_batch, TopicArn=topic,
        PublishBatchRequestEntries=[
            {"Id": "1", "Message": "a"},
            {"Id": "2", "Message": "b", "MessageAttributes": {"empty": {"DataType": "String", "StringValue": ""}}},
        ],
    ) == (
        400, "ParameterValueInvalid",
        "The message attribute 'empty' must contain non-empty message attribute value for message attribute type 'String'.",
    )
    # 200 KiB of messages and 60 KiB of attributes: under the limit without the attributes, over it with them
    big = {"a": {"DataType": "String", "StringValue": "v" * 60 * 1024}}
    assert refusal(
        sns.publish_batch, TopicArn=topic,
        PublishBatchRequestEntries=[{"Id": "1", "Message": "m" * 200 * 1024}, {"Id": "2", "Message": "m", "MessageAttributes": big}],
    ) == (400, "BatchRequestTooLong", "The length of all the messages put together is more than the limit.")


# --- errors ---------------------------------------------------------------------------------------------
def test_topic_arn_of_another_region_is_invalid_parameter(sns):
    topic = sns.create_topic(Name="regional")["TopicArn"]
    elsewhere = topic.replace("us-east-1", "eu-west-1")
    for call, parameters in [
        (sns.get_topic_attributes, {"TopicArn": elsewhere}),
        (sns.delete_topic, {"TopicArn": elsewhere}),  # not a silent success
        (sns.publish, {"TopicArn": elsewhere, "Message": "m"}),
    ]:
        assert refusal(call, **parameters) == (400, "InvalidParameter", "Invalid parameter: TopicArn")
    assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["TopicArn"] == topic  # still there


def test_confirm_subscription_on_unknown_topic_is_invalid_parameter(sns):
    assert refusal(sns.confirm_subscription, TopicArn="arn:aws:sns:us-east-1:000000000000:nothing-here", Token="t" * 64) == (
        400, "InvalidParameter", "Invalid parameter: Topic",
    )
    topic = sns.create_topic(Name="confirmable")["TopicArn"]
    assert refusal(sns.confirm_subscription, TopicArn=topic, Token="t" * 64) == (400, "InvalidParameter", "Invalid parameter: Token")


def test_unsubscribe_of_an_arn_without_subscription_id_is_invalid_parameter(sns):
    topic = sns.create_topic(Name="unsubscribing")["TopicArn"]
    assert refusal(sns.unsubscribe, SubscriptionArn=topic) == (400, "InvalidParameter", "Invalid parameter: SubscriptionId")


def test_publish_with_invalid_message_attribute_is_parameter_value_invalid(sns):
    topic = sns.create_topic(Name="attributes")["TopicArn"]
    with pytest.raises(sns.exceptions.InvalidParameterValueException) as caught:
        sns.publish(TopicArn=topic, Message="m", MessageAttributes={"a": {"DataType": "Strange", "StringValue": "v"}})
    assert caught.value.response["Error"]["Message"] == (
        "The message attribute 'a' has an invalid message attribute type, the set of supported type prefixes is Binary, Number, and String."
    )


def test_refusals_are_worded_as_aws_words_them(sns):
    topic = sns.create_topic(Name="worded")["TopicArn"]
    assert refusal(sns.get_topic_attributes, TopicArn="arn:aws:sns:us-east-1") == (
        400, "InvalidParameter", "Invalid parameter: TopicArn Reason: An ARN must have at least 6 elements, not 4",
    )
    assert refusal(sns.create_topic, Name="no spaces") == (400, "InvalidParameter", "Invalid parameter: Topic Name")
    assert refusal(sns.publish, TopicArn=topic, Message="m", Subject="two\nlines") == (400, "InvalidParameter", "Invalid parameter: Subject")
    assert refusal(
        sns.subscribe, TopicArn=topic, Protocol="sqs", Endpoint="arn:aws:sqs:us-east-1:000000000000:q",
        Attributes={"FilterPolicy": '{"a": [{"sorta": 1}]}'},
    ) == (400, "InvalidParameter", "Invalid parameter: Attributes Reason: FilterPolicy: Unrecognized match type sorta")


# --- missing surface --------------------------------------------------------------------------------------
def test_data_protection_policy_is_put_and_got(sns):
    topic = sns.create_topic(Name="protected")["TopicArn"]
    assert sns.get_data_protection_policy(ResourceArn=topic)["DataProtectionPolicy"] == ""
    document = json.dumps({"Name": "p", "Description": "", "Version": "2021-06-01", "Statement": []})
    sns.put_data_protection_policy(ResourceArn=topic, DataProtectionPolicy=document)
    assert sns.get_data_protection_policy(ResourceArn=topic)["DataProtectionPolicy"] == document


def test_fifo_throughput_scope_is_a_fifo_topic_attribute(sns):
    fifo = sns.create_topic(Name="scoped.fifo", Attributes={"FifoTopic": "true", "FifoThroughputScope": "MessageGroup"})["TopicArn"]
    assert sns.get_topic_attributes(TopicArn=fifo)["Attributes"]["FifoThroughputScope"] == "MessageGroup"
    sns.set_topic_attributes(TopicArn=fifo, AttributeName="FifoThroughputScope", AttributeValue="Topic")
    assert sns.get_topic_attributes(TopicArn=fifo)["Attributes"]["FifoThroughputScope"] == "Topic"
    status, code, _ = refusal(sns.set_topic_attributes, TopicArn=fifo, AttributeName="FifoThroughputScope", AttributeValue="Queue")
    assert (status, code) == (400, "InvalidParameter")
    standard = sns.create_topic(Name="unscoped")["TopicArn"]
    status, code, _ = refusal(sns.set_topic_attributes, TopicArn=standard, AttributeName="FifoThroughputScope", AttributeValue="Topic")
    assert (status, code) == (400, "InvalidParameter")


def test_create_existing_topic_with_other_tags_is_refused(sns):
    sns.create_topic(Name="tagged", Tags=[{"Key": "team", "Value": "a"}])
    assert sns.create_topic(Name="tagged", Tags=[{"Key": "team", "Value": "a"}])["TopicArn"].endswith(":tagged")
    assert refusal(sns.create_topic, Name="tagged", Tags=[{"Key": "team", "Value": "b"}]) == (
        400, "InvalidParameter", "Invalid parameter: Tags Reason: Topic already exists with different tags",
    )


def test_duplicate_tag_keys_are_refused(sns):
    topic = sns.create_topic(Name="duplicates")["TopicArn"]
    twice = [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]
    expected = (400, "InvalidParameter", "Invalid parameter: Duplicated keys are not allowed.")
    assert refusal(sns.tag_resource, ResourceArn=topic, Tags=twice) == expected
    assert refusal(sns.create_topic, Name="duplicates-too", Tags=twice) == expected


# --- attribute sets ----------------------------------------------------------------------------------------
def test_sqs_subscription_attributes_as_aws_returns_them(sns, sqs):
    topic = sns.create_topic(Name="described")["TopicArn"]
    _, arn = subscribed_queue(sns, sqs, topic, "described-q")
    attributes = sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]
    assert attributes["SubscriptionPrincipal"].startswith("arn:aws:iam::000000000000:")
    assert "EffectiveDeliveryPolicy" not in attributes and "FilterPolicyScope" not in attributes
    sns.set_subscription_attributes(SubscriptionArn=arn, AttributeName="FilterPolicy", AttributeValue='{"a": ["b"]}')
    assert sns.get_subscription_attributes(SubscriptionArn=arn)["Attributes"]["FilterPolicyScope"] == "MessageAttributes"


def test_fifo_topic_shows_content_based_deduplication_false(sns):
    topic = sns.create_topic(Name="plain.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["ContentBasedDeduplication"] == "false"
