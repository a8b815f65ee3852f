"""Keys with permissions against a real `dovecote serve` started with a configuration file: every
door × {no credentials, wrong key, wrong secret, stale date, right key without permission, right
key} × {read, write, admin}; the seeds' policy examples end to end; AccessDenied in each protocol's
shape, as boto3 decodes it.

A door is one entry of DOORS: a function that makes one request of a kind with a set of credentials
and says how the broker answered. The native protocol's door joins the matrix as one more entry."""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable
from typing import NamedTuple
from xml.etree import ElementTree

import boto3
import botocore.auth
import httpx
import pytest
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from ..faults.serve import ServeProcess

ACCOUNT = "000000000000"
PARTNER_ACCOUNT = "111122223333"
REGION = "us-east-1"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:"
ROOT = ("root", "root-secret")  # --access-key: allowed everything
OPERATOR = ("operator", "operator-secret")  # [[key]], its secret in a variable
OUTSIDER = ("outsider", "outsider-secret")  # [[key]], its secret in a file; may only list queues
CONSUMER = ("consumer", "consumer-secret")  # the seeds' consumer: receive and delete on one queue
PARTNER = ("partner", "partner-secret")  # a key of another account, which the seed's topic policy names

CONFIGURATION = f"""
http_port = 0

[[key]]
id = "operator"
secret_env = "OPERATOR_SECRET"
statement = [
    {{ Effect = "Allow", Action = ["sqs:*", "sns:*"], Resource = ["{QUEUE_ARN}matrix-*", "{TOPIC_ARN}matrix-*"] }},
    {{ Effect = "Deny", Action = "sqs:DeleteQueue", Resource = "*" }},
]

[[key]]
id = "outsider"
secret_file = "outsider.secret"

[[key.statement]]
Effect = "Allow"
Action = "sqs:ListQueues"
Resource = "*"

[[key]]
id = "consumer"
secret_env = "CONSUMER_SECRET"

[[key.statement]]
Effect = "Allow"
Action = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
Resource = "{QUEUE_ARN}jobs"

[[key]]
id = "partner"
secret_file = "partner.secret"
account = "{PARTNER_ACCOUNT}"

[[key.statement]]
Effect = "Allow"
Action = "sns:Publish"
Resource = "*"
"""


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("access")
    (directory / "outsider.secret").write_text(OUTSIDER[1] + "\n")
    (directory / "partner.secret").write_text(PARTNER[1])
    (directory / "dovecote.toml").write_text(CONFIGURATION)
    environment = {**os.environ, "OPERATOR_SECRET": OPERATOR[1], "CONSUMER_SECRET": CONSUMER[1]}
    broker = ServeProcess(
        directory / "data", "--config", str(directory / "dovecote.toml"), "--access-key", ":".join(ROOT), env=environment
    ).start()
    url = f"http://127.0.0.1:{broker.http_port}"
    sqs(url, ROOT).create_queue(QueueName="matrix-q")
    sns(url, ROOT).create_topic(Name="matrix-t")
    yield url
    assert broker.terminate() == 0


def client(service: str, endpoint: str, credentials: tuple[str, str] | None):
    if credentials is None:
        config = Config(signature_version=UNSIGNED, retries={"max_attempts": 1})
        return boto3.client(service, endpoint_url=endpoint, region_name=REGION, config=config)
    return boto3.client(
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id=credentials[0],
        aws_secret_access_key=credentials[1], config=Config(retries={"max_attempts": 1}),
    )


def sqs(endpoint, credentials=ROOT):
    return client("sqs", endpoint, credentials)


def sns(endpoint, credentials=ROOT):
    return client("sns", endpoint, credentials)


# --- the matrix ----------------------------------------------------------------------------------
class Answer(NamedTuple):
    status: int
    code: str  # "" on success


def boto3_answer(call: Callable[[], object]) -> Answer:
    try:
        call()
    except ClientError as error:
        return Answer(error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"])
    return Answer(200, "")


def sqs_json(endpoint: str, credentials, kind: str) -> Answer:
    client = sqs(endpoint, credentials)
    url = f"{endpoint}/{ACCOUNT}/matrix-q"
    calls = {
        "read": lambda: client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]),
        "write": lambda: client.send_message(QueueUrl=url, MessageBody="matrix"),
        "admin": lambda: client.create_queue(QueueName="matrix-q"),
    }
    return boto3_answer(calls[kind])


def sqs_query(endpoint: str, credentials, kind: str) -> Answer:
    """SQS's Query protocol (boto3 speaks JSON to SQS): a form POST signed by botocore's signer."""
    url = f"{endpoint}/{ACCOUNT}/matrix-q"
    forms = {
        "read": {"Action": "GetQueueAttributes", "QueueUrl": url, "AttributeName.1": "All"},
        "write": {"Action": "SendMessage", "QueueUrl": url, "MessageBody": "matrix"},
        "admin": {"Action": "CreateQueue", "QueueName": "matrix-q"},
    }
    request = AWSRequest(
        method="POST", url=endpoint + "/", data={**forms[kind], "Version": "2012-11-05"},
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    if credentials is not None:
        SigV4Auth(Credentials(*credentials), "sqs", REGION).add_auth(request)
    prepared = request.prepare()
    response = httpx.post(prepared.url, content=prepared.body, headers=dict(prepared.headers))
    if response.status_code == 200:
        return Answer(200, "")
    code = ElementTree.fromstring(response.content).find("{*}Error/{*}Code")
    return Answer(response.status_code, code.text if code is not None else "")


def sns_query(endpoint: str, credentials, kind: str) -> Answer:
    client = sns(endpoint, credentials)
    calls = {
        "read": lambda: client.get_topic_attributes(TopicArn=TOPIC_ARN + "matrix-t"),
        "write": lambda: client.publish(TopicArn=TOPIC_ARN + "matrix-t", Message="matrix"),
        "admin": lambda: client.create_topic(Name="matrix-t"),
    }
    return boto3_answer(calls[kind])


# door -> (how to ask it, the code its service refuses an unauthorised request with)
DOORS: dict[str, tuple[Callable[[str, object, str], Answer], str]] = {
    "sqs-json": (sqs_json, "AccessDenied"),  # boto3 reads the code from x-amzn-query-error
    "sqs-query": (sqs_query, "AccessDenied"),
    "sns-query": (sns_query, "AuthorizationError"),
}
CREDENTIALS = {
    "no credentials": (None, Answer(403, "MissingAuthenticationToken")),
    "wrong key": (("nobody", "whatever"), Answer(403, "InvalidClientTokenId")),
    "wrong secret": ((OPERATOR[0], "not-the-secret"), Answer(403, "SignatureDoesNotMatch")),
    "stale date": (OPERATOR, Answer(400, "RequestExpired")),
    "right key without permission": (OUTSIDER, None),  # the door's refusal
    "right key": (OPERATOR, Answer(200, "")),
}


@pytest.mark.parametrize("kind", ["read", "write", "admin"])
@pytest.mark.parametrize("case", list(CREDENTIALS))
@pytest.mark.parametrize("door", list(DOORS))
def test_every_door_checks_every_request(endpoint, monkeypatch, door, case, kind):
    ask, refusal = DOORS[door]
    credentials, expected = CREDENTIALS[case]
    if case == "stale date":  # signed 20 minutes ago: beyond the 15 minutes a signature lasts
        signed_at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: signed_at.replace(tzinfo=None))
    assert ask(endpoint, credentials, kind) == (expected or Answer(403, refusal))


# --- AccessDenied as each protocol has it --------------------------------------------------------
def test_access_denied_in_each_protocols_shape(endpoint):
    """SQS JSON: 403, __type AccessDeniedException and x-amzn-query-error AccessDenied;Sender, which
    botocore reads (SQS's model has no exception of its own for it); SQS Query: an ErrorResponse
    with Code AccessDenied; SNS: AuthorizationError, which boto3 raises as its modelled exception."""
    request = AWSRequest(
        method="POST", url=endpoint + "/", data=json.dumps({"QueueUrl": f"{endpoint}/{ACCOUNT}/matrix-q", "MessageBody": "x"}),
        headers={"X-Amz-Target": "AmazonSQS.SendMessage", "Content-Type": "application/x-amz-json-1.0"},
    )
    SigV4Auth(Credentials(*OUTSIDER), "sqs", REGION).add_auth(request)
    response = httpx.post(endpoint + "/", content=request.body, headers=dict(request.headers))
    assert response.status_code == 403
    assert response.headers["x-amzn-query-error"] == "AccessDenied;Sender"
    assert response.json()["__type"].endswith("#AccessDeniedException")
    assert "outsider is not authorized to perform: sqs:SendMessage" in response.json()["message"]
    with pytest.raises(ClientError) as caught:
        sqs(endpoint, OUTSIDER).send_message(QueueUrl=f"{endpoint}/{ACCOUNT}/matrix-q", MessageBody="x")
    assert caught.value.response["Error"]["Code"] == "AccessDenied"
    assert "AccessDenied" in str(caught.value) and "sqs:SendMessage" in str(caught.value)
    assert sqs_query(endpoint, OUTSIDER, "write") == Answer(403, "AccessDenied")
    topics = sns(endpoint, OUTSIDER)
    with pytest.raises(topics.exceptions.AuthorizationErrorException) as refused:
        topics.publish(TopicArn=TOPIC_ARN + "matrix-t", Message="x")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert refused.value.response["Error"]["Type"] == "Sender"


def test_an_access_key_from_the_command_line_may_do_everything(endpoint):
    """--access-key ID:SECRET keeps working: a key allowed everything, even what a policy denies."""
    root = sqs(endpoint, ROOT)
    url = root.create_queue(QueueName="fenced", Attributes={"Policy": json.dumps({"Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": "*"},
    ]})})["QueueUrl"]
    root.send_message(QueueUrl=url, MessageBody="root")
    assert root.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "root"
    assert boto3_answer(lambda: sqs(endpoint, OPERATOR).list_queues()) == Answer(403, "AccessDenied")  # needs Resource "*"
    assert boto3_answer(lambda: sqs(endpoint, OUTSIDER).list_queues()) == Answer(200, "")
    assert boto3_answer(lambda: sqs(endpoint, OPERATOR).delete_queue(QueueUrl=f"{endpoint}/{ACCOUNT}/matrix-q")) == Answer(
        403, "AccessDenied"  # its own explicit deny, over its sqs:* on matrix-*
    )


# --- the seeds' examples, end to end -------------------------------------------------------------
def test_seed_a_key_limited_to_one_queues_receive_and_delete(endpoint):
    root, consumer = sqs(endpoint, ROOT), sqs(endpoint, CONSUMER)
    jobs = root.create_queue(QueueName="jobs")["QueueUrl"]
    other = root.create_queue(QueueName="jobs-other")["QueueUrl"]
    root.send_message(QueueUrl=jobs, MessageBody="a job")
    root.send_message(QueueUrl=other, MessageBody="not for the consumer")
    (message,) = consumer.receive_message(QueueUrl=jobs, WaitTimeSeconds=1)["Messages"]
    consumer.delete_message(QueueUrl=jobs, ReceiptHandle=message["ReceiptHandle"])
    for call in (
        lambda: consumer.send_message(QueueUrl=jobs, MessageBody="no"),
        lambda: consumer.receive_message(QueueUrl=other),
        lambda: consumer.purge_queue(QueueUrl=jobs),
        lambda: consumer.delete_queue(QueueUrl=jobs),
    ):
        assert boto3_answer(call) == Answer(403, "AccessDenied")
    assert len(root.receive_message(QueueUrl=other)["Messages"]) == 1


def sns_may_send(queue_arn: str, topic_arn: str) -> str:
    """The seeds' queue policy: the SNS service may send to the queue, for this one topic."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "topic-to-queue", "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
    }]})


def drain(client, url: str, expected: int, deadline_s: float = 10) -> list[str]:
    """The messages of a queue, waiting until `expected` arrived (or the deadline passed)."""
    found: list[str] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        reply = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1 if len(found) < expected else 0)
        found += [json.loads(m["Body"])["Message"] for m in reply.get("Messages", [])]
        for message in reply.get("Messages", []):
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if len(found) >= expected and not reply.get("Messages"):
            break
    return found


def test_seed_a_queue_policy_lets_a_topic_send_and_refuses_another(endpoint):
    root, topics = sqs(endpoint, ROOT), sns(endpoint, ROOT)
    allowed = topics.create_topic(Name="orders")["TopicArn"]
    other = topics.create_topic(Name="not-orders")["TopicArn"]
    url = root.create_queue(QueueName="order-queue")["QueueUrl"]
    queue_arn = QUEUE_ARN + "order-queue"
    root.set_queue_attributes(QueueUrl=url, Attributes={"Policy": sns_may_send(queue_arn, allowed)})
    for topic in (allowed, other):
        topics.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    topics.publish(TopicArn=other, Message="from another topic")  # accepted, and not delivered
    topics.publish(TopicArn=allowed, Message="an order")
    assert drain(root, url, expected=1) == ["an order"]


def test_seed_a_topic_policy_lets_another_accounts_key_publish(endpoint):
    topics = sns(endpoint, ROOT)
    topic = topics.create_topic(Name="MySNSTopic")["TopicArn"]
    partner = sns(endpoint, PARTNER)
    assert boto3_answer(lambda: partner.publish(TopicArn=topic, Message="x")) == Answer(403, "AuthorizationError")
    topics.set_topic_attributes(TopicArn=topic, AttributeName="Policy", AttributeValue=json.dumps({
        "Version": "2012-10-17", "Id": "__default_policy_ID",
        "Statement": [{"Sid": "__default_statement_ID", "Effect": "Allow",
                       "Principal": {"AWS": f"arn:aws:iam::{PARTNER_ACCOUNT}:root"}, "Action": "SNS:Publish", "Resource": topic}],
    }))
    assert partner.publish(TopicArn=topic, Message="from the partner")["MessageId"]
    assert boto3_answer(lambda: partner.get_topic_attributes(TopicArn=topic)) == Answer(403, "AuthorizationError")
    # a key of the broker's own account is not that account
    assert boto3_answer(lambda: sns(endpoint, OUTSIDER).publish(TopicArn=topic, Message="x")) == Answer(403, "AuthorizationError")
