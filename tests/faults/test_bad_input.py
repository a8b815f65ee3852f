"""Malformed and extreme input against a real `dovecote serve`, over real TCP: every decoder answers
in its protocol's own shape (SQS JSON: `__type` and x-amzn-query-error; Query: an XML ErrorResponse;
native: an error frame), every request method gets an answer, bodies of the largest messages AWS
allows pass whatever their characters, the broker stays up, keeps what it stored, and logs no
traceback."""

from __future__ import annotations

import socket
import struct
from urllib.parse import urlencode
from xml.etree import ElementTree

import boto3
import httpx
import msgspec
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from dovecote.actors.limits import SQS_MAX_BATCH_ENTRIES, SQS_MAX_MESSAGE_BYTES
from dovecote.net import frames
from dovecote.net.limits import NetLimits

from .serve import ServeProcess

JSON_TYPE = "application/x-amz-json-1.0"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TOPIC_ARN = "arn:aws:sns:us-east-1:000000000000:news"
KEPT = "a message that must outlive every bad request"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One broker for the module, with a queue, a topic and a stored message; at the end it must
    still hold the message and have logged no traceback."""
    broker = ServeProcess(tmp_path_factory.mktemp("bad-input") / "data").start()
    try:
        client = sqs(broker)
        url = client.create_queue(QueueName="q", Attributes={"MaximumMessageSize": str(SQS_MAX_MESSAGE_BYTES)})["QueueUrl"]
        client.send_message(QueueUrl=url, MessageBody=KEPT)
        sns(broker).create_topic(Name="news")
        yield broker, url
        kept = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
        assert KEPT in [message["Body"] for message in kept]
    finally:
        assert broker.terminate() == 0
    stderr = broker.process.stderr.read()
    assert "Traceback" not in stderr, stderr[-4000:]


def sqs(broker):
    return boto3.client(
        "sqs", endpoint_url=f"http://127.0.0.1:{broker.http_port}", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test", config=Config(retries={"max_attempts": 1}),
    )


def sns(broker):
    return boto3.client(
        "sns", endpoint_url=f"http://127.0.0.1:{broker.http_port}", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test", config=Config(retries={"max_attempts": 1}),
    )


def fresh_queue(broker, name: str) -> str:
    """A queue of its own for a test, taking the largest messages."""
    attributes = {"MaximumMessageSize": str(SQS_MAX_MESSAGE_BYTES)}
    return sqs(broker).create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def receive_all(client, url: str, count: int) -> list[str]:
    bodies: list[str] = []
    while len(bodies) < count and (received := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages")):
        bodies += [message["Body"] for message in received]
    return bodies


def post(broker, body: bytes, headers: dict[str, str], method: str = "POST", path: str = "/") -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{broker.http_port}{path}", content=body, headers=headers, timeout=30)


def post_json(broker, action: str, body: bytes) -> httpx.Response:
    return post(broker, body, {"X-Amz-Target": f"AmazonSQS.{action}", "Content-Type": JSON_TYPE})


def assert_json_error(response: httpx.Response, status: int, code: str, json_type: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == JSON_TYPE
    assert response.json()["__type"] == f"com.amazonaws.sqs#{json_type}"
    assert response.headers["x-amzn-query-error"].startswith(f"{code};")


def assert_query_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "text/xml"
    root = ElementTree.fromstring(response.content)
    assert root.tag.endswith("ErrorResponse")
    assert [element.text for element in root.iter() if element.tag.endswith("Code")] == [code]


def test_json_nested_deep_is_invalid_parameter_value(served):
    broker, url = served
    deep = b'{"QueueUrl":"%s","MessageBody":"x","MessageAttributes":' % url.encode() + b"[" * 990 + b"]" * 990 + b"}"
    assert_json_error(post_json(broker, "SendMessage", deep), 400, "InvalidParameterValue", "InvalidParameterValueException")
    assert_json_error(post_json(broker, "SendMessage", b'{"a":' * 990 + b"1" + b"}" * 990), 400, "InvalidParameterValue", "InvalidParameterValueException")
    assert_json_error(post_json(broker, "SendMessage", b"[" * 100_000), 400, "InvalidParameterValue", "InvalidParameterValueException")


@pytest.mark.parametrize(
    ("action", "parameter"),
    [
        ("SetQueueAttributes", "a." * 988 + "b=x"),  # a name of 989 parts
        ("SetQueueAttributes", "Attribute.%C2%B2.Name=x"),  # a Unicode digit as a list index
        ("SetQueueAttributes", "Attribute." + "9" * 4300 + ".Name=x"),  # an index of 4,300 digits
        ("Publish", "a." * 988 + "b=x"),
        ("Publish", "MessageAttributes.entry.%C2%B2.Name=x"),
        ("Publish", "MessageAttributes.entry." + "9" * 4300 + ".Name=x"),
        ("Publish", "MessageAttributes.entry.%D9%A3.Name=x"),  # an Arabic-Indic digit
    ],
)
def test_query_names_that_do_not_nest_are_malformed_query_string(served, action, parameter):
    broker, url = served
    common = {"Action": action, "QueueUrl": url} if action != "Publish" else {"Action": action, "TopicArn": TOPIC_ARN, "Message": "m"}
    response = post(broker, f"{urlencode(common)}&{parameter}".encode(), FORM)
    assert_query_error(response, 400, "MalformedQueryString")


def native_connection(broker) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    connection.sendall(frames.hello())
    assert frames.parse_welcome(receive_exactly(connection, frames.WELCOME_BYTES)) == (frames.PROTOCOL_VERSION, 0)
    frames.decode_challenge(receive_frame(connection))
    out = bytearray()
    frames.encode_handshake(frames.Authenticate(), out)
    connection.sendall(bytes(out))
    assert frames.decode_handshake_answer(receive_frame(connection)) == frames.Authenticated("")
    return connection


def receive_exactly(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count and (chunk := connection.recv(count - len(data))):
        data += chunk
    return data


def receive_frame(connection: socket.socket) -> bytes:
    (length,) = struct.unpack(">I", receive_exactly(connection, 4))
    return receive_exactly(connection, length)


@pytest.mark.parametrize("depth", [990, 100_000])
def test_native_ops_nested_deep_get_an_error_frame(served, depth):
    broker, _ = served
    connection = native_connection(broker)
    payload = b"\x92\x01" + b"\x91" * depth + b"\xc0"  # [1, [[[...nil...]]]]
    connection.sendall(struct.pack(">I", len(payload)) + payload)
    answer = frames.decode_response(receive_frame(connection))
    assert answer.result.code == "InvalidParameterValue", answer
    assert receive_exactly(connection, 1) == b""  # then closed
    connection.close()
    with native_connection(broker) as other:  # the listener goes on
        ok = msgspec.msgpack.encode([2, ["ListQueues"]])
        other.sendall(struct.pack(">I", len(ok)) + ok)
        assert frames.decode_response(receive_frame(other)).id == 2


def test_every_method_is_answered(served):
    broker, _ = served
    head = post(broker, b"", {}, method="HEAD", path="/health")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(post(broker, b"", {}, method="GET", path="/health").content)
    options = post(broker, b"", {}, method="OPTIONS", path="/")
    assert options.status_code == 204 and "POST" in options.headers["allow"]
    assert "GET" in post(broker, b"", {}, method="OPTIONS", path="/health").headers["allow"]
    for method in ("PUT", "DELETE", "PATCH", "BREW"):
        refused = post(broker, b"x", {}, method=method, path="/health")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, OPTIONS", method


@pytest.mark.parametrize(("name", "character"), [("quotes", '"'), ("two-bytes", "é"), ("four-bytes", "\U0001f54a")])
def test_a_message_of_the_largest_size_passes_whatever_its_characters_json(served, name, character):
    broker, _ = served
    client, url = sqs(broker), fresh_queue(broker, f"json-{name}")
    width = len(character.encode())
    body = character * (SQS_MAX_MESSAGE_BYTES // width)
    client.send_message(QueueUrl=url, MessageBody=body)
    attributes = {"a": {"DataType": "String", "StringValue": character * 4}}  # 1 + 6 + 4 * width bytes
    part = character * ((SQS_MAX_MESSAGE_BYTES // SQS_MAX_BATCH_ENTRIES - 7 - 4 * width) // width)
    entries = [{"Id": str(i), "MessageBody": part, "MessageAttributes": attributes} for i in range(SQS_MAX_BATCH_ENTRIES)]
    assert len(client.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]) == SQS_MAX_BATCH_ENTRIES
    assert sorted(receive_all(client, url, 1 + SQS_MAX_BATCH_ENTRIES)) == sorted([body] + [part] * SQS_MAX_BATCH_ENTRIES)


@pytest.mark.parametrize(("name", "character"), [("quotes", '"'), ("two-bytes", "é"), ("ampersands", "&")])
def test_a_message_of_the_largest_size_passes_whatever_its_characters_query(served, name, character):
    broker, _ = served
    url = fresh_queue(broker, f"query-{name}")
    body = character * (SQS_MAX_MESSAGE_BYTES // len(character.encode()))
    response = post(broker, urlencode({"Action": "SendMessage", "QueueUrl": url, "MessageBody": body}).encode(), FORM)
    assert response.status_code == 200, response.text[:300]
    assert receive_all(sqs(broker), url, 1) == [body]


def test_a_body_past_the_limit_is_refused_in_the_protocols_shape(served):
    broker, url = served
    too_large = NetLimits().http_max_body_bytes + 1
    with pytest.raises(ClientError) as refused:
        sqs(broker).send_message(QueueUrl=url, MessageBody="x" * too_large)
    # the JSON head names the send: SQS's own refusal of a message too long
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    query = post(broker, urlencode({"Action": "SendMessage", "QueueUrl": url, "MessageBody": "x" * too_large}).encode(), FORM)
    assert_query_error(query, 413, "RequestEntityTooLarge")
