"""The --access-key mode: AWS Signature Version 4 checked on both AWS protocols, against a real
`dovecote serve`; and, without keys, any signature accepted."""

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from ..faults.serve import ServeProcess


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    broker = ServeProcess(tmp_path_factory.mktemp("sigv4") / "data", "--access-key", "AKIDGOOD:s3cret").start()
    yield f"http://127.0.0.1:{broker.http_port}"
    assert broker.terminate() == 0


def sqs(endpoint, key="AKIDGOOD", secret="s3cret"):
    return boto3.client(
        "sqs", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id=key,
        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}),
    )


def test_a_correctly_signed_client_is_served(endpoint):
    client = sqs(endpoint)
    url = client.create_queue(QueueName="signed")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="signed body ✓")
    assert client.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "signed body ✓"


@pytest.mark.parametrize(
    ("key", "secret", "code"),
    [("AKIDGOOD", "wrong", "SignatureDoesNotMatch"), ("AKIDUNKNOWN", "s3cret", "InvalidClientTokenId")],
)
def test_bad_credentials_are_refused_with_aws_codes(endpoint, key, secret, code):
    with pytest.raises(Exception) as caught:
        sqs(endpoint, key, secret).list_queues()
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unsigned_and_tampered_requests_are_refused(endpoint):
    unsigned = httpx.post(endpoint, content=b"{}", headers={"X-Amz-Target": "AmazonSQS.ListQueues"})
    assert unsigned.status_code == 403 and unsigned.json()["__type"].endswith("#MissingAuthenticationToken")
    request = AWSRequest(
        method="POST", url=endpoint + "/", data=b"Action=ListQueues&Version=2012-11-05",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    SigV4Auth(Credentials("AKIDGOOD", "s3cret"), "sqs", "us-east-1").add_auth(request)
    signed = dict(request.headers)
    ok = httpx.post(endpoint, content=request.body, headers=signed)
    assert ok.status_code == 200 and b"ListQueuesResponse" in ok.content
    tampered = httpx.post(endpoint, content=b"Action=ListQueues&Version=2012-11-06", headers=signed)
    assert tampered.status_code == 403 and b"SignatureDoesNotMatch" in tampered.content


def test_the_cli_refuses_a_malformed_key(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "dovecote", "serve", "--data-dir", str(tmp_path), "--access-key", "no-colon"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0 and "ID:SECRET" in result.stderr


def test_a_subscribe_url_is_visited_without_a_signature_but_nothing_else_is(endpoint):
    """The token authenticates ConfirmSubscription, as on AWS: an unsigned GET of a SubscribeURL
    reaches the topic (here, which refuses the unknown token), another unsigned action does not."""
    sns = boto3.client(
        "sns", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="AKIDGOOD",
        aws_secret_access_key="s3cret", config=Config(retries={"max_attempts": 1}),
    )
    topic = sns.create_topic(Name="signed-topic")["TopicArn"]
    confirm = httpx.get(endpoint + "/", params={"Action": "ConfirmSubscription", "TopicArn": topic, "Token": "f00d"})
    assert confirm.status_code == 400 and b"<Code>InvalidParameter</Code>" in confirm.content
    assert b"f00d" in confirm.content  # the topic answered: no such token
    listing = httpx.get(endpoint + "/", params={"Action": "ListTopics"})
    assert listing.status_code == 403
