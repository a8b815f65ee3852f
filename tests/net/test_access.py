"""Keys with permissions against a real `dovecote serve` started with a configuration file: every
door × {no credentials, wrong key, wrong secret, stale date, right key without permission, right
key} × {read, write, admin}; the seeds' policy examples end to end; AccessDenied in each protocol's
shape, as boto3 decodes it.

A door is one entry of DOORS: a function that makes one request of a kind with a set of credentials
and says how the broker answered: the AWS API's three protocols, and the native protocol, whose key
is proven in the connection's opening (an HMAC over the broker's nonce: its "stale" proof is one made
for another nonce, a replay)."""

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

from dovecote.actors.errors import BrokerError
from dovecote.net import client as native_client
from dovecote.net.client import BlockingClient

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
def broker(tmp_path_factory):
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
    yield broker
    assert broker.terminate() == 0


@pytest.fixture(scope="module")
def endpoint(broker):
    return http_url(broker)


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


def native(port: int, credentials, kind: str) -> Answer:
    """The native protocol through the blocking client: the key is proven once, in the opening,
    and every request on the connection is that key's. A refusal's status is its code's on AWS."""
    calls = {
        "read": lambda client: client.get_queue_attributes("matrix-q"),
        "write": lambda client: client.send_message("matrix-q", "matrix"),
        "admin": lambda client: client.create_queue("matrix-q"),
    }
    try:
        with BlockingClient("127.0.0.1", port, timeout_s=10, access_key=credentials) as client:
            calls[kind](client)
    except BrokerError as error:
        return Answer(error.kind.http_status, error.code)
    return Answer(200, "")


class Door(NamedTuple):
    ask: Callable[[ServeProcess, object, str], Answer]
    refusal: str  # the code its service refuses an unauthorised request with
    stale: Answer  # its answer to stale credentials


DOORS = {
    # boto3 reads the code from x-amzn-query-error
    "sqs-json": Door(lambda broker, *how: sqs_json(http_url(broker), *how), "AccessDenied", Answer(400, "RequestExpired")),
    "sqs-query": Door(lambda broker, *how: sqs_query(http_url(broker), *how), "AccessDenied", Answer(400, "RequestExpired")),
    "sns-query": Door(lambda broker, *how: sns_query(http_url(broker), *how), "AuthorizationError", Answer(400, "RequestExpired")),
    "native": Door(lambda broker, *how: native(broker.port, *how), "AccessDeniedException", Answer(403, "SignatureDoesNotMatch")),
}
CREDENTIALS = {
    "no credentials": (None, Answer(403, "MissingAuthenticationToken")),
    "wrong key": (("nobody", "whatever"), Answer(403, "InvalidClientTokenId")),
    "wrong secret": ((OPERATOR[0], "not-the-secret"), Answer(403, "SignatureDoesNotMatch")),
    "stale": (OPERATOR, None),  # the door's answer to stale credentials
    "right key without permission": (OUTSIDER, None),  # the door's refusal
    "right key": (OPERATOR, Answer(200, "")),
}


def http_url(broker: ServeProcess) -> str:
    return f"http://127.0.0.1:{broker.http_port}"


@pytest.mark.parametrize("kind", ["read", "write", "admin"])
@pytest.mark.parametrize("case", list(CREDENTIALS))
@pytest.mark.parametrize("door", list(DOORS))
def test_every_door_checks_every_request(broker, monkeypatch, door, case, kind):
    credentials, expected = CREDENTIALS[case]
    if case == "stale":
        expected = DOORS[door].stale
        # signed 20 minutes ago: beyond the 15 minutes a signature lasts
        signed_at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: signed_at.replace(tzinfo=None))
        # a proof made for another connection's nonce, as a replayed opening would carry
        key_proof = native_client.frames.key_proof
        monkeypatch.setattr(native_client.frames, "key_proof", lambda secret, nonce, key_id: key_proof(secret, bytes(32), key_id))
    elif case == "right key without permission":
        expected = Answer(403, DOORS[door].refusal)
    assert DOORS[door].ask(broker, credentials, kind) == expected


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


def test_the_native_door_reports_refusals_to_the_audit(tmp_path):
    """A native opening with a wrong secret and a native request the key may not make are counted
    in /metrics under door "native" and logged with the key id and the client's address."""
    directory = tmp_path
    (directory / "outsider.secret").write_text(OUTSIDER[1])
    (directory / "partner.secret").write_text(PARTNER[1])
    (directory / "dovecote.toml").write_text(CONFIGURATION)
    environment = {**os.environ, "OPERATOR_SECRET": OPERATOR[1], "CONSUMER_SECRET": CONSUMER[1]}
    broker = ServeProcess(
        directory / "data", "--config", str(directory / "dovecote.toml"), "--access-key", ":".join(ROOT), env=environment
    ).start()
    try:
        assert native(broker.port, (OPERATOR[0], "not-the-secret"), "read") == Answer(403, "SignatureDoesNotMatch")
        assert native(broker.port, OUTSIDER, "write") == Answer(403, "AccessDeniedException")
        metrics = httpx.get(f"{http_url(broker)}/metrics", auth=ROOT).text
    finally:
        assert broker.terminate() == 0
    assert 'dovecote_auth_failures_total{door="native",reason="SignatureDoesNotMatch"} 1' in metrics
    assert 'dovecote_access_denied_total{door="native",action="SendMessage"} 1' in metrics
    logged = broker.process.stderr.read()
    assert "at the native door" in logged and "key id 'operator'" in logged and "from 127.0.0.1:" in logged
    assert "key id 'outsider'" in logged
