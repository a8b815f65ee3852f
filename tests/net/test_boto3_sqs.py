"""Unmodified boto3 against a real `dovecote serve`, over the AWS JSON 1.0 protocol."""

import hashlib
import json
import time

import boto3
import botocore.exceptions
import httpx
import pytest
from botocore.config import Config

from dovecote.net.limits import NetLimits

from ..faults.serve import ServeProcess


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    broker = ServeProcess(tmp_path_factory.mktemp("boto3") / "data").start()
    yield f"http://127.0.0.1:{broker.http_port}"
    assert broker.terminate() == 0


@pytest.fixture
def sqs(endpoint):
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}),
    )


def test_queue_lifecycle(sqs, endpoint):
    url = sqs.create_queue(QueueName="orders", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    assert url == f"{endpoint}/000000000000/orders"
    assert sqs.create_queue(QueueName="orders", Attributes={"VisibilityTimeout": "60"})["QueueUrl"] == url
    with pytest.raises(sqs.exceptions.QueueNameExists):
        sqs.create_queue(QueueName="orders", Attributes={"VisibilityTimeout": "61"})
    assert sqs.get_queue_url(QueueName="orders")["QueueUrl"] == url
    assert url in sqs.list_queues(QueueNamePrefix="ord")["QueueUrls"]
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix="nothing-here")
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "60"
    assert attributes["QueueArn"] == "arn:aws:sqs:us-east-1:000000000000:orders"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "5"})
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds"])["Attributes"] == {
        "DelaySeconds": "5"
    }
    sqs.purge_queue(QueueUrl=url)
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as caught:
        sqs.get_queue_url(QueueName="orders")
    assert caught.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=url, MessageBody="x")


def test_messages_round_trip_with_attributes_and_checksums(sqs):
    url = sqs.create_queue(QueueName="roundtrip")["QueueUrl"]
    attributes = {
        "kind": {"DataType": "String", "StringValue": "greeting"},
        "weight": {"DataType": "Number", "StringValue": "12.5"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\x02"},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="hello ✓", MessageAttributes=attributes)
    assert sent["MD5OfMessageBody"] == hashlib.md5("hello ✓".encode()).hexdigest()
    (message,) = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
        WaitTimeSeconds=1,
    )["Messages"]
    assert message["Body"] == "hello ✓" and message["MessageId"] == sent["MessageId"]
    assert message["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert message["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01\x02"
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    (again,) = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])  # an earlier handle deletes it too, as on AWS
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_batches(sqs):
    url = sqs.create_queue(QueueName="batches")["QueueUrl"]
    result = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[{"Id": f"e{i}", "MessageBody": f"m{i}"} for i in range(9)] + [{"Id": "bad", "MessageBody": "\x00"}],
    )
    assert len(result["Successful"]) == 9
    assert result["Failed"] == [
        {"Id": "bad", "SenderFault": True, "Code": "InvalidParameterValue", "Message": result["Failed"][0]["Message"]}
    ]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 9
    changed = sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[{"Id": "c0", "ReceiptHandle": messages[0]["ReceiptHandle"], "VisibilityTimeout": 100}],
    )
    assert changed["Successful"] == [{"Id": "c0"}]
    deleted = sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[{"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        + [{"Id": "junk", "ReceiptHandle": "junk"}],
    )
    assert len(deleted["Successful"]) == 9 and deleted["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "x", "MessageBody": "a"}, {"Id": "x", "MessageBody": "b"}])
    with pytest.raises(sqs.exceptions.TooManyEntriesInBatchRequest):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": f"e{i}", "MessageBody": "a"} for i in range(11)])
    with pytest.raises(sqs.exceptions.EmptyBatchRequest):
        sqs.delete_message_batch(QueueUrl=url, Entries=[])


def test_invalid_parameters_raise_modelled_errors(sqs):
    url = sqs.create_queue(QueueName="invalid")["QueueUrl"]
    with pytest.raises(sqs.exceptions.InvalidAttributeName):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Colour": "blue"})
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert caught.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sqs.create_queue(QueueName="bad name")
    assert caught.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName="invalid", QueueOwnerAWSAccountId="123456789012")


@pytest.mark.parametrize(
    ("target", "body", "status", "error_type"),
    [
        ("AmazonSQS.ListQueues", b"{not json", 400, "com.amazonaws.sqs#InvalidParameterValueException"),
        ("AmazonSQS.ListQueues", b"[1, 2]", 400, "com.amazonaws.sqs#InvalidParameterValueException"),
        ("AmazonSQS.LaunchRocket", b"{}", 400, "com.amazonaws.sqs#InvalidAction"),
        ("AmazonSQS.SendMessage", b'{"MessageBody": "x"}', 400, "com.amazonaws.sqs#MissingRequiredParameterException"),
        (
            "AmazonSQS.ReceiveMessage",
            b'{"QueueUrl": "http://h/000000000000/q", "MaxNumberOfMessages": {"a": 1}}',
            400,
            "com.amazonaws.sqs#InvalidParameterValueException",
        ),
        ("AmazonSQS.DeleteQueue", b'{"QueueUrl": "http://h/not/a/queue"}', 404, "com.amazonaws.sqs#InvalidAddress"),
    ],
)
def test_malformed_requests_get_aws_errors_and_the_broker_keeps_serving(sqs, endpoint, target, body, status, error_type):
    response = httpx.post(
        endpoint,
        content=body,
        headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0"},
        timeout=10,
    )
    assert response.status_code == status
    assert response.json()["__type"] == error_type and response.json()["message"]
    assert ";Sender" in response.headers["x-amzn-query-error"]
    sqs.list_queues()


def test_a_huge_body_is_refused_and_the_broker_keeps_serving(sqs, endpoint):
    response = httpx.post(
        endpoint, content=b"x" * (NetLimits().http_max_body_bytes + 1), headers={"X-Amz-Target": "AmazonSQS.ListQueues"}, timeout=10
    )
    assert response.status_code == 413 and response.json()["__type"] == "com.amazonaws.sqs#RequestEntityTooLarge"
    sqs.list_queues()


def test_the_seed_documents_sqs_examples_run_unmodified_but_for_the_endpoint(endpoint):
    """The calls of shared/seeds' SQS examples, with their AWS queue URL left as it is."""
    sqs = boto3.client(
        "sqs", region_name="us-west-2", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x"
    )
    response = sqs.create_queue(QueueName="MyStandardQueue")
    assert response["QueueUrl"].endswith("/MyStandardQueue")
    queue_url = "https://sqs.us-west-2.amazonaws.com/123456789012/MyStandardQueue"
    response = sqs.send_message(
        QueueUrl=queue_url,
        MessageBody="Hello, this is a test message!",
        MessageAttributes={
            "Author": {"StringValue": "ChatGPT", "DataType": "String"},
            "Priority": {"StringValue": "High", "DataType": "String"},
        },
    )
    assert response["MessageId"]
    response = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=20, MessageAttributeNames=["All"]
    )
    assert "Messages" in response
    for message in response["Messages"]:
        assert message["Body"] == "Hello, this is a test message!"
        assert message.get("MessageAttributes", {})["Priority"]["StringValue"] == "High"
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"ReceiveMessageWaitTimeSeconds": "20"})
    assert "Messages" not in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)


def test_the_signing_region_selects_the_namespace(endpoint):
    def client(region):
        return boto3.client(
            "sqs", endpoint_url=endpoint, region_name=region, aws_access_key_id="x", aws_secret_access_key="x"
        )

    tokyo, oregon = client("ap-northeast-1"), client("us-west-2")
    url = tokyo.create_queue(QueueName="regional")["QueueUrl"]
    with pytest.raises(oregon.exceptions.QueueDoesNotExist):
        oregon.get_queue_url(QueueName="regional")
    arn = tokyo.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert arn == "arn:aws:sqs:ap-northeast-1:000000000000:regional"


def test_tags_permissions_and_the_purge_rule(sqs):
    url = sqs.create_queue(QueueName="tagged", tags={"team": "edge"})["QueueUrl"]
    sqs.tag_queue(QueueUrl=url, Tags={"env": "test"})
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "edge", "env": "test"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test"}
    sqs.add_permission(QueueUrl=url, Label="share", AWSAccountIds=["111122223333"], Actions=["SendMessage"])
    policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"]
    assert '"Sid":"share"' in policy and "arn:aws:iam::111122223333:root" in policy
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sqs.add_permission(QueueUrl=url, Label="share", AWSAccountIds=["111122223333"], Actions=["SendMessage"])
    assert caught.value.response["Error"]["Code"] == "InvalidParameterValue"
    sqs.remove_permission(QueueUrl=url, Label="share")
    assert "Policy" not in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    sqs.purge_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.PurgeQueueInProgress):
        sqs.purge_queue(QueueUrl=url)


def test_aws_trace_header_travels_with_the_message(sqs):
    url = sqs.create_queue(QueueName="traced")["QueueUrl"]
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    sent = sqs.send_message(
        QueueUrl=url, MessageBody="traced",
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": trace}},
    )
    assert sent["MD5OfMessageSystemAttributes"]
    (message,) = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["AWSTraceHeader"])["Messages"]
    assert message["Attributes"] == {"AWSTraceHeader": trace}
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sqs.send_message(
            QueueUrl=url, MessageBody="x",
            MessageSystemAttributes={"Other": {"DataType": "String", "StringValue": "v"}},
        )
    assert caught.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_fair_queue_groups_on_a_standard_queue(sqs):
    url = sqs.create_queue(QueueName="fair")["QueueUrl"]
    for start in range(0, 30, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": f"e{i}", "MessageBody": f"noisy-{start + i}", "MessageGroupId": "tenant-a"} for i in range(10)],
        )
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"quiet-{i}", MessageGroupId="tenant-b")
    messages = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["MessageGroupId"]
    )["Messages"]
    quiet = [m for m in messages if m["Body"].startswith("quiet")]
    assert len(quiet) == 3, "a noisy group's backlog must not starve a quiet one"
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {"tenant-a", "tenant-b"}


def test_fifo_queue_through_boto3(sqs):
    url = sqs.create_queue(
        QueueName="orders.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    )["QueueUrl"]
    first = sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="customer-1")
    again = sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="customer-1")
    assert again["MessageId"] == first["MessageId"] and first["SequenceNumber"].isdigit()
    batch = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "a", "MessageBody": "two", "MessageGroupId": "customer-1", "MessageDeduplicationId": "d2"},
            {"Id": "b", "MessageBody": "three", "MessageGroupId": "customer-2", "MessageDeduplicationId": "d3"},
        ],
    )
    assert all(entry["SequenceNumber"].isdigit() for entry in batch["Successful"])
    messages = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"], ReceiveRequestAttemptId="try-1"
    )["Messages"]
    assert [m["Body"] for m in messages] == ["one", "two", "three"]
    assert messages[0]["Attributes"]["MessageGroupId"] == "customer-1"
    assert messages[1]["Attributes"]["MessageDeduplicationId"] == "d2"
    retried = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, ReceiveRequestAttemptId="try-1")["Messages"]
    assert [m["ReceiptHandle"] for m in retried] == [m["ReceiptHandle"] for m in messages]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sqs.send_message(QueueUrl=url, MessageBody="x")  # no MessageGroupId
    assert caught.value.response["Error"]["Code"] == "MissingParameter"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", DelaySeconds=5)
    assert caught.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_dead_letter_queue_and_move_task_through_boto3(sqs):
    dlq = sqs.create_queue(QueueName="boto-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    source = sqs.create_queue(
        QueueName="boto-source",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "1"})},
    )["QueueUrl"]
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [source]
    sqs.send_message(QueueUrl=source, MessageBody="poison")
    sqs.receive_message(QueueUrl=source, VisibilityTimeout=0)
    assert "Messages" not in sqs.receive_message(QueueUrl=source)
    dead = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=5, VisibilityTimeout=0, MessageSystemAttributeNames=["All"])
    assert dead["Messages"][0]["Attributes"]["DeadLetterQueueSourceArn"].endswith(":boto-source")
    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    for _ in range(50):
        (task,) = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        if task["Status"] != "RUNNING":
            break
        time.sleep(0.1)
    assert task["Status"] == "COMPLETED" and task["ApproximateNumberOfMessagesMoved"] == 1
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=source, WaitTimeSeconds=5)["Messages"]] == ["poison"]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sqs.cancel_message_move_task(TaskHandle=handle)
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
