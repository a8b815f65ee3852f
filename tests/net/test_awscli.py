"""The aws-cli (pip `awscli`) in a short real session against a real `dovecote serve`."""

import json
import os
import subprocess
import sys

import pytest

from ..faults.serve import ServeProcess


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    broker = ServeProcess(tmp_path_factory.mktemp("awscli") / "data").start()
    environment = {
        **os.environ,
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "awscli", "--endpoint-url", f"http://127.0.0.1:{broker.http_port}", "--output", "json", *args],
            capture_output=True, text=True, timeout=120, env=environment,
        )

    yield run
    assert broker.terminate() == 0


def test_a_short_aws_cli_session(aws):
    created = aws("sqs", "create-queue", "--queue-name", "cli-jobs", "--attributes", "VisibilityTimeout=40")
    assert created.returncode == 0, created.stderr
    url = json.loads(created.stdout)["QueueUrl"]
    sent = aws("sqs", "send-message", "--queue-url", url, "--message-body", "from the cli",
               "--message-attributes", '{"kind": {"DataType": "String", "StringValue": "cli"}}')
    assert sent.returncode == 0, sent.stderr
    received = aws("sqs", "receive-message", "--queue-url", url, "--message-attribute-names", "All",
                   "--wait-time-seconds", "1")
    (message,) = json.loads(received.stdout)["Messages"]
    assert message["Body"] == "from the cli" and message["MessageAttributes"]["kind"]["StringValue"] == "cli"
    assert aws("sqs", "delete-message", "--queue-url", url, "--receipt-handle", message["ReceiptHandle"]).returncode == 0
    attributes = json.loads(aws("sqs", "get-queue-attributes", "--queue-url", url, "--attribute-names", "All").stdout)
    assert attributes["Attributes"]["VisibilityTimeout"] == "40"
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert url in json.loads(aws("sqs", "list-queues").stdout)["QueueUrls"]
    assert aws("sqs", "delete-queue", "--queue-url", url).returncode == 0
    missing = aws("sqs", "get-queue-url", "--queue-name", "cli-jobs")
    assert missing.returncode != 0 and "NonExistentQueue" in missing.stderr


def test_a_short_aws_cli_sns_session(aws):
    topic = json.loads(aws("sns", "create-topic", "--name", "cli-news").stdout)["TopicArn"]
    url = json.loads(aws("sqs", "create-queue", "--queue-name", "cli-inbox").stdout)["QueueUrl"]
    queue_arn = json.loads(aws("sqs", "get-queue-attributes", "--queue-url", url, "--attribute-names", "QueueArn").stdout)
    subscribed = aws("sns", "subscribe", "--topic-arn", topic, "--protocol", "sqs",
                     "--notification-endpoint", queue_arn["Attributes"]["QueueArn"],
                     "--attributes", '{"RawMessageDelivery": "true", "FilterPolicy": "{\\"kind\\": [\\"cli\\"]}"}')
    assert subscribed.returncode == 0, subscribed.stderr
    for kind in ("cli", "other"):
        published = aws("sns", "publish", "--topic-arn", topic, "--message", f"hello {kind}",
                        "--message-attributes", json.dumps({"kind": {"DataType": "String", "StringValue": kind}}))
        assert published.returncode == 0, published.stderr
    received = json.loads(aws("sqs", "receive-message", "--queue-url", url, "--max-number-of-messages", "10",
                              "--wait-time-seconds", "1").stdout)
    assert [m["Body"] for m in received["Messages"]] == ["hello cli"]
    listed = json.loads(aws("sns", "list-subscriptions-by-topic", "--topic-arn", topic).stdout)
    assert listed["Subscriptions"][0]["Protocol"] == "sqs"
    refused = aws("sns", "subscribe", "--topic-arn", topic, "--protocol", "sms", "--notification-endpoint", "+15555550100")
    assert refused.returncode != 0 and "InvalidParameter" in refused.stderr
