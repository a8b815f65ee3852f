"""SQS over the Query protocol, spoken with plain HTTP against a real `dovecote serve`."""

import hashlib
from xml.etree import ElementTree

import httpx
import pytest

from dovecote.net.sqs_query import nest, query_action

from ..faults.serve import ServeProcess

NS = {"sqs": "http://queue.amazonaws.com/doc/2012-11-05/"}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    broker = ServeProcess(tmp_path_factory.mktemp("query") / "data").start()
    yield f"http://127.0.0.1:{broker.http_port}"
    assert broker.terminate() == 0


def call(endpoint, params, path="/", status=200):
    response = httpx.post(endpoint + path, data={"Version": "2012-11-05", **params}, timeout=10)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/xml"
    return ElementTree.fromstring(response.content)


def text(root, path):
    return root.findtext(path, namespaces=NS)


def test_nesting_of_flattened_parameters():
    pairs = [
        ("Action", "SendMessageBatch"),
        ("QueueUrl", "u"),
        ("SendMessageBatchRequestEntry.2.Id", "b"),
        ("SendMessageBatchRequestEntry.10.Id", "c"),
        ("SendMessageBatchRequestEntry.1.Id", "a"),
        ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Name", "k"),
        ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType", "String"),
        ("SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue", "v"),
        ("Attribute.Name", "VisibilityTimeout"),
        ("Attribute.Value", "5"),
    ]
    action = query_action(pairs)
    params = nest(action, pairs)
    assert action == "SendMessageBatch"
    assert [entry["Id"] for entry in params["Entries"]] == ["a", "b", "c"]
    assert params["Entries"][0]["MessageAttributes"] == {"k": {"DataType": "String", "StringValue": "v"}}
    assert params["Attributes"] == {"VisibilityTimeout": "5"}


def test_a_session_over_query(endpoint):
    root = call(endpoint, {"Action": "CreateQueue", "QueueName": "legacy", "Attribute.1.Name": "VisibilityTimeout",
                           "Attribute.1.Value": "45"})
    url = text(root, "sqs:CreateQueueResult/sqs:QueueUrl")
    assert url == f"{endpoint}/000000000000/legacy"
    assert text(root, "sqs:ResponseMetadata/sqs:RequestId")

    root = call(endpoint, {"Action": "GetQueueAttributes", "QueueUrl": url, "AttributeName.1": "VisibilityTimeout"})
    attributes = {text(a, "sqs:Name"): text(a, "sqs:Value") for a in root.iterfind(".//sqs:Attribute", NS)}
    assert attributes == {"VisibilityTimeout": "45"}

    root = call(endpoint, {"Action": "SendMessage", "QueueUrl": url, "MessageBody": "old school",
                           "MessageAttribute.1.Name": "kind", "MessageAttribute.1.Value.DataType": "String",
                           "MessageAttribute.1.Value.StringValue": "legacy"})
    assert text(root, "sqs:SendMessageResult/sqs:MD5OfMessageBody") == hashlib.md5(b"old school").hexdigest()
    md5_of_attributes = text(root, "sqs:SendMessageResult/sqs:MD5OfMessageAttributes")

    # addressed by the queue URL's path instead of a QueueUrl parameter
    root = call(endpoint, {"Action": "SendMessageBatch", "SendMessageBatchRequestEntry.1.Id": "one",
                           "SendMessageBatchRequestEntry.1.MessageBody": "batched"}, path="/000000000000/legacy")
    assert text(root, ".//sqs:SendMessageBatchResultEntry/sqs:Id") == "one"

    root = call(endpoint, {"Action": "ReceiveMessage", "QueueUrl": url, "MaxNumberOfMessages": "10",
                           "AttributeName.1": "All", "MessageAttributeName.1": "All"})
    messages = root.findall(".//sqs:Message", NS)
    assert sorted(text(m, "sqs:Body") for m in messages) == ["batched", "old school"]
    first = next(m for m in messages if text(m, "sqs:Body") == "old school")
    assert text(first, "sqs:MD5OfMessageAttributes") == md5_of_attributes
    assert text(first, "sqs:MessageAttribute/sqs:Value/sqs:StringValue") == "legacy"
    system = {text(a, "sqs:Name"): text(a, "sqs:Value") for a in first.iterfind("sqs:Attribute", NS)}
    assert system["ApproximateReceiveCount"] == "1"

    entries = {f"DeleteMessageBatchRequestEntry.{i}.{field}": value
               for i, m in enumerate(messages, 1)
               for field, value in (("Id", f"d{i}"), ("ReceiptHandle", text(m, "sqs:ReceiptHandle")))}
    root = call(endpoint, {"Action": "DeleteMessageBatch", "QueueUrl": url, **entries})
    assert len(root.findall(".//sqs:DeleteMessageBatchResultEntry", NS)) == 2

    root = call(endpoint, {"Action": "ListQueues", "QueueNamePrefix": "leg"})
    assert [e.text for e in root.iterfind(".//sqs:QueueUrl", NS)] == [url]
    call(endpoint, {"Action": "DeleteQueue", "QueueUrl": url})


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"Action": "GetQueueUrl", "QueueName": "missing"}, 400, "AWS.SimpleQueueService.NonExistentQueue"),
        ({"Action": "LaunchRocket"}, 400, "InvalidAction"),
        ({"Action": "SendMessage", "QueueUrl": "/000000000000/x"}, 400, "MissingParameter"),
        ({"Action": "ReceiveMessage", "QueueUrl": "/000000000000/x", "MaxNumberOfMessages": "many"}, 400,
         "InvalidParameterValue"),
        ({"Action": "CreateQueue", "QueueName": "q", "Attribute.1": "not-a-map-entry"}, 400, "InvalidParameterValue"),
    ],
)
def test_query_errors_are_xml_error_responses(endpoint, params, status, code):
    root = call(endpoint, params, status=status)
    assert root.tag == "{%s}ErrorResponse" % NS["sqs"]
    assert text(root, "sqs:Error/sqs:Code") == code
    assert text(root, "sqs:Error/sqs:Type") == "Sender"
    assert text(root, "sqs:Error/sqs:Message")
    call(endpoint, {"Action": "ListQueues"})


def test_tags_and_permissions_over_query(endpoint):
    root = call(endpoint, {"Action": "CreateQueue", "QueueName": "q-tags", "Tag.1.Key": "team", "Tag.1.Value": "edge"})
    url = text(root, "sqs:CreateQueueResult/sqs:QueueUrl")
    call(endpoint, {"Action": "TagQueue", "QueueUrl": url, "Tag.1.Key": "env", "Tag.1.Value": "test"})
    call(endpoint, {"Action": "UntagQueue", "QueueUrl": url, "TagKey.1": "team"})
    root = call(endpoint, {"Action": "ListQueueTags", "QueueUrl": url})
    tags = {text(t, "sqs:Key"): text(t, "sqs:Value") for t in root.iterfind(".//sqs:Tag", NS)}
    assert tags == {"env": "test"}
    call(endpoint, {"Action": "AddPermission", "QueueUrl": url, "Label": "l1", "AWSAccountId.1": "111122223333",
                    "ActionName.1": "ReceiveMessage"})
    call(endpoint, {"Action": "RemovePermission", "QueueUrl": url, "Label": "l1"})
    root = call(endpoint, {"Action": "RemovePermission", "QueueUrl": url, "Label": "l1"}, status=400)
    assert text(root, "sqs:Error/sqs:Code") == "InvalidParameterValue"


def test_fifo_dead_letter_sources_and_move_tasks_over_query(endpoint):
    fifo = text(call(endpoint, {"Action": "CreateQueue", "QueueName": "legacy.fifo", "Attribute.1.Name": "FifoQueue",
                                "Attribute.1.Value": "true"}), "sqs:CreateQueueResult/sqs:QueueUrl")
    sent = call(endpoint, {"Action": "SendMessage", "QueueUrl": fifo, "MessageBody": "m", "MessageGroupId": "g",
                           "MessageDeduplicationId": "d"})
    assert text(sent, "sqs:SendMessageResult/sqs:SequenceNumber").isdigit()
    dlq = text(call(endpoint, {"Action": "CreateQueue", "QueueName": "legacy-dlq"}), "sqs:CreateQueueResult/sqs:QueueUrl")
    arn = "arn:aws:sqs:us-east-1:000000000000:legacy-dlq"
    policy = '{"deadLetterTargetArn": "%s", "maxReceiveCount": 3}' % arn
    source = text(call(endpoint, {"Action": "CreateQueue", "QueueName": "legacy-source", "Attribute.1.Name": "RedrivePolicy",
                                  "Attribute.1.Value": policy}), "sqs:CreateQueueResult/sqs:QueueUrl")
    sources = call(endpoint, {"Action": "ListDeadLetterSourceQueues", "QueueUrl": dlq})
    assert [e.text for e in sources.findall("sqs:ListDeadLetterSourceQueuesResult/sqs:QueueUrl", NS)] == [source]
    handle = text(call(endpoint, {"Action": "StartMessageMoveTask", "SourceArn": arn}),
                  "sqs:StartMessageMoveTaskResult/sqs:TaskHandle")
    assert handle
    tasks = call(endpoint, {"Action": "ListMessageMoveTasks", "SourceArn": arn})
    entry = tasks.find("sqs:ListMessageMoveTasksResult/sqs:ListMessageMoveTasksResultEntry", NS)
    assert entry is not None and entry.findtext("sqs:SourceArn", namespaces=NS) == arn
