"""SQS behaviours as AWS shows them (issue 15), against a real `dovecote serve`, each through boto3
over the JSON protocol and through plain HTTP over the Query protocol. Where they come from is
said in the rules they check (actors/queue_core.py, actors/ready_set.py, actors/validation.py)."""

from __future__ import annotations

import time
from xml.etree import ElementTree

import boto3
import botocore.exceptions
import httpx
import pytest
from botocore.config import Config

from ..faults.serve import ServeProcess

NS = {"sqs": "http://queue.amazonaws.com/doc/2012-11-05/"}
TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class JsonClient:
    """boto3, unmodified but for the endpoint (and a trace header when asked)."""

    def __init__(self, endpoint: str) -> None:
        self.sqs = boto3.client(
            "sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
            aws_secret_access_key="test", config=Config(retries={"max_attempts": 1}),
        )
        self.trace: str | None = None
        self.sqs.meta.events.register("before-sign.sqs.*", self._add_trace)

    def _add_trace(self, request, **_):
        if self.trace:
            request.headers["X-Amzn-Trace-Id"] = self.trace

    def _call(self, operation: str, **params):
        try:
            return getattr(self.sqs, operation)(**params)
        except botocore.exceptions.ClientError as error:
            raise Refused(error.response["Error"]["Code"], error.response["Error"]["Message"]) from None

    def create(self, name: str, **attributes: str) -> str:
        return self._call("create_queue", QueueName=name, Attributes=attributes)["QueueUrl"]

    def set_attributes(self, url: str, **attributes: str) -> None:
        self._call("set_queue_attributes", QueueUrl=url, Attributes=attributes)

    def send(self, url: str, body: str, **options) -> str:
        return self._call("send_message", QueueUrl=url, MessageBody=body, **options)["MessageId"]

    def send_batch(self, url: str, entries: list[dict]) -> tuple[list[str], list[str]]:
        answer = self._call("send_message_batch", QueueUrl=url, Entries=entries)
        return [e["Id"] for e in answer.get("Successful", [])], [e["Id"] for e in answer.get("Failed", [])]

    def receive(self, url: str, count: int = 10, visibility: int | None = None, names=()) -> list[dict]:
        options = {"VisibilityTimeout": visibility} if visibility is not None else {}
        answer = self._call(
            "receive_message", QueueUrl=url, MaxNumberOfMessages=count, MessageSystemAttributeNames=list(names), **options
        )
        return [
            {"body": m["Body"], "handle": m["ReceiptHandle"], "id": m["MessageId"], "attributes": m.get("Attributes", {})}
            for m in answer.get("Messages", [])
        ]

    def delete(self, url: str, handle: str) -> None:
        self._call("delete_message", QueueUrl=url, ReceiptHandle=handle)

    def change_visibility(self, url: str, handle: str, seconds: int) -> None:
        self._call("change_message_visibility", QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=seconds)

    def purge(self, url: str) -> None:
        self._call("purge_queue", QueueUrl=url)


class QueryClient:
    """The Query protocol, spoken with plain HTTP as older SDKs speak it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.trace: str | None = None

    def _call(self, params: dict) -> ElementTree.Element:
        headers = {"X-Amzn-Trace-Id": self.trace} if self.trace else {}
        response = httpx.post(self.endpoint, data={"Version": "2012-11-05", **params}, headers=headers, timeout=10)
        root = ElementTree.fromstring(response.content)
        if response.status_code != 200:
            raise Refused(root.findtext("sqs:Error/sqs:Code", namespaces=NS), root.findtext("sqs:Error/sqs:Message", namespaces=NS))
        return root

    @staticmethod
    def _flat(prefix: str, values: dict) -> dict:
        return {
            key: value
            for i, (name, item) in enumerate(values.items(), 1)
            for key, value in ((f"{prefix}.{i}.Name", name), (f"{prefix}.{i}.Value", item))
        }

    def create(self, name: str, **attributes: str) -> str:
        root = self._call({"Action": "CreateQueue", "QueueName": name, **self._flat("Attribute", attributes)})
        return root.findtext("sqs:CreateQueueResult/sqs:QueueUrl", namespaces=NS)

    def set_attributes(self, url: str, **attributes: str) -> None:
        self._call({"Action": "SetQueueAttributes", "QueueUrl": url, **self._flat("Attribute", attributes)})

    @staticmethod
    def _send_params(prefix: str, body: str, options: dict) -> dict:
        params = {f"{prefix}MessageBody": body}
        for name, value in options.items():
            if name == "MessageSystemAttributes":
                for i, (key, attribute) in enumerate(value.items(), 1):
                    params[f"{prefix}MessageSystemAttribute.{i}.Name"] = key
                    params[f"{prefix}MessageSystemAttribute.{i}.Value.DataType"] = attribute["DataType"]
                    params[f"{prefix}MessageSystemAttribute.{i}.Value.StringValue"] = attribute["StringValue"]
            else:
                params[f"{prefix}{name}"] = str(value)
        return params

    def send(self, url: str, body: str, **options) -> str:
        root = self._call({"Action": "SendMessage", "QueueUrl": url, **self._send_params("", body, options)})
        return root.findtext("sqs:SendMessageResult/sqs:MessageId", namespaces=NS)

    def send_batch(self, url: str, entries: list[dict]) -> tuple[list[str], list[str]]:
        params = {"Action": "SendMessageBatch", "QueueUrl": url}
        for i, entry in enumerate(entries, 1):
            options = {k: v for k, v in entry.items() if k not in ("Id", "MessageBody")}
            prefix = f"SendMessageBatchRequestEntry.{i}."
            params |= {f"{prefix}Id": entry["Id"], **self._send_params(prefix, entry["MessageBody"], options)}
        root = self._call(params)
        result = root.find("sqs:SendMessageBatchResult", NS)
        return (
            [e.findtext("sqs:Id", namespaces=NS) for e in result.iterfind("sqs:SendMessageBatchResultEntry", NS)],
            [e.findtext("sqs:Id", namespaces=NS) for e in result.iterfind("sqs:BatchResultErrorEntry", NS)],
        )

    def receive(self, url: str, count: int = 10, visibility: int | None = None, names=()) -> list[dict]:
        params = {"Action": "ReceiveMessage", "QueueUrl": url, "MaxNumberOfMessages": str(count)}
        if visibility is not None:
            params["VisibilityTimeout"] = str(visibility)
        params |= {f"AttributeName.{i}": name for i, name in enumerate(names, 1)}
        root = self._call(params)
        return [
            {
                "body": m.findtext("sqs:Body", namespaces=NS),
                "handle": m.findtext("sqs:ReceiptHandle", namespaces=NS),
                "id": m.findtext("sqs:MessageId", namespaces=NS),
                "attributes": {
                    a.findtext("sqs:Name", namespaces=NS): a.findtext("sqs:Value", namespaces=NS)
                    for a in m.iterfind("sqs:Attribute", NS)
                },
            }
            for m in root.iterfind("sqs:ReceiveMessageResult/sqs:Message", NS)
        ]

    def delete(self, url: str, handle: str) -> None:
        self._call({"Action": "DeleteMessage", "QueueUrl": url, "ReceiptHandle": handle})

    def change_visibility(self, url: str, handle: str, seconds: int) -> None:
        self._call({"Action": "ChangeMessageVisibility", "QueueUrl": url, "ReceiptHandle": handle,
                    "VisibilityTimeout": str(seconds)})

    def purge(self, url: str) -> None:
        self._call({"Action": "PurgeQueue", "QueueUrl": url})


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    broker = ServeProcess(tmp_path_factory.mktemp("aws-behaviours") / "data").start()
    yield f"http://127.0.0.1:{broker.http_port}"
    assert broker.terminate() == 0


@pytest.fixture(params=["json", "query"])
def client(request, endpoint):
    return JsonClient(endpoint) if request.param == "json" else QueryClient(endpoint)


@pytest.fixture
def name(request, client) -> str:
    """A queue name of this test and protocol (the broker is shared by the module)."""
    return f"{request.node.originalname[5:45]}-{type(client).__name__[:4].lower()}"


FIFO = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}


def bodies(messages: list[dict]) -> list[str]:
    return [m["body"] for m in messages]


def test_standard_queue_accepts_expired_receipt_handle_for_delete(client, name):
    url = client.create(name)
    client.send(url, "m")
    (first,) = client.receive(url, visibility=1)
    time.sleep(1.2)
    client.delete(url, first["handle"])  # its visibility timeout has passed: AWS deletes it all the same
    assert client.receive(url) == []


def test_standard_queue_accepts_superseded_receipt_handle_for_delete(client, name):
    url = client.create(name)
    client.send(url, "m")
    (first,) = client.receive(url, visibility=0)
    (second,) = client.receive(url, visibility=60)
    client.change_visibility(url, first["handle"], 0)  # an earlier receive's handle acts on the message
    (third,) = client.receive(url, visibility=0, names=["ApproximateReceiveCount"])
    assert third["attributes"]["ApproximateReceiveCount"] == "3"
    client.change_visibility(url, second["handle"], 5)  # not in flight: OK, and nothing changes
    client.delete(url, first["handle"])
    assert client.receive(url) == []
    client.delete(url, third["handle"])  # already deleted: success
    with pytest.raises(Refused) as refused:
        client.change_visibility(url, third["handle"], 5)
    assert refused.value.code == "InvalidParameterValue"


def test_fifo_queue_refuses_expired_receipt_handle_for_delete(client, name):
    url = client.create(f"{name}.fifo", **FIFO)
    client.send(url, "m", MessageGroupId="g")
    (first,) = client.receive(url, visibility=1)
    time.sleep(1.2)
    with pytest.raises(Refused) as refused:
        client.delete(url, first["handle"])
    assert refused.value.code == "InvalidParameterValue"
    assert refused.value.message.endswith("Reason: The receipt handle has expired.")
    (again,) = client.receive(url)
    client.delete(url, again["handle"])
    assert client.receive(url) == []


def test_fifo_group_delivers_an_earlier_message_visible_again_while_later_ones_are_in_flight(client, name):
    url = client.create(f"{name}.fifo", **FIFO, VisibilityTimeout="30")
    for body in ("g1-m1", "g1-m2", "g2-m1"):
        client.send(url, body, MessageGroupId=body[:2])
    first, _ = client.receive(url, count=2)
    client.change_visibility(url, first["handle"], 0)
    assert bodies(client.receive(url, count=3)) == ["g2-m1", "g1-m1"]


def test_fifo_message_group_visibility_after_delete(client, name):
    url = client.create(f"{name}.fifo", **FIFO)
    for body in ("g1-m1", "g2-m1", "g1-m2", "g2-m2", "g1-m3", "g1-m4", "g3-m1"):
        client.send(url, body, MessageGroupId=body[:2])
    received = client.receive(url, count=2)
    for message in received:
        client.delete(url, message["handle"])
    assert bodies(client.receive(url)) == ["g2-m1", "g2-m2", "g1-m3", "g1-m4", "g3-m1"]


def test_fifo_send_batch_without_message_group_id_fails_the_whole_request(client, name):
    url = client.create(f"{name}.fifo", FifoQueue="true")
    valid = {"Id": "a", "MessageBody": "m", "MessageGroupId": "g", "MessageDeduplicationId": "d"}
    for entry, code in [
        ({"Id": "b", "MessageBody": "n", "MessageDeduplicationId": "e"}, "MissingParameter"),
        ({"Id": "b", "MessageBody": "n", "MessageGroupId": "g"}, "InvalidParameterValue"),
    ]:
        with pytest.raises(Refused) as refused:
            client.send_batch(url, [valid, entry])
        assert refused.value.code == code
    assert client.receive(url) == []


def test_fifo_details_as_aws_answers_them(client, name):
    url = client.create(f"{name}.fifo", **FIFO)
    client.set_attributes(url, FifoQueue="true")  # a no-op
    standard = client.create(name, FifoQueue="false")
    with pytest.raises(Refused) as refused:
        client.set_attributes(standard, FifoQueue="true")
    assert refused.value.code == "InvalidAttributeName"
    first = client.send(url, "m", MessageGroupId="g", DelaySeconds=0)
    assert client.send_batch(url, [{"Id": "a", "MessageBody": "n", "MessageGroupId": "g", "DelaySeconds": 0}]) == (["a"], [])
    client.purge(url)
    assert client.send(url, "m", MessageGroupId="g") != first  # the purge cleared the deduplication ids
    assert bodies(client.receive(url)) == ["m"]
    # DeduplicationScope changed after creation: returned, but deduplication keeps the created scope
    client.set_attributes(url, DeduplicationScope="messageGroup", FifoThroughputLimit="perMessageGroupId")
    original = client.send(url, "x", MessageGroupId="a")
    assert client.send(url, "x", MessageGroupId="b") == original


def test_x_amzn_trace_id_becomes_the_aws_trace_header(client, name):
    url = client.create(name)
    client.trace = TRACE
    client.send(url, "single")
    client.send_batch(url, [{"Id": "a", "MessageBody": "batched"}])
    own = "Root=1-00000000-000000000000000000000000"
    client.send(url, "own", MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": own}})
    client.trace = None
    client.send(url, "untraced")
    traces = {m["body"]: m["attributes"].get("AWSTraceHeader") for m in client.receive(url, 2, names=["AWSTraceHeader"])}
    traces |= {m["body"]: m["attributes"].get("AWSTraceHeader") for m in client.receive(url, names=["All"])}
    assert traces == {"single": TRACE, "batched": TRACE, "own": own, "untraced": None}
