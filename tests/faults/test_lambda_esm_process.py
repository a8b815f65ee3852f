"""Event source mappings and `lambda` subscriptions end to end: unmodified boto3 against a real
`dovecote serve`, a zipped Python handler that writes each record it gets to a file its
Environment names, and kill -9 of the broker in the middle of a batch."""

import io
import json
import subprocess
import sys
import time
import zipfile

import boto3
import pytest
from botocore.config import Config

from .serve import ServeProcess

ACCOUNT = "000000000000"
QUEUE_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:"

# Writes one line per record, then fails as the body says: "fail..." is reported as a batch item
# failure, "crash..." fails the whole invocation, "slow:S" sleeps S seconds first.
HANDLER = '''
import json, os, time

def handler(event, context):
    failures = []
    for record in event["Records"]:
        sns = record.get("Sns")
        body = sns["Message"] if sns else record["body"]
        if body.startswith("slow:"):
            time.sleep(float(body.split(":")[1]))
        with open(os.environ["OUT"], "a") as out:
            out.write(json.dumps({"id": sns["MessageId"] if sns else record["messageId"], "body": body,
                                  "source": record.get("eventSource") or record.get("EventSource"),
                                  "group": record.get("attributes", {}).get("MessageGroupId")}) + "\\n")
        if body.startswith("crash"):
            raise RuntimeError("crashed on purpose")
        if body.startswith("fail"):
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
'''


def handler_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", HANDLER)
    return buffer.getvalue()


def client(broker, service):
    return boto3.client(
        service, endpoint_url=f"http://127.0.0.1:{broker.http_port}", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test", config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture
def broker(tmp_path):
    broker = ServeProcess(tmp_path / "data").start()
    yield broker
    broker.terminate()


def make_function(broker, name, out, timeout_s=3):
    client(broker, "lambda").create_function(
        FunctionName=name, Runtime="python3.12", Handler="handler.handler", Role=f"arn:aws:iam::{ACCOUNT}:role/r",
        Code={"ZipFile": handler_zip()}, Timeout=timeout_s, Environment={"Variables": {"OUT": str(out)}},
    )


def seen(out):
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def wait_for(condition, timeout_s=20):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def depth(sqs, url):
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_a_mapping_feeds_the_function_and_partial_failures_keep_only_theirs(broker, tmp_path):
    out = tmp_path / "out.jsonl"
    make_function(broker, "worker", out, timeout_s=2)
    sqs, lam = client(broker, "sqs"), client(broker, "lambda")
    url = sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
    mapping = lam.create_event_source_mapping(
        EventSourceArn=QUEUE_ARN + "jobs", FunctionName="worker", BatchSize=10, MaximumBatchingWindowInSeconds=1,
        FunctionResponseTypes=["ReportBatchItemFailures"],
        FilterCriteria={"Filters": [{"Pattern": json.dumps({"body": [{"anything-but": "skip"}]})}]},
    )
    assert mapping["State"] == "Creating"
    assert lam.get_event_source_mapping(UUID=mapping["UUID"])["State"] == "Enabled"
    sent = {sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"]: body for body in ("a", "b", "fail-once", "skip")}
    wait_for(lambda: {line["body"] for line in seen(out)} >= {"a", "b", "fail-once"})
    assert {line["source"] for line in seen(out)} == {"aws:sqs"}
    assert "skip" not in {line["body"] for line in seen(out)}  # filtered out: deleted unseen
    wait_for(lambda: [line["body"] for line in seen(out)].count("fail-once") >= 2)  # kept, back after 2 s
    assert [line["body"] for line in seen(out)].count("a") == 1
    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    lam.delete_event_source_mapping(UUID=mapping["UUID"])
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_event_source_mapping(UUID=mapping["UUID"])
    # the log shows which function got a message
    a_id = next(message_id for message_id, body in sent.items() if body == "a")
    log = subprocess.run([sys.executable, "-m", "dovecote", "log", "--data-dir", broker.data_dir, "--message-id", a_id],
                         capture_output=True, text=True, check=True).stdout
    assert "FunctionInvoked" in log and "worker" in log and "MessageDeleted" in log


def test_a_failing_function_sends_the_batch_to_the_dead_letter_queue(broker, tmp_path):
    out = tmp_path / "out.jsonl"
    make_function(broker, "crasher", out, timeout_s=1)
    sqs, lam = client(broker, "sqs"), client(broker, "lambda")
    dlq = sqs.create_queue(QueueName="dead")["QueueUrl"]
    policy = json.dumps({"deadLetterTargetArn": QUEUE_ARN + "dead", "maxReceiveCount": 2})
    url = sqs.create_queue(QueueName="poison", Attributes={"VisibilityTimeout": "1", "RedrivePolicy": policy})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="crash")
    lam.create_event_source_mapping(EventSourceArn=QUEUE_ARN + "poison", FunctionName="crasher")
    wait_for(lambda: depth(sqs, dlq) == 1)
    assert [line["body"] for line in seen(out)] == ["crash", "crash"]
    assert sqs.receive_message(QueueUrl=dlq)["Messages"][0]["Body"] == "crash"


def test_a_fifo_mapping_keeps_each_groups_order(broker, tmp_path):
    out = tmp_path / "out.jsonl"
    make_function(broker, "ordered", out)
    sqs, lam = client(broker, "sqs"), client(broker, "lambda")
    url = sqs.create_queue(QueueName="orders.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    for index in range(10):
        for group in ("g1", "g2", "g3"):
            sqs.send_message(QueueUrl=url, MessageBody=f"{group}-{index}", MessageGroupId=group)
    lam.create_event_source_mapping(EventSourceArn=QUEUE_ARN + "orders.fifo", FunctionName="ordered", BatchSize=3,
                                    ScalingConfig={"MaximumConcurrency": 3})
    wait_for(lambda: len(seen(out)) == 30)
    for group in ("g1", "g2", "g3"):
        assert [line["body"] for line in seen(out) if line["group"] == group] == [f"{group}-{index}" for index in range(10)]


def test_a_lambda_subscription_gets_snss_event(broker, tmp_path):
    out = tmp_path / "out.jsonl"
    make_function(broker, "listener", out)
    sns = client(broker, "sns")
    topic = sns.create_topic(Name="news")["TopicArn"]
    function_arn = client(broker, "lambda").get_function(FunctionName="listener")["Configuration"]["FunctionArn"]
    sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=function_arn)
    published = sns.publish(TopicArn=topic, Message="extra!", Subject="headline")
    wait_for(lambda: seen(out))
    (line,) = seen(out)
    assert (line["id"], line["body"], line["source"]) == (published["MessageId"], "extra!", "aws:sns")


def test_a_lambda_subscription_to_a_missing_function_dead_letters_at_once(broker):
    sns, sqs = client(broker, "sns"), client(broker, "sqs")
    dlq = sqs.create_queue(QueueName="sns-dead")["QueueUrl"]
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:gone",
                  Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": QUEUE_ARN + "sns-dead"})})
    published = sns.publish(TopicArn=topic, Message="nobody home")
    wait_for(lambda: depth(sqs, dlq) == 1)
    envelope = json.loads(sqs.receive_message(QueueUrl=dlq)["Messages"][0]["Body"])
    assert (envelope["MessageId"], envelope["Message"]) == (published["MessageId"], "nobody home")


def test_kill_9_in_the_middle_of_a_batch_hands_it_over_again(tmp_path):
    out = tmp_path / "out.jsonl"
    broker = ServeProcess(tmp_path / "data").start()
    try:
        make_function(broker, "slow", out)
        sqs, lam = client(broker, "sqs"), client(broker, "lambda")
        url = sqs.create_queue(QueueName="work", Attributes={"VisibilityTimeout": "3"})["QueueUrl"]
        bodies = ["slow:1.5", *(f"m{index}" for index in range(5))]
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)])
        lam.create_event_source_mapping(EventSourceArn=QUEUE_ARN + "work", FunctionName="slow", BatchSize=10,
                                        MaximumBatchingWindowInSeconds=1)
        time.sleep(2)  # the batch is in the handler's hands: it sleeps first
        broker.kill9()
        broker.start()
        sqs = client(broker, "sqs")
        wait_for(lambda: depth(sqs, url) == 0, timeout_s=30)
        handled = [line["body"] for line in seen(out)]
        assert set(handled) == set(bodies)  # nothing lost; some handled twice (at least once)
    finally:
        broker.terminate()


def test_bad_mapping_requests_get_lambdas_errors_and_the_broker_stays_up(broker):
    lam, sqs = client(broker, "lambda"), client(broker, "sqs")
    sqs.create_queue(QueueName="q")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_event_source_mapping(EventSourceArn=QUEUE_ARN + "q", FunctionName="no-such-function")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_event_source_mapping(EventSourceArn=QUEUE_ARN + "q", FunctionName="f", StartingPosition="LATEST")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_event_source_mapping(UUID="0f6a8b5e-0000-4000-8000-000000000000")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_event_source_mapping(UUID="0f6a8b5e-0000-4000-8000-000000000000")
    assert lam.list_event_source_mappings()["EventSourceMappings"] == []
    assert sqs.list_queues()["QueueUrls"]  # still serving
