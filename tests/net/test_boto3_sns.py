"""Unmodified boto3 SNS (the Query protocol) against a real `dovecote serve`, fanning out to SQS."""

import json

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from ..faults.serve import ServeProcess


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    broker = ServeProcess(tmp_path_factory.mktemp("sns") / "data").start()
    yield f"http://127.0.0.1:{broker.http_port}"
    assert broker.terminate() == 0


def client(endpoint, service):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture
def sns(endpoint):
    return client(endpoint, "sns")


@pytest.fixture
def sqs(endpoint):
    return client(endpoint, "sqs")


def queue_arn(sqs, url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def test_topic_fan_out_to_queues_with_filters(sns, sqs):
    topic = sns.create_topic(Name="orders", Attributes={"DisplayName": "Orders"}, Tags=[{"Key": "team", "Value": "a"}])["TopicArn"]
    assert topic == "arn:aws:sns:us-east-1:000000000000:orders"
    assert topic in [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["DisplayName"] == "Orders"
    assert sns.list_tags_for_resource(ResourceArn=topic)["Tags"] == [{"Key": "team", "Value": "a"}]
    everything = sqs.create_queue(QueueName="everything")["QueueUrl"]
    red = sqs.create_queue(QueueName="red-only")["QueueUrl"]
    all_arn = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, everything))["SubscriptionArn"]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, red),
        Attributes={"FilterPolicy": json.dumps({"colour": ["red"]}), "RawMessageDelivery": "true"},
        ReturnSubscriptionArn=True,
    )
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert {s["Endpoint"] for s in subscriptions} == {queue_arn(sqs, everything), queue_arn(sqs, red)}
    sent = sns.publish(
        TopicArn=topic, Message="a red one", Subject="hi",
        MessageAttributes={"colour": {"DataType": "String", "StringValue": "red"}},
    )
    sns.publish(TopicArn=topic, Message="a blue one", MessageAttributes={"colour": {"DataType": "String", "StringValue": "blue"}})
    got = sqs.receive_message(QueueUrl=everything, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
    envelopes = sorted((json.loads(m["Body"]) for m in got), key=lambda e: e["Message"])
    assert [e["Message"] for e in envelopes] == ["a blue one", "a red one"]
    assert envelopes[1]["MessageId"] == sent["MessageId"] and envelopes[1]["Subject"] == "hi"
    (raw,) = sqs.receive_message(QueueUrl=red, MaxNumberOfMessages=10, WaitTimeSeconds=2, MessageAttributeNames=["All"])["Messages"]
    assert raw["Body"] == "a red one" and raw["MessageAttributes"]["colour"]["StringValue"] == "red"
    batch = sns.publish_batch(
        TopicArn=topic, PublishBatchRequestEntries=[{"Id": "1", "Message": "one"}, {"Id": "2", "Message": ""}]
    )
    assert [e["Id"] for e in batch["Successful"]] == ["1"] and batch["Failed"][0]["Code"] == "InvalidParameter"
    sns.set_subscription_attributes(SubscriptionArn=all_arn, AttributeName="RawMessageDelivery", AttributeValue="true")
    assert sns.get_subscription_attributes(SubscriptionArn=all_arn)["Attributes"]["RawMessageDelivery"] == "true"
    sns.unsubscribe(SubscriptionArn=all_arn)
    assert len(sns.list_subscriptions()["Subscriptions"]) == 1
    sns.delete_topic(TopicArn=topic)


def test_errors_come_as_modelled_sns_exceptions(sns):
    with pytest.raises(sns.exceptions.NotFoundException):
        sns.publish(TopicArn="arn:aws:sns:us-east-1:000000000000:missing", Message="x")
    topic = sns.create_topic(Name="strict")["TopicArn"]
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.subscribe(TopicArn=topic, Protocol="sms", Endpoint="+15555550100")
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint="x", Attributes={"FilterPolicy": "{"})
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sns.publish(TopicArn=topic, Message="")
    assert caught.value.response["Error"]["Code"] == "InvalidParameter"


def test_fifo_topic_through_boto3(sns, sqs):
    topic = sns.create_topic(Name="events.fifo", Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "true"})["TopicArn"]
    queue = sqs.create_queue(QueueName="events.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, queue), Attributes={"RawMessageDelivery": "true"})
    numbers = [int(sns.publish(TopicArn=topic, Message=f"m{i}", MessageGroupId="g")["SequenceNumber"]) for i in range(3)]
    sns.publish(TopicArn=topic, Message="m0", MessageGroupId="g")  # a duplicate by content
    assert numbers == sorted(numbers)
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
    assert [m["Body"] for m in got] == ["m0", "m1", "m2"]


def test_delivered_envelopes_are_signed_and_verify_with_the_served_certificate(sns, sqs):
    import base64

    import httpx
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    topic = sns.create_topic(Name="signed")["TopicArn"]
    queue = sqs.create_queue(QueueName="signed-inbox")["QueueUrl"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, queue))
    for version in ("1", "2"):
        sns.set_topic_attributes(TopicArn=topic, AttributeName="SignatureVersion", AttributeValue=version)
        sns.publish(TopicArn=topic, Message=f"signed v{version}", Subject="s")
        (message,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)["Messages"]
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        envelope = json.loads(message["Body"])
        assert envelope["SignatureVersion"] == version
        certificate = x509.load_pem_x509_certificate(httpx.get(envelope["SigningCertURL"], timeout=10).content)
        signed = "".join(f"{k}\n{envelope[k]}\n" for k in ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"))
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        certificate.public_key().verify(base64.b64decode(envelope["Signature"]), signed.encode(), padding.PKCS1v15(), digest)


def test_malformed_sns_requests_get_xml_errors_and_the_broker_keeps_serving(endpoint, sns):
    import httpx

    for data in ({"Action": "Publish", "member.1": "x"}, {"Action": "Publish", "TopicArn": "not-an-arn", "Message": "m"},
                 {"Action": "CreatePlatformApplication", "Name": "x"}, {"Action": "Subscribe", "TopicArn": "arn:aws:sns:us-east-1:000000000000:t"}):
        response = httpx.post(endpoint, data=data, timeout=10)
        assert 400 <= response.status_code < 500, response.text
        assert "<ErrorResponse" in response.text and "<Code>" in response.text
    assert "Topics" in sns.list_topics()
