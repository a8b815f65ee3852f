"""SQS's protocol details and answers word for word, as AWS gives them: through boto3 (the JSON
protocol), through the Query protocol (plain HTTP, as older SDKs speak it) and raw JSON where the
wire itself is the behaviour, against a real `dovecote serve`.

The expected words are AWS's, from public recordings of its answers (localstack's
tests/aws/services/sqs/test_sqs.snapshot.json unless a test says otherwise)."""

import json
import urllib.parse
from xml.etree import ElementTree

import boto3
import botocore.exceptions
import httpx
import pytest
from botocore.config import Config

from dovecote.actors.limits import SQS_MAX_MESSAGE_BYTES
from dovecote.net.limits import NetLimits

from ..faults.serve import ServeProcess

NS = {"sqs": "http://queue.amazonaws.com/doc/2012-11-05/"}
ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    broker = ServeProcess(tmp_path_factory.mktemp("parity") / "data").start()
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


def query(endpoint, params, path="/", status=200) -> ElementTree.Element:
    response = httpx.post(endpoint + path, data={"Version": "2012-11-05", **params}, timeout=10)
    assert response.status_code == status, response.text
    return ElementTree.fromstring(response.content)


def query_error(endpoint, params, status=400, path="/") -> tuple[str, str]:
    root = query(endpoint, params, path, status)
    assert root.tag == "{%s}ErrorResponse" % NS["sqs"]
    return root.findtext("sqs:Error/sqs:Code", namespaces=NS), root.findtext("sqs:Error/sqs:Message", namespaces=NS)


def raw_json(endpoint, action, body) -> httpx.Response:
    return httpx.post(
        endpoint,
        content=json.dumps(body).encode(),
        headers={"X-Amz-Target": f"AmazonSQS.{action}", "Content-Type": "application/x-amz-json-1.0"},
        timeout=10,
    )


def client_error(call, **kwargs) -> dict:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(**kwargs)
    return caught.value.response["Error"]


# --- queues addressed by name ------------------------------------------------------------------
def test_a_bare_queue_name_is_accepted_as_the_queue_url(sqs, endpoint):
    sqs.create_queue(QueueName="by-name")
    sqs.send_message(QueueUrl="by-name", MessageBody="json")
    query(endpoint, {"Action": "SendMessage", "QueueUrl": "by-name", "MessageBody": "query"})
    bodies = {m["Body"] for m in sqs.receive_message(QueueUrl="by-name", MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]}
    assert bodies == {"json", "query"}


# --- ReceiveMessage attribute names ------------------------------------------------------------
def test_receive_message_attribute_names_all_star_and_prefixes_select_as_aws(sqs, endpoint):
    url = sqs.create_queue(QueueName="attribute-names", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
    values = {name: {"DataType": "String", "StringValue": value} for name, value in
              (("General", "Kenobi"), ("Hello", "There"), ("Help.Me", "Me"))}
    sqs.send_message(QueueUrl=url, MessageBody="msg", MessageAttributes=values)

    def selected(names):
        (message,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=names)["Messages"]
        return set(message.get("MessageAttributes", {}))

    assert selected(["All"]) == selected(["*"]) == selected([".*"]) == {"General", "Hello", "Help.Me"}
    assert selected(["He.*"]) == set()  # a prefix ends at a dot
    assert selected(["Help.*", "Hello"]) == {"Help.Me", "Hello"}
    assert selected(["Nothing"]) == set()
    root = query(endpoint, {"Action": "ReceiveMessage", "QueueUrl": url, "MessageAttributeName.1": "*"})
    assert {e.text for e in root.iterfind(".//sqs:MessageAttribute/sqs:Name", NS)} == {"General", "Hello", "Help.Me"}
    (message,) = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["SenderId", "SentTimestamp"])["Messages"]
    assert set(message["Attributes"]) == {"SenderId", "SentTimestamp"}


# --- the Query protocol ------------------------------------------------------------------------
def test_query_an_empty_list_is_an_empty_list_as_botocore_sends_it(endpoint):
    url = query(endpoint, {"Action": "CreateQueue", "QueueName": "empty-lists", "Tag": ""}).findtext(".//sqs:QueueUrl", namespaces=NS)
    assert query_error(endpoint, {"Action": "SendMessageBatch", "QueueUrl": url, "SendMessageBatchRequestEntry": ""}) == (
        "AWS.SimpleQueueService.EmptyBatchRequest",
        "There should be at least one SendMessageBatchRequestEntry in the request.",
    )
    query(endpoint, {"Action": "SendMessage", "QueueUrl": url, "MessageBody": "m",
                     "MessageAttribute.1.Name": "k", "MessageAttribute.1.Value.DataType": "String",
                     "MessageAttribute.1.Value.StringValue": "v"})
    root = query(endpoint, {"Action": "ReceiveMessage", "QueueUrl": url, "MessageAttributeName": "", "AttributeName": ""})
    (message,) = root.iterfind(".//sqs:Message", NS)
    assert message.findtext("sqs:Body", namespaces=NS) == "m" and message.find("sqs:MessageAttribute", NS) is None


def test_query_carriage_returns_in_bodies_come_back_unaltered(endpoint, sqs):
    url = sqs.create_queue(QueueName="carriage-returns")["QueueUrl"]
    body = "line one\r\nline two\rend\n"
    query(endpoint, {"Action": "SendMessage", "QueueUrl": url, "MessageBody": body})
    response = httpx.post(endpoint, data={"Action": "ReceiveMessage", "QueueUrl": url}, timeout=10)
    assert b"&#xD;" in response.content
    assert ElementTree.fromstring(response.content).findtext(".//sqs:Body", namespaces=NS) == body


def test_non_ascii_message_attribute_names_are_accepted_as_aws_accepts_them(sqs, endpoint):
    url = sqs.create_queue(QueueName="accented-names")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes={"Größe": {"DataType": "Number", "StringValue": "3"}})
    query(endpoint, {"Action": "SendMessage", "QueueUrl": url, "MessageBody": "q", "MessageAttribute.1.Name": "café",
                     "MessageAttribute.1.Value.DataType": "String", "MessageAttribute.1.Value.StringValue": "noir"})
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])["Messages"]
    assert {name for m in messages for name in m["MessageAttributes"]} == {"Größe", "café"}  # boto3 checked the MD5s
    error = client_error(sqs.send_message, QueueUrl=url, MessageBody="m",
                         MessageAttributes={"日本": {"DataType": "String", "StringValue": "x"}})
    assert error["Code"] == "InvalidParameterValue"


# --- raw queue URLs ----------------------------------------------------------------------------
def test_a_get_on_a_queue_url_without_action_is_404_unknown_operation(sqs, endpoint):
    sqs.create_queue(QueueName="raw-url")
    response = httpx.get(f"{endpoint}/{ACCOUNT}/raw-url", timeout=10)
    assert response.status_code == 404 and response.content == b"<UnknownOperationException/>"
    assert httpx.get(f"{endpoint}/health", timeout=10).status_code == 200  # the broker's own endpoints stay


def test_an_action_of_no_queue_on_a_queue_url_is_refused_as_invalid_action(sqs, endpoint):
    sqs.create_queue(QueueName="raw-url-actions")
    path = f"/{ACCOUNT}/raw-url-actions"
    for action in ("ListQueues", "CreateQueue"):
        assert query_error(endpoint, {"Action": action, "QueueName": "x"}, path=path) == (
            "InvalidAction", f"The action {action} is not valid for this endpoint."
        )
    query(endpoint, {"Action": "GetQueueAttributes", "AttributeName.1": "All"}, path=path)


# --- errors ------------------------------------------------------------------------------------
INVALID_CHARACTER = (
    "Invalid binary character '#x0' was found in the message body, the set of allowed characters is "
    "#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]."
)


def test_control_characters_in_a_body_are_invalid_parameter_value(sqs, endpoint):
    url = sqs.create_queue(QueueName="control-characters")["QueueUrl"]
    error = client_error(sqs.send_message, QueueUrl=url, MessageBody="a\x00b")
    assert (error["Code"], error["Message"]) == ("InvalidParameterValue", INVALID_CHARACTER)
    assert query_error(endpoint, {"Action": "SendMessage", "QueueUrl": url, "MessageBody": "a\x00b"}) == (
        "InvalidParameterValue", INVALID_CHARACTER
    )
    result = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "bad", "MessageBody": "\x00"}])
    assert [(f["Code"], f["Message"]) for f in result["Failed"]] == [("InvalidParameterValue", INVALID_CHARACTER)]
    error = client_error(sqs.send_message, QueueUrl=url, MessageBody="m",
                         MessageAttributes={"k": {"DataType": "String", "StringValue": "\x1b"}})
    assert error["Code"] == "InvalidParameterValue" and "'#x1B'" in error["Message"]


def test_an_over_size_body_gets_an_sqs_error_in_each_protocols_shape(sqs, endpoint):
    url = sqs.create_queue(QueueName="over-size")["QueueUrl"]
    too_long = "x" * (SQS_MAX_MESSAGE_BYTES + 1)
    expected = ("InvalidParameterValue",
                f"One or more parameters are invalid. Reason: Message must be shorter than {SQS_MAX_MESSAGE_BYTES} bytes.")
    error = client_error(sqs.send_message, QueueUrl=url, MessageBody=too_long)
    assert (error["Code"], error["Message"]) == expected
    assert query_error(endpoint, {"Action": "SendMessage", "QueueUrl": url, "MessageBody": too_long}) == expected
    # past the HTTP listener's limit the body is not read, and the answer still has the request's shape
    huge = "x" * (NetLimits().http_max_body_bytes + 1)
    response = httpx.post(endpoint, content=urllib.parse.urlencode({"Action": "SendMessage", "QueueUrl": url, "MessageBody": huge}),
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    root = ElementTree.fromstring(response.content)
    assert response.status_code == 413 and root.findtext("sqs:Error/sqs:Code", namespaces=NS) == "RequestEntityTooLarge"
    # over JSON the head names the action, and so SQS's own refusal of what the body carries
    response = raw_json(endpoint, "SendMessage", {"QueueUrl": url, "MessageBody": huge})
    assert response.status_code == 400 and response.json() == {
        "__type": "com.amazonaws.sqs#InvalidParameterValueException", "message": expected[1]
    }
    entries = [{"Id": "big", "MessageBody": huge}]
    response = raw_json(endpoint, "SendMessageBatch", {"QueueUrl": url, "Entries": entries})
    assert response.status_code == 400 and response.json()["__type"] == "com.amazonaws.sqs#BatchRequestTooLong"
    assert response.json()["message"].startswith(f"Batch requests cannot be longer than {SQS_MAX_MESSAGE_BYTES} bytes. You have sent ")
    error = client_error(sqs.send_message_batch, QueueUrl=url, Entries=entries)
    assert error["Code"] == "AWS.SimpleQueueService.BatchRequestTooLong"
    response = raw_json(endpoint, "ListQueues", {"QueueNamePrefix": huge})
    assert response.status_code == 413 and response.json()["__type"] == "com.amazonaws.sqs#RequestEntityTooLarge"
    sqs.send_message(QueueUrl=url, MessageBody="still serving")


# --- missing surface ---------------------------------------------------------------------------
def test_new_queues_have_sqs_managed_sse_enabled_as_aws_creates_them(sqs):
    url = sqs.create_queue(QueueName="sse-default")["QueueUrl"]
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]["SqsManagedSseEnabled"] == "true"
    kms = sqs.create_queue(QueueName="sse-kms", Attributes={"KmsMasterKeyId": "alias/aws/sqs"})["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=kms, AttributeNames=["All"])["Attributes"]
    assert attributes["SqsManagedSseEnabled"] == "false" and attributes["KmsMasterKeyId"] == "alias/aws/sqs"
    off = sqs.create_queue(QueueName="sse-off", Attributes={"SqsManagedSseEnabled": "false"})["QueueUrl"]
    assert sqs.get_queue_attributes(QueueUrl=off, AttributeNames=["SqsManagedSseEnabled"])["Attributes"] == {
        "SqsManagedSseEnabled": "false"
    }
    sqs.send_message(QueueUrl=url, MessageBody="sealed")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "sealed"


def test_duplicate_tag_keys_are_refused(sqs, endpoint):
    url = sqs.create_queue(QueueName="duplicate-tags")["QueueUrl"]
    code, message = query_error(endpoint, {"Action": "TagQueue", "QueueUrl": url, "Tag.1.Key": "team", "Tag.1.Value": "a",
                                           "Tag.2.Key": "team", "Tag.2.Value": "b"})
    assert code == "InvalidParameterValue" and "team" in message
    assert "Tags" not in sqs.list_queue_tags(QueueUrl=url)


def test_an_empty_tag_queue_is_refused_as_a_missing_parameter(sqs, endpoint):
    url = sqs.create_queue(QueueName="empty-tags")["QueueUrl"]
    error = client_error(sqs.tag_queue, QueueUrl=url, Tags={})
    assert (error["Code"], error["Message"]) == ("MissingParameter", "The request must contain the parameter Tags.")
    assert query_error(endpoint, {"Action": "TagQueue", "QueueUrl": url}) == (
        "MissingParameter", "The request must contain the parameter Tags."
    )


# --- word for word -----------------------------------------------------------------------------
def test_queue_does_not_exist_is_worded_as_aws_words_it_in_each_protocol(sqs, endpoint):
    response = raw_json(endpoint, "GetQueueUrl", {"QueueName": "no-such-queue"})
    assert response.status_code == 400
    assert response.json() == {"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "The specified queue does not exist."}
    assert response.headers["x-amzn-query-error"] == "AWS.SimpleQueueService.NonExistentQueue;Sender"
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName="no-such-queue")
    assert query_error(endpoint, {"Action": "GetQueueUrl", "QueueName": "no-such-queue"}) == (
        "AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist for this wsdl version."
    )


def test_json_type_names_unmodelled_errors_as_aws_does_and_the_header_keeps_the_query_code(sqs, endpoint):
    url = sqs.create_queue(QueueName="json-types")["QueueUrl"]
    response = raw_json(endpoint, "ReceiveMessage", {"QueueUrl": url, "MaxNumberOfMessages": 11})
    assert response.json()["__type"] == "com.amazonaws.sqs#InvalidParameterValueException"
    assert response.headers["x-amzn-query-error"] == "InvalidParameterValue;Sender"
    response = raw_json(endpoint, "SendMessage", {"QueueUrl": url})
    assert response.json() == {
        "__type": "com.amazonaws.sqs#MissingRequiredParameterException",
        "message": "The request must contain the parameter MessageBody.",
    }
    assert response.headers["x-amzn-query-error"] == "MissingParameter;Sender"
    assert client_error(sqs.send_message, QueueUrl=url, MessageBody="")["Code"] == "MissingParameter"


@pytest.mark.parametrize("action", ["SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"])
def test_an_empty_batch_is_worded_as_aws_words_it(sqs, endpoint, action):
    url = sqs.create_queue(QueueName="empty-batches")["QueueUrl"]
    expected = ("AWS.SimpleQueueService.EmptyBatchRequest", f"There should be at least one {action}RequestEntry in the request.")
    call = getattr(sqs, {"SendMessageBatch": "send_message_batch", "DeleteMessageBatch": "delete_message_batch",
                         "ChangeMessageVisibilityBatch": "change_message_visibility_batch"}[action])
    error = client_error(call, QueueUrl=url, Entries=[])
    assert (error["Code"], error["Message"]) == expected
    assert query_error(endpoint, {"Action": action, "QueueUrl": url, f"{action}RequestEntry": ""}) == expected


def test_batch_ids_and_receipt_handles_are_worded_as_aws_words_them(sqs, endpoint):
    url = sqs.create_queue(QueueName="batch-words")["QueueUrl"]
    error = client_error(sqs.send_message_batch, QueueUrl=url,
                         Entries=[{"Id": "x", "MessageBody": "a"}, {"Id": "x", "MessageBody": "b"}])
    assert (error["Code"], error["Message"]) == ("AWS.SimpleQueueService.BatchEntryIdsNotDistinct", "Id x repeated.")
    error = client_error(sqs.delete_message, QueueUrl=url, ReceiptHandle="garbage")
    assert (error["Code"], error["Message"]) == ("ReceiptHandleIsInvalid", 'The input receipt handle "garbage" is not a valid receipt handle.')
    assert query_error(endpoint, {"Action": "DeleteMessage", "QueueUrl": url, "ReceiptHandle": "garbage"}) == (
        "ReceiptHandleIsInvalid", 'The input receipt handle "garbage" is not a valid receipt handle.'
    )


# --- attribute sets ----------------------------------------------------------------------------
def test_get_queue_attributes_leaves_out_attributes_that_are_unset(sqs, endpoint):
    url = sqs.create_queue(QueueName="unset-attributes", Attributes={"Policy": "", "KmsMasterKeyId": ""})["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert "Policy" not in attributes and "KmsMasterKeyId" not in attributes and "RedrivePolicy" not in attributes
    sqs.add_permission(QueueUrl=url, Label="share", AWSAccountIds=["111122223333"], Actions=["SendMessage"])
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": ""})
    assert "Attributes" not in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])
    root = query(endpoint, {"Action": "GetQueueAttributes", "QueueUrl": url, "AttributeName.1": "All"})
    assert "Policy" not in {e.text for e in root.iterfind(".//sqs:Attribute/sqs:Name", NS)}


def test_add_permission_writes_the_policy_aws_writes(sqs):
    url = sqs.create_queue(QueueName="permission-shape")["QueueUrl"]
    arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:permission-shape"
    sqs.add_permission(QueueUrl=url, Label="one", AWSAccountIds=["111122223333"], Actions=["ReceiveMessage"])
    sqs.add_permission(QueueUrl=url, Label="two", AWSAccountIds=["111122223333", "444455556666"],
                       Actions=["SendMessage", "DeleteMessage"])
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"])
    assert policy == {
        "Version": "2008-10-17",
        "Id": f"{arn}/SQSDefaultPolicy",
        "Statement": [
            {"Sid": "one", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
             "Action": "SQS:ReceiveMessage", "Resource": arn},
            {"Sid": "two", "Effect": "Allow",
             "Principal": {"AWS": ["arn:aws:iam::111122223333:root", "arn:aws:iam::444455556666:root"]},
             "Action": ["SQS:SendMessage", "SQS:DeleteMessage"], "Resource": arn},
        ],
    }


def test_json_batch_answers_leave_out_empty_lists(sqs, endpoint):
    url = sqs.create_queue(QueueName="batch-lists")["QueueUrl"]
    sent = raw_json(endpoint, "SendMessageBatch", {"QueueUrl": url, "Entries": [{"Id": "a", "MessageBody": "m"}]}).json()
    assert set(sent) == {"Successful"}
    deleted = raw_json(endpoint, "DeleteMessageBatch", {"QueueUrl": url, "Entries": [{"Id": "d", "ReceiptHandle": "junk"}]}).json()
    assert set(deleted) == {"Failed"}
    (message,) = sqs.receive_message(QueueUrl=url)["Messages"]
    changed = raw_json(endpoint, "ChangeMessageVisibilityBatch", {
        "QueueUrl": url, "Entries": [{"Id": "c", "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 5}]
    }).json()
    assert changed == {"Successful": [{"Id": "c"}]}
